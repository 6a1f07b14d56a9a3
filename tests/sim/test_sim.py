"""The simulator: deterministic per seed, scenes randomized per episode."""

from __future__ import annotations

import numpy as np

from genie_robot.sim.writer import simulate_episodes


def simulate_episode(seed: int, index: int, min_steps: int, max_steps: int) -> dict:
    # Rendering runs in a child process: this test process has TensorFlow loaded.
    return next(simulate_episodes(seed, [index], min_steps, max_steps))[1]


def _actions(ep):
    return np.stack([s["action"]["world_vector"] for s in ep["steps"]])


def test_same_seed_same_episode_bytes():
    a, b = simulate_episode(7, 3, 5, 5), simulate_episode(7, 3, 5, 5)
    assert [s["observation"]["image"] for s in a["steps"]] == [s["observation"]["image"] for s in b["steps"]]
    assert np.array_equal(_actions(a), _actions(b))


def test_episodes_differ_in_scene_and_motion():
    a, b = simulate_episode(7, 0, 5, 5), simulate_episode(7, 1, 5, 5)
    assert a["steps"][0]["observation"]["image"] != b["steps"][0]["observation"]["image"]
    assert not np.array_equal(_actions(a), _actions(b))


def test_writer_output_independent_of_worker_count(sim_dataset):
    """The pool (2 workers) wrote episode i exactly as a direct call simulates it."""
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(str(sim_dataset)).as_dataset(split="train", shuffle_files=False)
    written = {}
    for ep in ds:
        steps = list(ep["steps"].as_numpy_iterator())
        written[len(steps), steps[0]["observation"]["natural_language_instruction"]] = np.stack(
            [s["action"]["world_vector"] for s in steps])
    direct = simulate_episode(0, 0, 6, 9)
    key = (len(direct["steps"]), direct["steps"][0]["observation"]["natural_language_instruction"].encode())
    assert key in written and np.array_equal(written[key], _actions(direct))


def test_rerun_with_same_settings_keeps_the_dataset(sim_dataset):
    from genie_robot.sim.writer import SimConfig, write_sim_dataset

    shards = sorted(sim_dataset.glob("*.tfrecord-*"))
    before = [p.stat().st_mtime_ns for p in shards]
    cfg = SimConfig(out=str(sim_dataset.parent.parent), episodes=4, min_steps=6, max_steps=9, workers=1, num_shards=2)
    assert write_sim_dataset(cfg, progress=False) == sim_dataset
    assert [p.stat().st_mtime_ns for p in shards] == before


def test_never_replaces_a_dataset_it_did_not_write(spec_dataset, tmp_path):
    import shutil

    import pytest

    from genie_robot.sim.writer import SimConfig, write_sim_dataset

    shutil.copytree(spec_dataset, tmp_path / "fractal20220817_data" / "0.1.0")
    with pytest.raises(FileExistsError, match="did not write; pass sim.overwrite=true"):
        write_sim_dataset(SimConfig(out=str(tmp_path), episodes=2, num_shards=1), progress=False)
    assert len(list((tmp_path / "fractal20220817_data" / "0.1.0").glob("*.tfrecord-*"))) == 3


def test_the_workshop_scene_keeps_objects_and_changes_table_and_light():
    """`sim.scene=workshop`: data the reference never saw, for fine-tuning (docs/DATA.md)."""
    import pytest

    from genie_robot.sim.scene import sample_scene
    from genie_robot.sim.writer import SimConfig

    default = sample_scene(np.random.default_rng([3, 1]))
    workshop = sample_scene(np.random.default_rng([3, 1]), scene="workshop")
    assert workshop.objects == default.objects and workshop.camera_jitter == default.camera_jitter
    assert workshop.table_texture == "wood" and default.table_texture != "wood"
    assert workshop.light_rgb != (1.0, 1.0, 1.0) and workshop.ambient < 0.15 <= default.ambient
    ep = next(simulate_episodes(3, [1], 4, 4, None, scene="workshop"))[1]
    frame = ep["steps"][0]["observation"]["image"]
    assert frame.shape == (256, 320, 3) and frame.dtype == np.uint8  # jpeg_quality=None: raw frames
    red, blue = frame[..., 0].astype(float).mean(), frame[..., 2].astype(float).mean()
    assert red > blue + 10  # the warm light on brown wood
    with pytest.raises(ValueError, match=r"sim.scene must be one of \['default', 'workshop'\], got 'moon'"):
        SimConfig(scene="moon").validate()
