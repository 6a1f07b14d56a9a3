"""Lower-precision engines against fp32, for speed and quality on held-out clips (issue 18, item 4).

Variants: the torch engine in fp32 (the reference) and bf16 (AMX on CPUs that have it), and the onnxruntime
engine on exports of the same model in fp32, fp16 and int8 (int8 dynamics weights, `precision=int8`). For each
held-out clip (make demo's held-out set, sim seed 1001) every variant imagines `--t` frames from the clip's first
frame under the same actions (the fp32 LAM's inferred ones) with the same seed, at the eval's MaskGIT steps and
the model's temperature. Reported per variant, each a mean over clips with its standard error:
- token agreement with the fp32 torch engine's tokens at t=1 and at t=`--t` (the share of equal token ids; the
  same random draws pick the same token where the logits are close enough);
- PSNR at t=`--t` against the real frame, and its difference to fp32's on the same clip;
- seconds per `imagine` call.
Then each variant's cached rollout speed at batch 1 and 8 (`genie_robot.bench.time_rollouts`, as `bench rollout`:
whole `imagine` calls of 4 frames after 8 context frames, 25 MaskGIT steps).

    python scripts/precision_quality.py [--ckpt sim-rt1] [--clips 48] [--variants torch-fp32,torch-bf16,...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

HELDOUT = "outputs/heldout/fractal20220817_data/0.1.0"
VARIANTS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-fp16", "onnx-int8")


def load(variant: str, ckpt: str, tmp: Path, threads: int):
    import torch

    from genie_robot.inference.world_model import WorldModel
    from genie_robot.runtime import OnnxWorldModel
    from genie_robot_export.exporter import export

    engine, precision = variant.split("-")
    if engine == "torch":
        return WorldModel.load(ckpt, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[precision])
    out = tmp / precision
    export(ckpt, out, precision=precision, progress=lambda _: None)
    return OnnxWorldModel(out, providers=["CPUExecutionProvider"], threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="sim-rt1")
    ap.add_argument("--data", default=HELDOUT)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--t", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="accepted; the last line is always JSON")
    args = ap.parse_args()

    import torch
    from tqdm import tqdm

    from genie_robot.bench import time_rollouts
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.inference.world_model import WorldModel
    from genie_robot.metrics import mean_se, psnr

    torch.set_num_threads(args.threads)
    reference = WorldModel.load(args.ckpt)
    data = reference.match_data(DataConfig(path=args.data, val_fraction=1.0, action_keys=[]))
    frames, _ = read_clips(data, "val", args.clips, [])
    actions = [reference.infer_actions(clip)[: args.t] for clip in frames]
    temperature = reference.temperature
    results, base = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            engine = reference if variant == "torch-fp32" else load(variant, args.ckpt, Path(tmp), args.threads)
            tokens, scores, seconds = [], [], 0.0
            for i, clip in enumerate(tqdm(frames, desc=variant, unit="clip")):
                t0 = time.perf_counter()
                gen = engine.imagine(clip[:1], actions[i][None], steps=args.steps, temperature=temperature, seed=i)
                seconds += time.perf_counter() - t0
                tokens.append(gen.tokens[0])
                scores.append(psnr(gen.frames[0, args.t - 1][None], clip[args.t][None])[0])
            if variant == "torch-fp32":
                base = {"tokens": tokens, "psnr": scores}
            agree_1 = mean_se([(a[0] == b[0]).mean() for a, b in zip(tokens, base["tokens"], strict=True)])
            agree_t = mean_se([(a[-1] == b[-1]).mean() for a, b in zip(tokens, base["tokens"], strict=True)])
            p = mean_se(scores)
            dp = mean_se(np.array(scores) - np.array(base["psnr"]))
            row = {"variant": variant, "clips": len(frames), "token_agreement_t1": round(agree_1[0], 4),
                   "token_agreement_t1_se": round(agree_1[1], 4), f"token_agreement_t{args.t}": round(agree_t[0], 4),
                   f"token_agreement_t{args.t}_se": round(agree_t[1], 4), f"psnr_t{args.t}": round(p[0], 3),
                   "psnr_se": round(p[1], 3), "psnr_minus_fp32": round(dp[0], 3), "psnr_minus_fp32_se": round(dp[1], 3),
                   "imagine_s_per_clip": round(seconds / len(frames), 3),
                   **{f"frames_per_s_b{r['batch']}": r["cached_frames_per_s"] for r in time_rollouts(
                       engine, engine.cfg, [1, 8], 8, 4, args.steps, None, 2)}}
            results.append(row)
            print(json.dumps(row), flush=True)
            del engine
    print(json.dumps({"bench": "precision_quality", "ckpt": args.ckpt, "data": args.data, "clips": len(frames),
                      "maskgit_steps": args.steps, "temperature": temperature, "threads": args.threads,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "rows": results}))


if __name__ == "__main__":
    main()
