"""Where a cached MaskGIT step's time goes at batch 1: arithmetic against everything else (issue 18, item 2).

For one model shape (random weights; cost does not depend on them) and a cache of `--past` frames, it times, at
batch 1 on the torch engine, median over `--repeats` steps:
- `step_ms`: one whole MaskGIT step as the rollout runs it (`TorchDynamics.logits`: numpy ids in, the model's
  `step`, logits back to numpy; then `maskgit.sample_step`);
- `forward_ms`: the model's `step` alone on tensors already made (no numpy, no sampling);
- `sample_ms`: `sample_step` alone on those logits;
- `arithmetic_ms`: the arithmetic in the step, measured as the self CPU time of the matrix-multiply, attention and
  softmax kernels (aten::addmm, mm, bmm, matmul, linear, baddbmm, _softmax, scaled_dot_product attention) in
  torch.profiler's trace of the model's `step`, per step. Everything else in `step_ms` (Python, dispatch, small
  element-wise ops, copies, numpy conversion, sampling) is overhead to remove.

With `--compile` the step is `WorldModel.compile`'s (torch.compile, weights frozen, C++ wrapper): `step_ms` and
`forward_ms` time the compiled step, while `arithmetic_ms` stays the eager kernels' (the same matmuls and attention,
unfused), and `compiled_kernels_ms` adds the compiled step's own matrix-multiply and attention kernels (frozen
weights take mkl's prepacked `_mkl_linear`).

The issue's target: `step_ms` within 1.5x of `arithmetic_ms`. One JSON line.

    python scripts/bench_step_overhead.py [--model peer1x_tiny] [--past 8] [--repeats 200] [--threads 2] [--compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from genie_robot.config import config_dir, typed
from genie_robot.core.maskgit import MASK, sample_step
from genie_robot.inference.world_model import TorchDynamics, compiled_step
from genie_robot.models import ModelConfig, build

ARITHMETIC = ("aten::addmm", "mkl::_mkl_linear", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::baddbmm",
              "aten::_softmax", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_attention_math", "aten::mkldnn_linear")


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="peer1x_tiny")
    ap.add_argument("--past", type=int, default=8, help="frames in the cache (the context)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="time WorldModel.compile's step")
    ap.add_argument("--json", action="store_true", help="accepted; the last line is always JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        cfg = typed(compose(config_name=args.model), ModelConfig)
    model = build(cfg, "dynamics").eval()
    step = compiled_step(model) if args.compile else None
    backend = TorchDynamics(model, torch.device("cpu"), torch.float32, step)
    s, v = cfg.tokens_per_frame(), cfg.tokenizer.num_codes
    rng = np.random.default_rng(0)
    cache = backend.empty()
    with torch.no_grad():
        for t in range(args.past):
            cache = backend.append(cache, rng.integers(0, v, (1, s)), np.array([t % 8 - (t == 0)]), t)
    ids = np.full((1, s), model.mask_id)
    ids[:, : s // 2] = rng.integers(0, v, (1, s // 2))
    action = np.array([3])
    cur = np.where(ids == model.mask_id, MASK, ids)

    def whole_step():
        logits = backend.logits(cache, ids, action, args.past)
        sample_step(logits, cur, 10, 25, 1.0, rng)

    ids_t, act_t, t_t = torch.from_numpy(ids), torch.from_numpy(action), torch.tensor(args.past)

    def forward(fn=backend.step):
        with torch.no_grad():
            fn(ids_t, act_t, t_t, *cache)

    def kernels_ms(fn, n: int = 50) -> tuple[dict, float]:
        """Self CPU time per step of each op in torch.profiler's trace, and of the arithmetic ones."""
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                forward(fn)
        table = {e.key: e.self_cpu_time_total / 1000 / n for e in prof.key_averages()}
        return table, sum(table.get(k, 0.0) for k in ARITHMETIC)

    logits = backend.logits(cache, ids, action, args.past)
    for fn in (whole_step, forward):  # warm-up
        for _ in range(10):
            fn()
    step_ms = median_ms(whole_step, args.repeats)
    forward_ms = median_ms(forward, args.repeats)
    sample_ms = median_ms(lambda: sample_step(logits, cur, 10, 25, 1.0, rng), args.repeats)
    forward(model.step)  # the eager step's warm-up
    table, arithmetic_ms = kernels_ms(model.step)
    profiled_ms = sum(table.values())
    compiled = {}
    if args.compile:
        ctable, compiled_kernels = kernels_ms(step)
        ctop = sorted(ctable.items(), key=lambda kv: -kv[1])[:6]
        compiled = {"compiled_kernels_ms": round(compiled_kernels, 3),
                    "compiled_top_self_ms": {k: round(t, 3) for k, t in ctop}}
    top = sorted(table.items(), key=lambda kv: -kv[1])[:8]
    print(json.dumps({
        "bench": "step_overhead", "model": args.model, "tokens_per_frame": s, "vocab": v, "past_frames": args.past,
        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "step_ms": round(step_ms, 3), "forward_ms": round(forward_ms, 3), "sample_ms": round(sample_ms, 3),
        "arithmetic_ms": round(arithmetic_ms, 3), "profiled_self_ms": round(profiled_ms, 3),
        "step_over_arithmetic": round(step_ms / arithmetic_ms, 2), "compiled": args.compile, **compiled,
        "top_self_ms": {k: round(t, 3) for k, t in top},
    }))


if __name__ == "__main__":
    main()
