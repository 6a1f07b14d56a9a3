"""`genie-robot bench <target>`: throughput measurements that end with one JSON line.

Benchmarks, not tests: numbers are recorded in docs/BENCHMARKS.md with the machine and
the command; ratios are taken within one run.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import replace

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
