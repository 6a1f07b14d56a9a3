"""Latent-to-robot action adapter: the fits recover known mappings; the CLI saves it beside the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from genie_robot.planning.adapter import Adapter, fit, held_out_error


def synthetic(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Sequences of latent ids whose real action is table[id] + 0.5 * table[previous id] + noise."""
    rng = np.random.default_rng(seed)
    table = np.random.default_rng(0).normal(size=(8, 7))
    ids, acts = [], []
    for _ in range(n):
        s = rng.integers(0, 8, 7)
        prev = np.concatenate([np.zeros((1, 7)), table[s[:-1]]])
        acts.append(table[s] + 0.5 * prev + 0.01 * rng.normal(size=(7, 7)))
        ids.append(s)
    return ids, acts, table


def test_mean_adapter_maps_each_id_to_its_mean_action():
    ids = [np.array([0, 1, 1, 2])]
    acts = [np.array([[1.0] * 7, [2.0] * 7, [4.0] * 7, [5.0] * 7])]
    a = fit("mean", ids, acts, num_actions=4)
    np.testing.assert_allclose(a.predict([0, 1, 2, 3]), [[1] * 7, [3] * 7, [5] * 7, [3] * 7])  # 3: unseen -> mean


def test_ridge_adapter_uses_the_previous_id_and_beats_the_mean_on_held_out_data(tmp_path):
    train_ids, train_acts, _ = synthetic(300, 1)
    val_ids, val_acts, _ = synthetic(50, 2)
    train_mean = np.concatenate(train_acts).mean(0)
    mean = held_out_error(fit("mean", train_ids, train_acts, 8), val_ids, val_acts, train_mean)
    ridge_adapter = fit("ridge", train_ids, train_acts, 8, ridge=0.1)
    ridge = held_out_error(ridge_adapter, val_ids, val_acts, train_mean)
    assert ridge["mse_world_vector"] < 0.05 < mean["mse_world_vector"] < mean["baseline_mse_world_vector"]
    loaded = Adapter.load(ridge_adapter.save(tmp_path / "adapter.json"))
    np.testing.assert_allclose(loaded.predict([3, 1, 4]), ridge_adapter.predict([3, 1, 4]))
    with pytest.raises(ValueError, match=r"latent ids must be in \[0, 8\)"):
        loaded.predict([8])


def test_a_bad_adapter_file_is_named(tmp_path):
    (tmp_path / "adapter.json").write_text(json.dumps({"format": 1, "method": "mean", "num_actions": 8,
                                                       "weights": [[0.0] * 7] * 3}))
    with pytest.raises(ValueError, match=r"weights have shape \(3, 7\), expected \(8, 7\)"):
        Adapter.load(tmp_path / "adapter.json")
    (tmp_path / "adapter.json").write_text("{")
    with pytest.raises(ValueError, match="is not a genie-robot adapter"):
        Adapter.load(tmp_path / "adapter.json")


def test_fit_adapter_cli_saves_it_and_plans_then_carry_robot_actions(trained, sim_dataset, tmp_path):
    from genie_robot.cli import main
    from genie_robot.inference.world_model import WorldModel
    from genie_robot.planning.cem import plan

    run = tmp_path / "run"
    shutil.copytree(trained / "train/tiny", run)
    assert main(["fit-adapter", "model=tiny", f"ckpt={run}", f"data.path={sim_dataset}", "data.val_fraction=0.25",
                 "adapter.method=ridge"]) == 0
    doc = json.loads((run / "adapter.json").read_text())
    assert doc["method"] == "ridge" and doc["held_out"]["held_out_transitions"] > 0
    assert np.isfinite(doc["held_out"]["mse_world_vector"])
    engine = WorldModel.load(run)
    assert engine.adapter is not None
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, *engine.cfg.resolution), dtype=np.uint8)
    result = plan(engine, frames, frames[-1], horizon=3, num_samples=4, iterations=1, steps=2)
    assert result.robot_actions.shape == (3, 7) and result.robot_actions.dtype == np.float32
    # eval reports the adapter beside the model against predicting its training mean: on the same
    # held-out clips the same figures fit-adapter recorded
    out = tmp_path / "eval"
    assert main(["eval", "model=tiny", f"ckpt={run}", f"data.path={sim_dataset}", "data.val_fraction=0.25",
                 "eval.t=2", "eval.steps=2", f"eval.out={out}", "eval.grid_contexts=1", "eval.grid_horizon=2",
                 "eval.plan_episodes=0"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["adapter_method"] == "ridge"
    for key in ("mse_world_vector", "baseline_mse_world_vector", "held_out_transitions"):
        assert result[f"adapter_{key}"] == pytest.approx(doc["held_out"][key]), key
    assert "latent-to-robot adapter (ridge), world_vector MSE" in (out / "eval.md").read_text()
