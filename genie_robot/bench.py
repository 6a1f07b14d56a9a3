"""`genie-robot bench <target>`: throughput measurements that end with one JSON line.

Benchmarks, not tests: numbers are recorded in docs/BENCHMARKS.md with the machine and
the command; ratios are taken within one run.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from genie_robot.data.reader import ClipDataset, DataConfig
from genie_robot.sim.writer import SimConfig, write_sim_dataset


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def bench_data(cfg: DataConfig, warmup_batches: int, batches: int) -> dict:
    """Loader frames/s (decoded, resized, batched clips) for one reader process."""
    ds = ClipDataset(replace(cfg, repeat=True), "train")
    it = iter(ds)
    for _ in range(warmup_batches):
        next(it)
    frames = 0
    start = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        frames += b["frames"].shape[0] * b["frames"].shape[1]
    elapsed = time.perf_counter() - start
    return {
        "bench": "data", "frames_per_s": round(frames / elapsed, 1), "frames": frames,
        "seconds": round(elapsed, 3), "resolution": list(cfg.resolution), "clip_frames": cfg.clip_frames,
        "batch_size": cfg.batch_size, "path": cfg.path, **_machine(),
    }


def bench_sim(cfg: SimConfig, episodes: int) -> dict:
    """Simulated frames/s end to end: physics, rendering, JPEG and TFDS writing."""
    with tempfile.TemporaryDirectory() as tmp:
        sim = replace(cfg, out=tmp, episodes=episodes, num_shards=1, overwrite=True)
        start = time.perf_counter()
        path = write_sim_dataset(sim, progress=False)
        elapsed = time.perf_counter() - start
        from genie_robot.data.info import describe

        steps = describe(str(path), progress=False)["steps"]
    return {
        "bench": "sim", "frames_per_s": round(steps / elapsed, 1), "frames": steps, "episodes": episodes,
        "workers": cfg.workers, "seconds": round(elapsed, 2), **_machine(),
    }


def bench_rollout(model_cfg, batches: list[int], context_frames: int, horizon: int, steps: int,
                  temperature: float, repeats: int, ckpt: str | None = None, engine: str = "torch",
                  uncached: bool = True, providers: list[str] | None = None, threads: int = 0,
                  compile: bool = False) -> dict:
    """Imagined frames/s with and without the KV cache, same engine, context and random draws.

    Random weights unless `ckpt` names a trained run: the cost of a rollout does not depend on
    the weights. Timings cover the whole `imagine` call (encode, LAM, sampling, decode).
    `engine=onnx` exports the same weights to a temporary directory and times the onnxruntime
    engine (cached only: it has no uncached path); compare engines in separate processes
    (scripts/bench_engines.py), since in one process they compete for the cores. `compile` times the torch
    engine with `WorldModel.compile()` (the warm-up call at each batch size compiles; it is not timed).
    """
    import torch

    from genie_robot.inference.world_model import Limits, WorldModel
    from genie_robot.models import build

    if engine not in ("torch", "onnx"):
        raise ValueError(f"bench.rollout.engine must be torch or onnx, got '{engine}'")
    torch.manual_seed(0)
    limits = Limits(max_batch=max(batches), max_horizon=horizon)
    if ckpt:
        world = WorldModel.load(ckpt, limits=limits)
        model_cfg = world.cfg
    else:
        parts = {c: build(model_cfg, c) for c in ("tokenizer", "lam", "dynamics")}
        world = WorldModel(model_cfg, parts["tokenizer"], parts["dynamics"], lam=parts["lam"], limits=limits)
    if compile and engine != "torch":
        raise ValueError("bench.rollout.compile is for the torch engine (onnxruntime optimizes its own graphs)")
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "onnx":
            from genie_robot.runtime import DEFAULT_PROVIDERS, OnnxWorldModel
            from genie_robot_export.exporter import export_engine

            export_engine(world, Path(tmp) / "export", progress=lambda _: None)
            world = OnnxWorldModel(Path(tmp) / "export", providers=providers or DEFAULT_PROVIDERS, limits=limits,
                                   threads=threads)
            uncached = False
        if compile:
            world.compile()
            uncached = False  # the compiled step is the cached one
        rows = time_rollouts(world, model_cfg, batches, context_frames, horizon, steps, temperature, repeats,
                              (True, False) if uncached else (True,))
    threads = world.providers[0] if engine == "onnx" else torch.get_num_threads()
    return {"bench": "rollout", "engine": engine, "model": model_cfg.name, "weights": ckpt or "random",
            "context_frames": context_frames, "window": model_cfg.frames, "horizon": horizon, "maskgit_steps": steps,
            "compiled": compile, "rows": rows, ("provider" if engine == "onnx" else "torch_threads"): threads,
            **_machine()}


def time_rollouts(world, model_cfg, batches, context_frames, horizon, steps, temperature, repeats,
                  modes=(True,)) -> list:
    """Imagined frames/s of whole `imagine` calls per batch (every candidate's frames counted; `modes`: cached
    and/or uncached), from one random context of `context_frames`, after a warm-up call that is not timed (it
    compiles, for a compiled engine). One JSON line per batch; `temperature` None is the engine's own."""
    import numpy as np

    rng = np.random.default_rng(0)
    h, w = model_cfg.resolution
    context = rng.integers(0, 256, (context_frames, 3, h, w), dtype=np.uint8)
    rows = []
    for b in batches:
        actions = rng.integers(0, model_cfg.lam.num_actions, (b, horizon))
        row = {"batch": b}
        for cached in modes:
            # Warm-up, the timed calls' shapes (a compiled engine compiles per batch size and MaskGIT step count).
            world.imagine(context, actions, steps=steps, temperature=temperature, seed=0, cached=cached)
            start = time.perf_counter()
            for r in range(repeats):
                world.imagine(context, actions, steps=steps, temperature=temperature, seed=r, cached=cached)
            elapsed = time.perf_counter() - start
            key = "cached_frames_per_s" if cached else "uncached_frames_per_s"
            row[key] = round(b * horizon * repeats / elapsed, 3)
        if len(modes) == 2:
            row["cached_speedup"] = round(row["cached_frames_per_s"] / row["uncached_frames_per_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows
