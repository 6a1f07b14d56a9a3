"""`genie-robot bench agent` on the tiny model: Genie's latent-action agent against the oracle, on held-out tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genie_robot.control.agent import AgentConfig, Experts, adapters, hindsight_batch


def _experts(n=3, t=5, a=8) -> Experts:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, t, 3, 8, 10), dtype=np.uint8)
    actions = rng.normal(size=(n, t - 1, 7)).astype(np.float32)
    latent = rng.integers(1, a, (n, t - 1))
    return Experts(frames, actions, latent, np.zeros((n, t), np.int64))


def test_hindsight_goals_label_the_first_transition_and_zero_steps_ahead_means_hold():
    ex = _experts()
    x, y = hindsight_batch(ex, np.random.default_rng(1), 512, horizon=2, latent=True)
    assert x.shape == (512, 9, 8, 10) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    # Channels 0-2: the frame; 3-5: the goal; 6-8: (goal - frame) / 2. Same frame and goal <=> k = 0 <=> hold.
    same = np.abs(x[:, :3] - x[:, 3:6]).max(axis=(1, 2, 3)) == 0
    assert same.any() and (~same).any()
    assert (y[same] == 0).all() and (y[~same] >= 1).all()  # the hold label (0 here) vs the LAM's ids (1..7)
    np.testing.assert_allclose(x[:, 6:], (x[:, 3:6] - x[:, :3]) / 2, atol=1e-6)
    _, real = hindsight_batch(ex, np.random.default_rng(1), 512, horizon=2, latent=False)
    assert real.shape == (512, 7) and (real[same] == 0).all()


def test_adapters_fit_from_the_first_n_episodes_and_from_all():
    ex = _experts(n=4)
    maps = adapters(ex, [1, 2, 10], num_actions=8)
    assert sorted(maps) == [1, 2, 4]  # 10 capped at the 4 episodes there are
    assert maps[1].info["fitted_transitions"] == 4 and maps[4].info["fitted_transitions"] == 16
    k = int(ex.latent[0, 0])
    np.testing.assert_allclose(maps[1].weights[k], ex.actions[0][ex.latent[0] == k].mean(0), rtol=1e-5)


def test_agent_config_rejects_what_cannot_train():
    with pytest.raises(ValueError, match="labelled must list episode counts >= 1"):
        AgentConfig(labelled=[0, 5]).validate()
    with pytest.raises(ValueError, match="clip_frames must be >= 2"):
        AgentConfig(clip_frames=1).validate()


def test_bench_agent_trains_both_policies_and_runs_the_curve_on_held_out_tasks(adapted, sim_dataset, tmp_path,
                                                                              capsys):
    from genie_robot.cli import main

    run, _ = adapted
    out = tmp_path / "agent"
    assert main(["bench", "agent", f"bench.agent.ckpt={run}", f"bench.agent.data={sim_dataset}",
                 "bench.agent.clip_frames=6", "bench.agent.val_fraction=0.25", "bench.agent.steps=20",
                 "bench.agent.batch_size=8", "bench.agent.width=8", "bench.agent.labelled=[1,2]",
                 f"bench.agent.out={out}", "bench.control.episodes=2", "bench.control.max_steps=2",
                 "bench.control.goal_steps=2", "bench.control.min_distance=0.05", "bench.control.gifs=1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "agent" and result["expert_episodes"] == {"train": 3, "val": 1,
                                                                          "transitions": 15}
    names = {"oracle", "latent_1", "latent_2", "latent_3", "random", "nothing"}
    assert set(result["policies"]) == names
    assert all(p["episodes"] == 2 and p["failed_episodes"] == 0 for p in result["policies"].values())
    assert [c["labelled_episodes"] for c in result["curve"]] == [1, 2, 3]
    assert [c["adapter_transitions"] for c in result["curve"]] == [5, 10, 15]
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {x["policy"] for x in lines} == names
    latent = [x for x in lines if x["policy"] == "latent_1"]
    assert all(a is not None for x in latent for a in x["latent_actions"])  # acted through the adapter
    assert 0 <= result["offline"]["latent"]["accuracy"] <= 1 and result["offline"]["oracle"]["mse_world_vector"] >= 0
    with Image.open(out / "curve.png") as img:
        assert img.size == (720, 440)
    assert json.loads((out / "agent.json").read_text())["curve"] == result["curve"]
    assert list((out / "tb").glob("events.out.tfevents.*"))
