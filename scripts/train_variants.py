"""Trains variants of one stage side by side on one device inside a wall-clock budget.

A lent GPU comes for minutes, and a small model leaves most of it idle: running the variants at once
uses it, and sizing each run's steps to the time left lets every run finish its learning-rate schedule
(warmup, then cosine to `min_lr` at `train.steps`) instead of being cut off mid-decay.

1. Probe: every variant for `--probe-steps` steps, all at once (as they will share the device), each
   one's seconds a step read from its logged stretches (the median, the first one's warm-up left out).
2. Run: every variant at once with `train.steps` = the time left, less twice what the probe spent besides
   its steps (start-up, the final evaluation), x `--fill` / its seconds a step, checkpointed every
   quarter. A run still going at the deadline is stopped; its last checkpoint stays, and
   `train.steps=<planned> train.stop_at=<reached>` reproduces it exactly.

Each variant gets its share of the CPU cores for its intra-op threads (`--threads`; OMP_NUM_THREADS): at full
width each, variants stepping at once oversubscribe the cores and, spinning on each other's threads, ran 40x
slower a step than their probe measured (0.22 s against 0.0055 s, two tiny variants on 2 cores, a CI failure of
tests/training/test_token_clips.py; a probe of a few steps ends before its neighbour starts stepping, so it does
not see that).

Prints one JSON line per variant (planned steps, reached step, wall time, last evaluation) and writes
`<out>/variants.json`.

    python scripts/train_variants.py --out outputs/variants --budget-s 300 \\
        --variant ids="model.dynamics.target=ids" --variant cv="model.dynamics.target=code_vector" \\
        -- model=sim_rt1 train=reference stage=dynamics data.tokens=outputs/tokens/sim_rt1.npz
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _command(common: list[str], variant: list[str], out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "genie_robot.cli", "train", *common, *variant, f"train.out_dir={out}",
            "train.progress=false", *extra]


def _rows(run: Path, split: str) -> list[dict]:
    path = next(run.rglob("metrics.jsonl"), None)
    if path is None:
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["split"] == split]


def _run_all(commands: dict[str, list[str]], logs: Path, deadline: float | None, threads: int
             ) -> dict[str, int | None]:
    """Starts every command at once, each with `threads` intra-op threads; waits for all, stopping any still
    running at `deadline`."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = {name: subprocess.Popen(cmd, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT, env=env)
             for name, cmd in commands.items()}
    codes: dict[str, int | None] = {}
    while len(codes) < len(procs):
        for name, p in procs.items():
            if name not in codes and p.poll() is not None:
                codes[name] = p.returncode
        if deadline is not None and time.time() > deadline:
            for name, p in procs.items():
                if name not in codes:
                    p.terminate()
                    p.wait(timeout=60)
                    codes[name] = None  # stopped at the deadline
        time.sleep(1)
    return codes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds for probe and runs together")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES",
                    help="a variant: its name and its Hydra overrides (one shell-quoted string)")
    ap.add_argument("--probe-steps", type=int, default=40)
    ap.add_argument("--min-steps", type=int, default=100, help="fewer planned steps than this: run this many")
    ap.add_argument("--fill", type=float, default=0.85, help="share of the time left the planned steps should take")
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads per variant (0: the CPU cores shared out, at least 1 each)")
    ap.add_argument("common", nargs="*", help="overrides every variant shares (after --)")
    args = ap.parse_args(argv)
    start = time.time()
    variants = {}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        variants[name] = shlex.split(overrides)
    threads = args.threads or max(1, (os.cpu_count() or 1) // len(variants))
    log_every = max(1, args.probe_steps // 4)
    probe = {name: _command(args.common, v, args.out / "probe" / name,
                            # stop_at: the probe ends without the final evaluation over the whole val split
                            [f"train.steps={10 ** 6}", f"train.stop_at={args.probe_steps}",
                             f"train.log_every={log_every}",
                             f"train.eval_every={10 ** 9}", f"train.ckpt_every={10 ** 9}"])
             for name, v in variants.items()}
    codes = _run_all(probe, args.out / "logs" / "probe", start + args.budget_s / 3, threads)
    probe_s = time.time() - start
    per_step, fixed = {}, {}
    for name, code in codes.items():
        rows = _rows(args.out / "probe" / name, "train")
        if code != 0 or not rows:
            raise SystemExit(f"probe of {name} failed (exit {code}); see {args.out / 'logs/probe' / name}.log")
        # The median logged stretch after the first (warm-up): one stretch can meet a neighbour's evaluation.
        per_step[name] = statistics.median(r["seconds_per_step"] for r in rows[1:] or rows)
        # What a run costs besides its steps (start-up, warm-up, the final evaluation): the rest of the probe.
        fixed[name] = max(0.0, probe_s - args.probe_steps * per_step[name])
    left = start + args.budget_s - time.time()
    runs, plan = {}, {}
    for name, v in variants.items():
        # The quarterly evaluations and checkpoints cost about what the final one does: 2x the fixed part.
        steps = max(args.min_steps, int((left - 2 * fixed[name]) * args.fill / per_step[name]))
        every = max(50, steps // 4)
        plan[name] = {"seconds_per_step": round(per_step[name], 4), "fixed_s": round(fixed[name], 1),
                      "planned_steps": steps}
        runs[name] = _command(args.common, v, args.out / name, [f"train.steps={steps}", f"train.ckpt_every={every}",
                                                                f"train.eval_every={every}"])
    codes = _run_all(runs, args.out / "logs", start + args.budget_s, threads)
    report = []
    for name in variants:
        rows = _rows(args.out / name, "train")
        val = _rows(args.out / name, "val")
        ev = next((args.out / name).rglob("eval.json"), None)
        report.append({"variant": name, "overrides": variants[name], **plan[name], "exit": codes[name],
                       "reached_step": rows[-1]["step"] if rows else 0, "last_train": rows[-1] if rows else None,
                       "last_val": val[-1] if val else None,
                       "eval": json.loads(ev.read_text()) if ev else None})
        print(json.dumps(report[-1]), flush=True)
    (args.out / "variants.json").write_text(json.dumps({"common": args.common, "threads": threads, "variants": report,
                                                        "wall_s": round(time.time() - start, 1)}, indent=2))
    return 0 if all(c in (0, None) for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
