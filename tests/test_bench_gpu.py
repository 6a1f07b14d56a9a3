"""scripts/bench_gpu.py's CPU-side logic: every measurement it makes on a GPU, run on the tiny model on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "scripts" / "bench_gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_the_gpu_benchmark_measures_everything_on_the_cpu_with_the_tiny_model():
    r = _run("--device", "cpu", "--model", "tiny", "--dtype", "bf16", "--batches", "1,2", "--steps", "2",
             "--repeats", "1", "--matmul-n", "256", "--onnx", "--train-batch", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert summary["bench"] == "gpu" and summary["model"] == "tiny" and summary["matmul_peak_tflops"] > 0
    assert [row["batch"] for row in summary["rollout"]] == [1, 2]
    for row in summary["rollout"]:
        assert row["frames_per_s"] > 0 and 0 < row["utilization"] < 1 and row["peak_memory_gb"] > 0
        # utilization is the flops module's count of a cached frame at the measured rate, over the measured peak
        assert row["achieved_tflops"] / summary["matmul_peak_tflops"] == pytest.approx(row["utilization"], rel=0.05,
                                                                                        abs=2e-4)
    options = [line for line in lines if line.get("bench") == "provider_options"]
    assert [o["provider"] for o in options] == ["CPUExecutionProvider"] and options[0]["options"] == {}
    assert [row["batch"] for row in summary["onnx"]] == [1, 2]
    assert all(row["provider"] == "CPUExecutionProvider" and row["frames_per_s"] > 0 for row in summary["onnx"])
    train = summary["train"]
    assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1 and train["batch"] == 2


def test_no_batches_measures_the_training_step_alone():
    r = _run("--device", "cpu", "--model", "tiny", "--batches", "", "--repeats", "1", "--matmul-n", "256",
             "--train-batch", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert "rollout" not in summary and "onnx" not in summary
    assert summary["train"]["batch"] == 1 and summary["train"]["tokens_per_s"] > 0 and summary["params"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real benchmark instead")
def test_without_cuda_it_says_so_and_measures_nothing():
    r = _run("--model", "tiny")
    assert r.returncode == 2
    assert "no CUDA device here: nothing measured" in json.loads(r.stdout.strip().splitlines()[-1])["error"]
