"""`genie-robot` commands as a user runs them: a real subprocess, JSON on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SPEC_LENGTHS


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genie_robot.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_data_info_on_a_dataset_the_project_did_not_write(spec_dataset):
    r = run("data-info", f"data.path={spec_dataset}", "data.clip_frames=16")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout; progress goes to stderr
    info = json.loads(lines[0])
    assert info["episodes"] == len(SPEC_LENGTHS)
    assert info["steps"] == sum(SPEC_LENGTHS)
    assert info["image_key"] == "image" and info["image_shape"] == [256, 320, 3]
    assert {"world_vector", "rotation_delta", "gripper_closedness_action"} <= set(info["action_keys"])
    assert info["splits"] == {"train": {"episodes": len(SPEC_LENGTHS), "steps": sum(SPEC_LENGTHS), "shards": 3}}
    assert info["episodes_shorter_than_clip"] == sum(n < 16 for n in SPEC_LENGTHS)


def test_bad_path_is_one_clear_line(tmp_path):
    r = run("data-info", f"data.path={tmp_path}/missing")
    assert r.returncode == 1
    assert "error: dataset directory" in r.stderr and "Traceback" not in r.stderr


def test_unknown_command_and_bad_override():
    assert run("frobnicate").returncode == 2
    r = run("data-info", "data.no_such_key=1")
    assert r.returncode != 0 and "no_such_key" in r.stderr


def test_bench_data_ends_with_json(spec_dataset):
    r = run("bench", "data", f"data.path={spec_dataset}", "data.val_fraction=0", "data.clip_frames=4",
            "bench.warmup_batches=1", "bench.batches=2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["bench"] == "data" and result["frames"] == 2 * 8 * 4 and result["frames_per_s"] > 0


def test_contact_sheet_png(sim_dataset, tmp_path):
    from PIL import Image

    out = tmp_path / "sheet.png"
    r = run("contact-sheet", f"data.path={sim_dataset}", f"sheet.out={out}", "sheet.episodes=2", "sheet.frames=3")
    assert r.returncode == 0, r.stderr
    img = Image.open(out)
    assert img.size == (3 * 320, 2 * (256 + 18))


def test_bench_rollout_measures_cached_and_uncached_in_one_run():
    r = run("bench", "rollout", "model=tiny", "bench.rollout.batches=[1,2]", "bench.rollout.horizon=2",
            "bench.rollout.steps=2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["bench"] == "rollout" and [row["batch"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert row["cached_frames_per_s"] > 0 and row["uncached_frames_per_s"] > 0
        ratio = row["cached_frames_per_s"] / row["uncached_frames_per_s"]
        assert abs(row["cached_speedup"] - ratio) <= 0.01 * ratio + 0.005  # rounded to 2 decimals


def test_bench_rollout_times_the_compiled_torch_engine_and_refuses_compile_on_onnxruntime():
    r = run("bench", "rollout", "model=tiny", "bench.rollout.compile=true", "bench.rollout.batches=[2]",
            "bench.rollout.horizon=2", "bench.rollout.steps=2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["compiled"] is True and result["engine"] == "torch"
    assert result["rows"][0]["cached_frames_per_s"] > 0 and "uncached_frames_per_s" not in result["rows"][0]
    r = run("bench", "rollout", "model=tiny", "bench.rollout.compile=true", "bench.rollout.engine=onnx", "--json")
    assert r.returncode != 0 and "bench.rollout.compile is for the torch engine" in r.stderr


def test_bench_rollout_times_the_onnxruntime_engine_in_its_own_process():
    r = run("bench", "rollout", "model=tiny", "bench.rollout.engine=onnx", "bench.rollout.batches=[2]",
            "bench.rollout.horizon=2", "bench.rollout.steps=2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["engine"] == "onnx" and result["provider"] == "CPUExecutionProvider"
    assert result["rows"][0]["cached_frames_per_s"] > 0 and "uncached_frames_per_s" not in result["rows"][0]
    assert "onnxruntime engine: CPUExecutionProvider active" in r.stderr  # the one line naming the provider


def test_every_verb_prints_its_help_with_its_config_and_runs_nothing(tmp_path, capsys):
    """`genie-robot <verb> --help` works for every verb (it once crashed in Hydra's lexer), shows
    the config sections the verb reads with the values overrides on the same line gave them."""
    from genie_robot.cli import VERBS, main

    r = run("--help")
    assert r.returncode == 0
    for name, verb in VERBS.items():
        assert f"  {name}" in r.stdout and verb.summary in r.stdout
    r = run("data-info", "--help")
    assert r.returncode == 0 and "\ndata:\n" in r.stdout and "Traceback" not in r.stderr
    capsys.readouterr()
    for name, verb in VERBS.items():
        assert main([name, "--help", f"output_dir={tmp_path}"]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"genie-robot {name} ")
        for section in verb.sections:
            assert f"\n{section}:" in out, (name, section)
    assert not any(tmp_path.iterdir())  # nothing ran
    assert main(["eval", "eval.temperature=0.7", "--help"]) == 0
    assert "temperature: 0.7" in capsys.readouterr().out
    assert main(["bench", "rollout", "--help"]) == 0


def test_cfg_prints_the_resolved_config():
    r = run("eval", "eval.temperature=0.7", "--cfg")
    assert r.returncode == 0, r.stderr
    import yaml

    cfg = yaml.safe_load(r.stdout)
    assert cfg["eval"]["temperature"] == 0.7
    from genie_robot.models.config import SAMPLING

    # the temperature is the model's own unless given: None in the config
    assert cfg["eval"]["steps"] == SAMPLING.steps and cfg["imagine"]["temperature"] is None
    assert cfg["play"]["steps"] == SAMPLING.serve_steps
