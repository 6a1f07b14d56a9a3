"""ROS 2 bags into the RLDS pipeline: the simulator recorded to real MCAP and sqlite3 bags (rosbags),
converted, and read back by ClipDataset; resampling; and every bad input named, with nothing left in out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from genie_robot.data.bag import BagConfig, convert_bags
from genie_robot.data.layout import DatasetError
from genie_robot.data.reader import ClipDataset, DataConfig, read_clips
from genie_robot.data.resample import resample
from genie_robot.sim.record import ACTION_TOPIC, COMPRESSED_TOPIC, IMAGE_TOPIC, RecordConfig, record_sim_bag
from genie_robot.sim.writer import SimConfig, simulate_episodes

EPISODES, STEPS = 3, 10


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def sim_bag(request, tmp_path_factory) -> Path:
    """Three simulated episodes recorded with both camera topics and the command topic, stamps jittered."""
    out = tmp_path_factory.mktemp(f"bag_{request.param}") / "run1"
    sim = SimConfig(episodes=EPISODES, min_steps=STEPS, max_steps=STEPS, seed=5, workers=2)
    path, summary = record_sim_bag(sim, RecordConfig(bag=str(out), storage=request.param, jitter_s=0.02),
                                   progress=False)
    assert summary["frames"] == EPISODES * STEPS
    assert list(path.glob("*.mcap" if request.param == "mcap" else "*.db3"))
    return path


@pytest.fixture(scope="module")
def originals() -> list[dict]:
    """The same episodes straight from the simulator: raw frames and commanded motion."""
    return [ep for _, ep in simulate_episodes(5, list(range(EPISODES)), STEPS, STEPS, None, workers=2)]


def read_back(path: Path, action_keys: list[str]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    cfg = DataConfig(path=str(path), clip_frames=STEPS, resolution=[256, 320], batch_size=4, shuffle=False,
                     val_fraction=0.0, drop_remainder=False, action_keys=action_keys)
    out = []
    for b in ClipDataset(cfg, "train"):
        acts = b["actions"][action_keys[0]].numpy() if action_keys else [None] * len(b["frames"])
        out += list(zip(b["frames"].numpy(), acts, strict=True))
    return out


def match(frames: np.ndarray, originals: list[dict]) -> dict:
    """The original episode these frames came from (TFDS shuffles episodes when it writes)."""
    first = frames[0].transpose(1, 2, 0).astype(np.int16)
    return min(originals, key=lambda ep: np.abs(ep["steps"][0]["observation"]["image"] - first).mean())


@pytest.mark.parametrize("topic", [IMAGE_TOPIC, COMPRESSED_TOPIC])
def test_round_trip_equals_the_simulator_frames(sim_bag, originals, topic, tmp_path):
    path, summary = convert_bags(BagConfig(bag=[str(sim_bag)], image_topic=topic, action_topic=ACTION_TOPIC,
                                           out=str(tmp_path), min_frames=STEPS), progress=False)
    assert summary["episodes"] == EPISODES and summary["frames_kept"] == EPISODES * STEPS
    assert summary["splits_at_time_gaps"] == EPISODES - 1  # the recorder leaves 5 s between episodes
    assert summary["image_encoding"] == ("png" if topic == IMAGE_TOPIC else "jpeg")
    conversion = json.loads((path / "genie_robot_conversion.json").read_text())
    assert conversion["bags"] == [str(sim_bag)] and conversion["image_topic"] == topic
    clips = read_back(path, ["linear"])
    assert len(clips) == EPISODES
    seen = set()
    for frames, linear in clips:
        ep = match(frames, originals)
        seen.add(id(ep))
        want = np.stack([s["observation"]["image"] for s in ep["steps"]]).transpose(0, 3, 1, 2)
        if topic == IMAGE_TOPIC:
            np.testing.assert_array_equal(frames, want)  # raw images: exactly
        else:
            err = np.abs(frames.astype(np.float64) - want)
            psnr = 10 * np.log10(255**2 / np.mean(err**2))
            assert psnr > 32 and err.mean() < 3, (psnr, err.mean())  # JPEG at quality 90
        # Step t's action is the command that leads to frame t+1: the simulator's world_vector (summed over
        # the stride of 1 by the reader); the last step's command is the terminate step's zero motion.
        wv = np.stack([s["action"]["world_vector"] for s in ep["steps"]])
        np.testing.assert_allclose(linear, wv, atol=1e-6)
    assert len(seen) == EPISODES


def test_a_second_bag_is_its_own_episodes_and_video_only_needs_no_actions(sim_bag, tmp_path):
    second = tmp_path / "run2"
    shutil.copytree(sim_bag, second)
    for f in second.iterdir():  # rosbag2 names its storage files after the directory
        if f.name.startswith("run1"):
            f.rename(second / f.name.replace("run1", "run2"))
    meta = second / "metadata.yaml"
    meta.write_text(meta.read_text().replace("run1", "run2"))
    path, summary = convert_bags(BagConfig(bag=[str(sim_bag), str(second)], image_topic=COMPRESSED_TOPIC,
                                           out=str(tmp_path / "out"), min_frames=STEPS), progress=False)
    assert summary["episodes"] == 2 * EPISODES and summary["action_keys"] == []
    assert len(read_back(path, [])) == 2 * EPISODES
    frames, actions = read_clips(DataConfig(path=str(path), clip_frames=STEPS, resolution=[64, 80], val_fraction=0,
                                            action_keys=[]), "train", 2, [])
    assert frames.shape == (2, STEPS, 3, 64, 80) and actions.shape == (2, STEPS, 0)
    with pytest.raises(DatasetError, match=r"action keys \['world_vector'\] not in steps/action \(has \[\]\)"):
        ClipDataset(DataConfig(path=str(path), action_keys=["world_vector"]), "train")


def test_resampling_keeps_one_frame_per_period_and_splits_at_gaps():
    rng = np.random.default_rng(0)
    camera = np.arange(0, 10, 1 / 30) + rng.uniform(-0.004, 0.004, 300)  # 30 Hz with jitter
    runs, stats = resample(camera, fps=3, min_frames=8)
    assert [len(r) for r in runs] == [31] and stats.skipped_between_slots == 300 - 31
    off = np.abs(camera[runs[0]] - (camera[0] + np.arange(31) / 3))  # from each slot: the nearest frame, no drift
    assert np.all(off[:-1] <= 1 / 60 + 0.008) and off[-1] <= 0.5 / 3  # the last slot lies past the last frame
    gap = np.concatenate([np.arange(0, 4, 1 / 3), 30 + np.arange(0, 2, 1 / 3)])
    runs, stats = resample(gap, fps=3, min_frames=8)
    assert [len(r) for r in runs] == [12] and stats.gaps == 1
    assert stats.short_episodes == 1 and stats.frames_in_short_episodes == 6
    with pytest.raises(ValueError, match=r"tolerance must be in \(0, 0.5\]"):
        resample(gap, fps=3, tolerance=0.7)


# --- bad input ----------------------------------------------------------------------------------
def write_bag(path: Path, frames: list[tuple[float, str, np.ndarray]], storage: str = "mcap") -> Path:
    """A bag of raw Image messages: (stamp seconds, encoding, pixels) each."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    image, header, time = (ts.types[k] for k in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                   "builtin_interfaces/msg/Time"))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conn = writer.add_connection("/cam/image_raw", image.__msgtype__, typestore=ts)
        for i, (t, enc, px) in enumerate(frames):
            ns = int(round(t * 1e9))
            h, w = px.shape[:2]
            msg = image(header=header(stamp=time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam"), height=h,
                        width=w, encoding=enc, is_bigendian=0, step=px.reshape(h, -1).shape[1] * px.itemsize,
                        data=px.reshape(-1).view(np.uint8))
            writer.write(conn, 10**18 + i, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


def rgb(n: int, h: int = 24, w: int = 30, start: float = 100.0) -> list[tuple[float, str, np.ndarray]]:
    rng = np.random.default_rng(n)
    return [(start + i / 3, "rgb8", rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for i in range(n)]


def convert(bag: Path, out: Path, **kw):
    return convert_bags(BagConfig(bag=[str(bag)], image_topic=kw.pop("topic", "/cam/image_raw"), out=str(out),
                                  **kw), progress=False)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))


def test_bad_bags_are_named_and_leave_nothing_in_out(sim_bag, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"bag .*/nope does not exist"):
        convert(tmp_path / "nope", out)
    with pytest.raises(DatasetError, match=r"is not a ROS 2 bag directory \(no metadata.yaml"):
        convert(tmp_path, out)
    with pytest.raises(DatasetError, match=r"no topic '/cam/depth'; its image topics: "
                                           r"\['/head_camera/image_raw', '/head_camera/image_raw/compressed'\]"):
        convert(sim_bag, out, topic="/cam/depth")
    with pytest.raises(DatasetError, match=r"topic '/arm/command' carries geometry_msgs/msg/TwistStamped; an image "
                                           r"topic must be one of"):
        convert(sim_bag, out, topic=ACTION_TOPIC)
    with pytest.raises(DatasetError, match=r"no topic '/joy'; its topics: .*/arm/command"):
        convert(sim_bag, out, topic=IMAGE_TOPIC, action_topic="/joy")

    depth = write_bag(tmp_path / "depth", [(100 + i / 3, "16UC1", np.zeros((8, 10), np.uint16)) for i in range(10)])
    with pytest.raises(DatasetError, match=r"topic '/cam/image_raw', message index 0: unsupported image encoding "
                                           r"'16UC1'; supported: \['8UC1', '8UC3', 'bgr8'"):
        convert(depth, out)

    frames = rgb(12)
    frames[7] = (frames[5][0] - 0.01, *frames[7][1:])
    backwards = write_bag(tmp_path / "backwards", frames)
    with pytest.raises(DatasetError, match=r"stamps on '/cam/image_raw' go backwards at message index 7 "
                                           r"\(101.656667 s after 102.000000 s\)"):
        convert(backwards, out)

    short = write_bag(tmp_path / "short", rgb(5), storage="sqlite3")
    with pytest.raises(DatasetError, match=r"holds no run of at least min_frames=8 frames at 3.0 fps \(the longest "
                                           r"is 5\); a bag must be at least one clip long"):
        convert(short, out, min_frames=8)

    # Found while writing: the staging directory goes, nothing appears in out.
    frames = rgb(12)
    frames[9] = (frames[9][0], "rgb8", np.zeros((12, 30, 3), np.uint8))
    resized = write_bag(tmp_path / "resized", frames)
    with pytest.raises(DatasetError, match=r"message index 9: a 12x30 png image where the first kept frame was "
                                           r"24x30 png"):
        convert(resized, out)
    assert_nothing_written(out)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_truncated_bag_is_named(tmp_path, storage):
    bag = write_bag(tmp_path / "cut", rgb(30, 48, 60), storage=storage)
    data = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(DatasetError, match=rf"bag {bag}.* (is truncated or corrupt|cannot be opened \(truncated)"):
        convert(bag, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_an_existing_dataset_is_kept_unless_overwrite(tmp_path):
    bag = write_bag(tmp_path / "ok", rgb(10))
    path, _ = convert(bag, tmp_path / "out")
    with pytest.raises(FileExistsError, match=r"robot_episodes/1.0.0 already exists; pass overwrite=true"):
        convert(bag, tmp_path / "out")
    before = sorted(p.name for p in path.iterdir())
    convert(bag, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == before
    assert [p.name for p in path.parent.iterdir()] == ["1.0.0"]  # no staging directories left beside it


def test_cli_records_and_converts(tmp_path, capsys):
    from genie_robot.cli import main

    assert main(["data-from-bag", "bag=x", "image_topic=/c"]) == 2
    assert "data-from-bag needs out=..." in capsys.readouterr().err
    bag = write_bag(tmp_path / "cli", rgb(10))
    assert main(["data-from-bag", f"bag={bag}", "image_topic=/cam/image_raw", f"out={tmp_path / 'o'}",
                 "convert.min_frames=4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-2])
    assert summary["episodes"] == 1 and summary["frames_kept"] == 10
    assert lines[-1].endswith("data.action_keys=[]")
    assert main(["data-from-bag", f"bag={bag}", "image_topic=/nope", f"out={tmp_path / 'o2'}"]) == 1
    assert "no topic '/nope'; its image topics: ['/cam/image_raw']" in capsys.readouterr().err
