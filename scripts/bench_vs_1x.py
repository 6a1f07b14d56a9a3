"""genie-robot's imagination against the 1X world-model challenge's GENIE sampler, side by side (issue 18).

Same shapes, MaskGIT steps, context and new frames, one run, each side in its own process (in one process they
would compete for the same cores). Ours: `genie-robot bench rollout` on random weights of
configs/model/peer1x_<shape>.yaml, whole `imagine` calls (tokenizer encode of the context, LAM, MaskGIT with the
context cache, decode), torch and onnxruntime engines. The peer: `../shared/peer_1x/bench_1x.py`, which runs
1x-technologies/1xgpt's own `STMaskGIT.maskgit_generate` from a fetched mirror (never copied here), its sampler
alone, recomputing all T=16 frames at every MaskGIT step. Frames/s count every candidate's frames.

    python scripts/bench_vs_1x.py --peer-python /tmp/peer1x/venv/bin/python \
        --mirror /work/.mirror/1x-technologies+1xgpt/repo [--shapes tiny,genie35m] [--batches 1,8]

The peer needs its own venv (torch==2.13.0 einops tqdm; ../shared/peer_1x/README.md). One JSON line per case,
then one JSON object with every row and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER_BENCH = REPO.parent / "shared" / "peer_1x" / "bench_1x.py"
PEER_ARGS = {"tiny": ["--preset", "tiny", "--hw", "8x10"], "genie35m": ["--preset", "genie35m"]}


def last_json(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours(shape: str, engine: str, batches: list[int], args) -> dict:
    """`engine`: torch, torch-compiled (`WorldModel.compile`) or onnx."""
    cli = Path(sys.executable).parent / "genie-robot"
    compiled = engine == "torch-compiled"
    engine = "torch" if compiled else engine
    return last_json([str(cli), "bench", "rollout", f"model=peer1x_{shape}", f"bench.rollout.engine={engine}",
                      f"bench.rollout.compile={str(compiled).lower()}",
                      f"bench.rollout.batches=[{','.join(map(str, batches))}]", "bench.rollout.uncached=false",
                      f"bench.rollout.context_frames={args.context}", f"bench.rollout.horizon={args.new_frames}",
                      f"bench.rollout.steps={args.steps}", f"bench.rollout.repeats={args.runs}",
                      f"runtime.threads={args.threads}"])


def peer(shape: str, batch: int, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    return last_json([args.peer_python, str(PEER_BENCH), "--mirror", args.mirror, *PEER_ARGS[shape],
                      "--steps", str(args.steps), "-B", str(batch), "-C", str(args.context), "-K",
                      str(args.new_frames), "--runs", str(args.peer_runs), "--warmup-steps", "2",
                      "--threads", str(args.threads)], env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-python", default=os.environ.get("PEER_1X_PYTHON"),
                    required="PEER_1X_PYTHON" not in os.environ, help="a venv with torch==2.13.0 einops tqdm")
    ap.add_argument("--mirror", default=os.environ.get("PEER_1X_MIRROR", "/work/.mirror/1x-technologies+1xgpt/repo"))
    ap.add_argument("--shapes", default="tiny,genie35m")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--engines", default="torch,torch-compiled,onnx")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--new-frames", type=int, default=4, help="frames generated per call (ours: the horizon)")
    ap.add_argument("--runs", type=int, default=3, help="our timed imagine calls per case")
    ap.add_argument("--peer-runs", type=int, default=3, help="the peer's timed runs per case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="accepted; the last line is always JSON")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for shape in args.shapes.split(","):
        mine = {e: {r["batch"]: r["cached_frames_per_s"] for r in ours(shape, e, batches, args)["rows"]}
                for e in args.engines.split(",")}
        for b in batches:
            p = peer(shape, b, args)
            row = {"shape": shape, "batch": b, "peer_frames_per_s": p["frames_per_s_batch"],
                   "peer_sec_per_frame_runs": p["sec_per_frame_runs"], "peer_params": p["params"]}
            for e, fps in mine.items():
                row[f"{e}_frames_per_s"] = fps[b]
                row[f"{e}_over_peer"] = round(fps[b] / p["frames_per_s_batch"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"bench": "vs_1x", "maskgit_steps": args.steps, "context_frames": args.context,
                      "new_frames": args.new_frames, "threads": args.threads, "cpus": os.cpu_count(),
                      "peer_commit": p.get("peer_commit"), "rows": rows}))


if __name__ == "__main__":
    main()
