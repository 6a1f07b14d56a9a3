"""The simulator writes RT-1's on-disk format field for field (spec: docs/RT1_FORMAT.md)."""

from __future__ import annotations

import json

import numpy as np
from conftest import spec_features


def _leaves(features) -> dict:
    """Flatten a FeaturesDict into {path: (class, shape, dtype, encoding)}."""
    import tensorflow_datasets as tfds

    out = {}

    def walk(f, prefix):
        if isinstance(f, tfds.features.FeaturesDict):
            for k, v in f.items():
                walk(v, f"{prefix}{k}/")
        elif isinstance(f, tfds.features.Dataset):
            walk(f.feature, prefix)
        else:
            enc = getattr(f, "encoding_format", None)
            out[prefix.rstrip("/")] = (type(f).__name__, tuple(f.shape), np.dtype(f.np_dtype).name, enc)

    walk(features, "")
    return out


def test_sim_features_match_rt1_spec_field_by_field(sim_dataset):
    import tensorflow_datasets as tfds

    written = _leaves(tfds.builder_from_directory(str(sim_dataset)).info.features)
    spec = _leaves(spec_features())
    assert sorted(written) == sorted(spec)
    for key in spec:
        assert written[key] == spec[key], key
    assert written["steps/observation/image"] == ("Image", (256, 320, 3), "uint8", "jpeg")


def test_sim_directory_layout_is_tfds(sim_dataset):
    assert sim_dataset.parts[-2:] == ("fractal20220817_data", "0.1.0")
    info = json.loads((sim_dataset / "dataset_info.json").read_text())
    assert info["name"] == "fractal20220817_data" and info["version"] == "0.1.0"
    shards = sorted(p.name for p in sim_dataset.glob("*.tfrecord-*"))
    assert shards == [f"fractal20220817_data-train.tfrecord-{i:05d}-of-00002" for i in range(2)]
    assert (sim_dataset / "features.json").is_file()


def test_sim_episode_contents(sim_dataset):
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(str(sim_dataset)).as_dataset(split="train", shuffle_files=False)
    n = 0
    for ep in ds:
        steps = list(ep["steps"].as_numpy_iterator())
        n += 1
        assert 6 <= len(steps) <= 9
        assert steps[0]["is_first"] and not any(s["is_first"] for s in steps[1:])
        assert steps[-1]["is_last"] and not any(s["is_last"] for s in steps[:-1])
        assert list(steps[-1]["action"]["terminate_episode"]) == [1, 0, 0]
        instr = steps[0]["observation"]["natural_language_instruction"].decode()
        assert instr and all(s["observation"]["natural_language_instruction"].decode() == instr for s in steps)
        wv = np.stack([s["action"]["world_vector"] for s in steps[:-1]])
        assert np.abs(wv).max() <= 0.05 + 1e-6 and np.abs(wv).sum() > 0
        # The arm really moves the way it was commanded: displacement follows the command.
        pos = np.stack([s["observation"]["base_pose_tool_reached"][:3] for s in steps])
        moved = np.diff(pos, axis=0)
        assert np.corrcoef(wv.ravel(), moved.ravel())[0, 1] > 0.5
        frames = np.stack([s["observation"]["image"] for s in steps]).astype(np.float32)
        assert np.abs(np.diff(frames, axis=0)).mean() > 0.5  # frames change as the arm moves
    assert n == 4
