"""The GPU path, ready to measure (issue 18, item 5): speed, FLOP/s and memory of a model on one CUDA device.

On one device, with random weights (speed does not depend on them), one JSON line per measurement and a summary:
- `matmul_peak`: the best bf16 (or `--dtype`) square-matmul FLOP/s the device reaches, the denominator of every
  utilization figure below (measured, not a datasheet number);
- `rollout`: the torch engine's `imagine` in `--dtype` at each batch of `--batches` with `--steps` MaskGIT steps
  after `--context` frames: frames/s, achieved FLOP/s by genie_robot.models.flops's count of a cached generated
  frame, its share of the peak, and the peak memory (torch.cuda.max_memory_allocated);
- `onnx` (with `--onnx`): the same model exported (fp16 graphs on a GPU) and run by onnxruntime on the CUDA and
  the TensorRT provider in turn, each with its provider options (device id, TensorRT fp16, engine cache,
  min/opt/max shape profiles from the manifest and the batch limit: genie_robot.runtime.providers); a provider
  that does not start is reported, not timed on onnxruntime's CPU fallback;
- `train`: one dynamics training step (bf16 autocast, activation checkpointing, AdamW, the masked cross-entropy
  of Genie's loss) at `--train-batch` clips: tokens/s and MFU (the model's 3 x forward FLOPs, not counting
  the recomputation, over the peak).

    python scripts/bench_gpu.py [--model rt1_2.5b] [--batches 1,16] [--steps 25] [--onnx] [--train-batch 2]

Without a CUDA device it says so and exits 2, unless `--device cpu` (the CPU-side check: tests run it on
model=tiny). Record results in docs/BENCHMARKS.md with the device name it prints.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from genie_robot.bench import time_rollouts
from genie_robot.config import model_config
from genie_robot.inference.world_model import Limits, WorldModel
from genie_robot.models import ModelConfig, build
from genie_robot.models.dynamics import mask_tokens
from genie_robot.models.flops import dynamics_forward_flops, generated_frame_flops
from genie_robot.training.parallel import apply_activation_checkpointing

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def emit(record: dict) -> dict:
    print(json.dumps(record), flush=True)
    return record


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory since the last reset: the device's allocator on CUDA, the process's RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 20) -> float:
    """The best FLOP/s of an n x n x n matmul over `repeats` timed calls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def utilization(achieved: float, peak: float) -> float:
    """Achieved FLOP/s as a share of the measured peak."""
    if peak <= 0:
        raise ValueError(f"the peak FLOP/s must be positive, got {peak}")
    return achieved / peak


def random_engine(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, max_batch: int) -> WorldModel:
    torch.manual_seed(0)
    with device:  # initialized where they run: 2.5B parameters drawn on 2 CPU cores would take minutes
        parts = {c: build(cfg, c).to(dtype=dtype) for c in ("tokenizer", "lam", "dynamics")}
    return WorldModel(cfg, parts["tokenizer"], parts["dynamics"], lam=parts["lam"],
                      limits=Limits(max_batch=max_batch, max_horizon=8))


def rollout(cfg: ModelConfig, engine: WorldModel, device: torch.device, batches: list[int], args, peak: float,
            label: str = "torch") -> list[dict]:
    flops = generated_frame_flops(cfg, args.steps, args.context)["cached"]
    rows = []
    for b in batches:
        reset_memory(device)
        fps = time_rollouts(engine, cfg, [b], args.context, args.horizon, args.steps, None, args.repeats)[0][
            "cached_frames_per_s"]  # imagine returns numpy arrays: the device is synchronized
        rows.append(emit({"bench": "rollout", "engine": label, "batch": b, "frames_per_s": round(fps, 3),
                          "achieved_tflops": round(fps * flops / 1e12, 4),
                          "utilization": round(utilization(fps * flops, peak), 4),
                          "peak_memory_gb": round(peak_memory_gb(device), 3)}))
    return rows


def onnx_rollouts(cfg: ModelConfig, device: torch.device, batches: list[int], args, peak: float) -> list[dict]:
    """The model exported (fp16 on a GPU) and timed on each GPU provider with its options."""
    from genie_robot.runtime.engine import OnnxWorldModel
    from genie_robot.runtime.manifest import read_manifest
    from genie_robot.runtime.providers import CUDA, TENSORRT, provider_options
    from genie_robot_export.exporter import export_engine

    precision = torch.float16 if device.type == "cuda" else torch.float32
    limits = Limits(max_batch=max(batches), max_horizon=8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        export_engine(random_engine(cfg, torch.device("cpu"), precision, max(batches)), out, progress=lambda _: None)
        manifest = read_manifest(out)
        step = manifest["graphs"]["dynamics_step"]
        # CUDA first: TensorRT builds an engine per graph (minutes) and needs libnvinfer, which may be absent
        wanted = [CUDA, TENSORRT] if device.type == "cuda" else ["CPUExecutionProvider"]
        if device.type == "cuda":
            preload_cuda_libraries()
        for provider in wanted:
            options = provider_options(provider, "dynamics_step", step, cfg.frames, limits.max_batch, args.device_id,
                                       fp16=True, engine_cache=Path(tmp) / "trt")
            emit({"bench": "provider_options", "provider": provider, "graph": "dynamics_step", "options": options})
            try:
                engine = OnnxWorldModel(out, providers=[provider], limits=limits, device_id=args.device_id,
                                        trt_fp16=True, trt_cache=Path(tmp) / "trt")
            except Exception as e:  # a provider this onnxruntime build lacks: say so, measure the others
                rows.append(emit({"bench": "onnx", "provider": provider, "error": str(e)[:300]}))
                continue
            if engine.active != provider:  # onnxruntime falls back to the CPU when a provider fails to start
                rows.append(emit({"bench": "onnx", "provider": provider, "error": (
                    f"{provider} did not start (its libraries missing?); onnxruntime fell back to {engine.active}: "
                    f"not timed")}))
                del engine
                continue
            flops = generated_frame_flops(cfg, args.steps, args.context)["cached"]
            for b in batches:
                fps = time_rollouts(engine, cfg, [b], args.context, args.horizon, args.steps, None,
                                    args.repeats)[0]["cached_frames_per_s"]
                rows.append(emit({"bench": "onnx", "provider": engine.active, "batch": b,
                                  "frames_per_s": round(fps, 3), "utilization": round(utilization(fps * flops, peak),
                                                                                       4)}))
    return rows


def preload_cuda_libraries() -> None:
    """onnxruntime-gpu's CUDA provider loads CUDA, cuBLAS, cuFFT, cuRAND and cuDNN by name; where CUDA comes as
    nvidia-* Python packages (torch's, as on the lent machines), `preload_dlls` (onnxruntime >= 1.21) loads them
    from there. torch imported first loads most of them already; this covers the rest."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def train_step(cfg: ModelConfig, device: torch.device, batch: int, repeats: int, peak: float,
               checkpointing: bool = True) -> dict:
    """Tokens/s and MFU of the dynamics model's training step: bf16 autocast, masked cross-entropy, AdamW.

    With activation checkpointing (the trainer's `train.activation_checkpointing=true`), as rt1_2.5b needs:
    without it, 2 clips of 16 frames ran an H200 out of its 139.8 GiB (docs/BENCHMARKS.md)."""
    torch.manual_seed(0)
    with device:
        model = build(cfg, "dynamics")
    if checkpointing:
        apply_activation_checkpointing(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    t, s, v = cfg.frames, cfg.tokens_per_frame(), cfg.tokenizer.num_codes
    tokens = torch.randint(0, v, (batch, t, s), device=device)
    actions = torch.randint(0, cfg.lam.num_actions, (batch, t - 1), device=device)
    d = cfg.dynamics

    def step() -> None:
        inp, mask = mask_tokens(tokens, model.mask_id, d.mask_rate_min, d.mask_rate_max, masking=d.masking)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(inp, actions, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), tokens[mask])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_memory(device)
    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    per_step = (time.perf_counter() - start) / repeats
    flops = 3.0 * batch * dynamics_forward_flops(cfg, t)  # forward + backward (2x forward)
    return emit({"bench": "train", "stage": "dynamics", "batch": batch, "activation_checkpointing": checkpointing,
                 "tokens_per_s": round(batch * t * s / per_step),
                 "step_s": round(per_step, 4), "mfu": round(utilization(flops / per_step, peak), 4),
                 "peak_memory_gb": round(peak_memory_gb(device), 3)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rt1_2.5b")
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (the CPU-side check)")
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--batches", default="1,16", help="comma-separated; '' skips the rollouts")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=1, help="frames generated per imagine call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--onnx", action="store_true", help="also export and time onnxruntime's GPU providers")
    ap.add_argument("--train-batch", type=int, default=2, help="clips per training step; 0 skips it")
    ap.add_argument("--no-train-checkpointing", action="store_true",
                    help="train without activation checkpointing (rt1_2.5b at batch 2 does not fit an H200)")
    ap.add_argument("--compile", action="store_true", help="WorldModel.compile() the torch engine's step")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu", "error": "no CUDA device here: nothing measured (run on a GPU machine, "
                                                   "or --device cpu for the CPU-side check)"}))
        return 2
    device = torch.device(args.device, args.device_id) if args.device == "cuda" else torch.device(args.device)
    cfg = model_config(args.model)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]  # none: the training step alone
    dtype = DTYPES[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    peak = matmul_peak(device, dtype, args.matmul_n)
    emit({"bench": "matmul_peak", "device": name, "dtype": args.dtype, "n": args.matmul_n,
          "tflops": round(peak / 1e12, 3)})
    results = {}
    if batches:
        engine = random_engine(cfg, device, dtype, max(batches))
        if args.compile:
            engine.compile()
        results["rollout"] = rollout(cfg, engine, device, batches, args, peak,
                                     "torch-compiled" if args.compile else "torch")
        del engine
        if args.onnx:
            results["onnx"] = onnx_rollouts(cfg, device, batches, args, peak)
    if args.train_batch:
        results["train"] = train_step(cfg, device, args.train_batch, args.repeats, peak,
                                      not args.no_train_checkpointing)
    with torch.device("meta"):
        params = sum(p.numel() for c in ("tokenizer", "lam", "dynamics") for p in build(cfg, c).parameters())
    emit({"bench": "gpu", "model": cfg.name, "params": params, "device": name, "dtype": args.dtype,
          "maskgit_steps": args.steps, "context_frames": args.context, "matmul_peak_tflops": round(peak / 1e12, 3),
          **results, "torch": torch.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
