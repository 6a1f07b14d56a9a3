"""Reference models by name: packaging a run, loading it by name, and refusing what does not match its card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genie_robot import reference
from genie_robot.checkpoint import CheckpointError
from genie_robot.inference.world_model import WorldModel
from genie_robot.reference import ReferenceError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def packaged(trained, tmp_path_factory) -> Path:
    """The tiny run packaged by scripts/package_reference.py as reference 'tiny-ref' under a temp root."""
    dest = tmp_path_factory.mktemp("references")
    run = trained / "train/tiny"
    for stages in (["tokenizer"], ["lam", "dynamics"]):  # stage by stage, as a long training run would
        r = subprocess.run([sys.executable, str(ROOT / "scripts/package_reference.py"), "--run", str(run),
                            "--name", "tiny-ref", "--dest", str(dest), "--stages", *stages],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    return dest


def test_packaging_lists_every_file_with_its_sha256(packaged):
    card = json.loads((packaged / "tiny-ref" / "reference.json").read_text())
    assert card["complete"] and list(card["stages"]) == ["tokenizer", "lam", "dynamics"]
    for stage in ("tokenizer", "lam", "dynamics"):
        assert card["stages"][stage]["step"] == 30
        assert card["stages"][stage]["heldout_eval"]["clips"] > 0
        for name in ("model.safetensors", "config.yaml", "trainer.json"):
            path = packaged / "tiny-ref" / stage / name
            assert card["files"][f"{stage}/{name}"] == reference.sha256(path)
    assert not (packaged / "tiny-ref" / "dynamics" / "optimizer.safetensors").exists()


def test_a_reference_loads_by_name_and_refuses_a_changed_file(packaged, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(reference, "REFERENCES_DIR", packaged)
    monkeypatch.chdir(tmp_path)  # a bare name, not a path
    wm = WorldModel.load("tiny-ref")
    assert wm.lam is not None and wm.cfg.name == "tiny"
    with pytest.raises(ReferenceError, match=r"no reference model named 'nope'; shipped references: tiny-ref"):
        WorldModel.load("nope")
    # A changed weight file is refused, naming it; nothing is loaded.
    copy = tmp_path / "refs"
    shutil.copytree(packaged, copy)
    monkeypatch.setattr(reference, "REFERENCES_DIR", copy)
    weights = copy / "tiny-ref" / "lam" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ReferenceError, match=r"lam/model.safetensors does not match its card"):
        WorldModel.load("tiny-ref")
    weights.unlink()
    with pytest.raises(ReferenceError, match=r"lam/model.safetensors is missing"):
        WorldModel.load("tiny-ref")


def test_the_card_records_evaluations_and_a_new_one_is_compared_with_it(packaged, trained, sim_dataset, monkeypatch,
                                                                         tmp_path, capsys):
    """eval by name, the result packaged onto the card (JSON and Markdown), and compare_card showing a
    later eval with the card's settings against it; an eval with other settings cannot be compared."""
    import importlib.util
    import shutil

    from genie_robot.cli import main

    refs = tmp_path / "refs"
    shutil.copytree(packaged, refs)
    monkeypatch.setattr(reference, "REFERENCES_DIR", refs)
    monkeypatch.chdir(tmp_path)
    args = ["eval", "model=tiny", "ckpt=tiny-ref", f"data.path={sim_dataset}", "data.val_fraction=0.25", "eval.t=2",
            "eval.grid_contexts=1", "eval.grid_horizon=2", "eval.plan_episodes=0"]
    assert main([*args, "eval.steps=3", "eval.out=full"]) == 0
    assert main([*args, "eval.steps=2", "eval.out=short"]) == 0
    run = trained / "train/tiny"
    r = subprocess.run([sys.executable, str(ROOT / "scripts/package_reference.py"), "--run", str(run), "--name",
                        "tiny-ref", "--dest", str(refs), "--stages", "dynamics", "--eval", "full/eval.json",
                        "--demo-eval", "short/eval.json", "--docs", "card.md"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    card = reference.card("tiny-ref")
    assert card["heldout_eval"]["maskgit_steps"] == 3 and card["demo_eval"]["maskgit_steps"] == 2
    md = (tmp_path / "card.md").read_text()
    assert "## Held-out evaluation" in md and "| tokenizer reconstruction PSNR (dB) |" in md
    assert f"| {card['heldout_eval']['tokenizer_psnr']:.4g} | {card['demo_eval']['tokenizer_psnr']:.4g} |" in md
    assert f"{card['heldout_eval']['lam_psnr_inferred']:.4g} ± " in md  # mean ± std where eval gives a std

    spec = importlib.util.spec_from_file_location("compare_card", ROOT / "scripts/compare_card.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    monkeypatch.setattr(sys, "argv", ["compare_card.py", "--name", "tiny-ref", "--eval", "short/eval.json"])
    assert compare.main() == 0
    shown = capsys.readouterr().out
    psnr_row = next(line for line in shown.splitlines() if "tokenizer reconstruction PSNR" in line)
    assert psnr_row.count(f"{card['demo_eval']['tokenizer_psnr']:.5g}") == 2 and "differs" not in psnr_row
    assert main([*args, "eval.steps=1", "eval.out=other"]) == 0
    monkeypatch.setattr(sys, "argv", ["compare_card.py", "--name", "tiny-ref", "--eval", "other/eval.json"])
    assert compare.main() == 1
    assert "no held-out evaluation on its card with this run's settings" in capsys.readouterr().out

def test_a_run_mixing_stages_of_different_references_is_refused(packaged, tmp_path):
    """Another tokenizer (same config, other weights) beside the reference's dynamics model: the
    dynamics model's recorded lineage names the mismatch."""
    import shutil

    from safetensors.torch import load_file, save_file

    mixed = tmp_path / "mixed"
    shutil.copytree(packaged / "tiny-ref", mixed)
    sd = load_file(mixed / "tokenizer" / "model.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in sd.items()},
              mixed / "tokenizer" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"trained on another tokenizer"):
        WorldModel.load(mixed)


def test_the_shipped_reference_matches_its_card_and_its_stages_work_on_sim_frames(sim_dataset):
    """sim-rt1 ships with the package: every file's sha256 equals its card's, the weights stay under
    40 MB, and each shipped stage still does on simulated frames what its card says (a regression
    check of the weights and of the code that runs them, not a held-out measurement: these 4 short
    test episodes share the training data's simulator seed)."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from genie_robot.checkpoint import load_frozen
    from genie_robot.config import typed
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.metrics import psnr
    from genie_robot.models import ModelConfig

    assert "sim-rt1" in reference.available()
    root = reference.resolve("sim-rt1", complete=False)
    card = reference.card("sim-rt1")
    if not card["complete"]:
        with pytest.raises(ReferenceError, match=r"reference 'sim-rt1' is still in training: it ships the stages"):
            WorldModel.load("sim-rt1")
    assert card["total_bytes"] <= 40 * 2**20 and card["stages"]
    u8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    for stage, info in card["stages"].items():
        cfg = typed(OmegaConf.load(root / stage / "config.yaml").model, ModelConfig)
        model, _, _ = load_frozen(str(root / stage), stage, cfg, torch.device("cpu"))
        data = DataConfig(path=str(sim_dataset), clip_frames=cfg.frames, resolution=cfg.resolution, batch_size=4,
                          val_fraction=0.0, clip_hop=1)
        frames, _ = read_clips(data, "train", 8, ["world_vector"])
        x = torch.from_numpy(frames).float() / 255
        heldout = info["heldout_eval"]
        with torch.no_grad():
            if stage == "tokenizer":
                measured = np.mean([psnr(r, f).mean() for r, f in zip(u8(model.decode(model.encode(x))), frames,
                                                                         strict=True)])
                assert measured > heldout["psnr"] - 2.0, (measured, heldout["psnr"])
            elif stage == "lam":
                ids = model.infer_actions(x)
                random = torch.randint(0, cfg.lam.num_actions, ids.shape, generator=torch.Generator().manual_seed(0))
                inferred_psnr = psnr(u8(model.decode_ids(x, ids)).reshape(-1, *x.shape[2:]),
                                     frames[:, 1:].reshape(-1, *x.shape[2:])).mean()
                random_psnr = psnr(u8(model.decode_ids(x, random)).reshape(-1, *x.shape[2:]),
                                   frames[:, 1:].reshape(-1, *x.shape[2:])).mean()
                # its codes carry the motion: the inferred action predicts the next frame better than a
                # random one (by 0.24 dB on these few short clips; 1.5 dB on the card's 45 held-out clips)
                assert ids.unique().numel() >= 3 and inferred_psnr > random_psnr + 0.1, (inferred_psnr, random_psnr)


def test_the_shipped_reference_runs_in_both_engines(sim_dataset, heldout_sim, reference_export):
    """WorldModel.load("sim-rt1") and its ONNX export (torch-free runtime) give the same latent
    actions and the same logits at every MaskGIT step of a rollout on simulated frames; its adapter
    comes along; and its dynamics model uses its latent actions (a regression check on a few clips,
    not a held-out figure: those are on the card, docs/REFERENCE_sim-rt1.md)."""
    import numpy as np

    from genie_robot.core.maskgit import MASK, sample_step
    from genie_robot.core.rollout import _build
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.evaluation.report import action_response
    from genie_robot.models.config import SAMPLING
    from genie_robot.runtime import OnnxWorldModel

    card = reference.card("sim-rt1")
    assert card["complete"] and "adapter.json" in card["files"]
    wm = WorldModel.load("sim-rt1")
    assert wm.adapter is not None and wm.cfg.resolution == [64, 80]
    onnx = OnnxWorldModel(reference_export, providers=["CPUExecutionProvider"])
    # both sample at the card's temperature when a call names none (the export carries it to the node)
    assert wm.temperature == onnx.temperature == card["heldout_eval"]["temperature"] != SAMPLING.temperature
    data = DataConfig(path=str(sim_dataset), clip_frames=wm.cfg.frames, resolution=wm.cfg.resolution, batch_size=4,
                      val_fraction=0.0, clip_hop=1)
    frames, _ = read_clips(data, "train", 6, ["world_vector"])
    actions = wm.infer_actions(frames)
    np.testing.assert_array_equal(actions, onnx.infer_actions(frames))
    plans = np.stack([actions[0, 2:5], (actions[0, 2:5] + 4) % 8])
    for engine in (wm, onnx):
        assert engine.imagine(frames[0, :3], plans, steps=6, temperature=1.0, seed=3).frames.shape == (2, 3, 3, 64, 80)
    # The same model in both: their logits agree at every MaskGIT step of a rollout (cache built from
    # the context, appended frame by frame), each step's draw made once from the torch logits and fed to
    # both. Identical tokens are not asserted for this 8,192-code model: logits that agree to ~1e-5
    # still flip the rare draw whose uniform number falls that close to a code's boundary, on some CPUs
    # (the tiny model's identical-token tests are in tests/export).
    backends = [engine._backend() for engine in (wm, onnx)]
    assert backends[0].mask_id == backends[1].mask_id
    context = wm.encode(frames[0, :3])[None]
    caches = [_build(be, context, actions[None, 0, :2]) for be in backends]
    rng, worst = np.random.default_rng(3), 0.0
    for h, act in enumerate(actions[0, 2:5]):
        t, a = 3 + h, np.array([act])
        cur = np.full((1, context.shape[2]), MASK)
        for step in range(6):
            ids = np.where(cur == MASK, backends[0].mask_id, cur)
            torch_logits, ort_logits = (be.logits(c, ids, a, t) for be, c in zip(backends, caches, strict=True))
            worst = max(worst, float(np.abs(torch_logits - ort_logits).max()))
            cur = sample_step(torch_logits, cur, step, 6, 1.0, rng)
        caches = [be.append(c, cur, a, t) for be, c in zip(backends, caches, strict=True)]
    assert worst < 1e-3, worst
    # Teacher-forced (real past, each next frame masked, one pass) on held-out episodes: the dynamics
    # predicts the next frame better with the inferred latent actions than with random ones (by 0.7 dB on
    # the card's 50 held-out clips; the one-hot dynamics shipped before it: 0.1 dB).
    held, _ = read_clips(DataConfig(path=str(heldout_sim), clip_frames=wm.cfg.frames, resolution=wm.cfg.resolution,
                                    batch_size=4, val_fraction=0.0, clip_hop=4), "train", 16, ["world_vector"])
    response = action_response(wm, held, wm.infer_actions(held), seed=0)
    inferred, random = response["dynamics_next_frame_psnr_inferred"], response["dynamics_next_frame_psnr_random"]
    assert inferred > random + 0.2, (inferred, random)


def test_card_temperature_reads_the_cards_heldout_temperature_and_refuses_a_bad_one(tmp_path):
    """A run directory's card sets its engines' default temperature: a bad value names the file and field."""
    assert reference.card_temperature(tmp_path) is None  # no card: the engine keeps its own default
    card = tmp_path / reference.CARD
    card.write_text(json.dumps({"heldout_eval": {"temperature": 0.5}}))
    assert reference.card_temperature(tmp_path) == 0.5
    card.write_text(json.dumps({"heldout_eval": {}}))
    assert reference.card_temperature(tmp_path) is None
    for bad in (-1, 0, float("inf"), "hot", True):
        card.write_text(json.dumps({"heldout_eval": {"temperature": bad}}))
        with pytest.raises(ReferenceError, match=r"reference.json: heldout_eval.temperature must be a finite number"):
            reference.card_temperature(tmp_path)
