"""Every bad input names the path or field and what was expected."""

from __future__ import annotations

import json
import shutil

import pytest

from genie_robot.data.info import describe
from genie_robot.data.layout import DatasetError
from genie_robot.data.reader import ClipDataset, DataConfig


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*fractal20220817_data/0.1.0"):
        ClipDataset(DataConfig(path=str(tmp_path / "nope")))


def test_directory_that_is_not_tfds(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a TFDS dataset directory: dataset_info.json is missing"):
        describe(str(tmp_path))


def test_missing_camera_key_lists_the_keys_there(spec_dataset):
    with pytest.raises(DatasetError, match=r"no camera image 'steps/observation/wrist_image'.*\['image'\]"):
        ClipDataset(DataConfig(path=str(spec_dataset), image_key="wrist_image"))


def test_resolution_the_data_cannot_serve(spec_dataset):
    with pytest.raises(DatasetError, match=r"512x320 is larger than the camera images .*256x320"):
        ClipDataset(DataConfig(path=str(spec_dataset), resolution=[512, 320]))
    with pytest.raises(DatasetError, match=r"\[H, W\]"):
        ClipDataset(DataConfig(path=str(spec_dataset), resolution=[64]))


def test_unknown_action_key(spec_dataset):
    with pytest.raises(DatasetError, match=r"action keys \['joint_torques'\] not in steps/action"):
        ClipDataset(DataConfig(path=str(spec_dataset), action_keys=["joint_torques"]))


def test_missing_shard_is_named(spec_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(spec_dataset, copy)
    victim = sorted(copy.glob("*.tfrecord-*"))[1]
    victim.unlink()
    with pytest.raises(DatasetError, match=f"shard {victim}.*does not exist"):
        ClipDataset(DataConfig(path=str(copy)))


def test_corrupt_dataset_info(spec_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(spec_dataset, copy)
    (copy / "dataset_info.json").write_text("{ not json")
    with pytest.raises(DatasetError, match=r"dataset_info.json is not valid JSON"):
        describe(str(copy))
    info = json.loads((spec_dataset / "dataset_info.json").read_text())
    del info["splits"]
    (copy / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"dataset_info.json: field 'splits' is missing"):
        describe(str(copy))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_truncated_or_corrupt_shard_is_named(spec_dataset, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(spec_dataset, copy)
    victim = sorted(copy.glob("*.tfrecord-*"))[2]
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])  # flip every bit
    victim.write_bytes(bytes(data))
    cfg = DataConfig(path=str(copy), clip_frames=2, batch_size=1, val_fraction=0.0, shuffle=False)
    with pytest.raises(DatasetError, match=f"corrupt or truncated shard {victim}"):
        list(ClipDataset(cfg))
    with pytest.raises(DatasetError, match=f"corrupt or truncated shard {victim}"):
        describe(str(copy), progress=False)
