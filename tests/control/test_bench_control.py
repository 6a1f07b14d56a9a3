"""`genie-robot bench control` on the tiny model with an adapter: every policy on the same held-out tasks."""

from __future__ import annotations

import json

import pytest

from genie_robot.control.bench import wilson


def test_wilson_interval_matches_its_formula_at_the_edges_and_the_middle():
    assert wilson(25, 50) == pytest.approx((0.3664, 0.6336), abs=1e-4)
    lo, hi = wilson(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0713, abs=1e-4)
    assert wilson(50, 50)[1] == pytest.approx(1.0) and wilson(0, 0) == (0.0, 1.0)


def args_of(out, run) -> list[str]:
    return ["bench", "control", f"bench.control.ckpt={run}", "bench.control.episodes=2",
            "bench.control.max_steps=2", "bench.control.goal_steps=2", "bench.control.min_distance=0.05",
            "bench.control.num_samples=4", "bench.control.iterations=1", "bench.control.gifs=1",
            f"bench.control.out={out}"]


def test_bench_control_runs_every_policy_on_the_same_tasks(adapted, tmp_path, capsys):
    from genie_robot.cli import main

    run, _ = adapted
    out = tmp_path / "bench"
    assert main(args_of(out, run)) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "control" and set(result["policies"]) == {"mpc", "random", "nothing", "replay"}
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and {x["episode"] for x in lines} == {x["episode"] for x in lines if x["policy"] == "mpc"}
    replay = result["policies"]["replay"]
    assert replay["successes"] == 2 and replay["final_m_quartiles"][2] < 1e-6  # the sim is deterministic
    nothing = [x for x in lines if x["policy"] == "nothing"]
    assert all(not x["success"] and x["final_m"] >= 0.05 - 2e-3 for x in nothing)  # skipped: targets < 5 cm
    mpc = result["policies"]["mpc"]
    assert mpc["episodes"] == 2 and mpc["failed_episodes"] == 0 and mpc["plan_ms_median"] > 0
    assert result["cpus"] >= 1 and "mpc_vs_random" in result
    assert (out / "mpc_episode0.gif").is_file() or any(out.glob("mpc_episode*.gif"))
    # A cut run continues: the first task's episodes kept, the rest run again, the same outcome.
    args = args_of(out, run)
    first_task = (out / "episodes.jsonl").read_text().splitlines()[:4]
    (out / "episodes.jsonl").write_text("".join(x + "\n" for x in first_task))
    assert main([*args, "bench.control.resume=true"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 8
    for name in ("replay", "nothing"):  # deterministic policies: the same distances whatever ran when
        assert resumed["policies"][name] == result["policies"][name]
    assert main([*args, "bench.control.resume=true", "bench.control.max_steps=3"]) != 0
    assert "holds a run with other settings (max_steps differ)" in capsys.readouterr().err
    assert main(["bench", "control", f"bench.control.ckpt={run}", "bench.control.policies=[mpc,oracle]",
                 f"bench.control.out={out}"]) != 0
    assert "policies must be some of ['mpc', 'random', 'nothing', 'replay']" in capsys.readouterr().err
