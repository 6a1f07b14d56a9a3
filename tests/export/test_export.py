"""ONNX export, the torch-free onnxruntime engine, and export-verify, on the trained tiny run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genie_robot.cli import main
from genie_robot.core.engine import EngineError
from genie_robot.models.config import SAMPLING
from genie_robot.runtime import ManifestError, OnnxWorldModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def engines(exported):
    from genie_robot.inference.world_model import WorldModel

    run, out = exported
    return WorldModel.load(run), OnnxWorldModel(out, providers=["CPUExecutionProvider"])


def test_export_writes_every_graph_and_a_complete_manifest(exported):
    _, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"tokenizer_encoder", "tokenizer_decoder", "lam_encoder", "dynamics_step",
                                       "dynamics_append"}
    step = manifest["graphs"]["dynamics_step"]
    assert [i["name"] for i in step["inputs"]] == ["tokens", "action", "t", "past_k", "past_v"]
    # the cache has one slot per window frame: the same shapes at every position, the batch the only free axis
    keys, values = step["inputs"][3]["shape"], step["inputs"][4]["shape"]
    assert keys == values and keys[1] == "batch" and keys[4] == manifest["context_frames"]
    assert manifest["cache"]["window"] == manifest["context_frames"]
    assert [o["shape"] for o in manifest["graphs"]["dynamics_append"]["outputs"]] == [keys, values]
    assert manifest["graphs"]["tokenizer_encoder"]["inputs"][0]["shape"][:2] == ["batch", "time"]
    assert manifest["resolution"] == [16, 20] and manifest["tokens_per_frame"] == 20
    assert manifest["vocab"] == 64 and manifest["num_actions"] == 8 and manifest["context_frames"] == 4
    assert manifest["exporter"]["opset"] == 18
    # a run directory without a card samples at Genie's temperature, and its export says so
    assert manifest["sampling"] == {"temperature": SAMPLING.temperature}
    on_disk = {p.name for p in out.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk and all(len(d) == 64 for d in manifest["files"].values())


def test_export_verify_passes_for_graphs_imagine_and_plan(exported, capsys):
    run, out = exported
    assert main(["export-verify", f"ckpt={run}", f"out={out}"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["provider"] == "CPUExecutionProvider"
    for name in ("tokenizer_decoder", "dynamics_step", "dynamics_append"):
        for o in report["graphs"][name]["outputs"].values():
            assert o["rel_error"] <= 1e-4
    assert report["graphs"]["tokenizer_encoder"]["outputs"]["tokens"]["identical_fraction"] == 1.0
    assert report["rollouts"]["imagine"]["tokens_identical"] and report["rollouts"]["plan"]["actions_identical"]
    # The lockstep: every dynamics call of a rollout (frames + 1 frames x 4 MaskGIT steps) made in both engines.
    lock = report["rollouts"]["imagine"]["lockstep"]
    assert lock["ok"] and lock["logits_rel_error"] <= 1e-4 and lock["dynamics_calls"] >= 9


@pytest.mark.parametrize("batch,horizon,context", [(1, 2, 1), (4, 3, 3), (2, 6, 4)])
def test_both_engines_imagine_identical_tokens(engines, batch, horizon, context):
    torch_engine, onnx_engine = engines
    rng = np.random.default_rng(batch * 10 + horizon)
    ctx = rng.integers(0, 256, (context, 3, 16, 20), dtype=np.uint8)
    acts = rng.integers(0, 8, (batch, horizon))
    a = torch_engine.imagine(ctx, acts, steps=5, temperature=2.0, seed=11)
    b = onnx_engine.imagine(ctx, acts, steps=5, temperature=2.0, seed=11)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
    if context > 1:
        np.testing.assert_array_equal(torch_engine.infer_actions(ctx), onnx_engine.infer_actions(ctx))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("engine_index", [0, 1], ids=["torch", "onnx"])
def test_imagine_reports_each_frame_as_it_comes_and_stops_within_one_maskgit_step(engines, engine_index):
    """The hooks behind the node's RolloutAction: the frames reported as they come are the frames returned,
    the same tokens come out with the hooks as without (the frames within the decoder's rounding), and an
    exception from `before_step` stops the rollout before the next MaskGIT step runs."""
    engine = engines[engine_index]
    rng = np.random.default_rng(5)
    ctx = rng.integers(0, 256, (3, 3, 16, 20), dtype=np.uint8)
    acts = rng.integers(0, 8, (2, 6))  # 6 steps from 3 context frames: the window (4) slides
    steps, frames = [], {}
    out = engine.imagine(ctx, acts, steps=4, temperature=1.0, seed=3, before_step=lambda h, i: steps.append((h, i)),
                         on_frame=lambda h, f: frames.__setitem__(h, f))
    plain = engine.imagine(ctx, acts, steps=4, temperature=1.0, seed=3)
    np.testing.assert_array_equal(out.tokens, plain.tokens)
    assert np.abs(out.frames.astype(int) - plain.frames.astype(int)).max() <= 1
    # From frame 4 on (the window slides) both decode the same window: the same frames exactly.
    np.testing.assert_array_equal(out.frames[:, 1:], plain.frames[:, 1:])
    assert steps == [(h, i) for h in range(6) for i in range(4)] and sorted(frames) == list(range(6))
    for h in range(6):
        assert frames[h].shape == (2, 3, 16, 20)
        np.testing.assert_array_equal(frames[h], out.frames[:, h])

    def stop_at(h: int, i: int) -> None:
        steps.append((h, i))
        if (h, i) == (2, 1):
            raise _Stop()

    steps.clear()
    with pytest.raises(_Stop):
        engine.imagine(ctx, acts, steps=4, seed=3, before_step=stop_at)
    assert steps[-1] == (2, 1) and len(steps) == 2 * 4 + 2  # frames 0, 1 whole, then step 0 of frame 2 only


def test_both_engines_plan_identically(engines):
    from genie_robot.planning.cem import plan

    torch_engine, onnx_engine = engines
    rng = np.random.default_rng(5)
    ctx = rng.integers(0, 256, (3, 3, 16, 20), dtype=np.uint8)
    goal = rng.integers(0, 256, (3, 16, 20), dtype=np.uint8)
    for cost in ("pixel", "token"):
        kw = {"horizon": 3, "num_samples": 8, "iterations": 3, "seed": 2, "steps": 4, "cost": cost}
        a, b = plan(torch_engine, ctx, goal, **kw), plan(onnx_engine, ctx, goal, **kw)
        np.testing.assert_array_equal(a.actions, b.actions)
        assert a.cost == pytest.approx(b.cost, rel=1e-4)


def test_every_cpu_memory_mode_imagines_the_same_frames(engines):
    """cpu_memory changes where onnxruntime keeps its CPU buffers, never what comes out; an unknown mode is
    refused with the choices."""
    _, onnx_engine = engines
    rng = np.random.default_rng(7)
    ctx = rng.integers(0, 256, (3, 3, 16, 20), dtype=np.uint8)
    acts = rng.integers(0, 8, (4, 3))
    assert onnx_engine.cpu_memory == "shrink"  # the default
    want = onnx_engine.imagine(ctx, acts, steps=4, seed=1)
    for mode in ("arena", "off"):
        got = OnnxWorldModel(onnx_engine.source, providers=["CPUExecutionProvider"], cpu_memory=mode).imagine(
            ctx, acts, steps=4, seed=1)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.frames, want.frames)
    with pytest.raises(EngineError, match="cpu_memory must be one of shrink, arena, off, got 'pool'"):
        OnnxWorldModel(onnx_engine.source, cpu_memory="pool")


def test_runtime_checks_bad_requests_like_the_torch_engine(engines):
    _, onnx_engine = engines
    with pytest.raises(ValueError, match=r"context must be \[T, 3, 16, 20\]"):
        onnx_engine.imagine(np.zeros((2, 3, 16, 21), np.uint8), [[1]])
    with pytest.raises(ValueError, match=r"latent action ids must be in \[0, 8\)"):
        onnx_engine.imagine(np.zeros((2, 3, 16, 20), np.uint8), [[9]])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        onnx_engine.imagine(np.zeros((2, 3, 16, 20), np.uint8), [[1]], temperature=float("nan"))
    with pytest.raises(ValueError, match="samples with its context cache only"):
        onnx_engine.imagine(np.zeros((2, 3, 16, 20), np.uint8), [[1]], cached=False)
    # Inputs that reach onnxruntime wrong: an error naming the graph, not onnxruntime's stack dump.
    with pytest.raises(EngineError, match=r"onnxruntime failed in graph 'tokenizer_decoder' on inputs"):
        onnx_engine.graphs["tokenizer_decoder"].run(tokens=np.zeros((1, 2, 21), np.int64))
    with pytest.raises(EngineError, match=r"none of the execution providers \['NoSuchProvider'\]"):
        OnnxWorldModel(onnx_engine.source, providers=["NoSuchProvider"])


def test_load_refuses_missing_changed_or_foreign_exports(exported, tmp_path):
    _, out = exported
    with pytest.raises(ManifestError, match="manifest.json is missing"):
        OnnxWorldModel(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = next(bad.glob("dynamics_step.onnx.data"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match=r"dynamics_step.onnx.data does not match its sha256"):
        OnnxWorldModel(bad)
    data.unlink()
    with pytest.raises(ManifestError, match=r"dynamics_step.onnx.data is missing"):
        OnnxWorldModel(bad)
    shutil.copy(out / data.name, data)
    manifest = json.loads((bad / "manifest.json").read_text())
    # format 1 (a cache that grew by a frame per append) cannot feed the window-sized cache of format 2
    (bad / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(ManifestError, match="format_version 1; this runtime reads version 2: re-export"):
        OnnxWorldModel(bad)
    (bad / "manifest.json").write_text(json.dumps({**manifest, "cache": {**manifest["cache"], "window": None}}))
    with pytest.raises(ManifestError, match="cache.window"):
        OnnxWorldModel(bad)
    for temperature in (-1, float("inf")):  # JSON has no inf, but Python's json reads and writes Infinity
        (bad / "manifest.json").write_text(json.dumps({**manifest, "sampling": {"temperature": temperature}}))
        expected = rf"sampling.temperature must be a finite number > 0, got {temperature}"
        with pytest.raises(ManifestError, match=expected):
            OnnxWorldModel(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        OnnxWorldModel(bad)


def test_export_refuses_to_overwrite_a_directory_that_is_not_an_export(exported, tmp_path, capsys):
    run, _ = exported
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["export", f"ckpt={run}", f"out={tmp_path}"]) == 1
    assert "is not an earlier export" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()
    assert main(["export", f"ckpt={run}", f"out={tmp_path / 'x'}", "precision=fp8"]) == 1
    assert "precision must be one of" in capsys.readouterr().err


def _dist_closure(names: list[str]) -> set[str]:
    """Distributions `names` need at run time (their requirements, recursively, no extras)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for req in importlib.metadata.requires(name) or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def test_runtime_imports_and_runs_in_a_venv_without_torch(exported, tmp_path):
    """A fresh venv holding only numpy, onnxruntime (with its dependencies) and genie_robot."""
    _, out = exported
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for dist_name in _dist_closure(["numpy", "onnxruntime"]):
        dist = importlib.metadata.distribution(dist_name)
        assert "torch" not in dist_name
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    (site / "genie_robot").symlink_to(REPO / "genie_robot")
    code = (
        "import sys, numpy as np\n"
        "import genie_robot.runtime as rt\n"
        f"engine = rt.OnnxWorldModel({str(out)!r})\n"
        "ctx = np.random.default_rng(0).integers(0, 256, (3, 3, 16, 20), dtype=np.uint8)\n"
        "out = engine.imagine(ctx, [[1, 2], [3, 4]], steps=3, seed=0)\n"
        "from genie_robot.planning.cem import plan\n"
        "p = plan(engine, ctx, ctx[-1], horizon=2, num_samples=4, iterations=1, steps=2)\n"
        "assert 'torch' not in sys.modules and 'omegaconf' not in sys.modules\n"
        "print(out.tokens.shape, p.actions.shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 2, 20) (2,)"
    missing = subprocess.run([str(venv / "bin/python"), "-c", "import torch"], capture_output=True, env=env,
                             cwd=tmp_path)
    assert missing.returncode != 0  # the venv really has no torch


def test_fp16_export_runs_within_its_stated_bound(exported, tmp_path):
    """Half-precision graphs (for GPU robots) load and run, each within 1e-2 of the fp16 torch module."""
    import torch

    from genie_robot.inference.world_model import WorldModel
    from genie_robot_export.exporter import export
    from genie_robot_export.verify import check_graphs

    run, _ = exported
    export(run, tmp_path / "fp16", precision="fp16", progress=lambda _: None)
    engine = OnnxWorldModel(tmp_path / "fp16", providers=["CPUExecutionProvider"])
    assert engine.manifest["precision"] == "fp16"
    assert engine.graphs["dynamics_step"].dtypes["past_k"] == np.float16
    report = check_graphs(WorldModel.load(run, dtype=torch.float16), engine, "fp16")
    assert all(report[name]["ok"] for name in engine.graphs), report
    out = engine.imagine(np.zeros((2, 3, 16, 20), np.uint8), [[1, 2]], steps=3, seed=0)
    assert out.frames.shape == (1, 2, 3, 16, 20) and out.tokens.max() < 64


def test_int8_export_quantizes_the_dynamics_and_stays_within_its_stated_bound(exported, tmp_path):
    """precision=int8: the dynamics graphs carry int8 weights (smaller files), the tokenizer and LAM graphs stay
    fp32 (the same tokens and actions as the torch model), the quantized graphs stay within
    verify.QUANTIZED_TOLERANCE of the fp32 torch modules, and the engine samples."""
    import onnx

    from genie_robot.inference.world_model import WorldModel
    from genie_robot_export.exporter import QUANTIZED, export
    from genie_robot_export.verify import QUANTIZED_TOLERANCE, check_graphs

    run, fp32 = exported
    export(run, tmp_path / "int8", precision="int8", progress=lambda _: None)
    engine = OnnxWorldModel(tmp_path / "int8", providers=["CPUExecutionProvider"])
    assert engine.manifest["precision"] == "int8" and engine.manifest["quantized"] == list(QUANTIZED)
    for name in QUANTIZED:
        graph = onnx.load(str(tmp_path / "int8" / f"{name}.onnx")).graph
        ops = {n.op_type for n in graph.node}
        assert "DynamicQuantizeLinear" in ops and ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops), ops
        assert sum(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer) >= 4  # the linear layers' weights
        size = sum(f.stat().st_size for f in (tmp_path / "int8").glob(f"{name}.onnx*"))
        assert size < sum(f.stat().st_size for f in fp32.glob(f"{name}.onnx*"))  # the tiny model's embeddings stay
    report = check_graphs(WorldModel.load(run), engine, "int8")
    assert all(report[name]["ok"] for name in engine.graphs), report
    for name in QUANTIZED:
        assert 0 < report[name]["outputs"]["logits" if name == "dynamics_step" else "keys"]["rel_error"] <= \
            QUANTIZED_TOLERANCE
    assert report["tokenizer_encoder"]["outputs"]["tokens"]["identical_fraction"] == 1.0
    out = engine.imagine(np.zeros((2, 3, 16, 20), np.uint8), [[1, 2]], steps=3, seed=0)
    assert out.frames.shape == (1, 2, 3, 16, 20) and out.tokens.max() < 64


@pytest.mark.parametrize("recipe", [["model.dynamics.action_conditioning=prepend"],
                                    ["model.dynamics.target=code_vector", "model.dynamics.code_groups=4"]],
                         ids=["prepend", "code-groups"])
def test_other_dynamics_recipes_export_and_verify(trained, sim_dataset, tmp_path, capsys, recipe):
    """`action_conditioning: prepend` adds a cache row per frame (the action token): the export records it.
    `code_groups` normalizes inside groups of codes by gathers and reductions. With either, export-verify's
    graphs, imagined tokens and plans agree between torch and onnxruntime."""
    from conftest import make_cfg

    from genie_robot.training.trainer import Trainer

    tiny = trained / "train/tiny"
    run = tmp_path / "train" / "tiny"
    run.mkdir(parents=True)
    for stage in ("tokenizer", "lam"):
        shutil.copytree(tiny / stage, run / stage)
    Trainer(make_cfg(sim_dataset, tmp_path, "stage=dynamics", "train.steps=6", "train.ckpt_every=6",
                     "train.eval_every=6", *recipe,
                     f"train.tokenizer_ckpt={run}/tokenizer", f"train.lam_ckpt={run}/lam")).fit()
    out = tmp_path / "export"
    assert main(["export", f"ckpt={run}", f"out={out}"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    prepended = "model.dynamics.action_conditioning=prepend" in recipe
    assert manifest["cache"]["rows"] == manifest["tokens_per_frame"] + prepended
    capsys.readouterr()
    assert main(["export-verify", f"ckpt={run}", f"out={out}"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"]
    assert report["rollouts"]["imagine"]["tokens_identical"] and report["rollouts"]["plan"]["actions_identical"]


def test_gpu_provider_options_cover_every_request_the_engine_accepts(exported):
    """TensorRT gets one optimization profile per graph from the manifest and the batch limit (min/opt/max of
    every free axis, fixed axes as exported), CUDA its device; the CPU provider nothing; the options reach
    onnxruntime (the CPU engine still loads and runs with them)."""
    from genie_robot.runtime import OnnxWorldModel
    from genie_robot.runtime.providers import CUDA, TENSORRT, provider_options, tensorrt_profile

    _, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    graphs, window = manifest["graphs"], manifest["context_frames"]
    s, c = manifest["tokens_per_frame"], manifest["cache"]
    values = f"{c['layers']}x{{b}}x{c['rows']}x{c['heads']}x{window}x{c['head_dim']}"
    keys = values  # the same layout
    step = tensorrt_profile("dynamics_step", graphs["dynamics_step"], window, max_batch=48, opt_batch=8)
    one = f"past_k:{keys.format(b=1)},past_v:{values.format(b=1)}"
    assert step["trt_profile_min_shapes"] == f"tokens:1x{s},action:1,{one}"
    assert step["trt_profile_opt_shapes"].startswith(f"tokens:8x{s},action:8,past_k:{keys.format(b=8)}")
    assert step["trt_profile_max_shapes"].endswith(f"past_v:{values.format(b=48)}")
    lam = tensorrt_profile("lam_encoder", graphs["lam_encoder"], window, max_batch=4)
    h, w = manifest["resolution"]
    assert lam == {"trt_profile_min_shapes": f"inputs:1x2x3x{h}x{w}",
                   "trt_profile_opt_shapes": f"inputs:1x{window}x3x{h}x{w}",
                   "trt_profile_max_shapes": f"inputs:4x{window}x3x{h}x{w}"}
    trt = provider_options(TENSORRT, "tokenizer_decoder", graphs["tokenizer_decoder"], window, 4, device_id=1,
                           fp16=True, engine_cache=out.parent / "trt_cache")
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert Path(trt["trt_engine_cache_path"]) == out.parent / "trt_cache" / "tokenizer_decoder"
    assert trt["trt_profile_max_shapes"] == f"tokens:4x{window}x{s}"
    cuda = provider_options(CUDA, "dynamics_step", graphs["dynamics_step"], window, 4, device_id=2)
    assert cuda == {"device_id": "2"}
    assert provider_options("CPUExecutionProvider", "dynamics_step", graphs["dynamics_step"], window, 4) == {}
    bad = {"inputs": [{"name": "x", "shape": ["batch", "channels"]}]}
    with pytest.raises(ValueError, match="axis 'channels'.*re-export"):
        tensorrt_profile("tokenizer_encoder", bad, window, 4)
    engine = OnnxWorldModel(out, providers=["CPUExecutionProvider"], device_id=3, trt_fp16=True,
                            trt_cache=out.parent / "trt_cache")
    h_ctx = np.zeros((2, 3, h, w), dtype=np.uint8)
    assert engine.imagine(h_ctx, [[0]], steps=2, seed=0).tokens.shape == (1, 1, s)
