"""Evaluation: metric formulas on known cases, and `genie-robot eval` on a trained tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genie_robot.metrics import frechet_distance, kmeans, knn_accuracy, nmi, psnr, ssim


def test_nmi_is_one_for_a_relabelling_and_near_zero_for_independent_labels():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 8, 5000)
    assert nmi(a, (a + 3) % 8) == pytest.approx(1.0)
    assert nmi(a, rng.integers(0, 8, 5000)) < 0.01


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (200000, 2))
    y = rng.normal(1.0, 2.0, (200000, 2))
    # Per dimension: (mu1 - mu2)^2 + s1^2 + s2^2 - 2 s1 s2 = 1 + 1 + 4 - 4 = 2.
    assert frechet_distance(x, y) == pytest.approx(4.0, abs=0.05)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_kmeans_and_knn_recover_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10]])
    labels = np.repeat(np.arange(3), 50)
    x = centers[labels] + rng.normal(0, 0.5, (150, 2))
    assert nmi(kmeans(x, 3), labels) == pytest.approx(1.0)
    acc, majority = knn_accuracy(x, labels)
    assert acc == 1.0 and majority < 0.5


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    rng = np.random.default_rng(0)
    a = np.broadcast_to(np.linspace(0, 255, 40, dtype=np.uint8), (2, 3, 32, 40)).copy()  # a smooth ramp
    noisy = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0) and ssim(noisy, a) < 0.9


def test_psnr_of_identical_and_off_by_one_images():
    a = np.full((2, 3, 4, 4), 100, np.uint8)
    assert psnr(a, a).min() >= 99
    assert psnr(a + 1, a) == pytest.approx(np.full(2, 20 * np.log10(255)), abs=1e-6)


def test_grid_distances_find_two_actions_that_draw_the_same_rollout():
    from genie_robot.evaluation.report import _grid_summary, grid_distances

    start = np.full((3, 4, 5), 100, np.uint8)
    last = np.stack([start, start + 10, start + 12, start - 40]).astype(np.uint8)  # 0 holds; 1 and 2 nearly agree
    motion, pairwise = grid_distances(start, last)
    assert motion.tolist() == [0, 10, 12, 40] and pairwise[1, 2] == 2 and pairwise[3, 0] == 40
    g = _grid_summary(np.stack([motion, motion + 2]), np.stack([pairwise, pairwise]), horizon=6)
    assert g["motion"] == [1, 11, 13, 41] and g["closest_pair"] == [1, 2, 2.0]
    assert g["nearest_other"] == [[1, 10.0], [2, 2.0], [1, 2.0], [0, 40.0]] and g["contexts"] == 2


def test_eval_command_writes_json_markdown_and_pictures(trained, sim_dataset, tmp_path):
    from genie_robot.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "model=tiny", f"ckpt={trained / 'train/tiny'}", f"data.path={sim_dataset}",
                 "data.val_fraction=0.25", "eval.t=2", "eval.steps=2", "eval.max_clips=3", f"eval.out={out}",
                 "eval.grid_contexts=1", "eval.grid_horizon=2", "eval.plan_episodes=2", "eval.plan_horizon=2",
                 "eval.plan_samples=4", "eval.plan_iterations=2", "eval.plan_steps=2"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert 0 < result["tokenizer_ssim"] <= 1
    for key in ("tokenizer_psnr", "delta_psnr_t2", "psnr_t2_inferred_actions", "psnr_t2_random_actions",
                "nmi_latent_vs_world_vector_clusters", "knn_accuracy_latent_from_real_action"):
        assert np.isfinite(result[key]), key
    assert result["fvd"] is None and "no I3D network given" in result["fvd_note"]
    assert sum(result["latent_action_histogram"]) == result["clips"] * (result["frames_per_clip"] - 1)
    md = (out / "eval.md").read_text()
    assert "ΔtPSNR at t=2" in md and "Does the model respond to its latent actions?" in md
    # The action-response figures (teacher-forced, no sampling), each with its spread over clips.
    for key in ("copy_previous_frame_token_accuracy", "dynamics_next_frame_token_accuracy_inferred",
                "dynamics_next_frame_token_accuracy_random"):
        assert 0 <= result[key] <= 1 and result[key + "_std"] >= 0, key
    for key in ("copy_previous_frame_psnr", "lam_psnr_inferred", "lam_psnr_random", "lam_psnr_best_of_all_actions",
                "dynamics_next_frame_psnr_inferred", "dynamics_next_frame_psnr_random", "psnr_t2_copy_first_frame"):
        assert np.isfinite(result[key]) and np.isfinite(result[key + "_std"]), key
    # the likelihood of the true code where the frame changes, in nats (a uniform guess: log vocab)
    for key in ("dynamics_changed_token_nll_inferred", "dynamics_changed_token_nll_random"):
        assert 0 < result[key] < 3 * np.log(result["vocab"]) and result[key + "_std"] >= 0, key
    assert f"uniform {np.log(result['vocab']):.2f}" in md
    # the best of all actions, per transition, is at least as good as the inferred one
    assert result["lam_psnr_best_of_all_actions"] >= result["lam_psnr_inferred"] - 1e-3
    per_action = result["world_vector_per_latent_action"]
    assert [row["action"] for row in per_action] == list(range(8))
    assert sum(row["count"] for row in per_action) == sum(result["latent_action_histogram"])
    assert all(len(row["mean_world_vector"]) == 3 for row in per_action if row["count"])
    # each code's spread of world_vector and how much the real frames change across its transitions
    assert all(len(row["world_vector_std"]) == 3 and min(row["world_vector_std"]) >= 0 and row["mean_pixel_change"] >= 0
               for row in per_action if row["count"])
    assert (out / "actions_context0.png").is_file() and (out / "actions_context0.gif").is_file()
    g = result["grid_rollouts"]  # how far apart the grid's rows end, for 1 context, 2 frames
    assert g["contexts"] == 1 and g["horizon"] == 2 and len(g["motion"]) == len(g["nearest_other"]) == 8
    a, b, dist = g["closest_pair"]
    assert a < b and dist == min(d for _, d in g["nearest_other"]) and "Closest pair: actions" in md
    assert result["plan_episodes"] == min(2, result["clips"]) and result["plan_budget"] == 8
    assert result["plan_maskgit_steps"] == 2 and "8 candidates, 2 MaskGIT steps |" in (out / "eval.md").read_text()
    assert (out / "plan.gif").is_file()
    assert np.isfinite(result["plan_cem_cost_mean"]) and np.isfinite(result["plan_random_cost_mean"])
    # The paired comparison the planning acceptance is judged on: per-clip costs, their mean gap and its SE.
    gains = np.array(result["plan_random_costs"]) - np.array(result["plan_cem_costs"])
    assert len(gains) == result["plan_episodes"] and np.isclose(gains.mean(), result["plan_cem_gain_mean"])
    if len(gains) > 1:
        assert np.isclose(result["plan_cem_gain_se"], gains.std(ddof=1) / np.sqrt(len(gains)))
    assert "random search's cost minus CEM's, paired by clip" in md
    # Each planning episode is logged as it finishes; eval.resume=true reuses what matches (a cut eval continues),
    # anything else plans afresh. A logged cost changed by hand shows which happened.
    log = [json.loads(x) for x in (out / "planning.jsonl").read_text().splitlines()]
    assert [r["cem"] for r in log] == result["plan_cem_costs"] and log[0]["key"]["plan_samples"] == 4
    log[0]["cem"] = 123.0
    (out / "planning.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    again = ["eval", "model=tiny", f"ckpt={trained / 'train/tiny'}", f"data.path={sim_dataset}",
             "data.val_fraction=0.25", "eval.t=2", "eval.steps=2", "eval.max_clips=3", f"eval.out={out}",
             "eval.grid_contexts=1", "eval.grid_horizon=2", "eval.plan_episodes=2", "eval.plan_horizon=2",
             "eval.plan_samples=4", "eval.plan_iterations=2", "eval.plan_steps=2"]
    assert main([*again, "eval.resume=true"]) == 0
    resumed = json.loads((out / "eval.json").read_text())
    assert resumed["plan_cem_costs"] == [123.0, *result["plan_cem_costs"][1:]]
    assert main([*again, "eval.resume=true", "eval.plan_iterations=1"]) == 0  # other settings: planned afresh
    assert 123.0 not in json.loads((out / "eval.json").read_text())["plan_cem_costs"]
    assert main(again) == 0
    assert json.loads((out / "eval.json").read_text())["plan_cem_costs"] == result["plan_cem_costs"]
    # t must leave a frame to compare with.
    assert main(["eval", "model=tiny", f"ckpt={trained / 'train/tiny'}", f"data.path={sim_dataset}",
                 "data.val_fraction=0.25", "eval.t=4", f"eval.out={out}"]) == 1
