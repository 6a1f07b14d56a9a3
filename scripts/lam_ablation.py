"""LAM ablation: the same data and budget, one recipe change at a time; does each code carry the motion?

Trains one LAM per variant (`genie-robot train stage=lam`, each in its own process and output
directory) and reads its held-out `eval.json`: next-frame PSNR of the decoder with the inferred
action, a random action and the best of all actions per transition, copying the previous frame,
NMI of the codes against k-means clusters of the real `world_vector`, and actions used.

    python scripts/lam_ablation.py --steps 400 --batch 8 --jobs 2 \\
        paper= spatial=model.lam.decoder.attention=spatial \\
        spatial_film=model.lam.decoder.attention=spatial,model.lam.action_conditioning=film

Each positional argument is NAME=OVERRIDE[,OVERRIDE...] (an empty override list is the config as
it is). With --jobs 2 two runs share the machine, one thread each. Prints a Markdown table, then
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COLUMNS = ("psnr", "psnr_random_actions", "psnr_best_action", "psnr_copy_previous_frame", "nmi_world_vector",
           "actions_used")


def run(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    cmd = [sys.executable, "-m", "genie_robot.cli", "train", f"model={args.model}", "train=demo", "stage=lam",
           f"train.steps={args.steps}", f"data.batch_size={args.batch}", f"train.out_dir={out}",
           f"train.eval_every={args.steps}", f"train.ckpt_every={args.steps}", "train.progress=false",
           f"train.seed={args.seed}", *args.common, *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS="1",
               TF_NUM_INTRAOP_THREADS=str(args.threads))
    t0 = time.perf_counter()
    log = (Path(args.out) / f"{name}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise SystemExit(f"variant {name} failed (exit {code}); see {log}")
    result = json.loads((out / "lam" / "eval.json").read_text())
    return {"variant": name, "overrides": overrides, "wall_s": round(time.perf_counter() - t0, 1),
            **{k: result.get(k) for k in (*COLUMNS, "clips")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="NAME=OVERRIDE[,OVERRIDE...]")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / jobs)")
    ap.add_argument("--out", default="outputs/ablation/lam")
    ap.add_argument("--common", nargs="*", default=[], help="overrides for every variant")
    args = ap.parse_args()
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    variants = []
    for v in args.variants:
        name, _, spec = v.partition("=")
        variants.append((name, [o for o in spec.split(",") if o]))
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda v: run(*v, args), variants))
    print("| variant | inferred | random | best of all | copy previous | NMI world_vector | actions used |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['psnr']:.2f} | {r['psnr_random_actions']:.2f} | {r['psnr_best_action']:.2f} | "
              f"{r['psnr_copy_previous_frame']:.2f} | {r['nmi_world_vector']:.3f} | {r['actions_used']:.0f} |")
    print(json.dumps({"steps": args.steps, "batch": args.batch, "model": args.model, "rows": rows}))


if __name__ == "__main__":
    main()
