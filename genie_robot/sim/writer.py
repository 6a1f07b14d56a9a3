"""Write simulated episodes as a `fractal20220817_data` 0.1.0 TFDS dataset on disk.

TFDS's own builder machinery does the writing (`genie_robot.data.rlds_writer`, shared with the
bag and LeRobot converters), so the result is the real on-disk format by construction and the
RT-1 reader loads it unchanged. Episodes are simulated in a pool of worker processes and fed
to the builder in index order, so the output depends on the seed, not on the pool size.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class SimConfig:
    out: str = "outputs/sim"  # the TFDS data_dir; the dataset lands in <out>/fractal20220817_data/0.1.0
    episodes: int = 256
    min_steps: int = 26
    max_steps: int = 34
    seed: int = 0
    workers: int = 2
    num_shards: int = 4
    jpeg_quality: int = 95
    scene: str = "default"  # genie_robot.sim.scene.SCENES: the training set's, or a variant it never saw
    overwrite: bool = False

    def validate(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"sim.episodes must be >= 1, got {self.episodes}")
        if not 2 <= self.min_steps <= self.max_steps:
            raise ValueError(
                f"sim.min_steps/max_steps must satisfy 2 <= min_steps <= max_steps, got "
                f"{self.min_steps}/{self.max_steps}")
        if self.workers < 1:
            raise ValueError(f"sim.workers must be >= 1, got {self.workers}")
        if not 1 <= self.num_shards <= self.episodes:
            raise ValueError(f"sim.num_shards must be in [1, episodes={self.episodes}], got {self.num_shards}")
        from genie_robot.sim.scene import SCENES

        if self.scene not in SCENES:
            raise ValueError(f"sim.scene must be one of {list(SCENES)}, got '{self.scene}'")


def _simulate(args: tuple[int, int, int, int, int | None, str]) -> tuple[int, dict]:
    from genie_robot.sim.episode import simulate_episode

    seed, index, min_steps, max_steps, quality, scene = args
    return index, simulate_episode(seed, index, min_steps, max_steps, quality, scene)


def simulate_episodes(
    seed: int, indices: list[int], min_steps: int, max_steps: int, jpeg_quality: int | None = 95, workers: int = 1,
    scene: str = "default",
) -> Iterator[tuple[int, dict]]:
    """Simulate episodes in index order in `workers` spawned processes.

    Always in child processes, even for one worker: Mesa's EGL renderer segfaults in a
    process that has loaded TensorFlow, and the writer's process has (TFDS writes).
    `jpeg_quality=None` keeps the rendered frames raw (uint8 arrays) instead of JPEG bytes.
    """
    jobs = [(seed, i, min_steps, max_steps, jpeg_quality, scene) for i in indices]
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_simulate, jobs)


def _sim_code_digest() -> str:
    digest = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def write_sim_dataset(cfg: SimConfig, progress: bool = True) -> Path:
    """Generate the dataset; returns the version directory (what `data.path` points at)."""
    cfg.validate()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from genie_robot.sim.scene import menagerie_robot_xml

    menagerie_robot_xml()  # fail here, naming the fix, rather than inside every worker
    from genie_robot.data.rlds_writer import write_rlds
    from genie_robot.data.rt1_spec import DATASET_NAME, DATASET_VERSION, rt1_features

    data_dir = Path(cfg.out).resolve()
    version_dir = data_dir / DATASET_NAME / DATASET_VERSION
    stamp = version_dir / "genie_robot_sim.json"
    # Settings plus a digest of the simulator's code: either changing means new data.
    wanted = {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers", "overwrite")}
    wanted["sim_code"] = _sim_code_digest()
    if version_dir.exists():
        old = json.loads(stamp.read_text()) if stamp.exists() else None
        if old == wanted and not cfg.overwrite:
            print(f"sim dataset up to date at {version_dir} (same settings); pass sim.overwrite=true to redo")
            return version_dir
        if old is None and not cfg.overwrite:
            raise FileExistsError(
                f"{version_dir} holds a dataset genie-robot sim did not write; pass sim.overwrite=true to "
                "replace it or choose another sim.out")
        # Ours, from other settings or older simulator code: derived data, so regenerate.
        # write_rlds swaps the new one in only once it is complete.
        print(f"replacing {version_dir}: written with {old}, now {wanted}")
    write_rlds(
        data_dir, DATASET_NAME, DATASET_VERSION, rt1_features,
        (example for _, example in simulate_episodes(
            cfg.seed, list(range(cfg.episodes)), cfg.min_steps, cfg.max_steps, cfg.jpeg_quality, cfg.workers,
            cfg.scene)),
        description=(
            "genie-robot simulated RT-1: MuJoCo Google Robot over a randomized tabletop "
            f"(scene '{cfg.scene}'), scripted reach/push/random commands at 3 Hz, head camera 256x320."),
        num_shards=cfg.num_shards, total=cfg.episodes, progress=progress, progress_desc="simulating episodes",
        overwrite=True, extra_files={stamp.name: json.dumps(wanted, indent=2)})
    return version_dir
