"""Where a cached MaskGIT step's time goes at batch 1: arithmetic against everything else (issue 18, item 2).

For one model shape (random weights; cost does not depend on them) and a cache of `--past` frames, it times, at
batch 1 on the torch engine, median over `--repeats` steps:
- `step_ms`: one whole MaskGIT step as the rollout runs it. Eager: `TorchDynamics.logits` (numpy ids in, the
  model's `step`, logits back to numpy), then `maskgit.sample_step`. Compiled: a whole frame of `--steps`
  MaskGIT steps in one compiled call, sampled inside the graph (`DeviceSampledDynamics.sample_frame`), over
  the steps;
- `device_sampled_step_ms`: the same frame call on the eager model (eager torch sampling, which the eager CPU
  engine does not use: the numpy sampler is faster there), over the steps;
- `forward_ms`: the model's `step` alone on tensors already made (no numpy, no sampling);
- `sample_ms`: `sample_step` alone on those logits;
- `arithmetic_ms`: the time the step's arithmetic takes at the speed this CPU does the step's own matrix
  multiplies: the step's FLOPs (the matmuls' and batched matmuls' in torch.profiler's count, plus the spatial
  attention's scores and weighted values, 4 x S x S x inner per layer, which the profiler does not count) divided
  by the FLOP/s of the linear layers' matmul kernels (aten::addmm and aten::mm: their counted FLOPs over their
  self CPU time) in the eager step's trace. So a small batched matmul that is mostly call overhead (the temporal
  attention over a few past frames) counts as what its arithmetic would cost, not as what the call took.
  Everything else in `step_ms` (Python, dispatch, element-wise ops, copies, numpy conversion, sampling) is
  overhead to remove.
- `kernels_ms`: the older figure, the self CPU time of the matrix-multiply, attention and softmax kernels.

With `--compile` the step is `WorldModel.compile`'s (torch.compile with `inductor.OPTIONS`): `step_ms` and
`forward_ms` time the compiled code; `arithmetic_ms` stays the eager step's (the same FLOPs at the same matmul
speed). The frame's tokens start all masked, as in a rollout; the other timings use a half-masked frame.

The issue's target: `step_ms` within 1.5x of `arithmetic_ms`. One JSON line.

    python scripts/bench_step_overhead.py [--model peer1x_tiny] [--past 8] [--repeats 200] [--threads 2] [--compile]
        [--steps 25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from genie_robot.config import model_config
from genie_robot.core.maskgit import MASK, keep_schedule, sample_step
from genie_robot.inference.world_model import CompiledDynamics, DeviceSampledDynamics
from genie_robot.models import build

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
    ap.add_argument("--steps", type=int, default=25, help="MaskGIT steps of the frame timed for step_ms")
    ap.add_argument("--json", action="store_true", help="accepted; the last line is always JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = model_config(args.model)
    model = build(cfg, "dynamics").eval()
    compiled = CompiledDynamics(model) if args.compile else None
    backend = DeviceSampledDynamics(model, torch.device("cpu"), torch.float32, compiled)
    eager = DeviceSampledDynamics(model, torch.device("cpu"), torch.float32)
    step = backend.run.step  # the model's step, or its compiled twin
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

    keep, u_frame = keep_schedule(args.steps, s), rng.random((args.steps, 1, s))

    def whole_step():
        if compiled is None:
            sample_step(backend.logits(cache, ids, action, args.past), cur, 10, 25, 1.0, rng)
        else:
            backend.sample_frame(cache, action, args.past, u_frame, keep, 1.0)

    def device_sampled_frame():
        eager.sample_frame(cache, action, args.past, u_frame, keep, 1.0)

    ids_t, act_t, t_t = torch.from_numpy(ids), torch.from_numpy(action), torch.tensor(args.past)

    def forward(fn=step):
        with torch.no_grad():
            fn(ids_t, act_t, args.past if fn == model.step else t_t, *cache)

    def kernels_ms(fn, n: int = 50) -> tuple[dict, float]:
        """Self CPU time per step of each op in torch.profiler's trace, and that of the arithmetic ones."""
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                forward(fn)
        table = {e.key: e.self_cpu_time_total / 1000 / n for e in prof.key_averages()}
        return table, sum(table.get(k, 0.0) for k in ARITHMETIC)

    def op_flops(fn) -> dict:
        """Each op's counted FLOPs in one step (a separate pass: counting slows the ops it counts)."""
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
            forward(fn)
        return {e.key: e.flops or 0 for e in prof.key_averages()}

    logits = backend.logits(cache, ids, action, args.past)
    for fn in (whole_step, forward):  # warm-up
        for _ in range(10):
            fn()
    per_step = args.steps if compiled is not None else 1
    step_ms = median_ms(whole_step, max(args.repeats // per_step, 5)) / per_step
    device_sampled_ms = median_ms(device_sampled_frame, max(args.repeats // args.steps, 5)) / args.steps
    forward_ms = median_ms(forward, args.repeats)
    sample_ms = median_ms(lambda: sample_step(logits, cur, 10, 25, 1.0, rng), args.repeats)
    forward(model.step)  # the eager step's warm-up
    table, kernel_ms = kernels_ms(model.step)
    flops = op_flops(model.step)
    profiled_ms = sum(table.values())
    linear = ("aten::addmm", "aten::mm")
    matmul_flops_per_s = sum(flops.get(k, 0) for k in linear) / (sum(table.get(k, 0) for k in linear) / 1000)
    st = cfg.dynamics.transformer
    spatial = st.num_layers * 4.0 * s * s * st.inner_dim
    step_flops = sum(flops.get(k, 0) for k in (*linear, "aten::bmm")) + spatial
    arithmetic_ms = step_flops / matmul_flops_per_s * 1000
    compiled = {}
    if args.compile:
        ctable = kernels_ms(step)[0]
        ctop = sorted(ctable.items(), key=lambda kv: -kv[1])[:6]
        compiled = {"compiled_top_self_ms": {k: round(t, 3) for k, t in ctop}}
    top = sorted(table.items(), key=lambda kv: -kv[1])[:8]
    print(json.dumps({
        "bench": "step_overhead", "model": args.model, "tokens_per_frame": s, "vocab": v, "past_frames": args.past,
        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "step_ms": round(step_ms, 3), "device_sampled_step_ms": round(device_sampled_ms, 3),
        "forward_ms": round(forward_ms, 3), "sample_ms": round(sample_ms, 3),
        "arithmetic_ms": round(arithmetic_ms, 3), "step_gflop": round(step_flops / 1e9, 4),
        "matmul_gflops": round(matmul_flops_per_s / 1e9, 1), "kernels_ms": round(kernel_ms, 3),
        "profiled_self_ms": round(profiled_ms, 3),
        "step_over_arithmetic": round(step_ms / arithmetic_ms, 2), "compiled": args.compile, **compiled,
        "top_self_ms": {k: round(t, 3) for k, t in top},
    }))


if __name__ == "__main__":
    main()
