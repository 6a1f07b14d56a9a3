"""Camera frames at whatever rate and jitter a robot recorded them, to episodes at the model's rate.

The rule, shared by the bag and LeRobot converters (docs/DATA.md):

- Frames are placed by their own time stamps (a ROS header stamp, a LeRobot `timestamp`), which
  must increase; an exact repeat of the previous stamp is a duplicate and is dropped.
- An episode starts at its first frame and takes one frame per period (1/fps): for each slot
  time, the frame whose stamp is nearest, if it lies within `tolerance` periods of the slot.
  Frames between the chosen ones are skipped (a 30 Hz camera converted at 3 Hz keeps every tenth).
  The slots stay on the episode's own grid, so jitter does not accumulate.
- A slot with no frame that near is a gap: the episode ends at the slot before, and the next
  episode starts at the first frame after the gap. A time gap in a recording therefore always
  splits it; a converter also starts new episodes at each file (bag) or source episode.
- Episodes shorter than `min_frames` (one training clip) are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ResampleStats:
    """What became of every frame, for the converter's summary."""

    frames_read: int = 0
    duplicate_stamps: int = 0
    frames_kept: int = 0
    skipped_between_slots: int = 0
    gaps: int = 0  # splits at a time gap
    episodes: int = 0
    short_episodes: int = 0
    frames_in_short_episodes: int = 0
    longest_run: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: ResampleStats) -> None:
        for name in ("frames_read", "duplicate_stamps", "frames_kept", "skipped_between_slots", "gaps",
                     "episodes", "short_episodes", "frames_in_short_episodes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.longest_run = max(self.longest_run, other.longest_run)
        self.notes += other.notes

    def summary(self) -> dict:
        return {
            "frames_read": self.frames_read,
            "frames_kept": self.frames_kept,
            "episodes": self.episodes,
            "dropped": {
                "duplicate_stamps": self.duplicate_stamps,
                "between_slots (source faster than fps)": self.skipped_between_slots,
                "in_episodes_shorter_than_min_frames": self.frames_in_short_episodes,
            },
            "short_episodes_dropped": self.short_episodes,
            "splits_at_time_gaps": self.gaps,
        }


@dataclass
class ConvertConfig:
    """What every converter shares (`convert.*` in configs/config.yaml): where, under what name, at what rate."""

    out: str | None = None  # TFDS data_dir; the dataset lands in <out>/<name>/<version>
    name: str = "robot_episodes"
    version: str = "1.0.0"
    fps: float = 3.0  # the model's frame rate (sim-rt1 and RT-1: 3 Hz)
    tolerance: float = 0.5  # periods a frame may sit from its slot before the slot counts as a gap
    min_frames: int = 8  # shorter episodes are dropped (one training clip of sim-rt1)
    num_shards: int = 1
    overwrite: bool = False

    def validate(self) -> None:
        if not self.out:
            raise ValueError("out=<directory> is required: the dataset is written to <out>/<name>/<version>")
        check_fps(self.fps, self.tolerance)
        if self.min_frames < 2:
            raise ValueError(f"min_frames must be >= 2, got {self.min_frames}")


def check_fps(fps: float, tolerance: float) -> None:
    if not fps > 0:
        raise ValueError(f"fps must be > 0 (frames per second of the converted episodes), got {fps}")
    if not 0 < tolerance <= 0.5:
        raise ValueError(f"tolerance must be in (0, 0.5] periods (how far a frame may sit from its slot), "
                         f"got {tolerance}")


def resample(stamps: np.ndarray, fps: float, tolerance: float = 0.5, min_frames: int = 1
             ) -> tuple[list[np.ndarray], ResampleStats]:
    """Indices into `stamps` (seconds, strictly increasing) of each kept episode's frames."""
    check_fps(fps, tolerance)
    stamps = np.asarray(stamps, np.float64)
    if len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
        raise ValueError("resample needs strictly increasing stamps (drop duplicates, refuse backward steps first)")
    stats = ResampleStats(frames_read=len(stamps))
    period, tol = 1.0 / fps, tolerance / fps
    runs: list[list[int]] = []
    start = 0
    n = len(stamps)
    while start < n:
        run = [start]
        k = 1
        while True:
            slot = stamps[start] + k * period
            if slot > stamps[-1] + tol:
                break
            i = int(np.searchsorted(stamps, slot))
            best = min((j for j in (i - 1, i) if 0 <= j < n), key=lambda j: abs(stamps[j] - slot))
            if abs(stamps[best] - slot) > tol or best <= run[-1]:
                stats.gaps += int(stamps[-1] > slot + tol)  # frames follow: a gap, not the end
                break
            run.append(best)
            k += 1
        runs.append(run)
        # The next episode starts at the first frame after this one's last slot.
        start = int(np.searchsorted(stamps, stamps[start] + (k - 1) * period + tol, side="right"))
        start = max(start, run[-1] + 1)
    kept = []
    for run in runs:
        stats.longest_run = max(stats.longest_run, len(run))
        if len(run) < min_frames:
            stats.short_episodes += 1
            stats.frames_in_short_episodes += len(run)
        else:
            kept.append(np.asarray(run, np.int64))
            stats.frames_kept += len(run)
    stats.episodes = len(kept)
    stats.skipped_between_slots = stats.frames_read - stats.frames_kept - stats.frames_in_short_episodes
    return kept, stats
