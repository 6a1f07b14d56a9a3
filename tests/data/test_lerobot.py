"""LeRobot datasets into the RLDS pipeline: datasets in LeRobot's documented layouts (v2.1 with H.264, v3.0
with AV1 and several episodes per file, and images stored in the parquet), made here with pyarrow and PyAV,
converted, read back by ClipDataset at the right frames, and trained on for a few steps."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg

from genie_robot.data.layout import DatasetError
from genie_robot.data.lerobot import LeRobotConfig, convert_lerobot
from genie_robot.data.reader import ClipDataset, DataConfig

FPS, N, H, W = 10, 40, 64, 80  # two episodes of 4 s at 10 fps
CAMERA = "observation.images.top"


def frame(ep: int, i: int) -> np.ndarray:
    """Smooth content (a gradient and a moving square) that video codecs keep close."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([60 + x * 1.5, 60 + y * 1.5, np.full_like(x, 90 + 60 * ep)], -1).astype(np.float64)
    cx, cy = 10 + i * 1.4, 20 + 10 * np.sin(i / 6)
    img[(abs(x - cx) < 8) & (abs(y - cy) < 8)] = (230, 200, 40)
    return img.astype(np.uint8)


def action(ep: int, i: int) -> list[float]:
    return [float(ep), i / 10]


def write_video(path: Path, frames: list[np.ndarray], codec: str) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


def rows(ep: int, start_index: int) -> dict:
    return {"timestamp": [np.float32(i / FPS) for i in range(N)], "frame_index": list(range(N)),
            "episode_index": [ep] * N, "index": list(range(start_index, start_index + N)), "task_index": [0] * N,
            "action": [action(ep, i) for i in range(N)]}


def write_parquet(path: Path, table: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path)


def info(version: str, camera_dtype: str, data_path: str, video_path: str | None) -> dict:
    cam = {"dtype": camera_dtype, "shape": [H, W, 3], "names": ["height", "width", "channels"]}
    return {"codebase_version": version, "robot_type": "so100", "fps": FPS, "total_episodes": 2,
            "total_frames": 2 * N, "chunks_size": 1000, "splits": {"train": "0:2"}, "data_path": data_path,
            "video_path": video_path,
            "features": {CAMERA: cam, "action": {"dtype": "float32", "shape": [2]},
                         "observation.state": {"dtype": "float32", "shape": [2]},
                         "timestamp": {"dtype": "float32", "shape": [1]}}}


def make_v21(root: Path, images_in_parquet: bool = False) -> Path:
    (root / "meta").mkdir(parents=True)
    video_path = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    video_path = None if images_in_parquet else video_path
    meta = info("v2.1", "image" if images_in_parquet else "video",
                "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet", video_path)
    (root / "meta/info.json").write_text(json.dumps(meta))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": ep, "tasks": ["push the block"], "length": N}) + "\n" for ep in (0, 1)))
    for ep in (0, 1):
        table = rows(ep, ep * N)
        if images_in_parquet:
            from PIL import Image

            cells = []
            for i in range(N):
                buf = io.BytesIO()
                Image.fromarray(frame(ep, i)).save(buf, format="PNG")
                cells.append({"bytes": buf.getvalue(), "path": f"frame_{i:06d}.png"})
            table[CAMERA] = cells
        else:
            write_video(root / video_path.format(episode_chunk=0, video_key=CAMERA, episode_index=ep),
                        [frame(ep, i) for i in range(N)], "libx264")
        write_parquet(root / f"data/chunk-000/episode_{ep:06d}.parquet", table)
    return root


def make_v30(root: Path) -> Path:
    """Both episodes in one parquet and one AV1 video (LeRobot's default codec), episode 1 starting at 4 s."""
    (root / "meta").mkdir(parents=True)
    meta = info("v3.0", "video", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
    (root / "meta/info.json").write_text(json.dumps(meta))
    write_video(root / f"videos/{CAMERA}/chunk-000/file-000.mp4",
                [frame(ep, i) for ep in (0, 1) for i in range(N)], "libsvtav1")
    table = {k: rows(0, 0)[k] + rows(1, N)[k] for k in rows(0, 0)}
    write_parquet(root / "data/chunk-000/file-000.parquet", table)
    write_parquet(root / "meta/episodes/chunk-000/file-000.parquet", {
        "episode_index": [0, 1], "length": [N, N], "tasks": [["push the block"]] * 2,
        "data/chunk_index": [0, 0], "data/file_index": [0, 0], "dataset_from_index": [0, N],
        "dataset_to_index": [N, 2 * N], f"videos/{CAMERA}/chunk_index": [0, 0],
        f"videos/{CAMERA}/file_index": [0, 0], f"videos/{CAMERA}/from_timestamp": [0.0, N / FPS],
        f"videos/{CAMERA}/to_timestamp": [N / FPS, 2 * N / FPS]})
    return root


KINDS = {"v2.1-h264": make_v21, "v3.0-av1": make_v30, "v2.1-images": lambda r: make_v21(r, True)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_converts_at_the_model_rate_and_reads_back(kind, tmp_path):
    root = KINDS[kind](tmp_path / "ds")
    path, summary = convert_lerobot(LeRobotConfig(root=str(root), out=str(tmp_path / "out")), progress=False)
    assert summary["codebase_version"] == kind[:4] and summary["camera"] == CAMERA
    assert summary["episodes"] == 2 and summary["action_keys"] == ["action"]
    assert summary["image_encoding"] == "png"
    # 10 fps to 3 fps: the frame nearest each 1/3 s slot, 0 0.3 0.7 1.0 ... 3.7 3.9 s (13 of 40; the last slot,
    # 4.0 s, lies past the last frame but within half a period of it).
    picked = [min(round(k * FPS / 3), N - 1) for k in range(13)]
    assert summary["frames_kept"] == 2 * len(picked)
    cfg = DataConfig(path=str(path), clip_frames=13, resolution=[H, W], batch_size=2, shuffle=False,
                     val_fraction=0.0, drop_remainder=False, action_keys=["action"])
    batch = next(iter(ClipDataset(cfg, "train")))
    for frames, acts in zip(batch["frames"].numpy(), batch["actions"]["action"].numpy(), strict=True):
        ep = int(acts[0][0])
        want = np.stack([frame(ep, i) for i in picked]).transpose(0, 3, 1, 2).astype(np.float64)
        err = np.abs(frames - want)
        if kind.endswith("images"):
            assert err.max() == 0  # PNG bytes passed through
        else:
            assert err.mean() < 4, err.mean()  # lossy video: close, and the right frames (neighbours differ more)
            wrong = np.stack([frame(ep, min(i + 1, N - 2)) for i in picked]).transpose(0, 3, 1, 2)
            assert np.abs(frames - wrong).mean() > 2 * err.mean()
        np.testing.assert_allclose(acts, [action(ep, i) for i in picked], atol=1e-6)


def test_trains_a_few_steps_on_a_converted_dataset(tmp_path):
    from genie_robot.training.trainer import Trainer

    path, _ = convert_lerobot(LeRobotConfig(root=str(make_v30(tmp_path / "ds")), out=str(tmp_path / "out")),
                              progress=False)
    result = Trainer(make_cfg(path, tmp_path / "run", "stage=tokenizer", "train.steps=3", "train.eval_every=3",
                              "train.ckpt_every=3", "data.action_keys=[action]")).fit()
    assert result["step"] == 3 and result["clips"] > 0 and 5 < result["psnr"] < 60
    assert (tmp_path / "run/train/tiny/tokenizer/checkpoints/step_0000003/model.safetensors").is_file()


def test_bad_lerobot_datasets_are_named(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"is not a LeRobot dataset: .*meta/info.json is missing"):
        convert_lerobot(LeRobotConfig(root=str(tmp_path), out=str(out)), progress=False)
    root = make_v21(tmp_path / "ds")
    with pytest.raises(DatasetError, match=r"no camera 'observation.images.wrist'; its cameras: "
                                           r"\['observation.images.top'\]"):
        convert_lerobot(LeRobotConfig(root=str(root), camera="observation.images.wrist", out=str(out)), progress=False)
    with pytest.raises(DatasetError, match=r"holds a run of min_frames=20 frames.*the longest is 13"):
        convert_lerobot(LeRobotConfig(root=str(root), out=str(out), min_frames=20), progress=False)
    (root / "videos/chunk-000" / CAMERA / "episode_000001.mp4").write_bytes(b"not a video")
    with pytest.raises(DatasetError, match=r"episode_000001.mp4 cannot be decoded"):
        convert_lerobot(LeRobotConfig(root=str(root), out=str(out)), progress=False)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
    meta = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**meta, "codebase_version": "v1.6"}))
    with pytest.raises(DatasetError, match=r"codebase_version 'v1.6' is not one this reader knows"):
        convert_lerobot(LeRobotConfig(root=str(root), out=str(out)), progress=False)
