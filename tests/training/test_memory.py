"""The training step's memory estimate (genie_robot.training.memory) and scripts/train_memory.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genie_robot.config import model_config
from genie_robot.models import build
from genie_robot.training.memory import GIB, dynamics_step_memory, largest_batch

SCRIPT = Path(__file__).parents[2] / "scripts" / "train_memory.py"


@pytest.mark.parametrize("checkpointing", [True, False])
def test_the_fake_estimate_is_what_the_same_step_allocates_on_real_tensors(checkpointing):
    cfg = model_config("tiny")
    fake = dynamics_step_memory(cfg, 2, checkpointing)
    real = dynamics_step_memory(cfg, 2, checkpointing, fake=False)
    assert fake == real
    with torch.device("meta"):
        n = sum(p.numel() for p in build(cfg, "dynamics").parameters())
    assert fake.params == 4 * n  # fp32 weights
    assert 8 * n <= fake.optimizer <= 8 * n + 64 * 1024  # AdamW's two moments, and its step counters
    with torch.device("meta"):  # the frozen tokenizer and LAM the dynamics stage holds: fp32 weights, their buffers
        parts = [build(cfg, c) for c in ("tokenizer", "lam")]
    frozen = sum(4 * p.numel() for m in parts for p in m.parameters())
    frozen += sum(b.numel() * b.element_size() for m in parts for b in m.buffers())
    assert fake.frozen == frozen > 0
    assert fake.total == sum(getattr(fake, k) for k in ("params", "buffers", "grads", "optimizer", "activations",
                                                        "temporaries", "other", "frozen"))


def test_the_estimate_is_what_the_process_holds_at_the_peak_of_a_real_step():
    """Independent of torch's accounting: the resident memory the real step adds on the CPU, which follows the
    live tensors (`--measure`), plus a few tens of MB a process loads on its first step (docs/BENCHMARKS.md)."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", "sim_rt1", "--batches", "2,4", "--no-checkpointing",
                        "--measure"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    two, four = (json.loads(line) for line in r.stdout.splitlines())
    assert two["batch"] == 2 and four["batch"] == 4 and two["checkpointing"] is False
    assert two["resident_rise_mb"] == pytest.approx(two["estimate_mb"], rel=0.05)  # about 1.1 GB
    # two more clips: the process's own extras cancel
    assert four["resident_rise_mb"] - two["resident_rise_mb"] == pytest.approx(
        four["estimate_mb"] - two["estimate_mb"], rel=0.02)


def test_checkpointing_keeps_fewer_activations_and_the_peak_grows_with_the_batch():
    cfg = model_config("tiny")
    kept = [dynamics_step_memory(cfg, b, False) for b in (1, 2, 4)]
    recomputed = dynamics_step_memory(cfg, 4, True)
    assert recomputed.activations < 0.6 * kept[2].activations  # 4 layers: one recomputed block is a large share
    assert kept[0].total < kept[1].total < kept[2].total
    # the state is the same at every batch; the activations are linear in it
    assert kept[0].params == kept[2].params and kept[0].optimizer == kept[2].optimizer
    assert kept[2].activations - kept[1].activations == pytest.approx(2 * (kept[1].activations - kept[0].activations),
                                                                      rel=0.05)


def test_the_largest_batch_fits_the_budget_less_headroom_and_one_more_clip_does_not():
    cfg = model_config("tiny")
    budget = dynamics_step_memory(cfg, 6, True).total / 0.9 + 1  # the room is exactly 6 clips' step
    best = largest_batch(cfg, budget, checkpointing=True, headroom=0.1)
    assert best is not None and best.batch == 6 and best.total <= 0.9 * budget
    assert dynamics_step_memory(cfg, 7, True).total > 0.9 * budget
    assert largest_batch(cfg, 1000.0) is None  # 1 KB: not even one clip
    with pytest.raises(ValueError, match="headroom must be in"):
        largest_batch(cfg, budget, headroom=1.0)
    with pytest.raises(ValueError, match="batch must be at least 1 clip, got 0"):
        dynamics_step_memory(cfg, 0)


def test_the_script_prints_estimates_and_the_largest_batch():
    budget_gib = dynamics_step_memory(model_config("tiny"), 3, True).total / 0.9 / GIB * 1.0001
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--batches", "1,2", "--budget-gib",
                        str(budget_gib)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["batch"] for row in rows[:2]] == [1, 2] and rows[0]["total"] > 0
    assert rows[2]["estimate"] == "largest_batch" and rows[2]["batch"] == 3 and rows[2]["step"]["batch"] == 3
    bad = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "give --batches, --budget-gib, or both" in bad.stderr
