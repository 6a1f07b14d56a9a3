"""onnxruntime engine vs torch engine: imagined frames/s, each engine in its own process.

Runs `genie-robot bench rollout` twice (bench.rollout.engine=torch, then =onnx) with the same
model config, batches, context and MaskGIT settings, cached path only, and prints each run's
JSON and, last, one JSON line with the frames/s ratio onnx/torch per batch size. In one process
the two engines would compete for the same cores, so each gets its own.

    python scripts/bench_engines.py [--model demo] [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run(engine: str, model: str, repeats: int, steps: int) -> dict:
    cli = Path(sys.executable).parent / "genie-robot"
    cmd = [str(cli), "bench", "rollout", f"model={model}", f"bench.rollout.engine={engine}",
           "bench.rollout.uncached=false", f"bench.rollout.repeats={repeats}", f"bench.rollout.steps={steps}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = ap.parse_args()
    results = {engine: run(engine, args.model, args.repeats, args.steps) for engine in ("torch", "onnx")}
    if not args.json:
        for r in results.values():
            print(json.dumps(r))
    ratios = [{"batch": t["batch"], "torch_frames_per_s": t["cached_frames_per_s"],
               "onnx_frames_per_s": o["cached_frames_per_s"],
               "onnx_over_torch": round(o["cached_frames_per_s"] / t["cached_frames_per_s"], 3)}
              for t, o in zip(results["torch"]["rows"], results["onnx"]["rows"], strict=True)]
    print(json.dumps({"bench": "engines", "model": args.model, "maskgit_steps": args.steps,
                      "context_frames": results["torch"]["context_frames"], "horizon": results["torch"]["horizon"],
                      "onnx_provider": results["onnx"]["provider"], "rows": ratios,
                      "cpus": results["torch"]["cpus"]}))


if __name__ == "__main__":
    main()
