"""MaskGIT sampling cost per step: the two-level draw (genie_robot.core.maskgit.draw) against the
float64 whole-row inverse CDF it replaced, on one frame's masked tokens, in one run. One JSON line.

    python scripts/bench_sampler.py [--vocab 8192] [--tokens 320] [--batches 1 8 16] [--repeats 3]

Random logits with the spread of a trained model's (normal, std 3); both rules get the same
uniform numbers, and the fraction of identical draws is reported beside the times.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from genie_robot.core.maskgit import draw


def whole_row(z: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous rule: float64 softmax and cumulative sum over the whole vocabulary."""
    z = z.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=1)
    total = cdf[:, -1:]
    ids = np.minimum((cdf < u[:, None] * total).sum(axis=1), z.shape[1] - 1)
    return ids, np.log(p[np.arange(len(ids)), ids] / total[:, 0])


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tokens", type=int, default=320)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for b in args.batches:
        n = b * args.tokens
        z = (rng.standard_normal((n, args.vocab), dtype=np.float32) * 3)
        u = rng.random(n)
        old_s = best_of(lambda z=z, u=u: whole_row(z, u), args.repeats)
        new_s = best_of(lambda z=z, u=u: draw(z.copy(), u), args.repeats)
        same = float((whole_row(z, u)[0] == draw(z.copy(), u)[0]).mean())
        rows.append({"batch": b, "rows": n, "whole_row_float64_s": round(old_s, 4), "two_level_s": round(new_s, 4),
                     "speedup": round(old_s / new_s, 2), "identical_draws": same})
    print(json.dumps({"bench": "maskgit_draw", "vocab": args.vocab, "tokens_per_frame": args.tokens,
                      "cpus": os.cpu_count(), "numpy": np.__version__, "results": rows}))


if __name__ == "__main__":
    main()
