"""A local LeRobot dataset (parquet + mp4, codebase v2.x or v3.0) to an RLDS episode dataset.

LeRobot's documented layout (`meta/info.json` names the paths):

- v2.0 / v2.1: one parquet per episode, `data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet`,
  and one mp4 per episode and camera, `videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4`;
  episodes listed in `meta/episodes.jsonl`.
- v3.0: many episodes per file, `data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet` and
  `videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4`; `meta/episodes/*/*.parquet`
  says where each episode is (`data/chunk_index`, `videos/{key}/from_timestamp`, ...).

Cameras stored as `video` are decoded with PyAV (FFmpeg: AV1, H.264, ...); cameras stored as `image`
hold PNG/JPEG bytes in the parquet and are passed through. Each episode's frames are taken at its
`timestamp` column and resampled to the model's rate by the rule in `genie_robot.data.resample`;
the `action` column, when there is one, becomes the step's `action/action`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genie_robot.data.bag import bag_features, decode_image, episode_example
from genie_robot.data.layout import DatasetError
from genie_robot.data.resample import ConvertConfig, ResampleStats, resample

VERSIONS = ("v2.0", "v2.1", "v3.0")


@dataclass
class LeRobotConfig(ConvertConfig):
    """`genie-robot data-from-lerobot`: which dataset and camera."""

    root: str | None = None  # the dataset directory (holds meta/info.json)
    camera: str | None = None  # e.g. observation.images.top; None: the dataset's only camera
    action_key: str = "action"  # the parquet column that becomes action/action (if the dataset has it)

    def validate(self) -> None:
        if not self.root:
            raise ValueError("lerobot=<dataset directory> is required (the one holding meta/info.json)")
        super().validate()


@dataclass
class _Episode:
    index: int
    data_file: Path
    video_file: Path | None
    video_offset: float  # where the episode starts in its video file (v3.0 packs several)


class LeRobotDataset:
    """The parts of a LeRobot dataset the converter reads, checked with messages that name the file."""

    def __init__(self, root: str | Path, camera: str | None):
        self.root = Path(root).expanduser().resolve()
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root} is not a LeRobot dataset: {info_path} is missing")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path} is not valid JSON: {e}") from e
        self.version = str(self.info.get("codebase_version"))
        if self.version not in VERSIONS:
            raise DatasetError(f"{info_path}: codebase_version '{self.version}' is not one this reader knows "
                               f"({list(VERSIONS)})")
        for key in ("fps", "features", "data_path"):
            if key not in self.info:
                raise DatasetError(f"{info_path}: field '{key}' is missing")
        feats = self.info["features"]
        cameras = sorted(k for k, v in feats.items() if v.get("dtype") in ("video", "image"))
        if camera is None:
            if len(cameras) != 1:
                raise DatasetError(f"{self.root} has cameras {cameras}: choose one with camera=<key>")
            camera = cameras[0]
        if camera not in cameras:
            raise DatasetError(f"{info_path}: no camera '{camera}'; its cameras: {cameras or 'none'}")
        self.camera = camera
        self.is_video = feats[camera]["dtype"] == "video"
        if self.is_video and not self.info.get("video_path"):
            raise DatasetError(f"{info_path}: camera '{camera}' is a video but 'video_path' is missing")
        self.source_fps = float(self.info["fps"])
        self.info_path = info_path

    def episodes(self) -> list[_Episode]:
        return self._episodes_v3() if self.version == "v3.0" else self._episodes_v2()

    def _episodes_v2(self) -> list[_Episode]:
        chunk = int(self.info.get("chunks_size", 1000))
        listing = self.root / "meta" / "episodes.jsonl"
        if listing.is_file():
            indices = [int(json.loads(line)["episode_index"]) for line in listing.read_text().splitlines() if line]
        else:
            indices = list(range(int(self.info.get("total_episodes", 0))))
        out = []
        for ep in indices:
            fmt = {"episode_chunk": ep // chunk, "episode_index": ep, "video_key": self.camera}
            video = self.root / self.info["video_path"].format(**fmt) if self.is_video else None
            out.append(_Episode(ep, self.root / self.info["data_path"].format(**fmt), video, 0.0))
        return out

    def _episodes_v3(self) -> list[_Episode]:
        import pyarrow.parquet as pq

        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise DatasetError(f"{self.root}: a v3.0 dataset needs meta/episodes/chunk-*/file-*.parquet; none found")
        out = []
        for f in files:
            rows = pq.read_table(f).to_pylist()
            for r in rows:
                need = ["episode_index", "data/chunk_index", "data/file_index"]
                if self.is_video:
                    need += [f"videos/{self.camera}/{k}" for k in ("chunk_index", "file_index", "from_timestamp")]
                missing = [k for k in need if k not in r]
                if missing:
                    raise DatasetError(f"{f}: columns {missing} are missing")
                data = self.root / self.info["data_path"].format(
                    chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
                video, offset = None, 0.0
                if self.is_video:
                    video = self.root / self.info["video_path"].format(
                        video_key=self.camera, chunk_index=r[f"videos/{self.camera}/chunk_index"],
                        file_index=r[f"videos/{self.camera}/file_index"])
                    offset = float(r[f"videos/{self.camera}/from_timestamp"])
                out.append(_Episode(int(r["episode_index"]), data, video, offset))
        return sorted(out, key=lambda e: e.index)

    def table(self, ep: _Episode, columns: list[str]) -> dict[str, list]:
        """This episode's rows of `columns` (v3.0 files hold several episodes)."""
        import pyarrow.parquet as pq

        if not ep.data_file.is_file():
            raise DatasetError(f"{ep.data_file} (episode {ep.index}) does not exist")
        schema = pq.read_schema(ep.data_file)
        missing = [c for c in columns + ["episode_index"] if c not in schema.names]
        if missing:
            raise DatasetError(f"{ep.data_file}: columns {missing} are missing (has {schema.names})")
        t = pq.read_table(ep.data_file, columns=columns + ["episode_index"], filters=[("episode_index", "=", ep.index)])
        return t.to_pydict()


def decode_video(path: Path, times: np.ndarray, tolerance_s: float) -> list[np.ndarray]:
    """RGB frames of `path` nearest to each of `times` (seconds, increasing), each within `tolerance_s`."""
    import av

    if not path.is_file():
        raise DatasetError(f"video {path} does not exist")
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = max(float(times[0]) - 1.0, 0.0)
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            prev = None  # (time, frame)
            for frame in container.decode(stream):
                ft = float(frame.pts * stream.time_base)
                while len(out) < len(times) and ft >= times[len(out)]:
                    t = times[len(out)]
                    best = frame if prev is None or abs(ft - t) <= abs(prev[0] - t) else prev[1]
                    bt = ft if best is frame else prev[0]
                    if abs(bt - t) > tolerance_s:
                        raise DatasetError(f"video {path}: no frame within {tolerance_s:.4f} s of {t:.4f} s "
                                           f"(nearest at {bt:.4f} s)")
                    out.append(best.to_ndarray(format="rgb24"))
                if len(out) == len(times):
                    break
                prev = (ft, frame)
            while len(out) < len(times) and prev is not None and abs(prev[0] - times[len(out)]) <= tolerance_s:
                out.append(prev[1].to_ndarray(format="rgb24"))  # the last frames map to the video's last one
    except av.error.FFmpegError as e:
        raise DatasetError(f"video {path} cannot be decoded: {e}") from e
    if len(out) < len(times):
        raise DatasetError(f"video {path} ends before {times[len(out)]:.4f} s "
                           f"({len(out)} of {len(times)} frames found)")
    return out


def convert_lerobot(cfg: LeRobotConfig, progress: bool = True) -> tuple[Path, dict]:
    """Convert the dataset; returns the RLDS version directory and a summary of what was kept and dropped."""
    cfg.validate()
    ds = LeRobotDataset(cfg.root, cfg.camera)
    episodes = ds.episodes()
    if not episodes:
        raise DatasetError(f"{ds.root} lists no episodes")
    feats = ds.info["features"]
    action_dim = None
    if cfg.action_key and cfg.action_key in feats:
        action_dim = int(np.prod(feats[cfg.action_key].get("shape", [1])))
    columns = ["timestamp"] + ([cfg.action_key] if action_dim else []) + ([] if ds.is_video else [ds.camera])
    stats = ResampleStats()
    plans = []
    for ep in episodes:
        rows = ds.table(ep, ["timestamp"])
        stamps = np.asarray(rows["timestamp"], np.float64)
        if len(stamps) > 1 and np.any(np.diff(stamps) <= 0):
            bad = int(np.argmax(np.diff(stamps) <= 0)) + 1
            raise DatasetError(f"{ep.data_file}: episode {ep.index}'s timestamp does not increase at frame {bad} "
                               f"({stamps[bad]:.6f} s after {stamps[bad - 1]:.6f} s)")
        runs, s = resample(stamps, cfg.fps, cfg.tolerance, cfg.min_frames)
        stats.add(s)
        plans += [(ep, run) for run in runs]
    if not plans:
        raise DatasetError(f"{ds.root}: no episode holds a run of min_frames={cfg.min_frames} frames at {cfg.fps} fps "
                           f"(the longest is {stats.longest_run})")
    tol_s = 0.5 / ds.source_fps

    def frames_of(ep: _Episode, run: np.ndarray, rows: dict) -> list:
        if ds.is_video:
            times = ep.video_offset + np.asarray(rows["timestamp"], np.float64)[run]
            return decode_video(ep.video_file, times, tol_s)
        cells = [rows[ds.camera][int(i)] for i in run]
        return [decode_image(_Compressed(c), "CompressedImage", f"{ep.data_file} episode {ep.index}")[0]
                for c in cells]

    first_ep, first_run = plans[0]
    first = frames_of(first_ep, first_run[:1], ds.table(first_ep, columns))[0]
    if isinstance(first, np.ndarray):
        (h, w), encoding = first.shape[:2], "png"
    else:
        _, (h, w), encoding = decode_image(_Compressed({"bytes": first}), "CompressedImage", str(first_ep.data_file))

    def examples() -> Iterator[dict]:
        for ep, run in plans:
            rows = ds.table(ep, columns)
            frames = frames_of(ep, run, rows)
            for i, f in enumerate(frames):
                hw = f.shape[:2] if isinstance(f, np.ndarray) else None
                if hw is not None and tuple(hw) != (h, w):
                    raise DatasetError(f"{ep.video_file or ep.data_file}: episode {ep.index} frame {int(run[i])} is "
                                       f"{hw[0]}x{hw[1]}, the first was {h}x{w}")
            acts = None
            if action_dim:
                a = np.asarray([np.asarray(rows[cfg.action_key][int(i)], np.float32).reshape(-1) for i in run])
                acts = {"action": a}
            stamps = np.asarray(rows["timestamp"], np.float64)[run]
            yield episode_example(frames, stamps, acts, str(ep.video_file or ep.data_file),
                                  f"lerobot:{ds.camera}:episode_{ep.index}")

    from genie_robot.data.rlds_writer import write_rlds

    summary = {"lerobot": str(ds.root), "codebase_version": ds.version, "camera": ds.camera,
               "source_fps": ds.source_fps, "fps": cfg.fps, "image_shape": [h, w, 3], "image_encoding": encoding,
               "action_keys": ["action"] if action_dim else [], "source_episodes": len(episodes), **stats.summary()}
    out = write_rlds(
        cfg.out, cfg.name, cfg.version, lambda: bag_features((h, w, 3), encoding, {"action": action_dim} if action_dim
                                                             else {}),
        examples(), description=f"genie-robot data-from-lerobot: '{ds.camera}' of {ds.root} at {cfg.fps} fps",
        num_shards=min(cfg.num_shards, len(plans)), total=len(plans), progress=progress,
        progress_desc="converting episodes", overwrite=cfg.overwrite,
        extra_files={"genie_robot_conversion.json": json.dumps(summary, indent=2)})
    return out, summary


class _Compressed:
    """An `image` cell ({'bytes': ..., 'path': ...}) in the shape of a CompressedImage message."""

    def __init__(self, cell: dict):
        if not isinstance(cell, dict) or not cell.get("bytes"):
            raise DatasetError(f"an image cell without bytes: {str(cell)[:80]}")
        self.data, self.format = cell["bytes"], "image column"
