"""CEM settings against random search on eval's planning clips, one JSON line per setting.

    python scripts/cem_sweep.py --random-from outputs/eval/ref4-plan/eval.json \
        --variant samples=16,iterations=3 --variant samples=8,iterations=6,stratified=1 [--clips 20] [--seed 0]

Random search's best cost on a clip depends only on the clip, the seed (eval.seed + clip index), the
budget and the sampling settings, so one full `genie-robot eval ... eval.max_clips=20 eval.plan_episodes=20`
gives the baseline (its eval.json `plan_random_costs`, checked against this run's settings), and each CEM
setting needs only CEM rerun: a third of the time of a full eval. Every variant keeps the budget
(samples x iterations) of the eval it is compared with. Keys of `--variant`: samples, iterations,
elite (fraction), smoothing, stratified (0/1).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from genie_robot.data.reader import DataConfig
from genie_robot.evaluation.report import ACTION_KEYS, EvalConfig, read_clips
from genie_robot.inference.world_model import WorldModel
from genie_robot.planning.cem import plan, random_search

KEYS = {"samples": int, "iterations": int, "elite": float, "smoothing": float, "stratified": lambda v: bool(int(v))}


def parse_variant(text: str) -> dict:
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"--variant key '{key}' unknown; known: {sorted(KEYS)}")
        out[key] = KEYS[key](value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="sim-rt1")
    ap.add_argument("--data", default="outputs/heldout/fractal20220817_data/0.1.0")
    ap.add_argument("--val-fraction", type=float, default=1.0, help="data.val_fraction of the eval compared with")
    ap.add_argument("--clips", type=int, default=20, help="eval.max_clips")
    ap.add_argument("--episodes", type=int, default=None, help="eval.plan_episodes (default: --clips)")
    ap.add_argument("--seed", type=int, default=0, help="eval.seed: clip i plans with seed + i")
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--budget", type=int, default=None, help="default: eval's plan_samples x plan_iterations")
    ap.add_argument("--random-from", default=None, help="an eval.json whose plan_random_costs to reuse")
    ap.add_argument("--variant", action="append", required=True)
    args = ap.parse_args()

    ev = EvalConfig(seed=args.seed)
    budget = args.budget or ev.plan_samples * ev.plan_iterations
    variants = [parse_variant(v) for v in args.variant]
    for v in variants:
        if v.get("samples", ev.plan_samples) * v.get("iterations", ev.plan_iterations) != budget:
            raise SystemExit(f"variant {v} does not spend the budget {budget}")
    engine = WorldModel.load(args.ckpt)
    data = engine.match_data(DataConfig(path=args.data, val_fraction=args.val_fraction))
    frames, _ = read_clips(data, "val", args.clips, ACTION_KEYS)
    episodes = args.episodes or args.clips
    picks = np.linspace(0, len(frames) - 1, min(episodes, len(frames))).round().astype(int)  # as eval
    kw = {"steps": ev.plan_steps, "temperature": args.temperature, "cost": ev.plan_cost}

    if args.random_from:
        ref = json.load(open(args.random_from))
        want = {"plan_episodes": len(picks), "plan_budget": budget, "temperature": args.temperature,
                "plan_cost": ev.plan_cost, "clips": len(frames)}
        got = {k: ref.get(k) for k in want}
        if got != want:
            raise SystemExit(f"{args.random_from} has settings {got}, this run {want}")
        rand = np.array(ref["plan_random_costs"])
    else:
        rand = np.array([random_search(engine, frames[idx, :1], frames[idx, ev.plan_horizon], ev.plan_horizon,
                                       budget, ev.plan_samples, seed=ev.seed + i, **kw)
                         for i, idx in enumerate(tqdm(picks, desc="random search", unit="clip"))])
    for v in variants:
        t0 = time.time()
        cem = []
        for i, idx in enumerate(tqdm(picks, desc=str(v), unit="clip")):
            res = plan(engine, frames[idx, :1], frames[idx, ev.plan_horizon], ev.plan_horizon,
                       v.get("samples", ev.plan_samples), v.get("iterations", ev.plan_iterations), seed=ev.seed + i,
                       elite_fraction=v.get("elite", 0.25), smoothing=v.get("smoothing", 0.1),
                       stratified=v.get("stratified", False), **kw)
            cem.append(res.cost)
        gain = rand - np.array(cem)
        se = float(gain.std(ddof=1) / np.sqrt(len(gain)))
        print(json.dumps({"variant": v, "episodes": len(picks), "budget": budget, "seed": args.seed,
                          "temperature": args.temperature, "data": args.data,
                          "gain_mean": round(float(gain.mean()), 6), "gain_se": round(se, 6),
                          "gain_in_se": round(float(gain.mean()) / se, 2), "cem_wins": int((gain > 0).sum()),
                          "cem_costs": [round(c, 6) for c in cem], "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
