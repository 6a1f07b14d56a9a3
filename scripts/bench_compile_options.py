"""Which inductor options pay for the compiled MaskGIT frame at batch 1 (issue 18): `inductor.OPTIONS` against
itself without its bias pass, and with the weights frozen as constants (the global inductor switch; torch 2.13
ignores `freezing` given per call). (Inductor's `memory_planning`, one pool for the intermediate buffers, does
not compile the frame's `while_loop` with the C++ wrapper in torch 2.13: its generated code names buffers of the
loop's body outside it.)

For one model shape (random weights), a cache of `--past` frames and batch 1, each variant compiles
`DynamicsModel.maskgit_frame` (all of a frame's MaskGIT steps in one call, sampled inside) and times whole frame
calls; the variants take turns `--rounds` times, so a drift of the machine's speed reaches all of them. Every
variant must give the same tokens as the first (the same uniforms, schedule and weights). One JSON line: the
median ms per frame and per step of each, and how many `addmm` the bias pass rewrote.

    python scripts/bench_compile_options.py [--model peer1x_tiny] [--past 8] [--steps 25] [--calls 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from genie_robot.config import model_config
from genie_robot.core.maskgit import BLOCK, keep_schedule
from genie_robot.inference.inductor import OPTIONS
from genie_robot.models import build, cpu_kernels

VARIANTS = {
    "options": ({}, False),
    "without_bias_pass": ({"post_grad_custom_post_pass": None}, False),
    # "freezing" in the options changes nothing by itself; it makes this a compile of its own (a different
    # backend), which the global switch then freezes.
    "options_and_global_freezing": ({"freezing": True}, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="peer1x_tiny")
    ap.add_argument("--past", type=int, default=8, help="frames in the cache (at most the window's minus one)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--calls", type=int, default=20, help="timed frame calls per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu_kernels.load()  # the graphs call the C++ kernels, as `WorldModel.compile`'s do
    cfg = model_config(args.model)
    if not 0 < args.past < cfg.frames:
        raise SystemExit(f"--past must be in 1..{cfg.frames - 1} (the window holds {cfg.frames} frames)")
    model = build(cfg, "dynamics").eval()
    s, v = cfg.tokens_per_frame(), cfg.tokenizer.num_codes
    rng = np.random.default_rng(0)
    with torch.no_grad():
        cache = model.prefill(torch.from_numpy(rng.integers(0, v, (1, args.past, s))),
                              torch.from_numpy(rng.integers(0, cfg.lam.num_actions, (1, args.past - 1))))
    call_args = (torch.tensor([3]), torch.tensor(args.past), *cache, torch.from_numpy(rng.random((args.steps, 1, s))),
                 torch.from_numpy(np.array(keep_schedule(args.steps, s))), torch.tensor(np.float32(1.0)), BLOCK)
    bias_pass = OPTIONS["post_grad_custom_post_pass"]
    frames, compile_s, rewritten, tokens = {}, {}, {}, {}
    for name, (changes, freezing) in VARIANTS.items():
        before = bias_pass.rewritten
        with torch.no_grad(), torch._inductor.config.patch(freezing=freezing, fx_graph_cache=False):
            fn = torch.compile(model.maskgit_frame, dynamic=False, fullgraph=True, options={**OPTIONS, **changes})
            start = time.perf_counter()
            tokens[name] = fn(*call_args)
            compile_s[name] = round(time.perf_counter() - start, 1)
        rewritten[name] = bias_pass.rewritten - before
        frames[name] = (fn, freezing)
        if not torch.equal(tokens[name], tokens["options"]):
            raise SystemExit(f"{name} sampled other tokens than the default options")
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (fn, freezing) in frames.items():
            with torch.no_grad(), torch._inductor.config.patch(freezing=freezing):
                for _ in range(3):
                    fn(*call_args)
                for _ in range(args.calls):
                    start = time.perf_counter()
                    fn(*call_args)
                    times[name].append((time.perf_counter() - start) * 1000)
    rows = {name: {"frame_ms": round(statistics.median(t), 2), "step_ms": round(statistics.median(t) / args.steps, 3),
                   "compile_s": compile_s[name], "addmm_rewritten": rewritten[name]} for name, t in times.items()}
    print(json.dumps({"bench": "compile_options", "model": args.model, "tokens_per_frame": s, "vocab": v,
                      "past_frames": args.past, "maskgit_steps": args.steps, "threads": args.threads,
                      "rows": rows, "without_bias_pass_over_options":
                          round(rows["without_bias_pass"]["frame_ms"] / rows["options"]["frame_ms"], 3)}))


if __name__ == "__main__":
    main()
