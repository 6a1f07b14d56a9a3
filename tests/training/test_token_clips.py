"""`genie-robot tokenize-data` and `data.tokens`: the dynamics stage trained from clips tokenized once."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_cfg

from genie_robot.cli import main
from genie_robot.config import typed
from genie_robot.data.layout import DatasetError
from genie_robot.data.reader import ClipDataset, DataConfig
from genie_robot.data.token_clips import TokenClips, write_token_clips
from genie_robot.training.trainer import Trainer


def _frozen(trained) -> list[str]:
    ckpt = trained / "train/tiny"
    return [f"train.tokenizer_ckpt={ckpt}/tokenizer", f"train.lam_ckpt={ckpt}/lam", "stage=dynamics"]


@pytest.fixture(scope="module")
def token_file(trained, sim_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "tiny.npz"
    cfg = make_cfg(sim_dataset, out.parent, *_frozen(trained), f"tokens.out={out}")
    overrides = [f"{k}={v}" for k, v in (("model", "tiny"), ("train", "tiny"), ("data.path", sim_dataset),
                                         ("data.clip_hop", 1), ("data.val_fraction", 0.25), ("tokens.out", out))]
    assert main(["tokenize-data", *overrides, *_frozen(trained)[:2]]) == 0
    return out, cfg


def test_the_file_holds_what_the_stage_computes_on_the_fly(token_file, trained, sim_dataset):
    """Every training clip, tokenized and labelled as DynamicsStage does at a step; the val clips as frames."""
    path, cfg = token_file
    clips = TokenClips(path)
    trainer = Trainer(make_cfg(sim_dataset, path.parent / "run", *_frozen(trained)))
    dcfg = replace(typed(cfg.data, DataConfig), shuffle=False, repeat=False, drop_remainder=False)
    frames = torch.cat([b["frames"] for b in ClipDataset(dcfg, "train")])
    _, tokens, actions = trainer.stage.targets(frames)
    assert torch.equal(torch.from_numpy(clips.tokens.astype(np.int64)), tokens)
    assert torch.equal(torch.from_numpy(clips.actions.astype(np.int64)), actions)
    val = torch.cat([b["frames"] for b in ClipDataset(replace(dcfg, clip_hop=None), "val")])
    assert torch.equal(torch.from_numpy(clips.val_frames), val)
    assert set(clips.val_actions) == {"world_vector", "rotation_delta", "gripper_closedness_action"}
    assert clips.meta["lineage"] == trainer.stage.lineage and clips.meta["sources"][0]["clips"] == len(tokens)


def test_training_from_tokens_learns_resumes_exactly_and_evaluates(token_file, trained, sim_dataset, tmp_path):
    path, _ = token_file
    args = [*_frozen(trained), f"data.tokens={path}", "train.steps=6", "train.eval_every=3"]
    Trainer(make_cfg(sim_dataset, tmp_path / "a", *args)).fit()
    Trainer(make_cfg(sim_dataset, tmp_path / "b", *args, "train.stop_at=3")).fit()
    result = Trainer(make_cfg(sim_dataset, tmp_path / "b", *args, "train.resume=true")).fit()

    def rows(run):
        lines = (run / "train/tiny/dynamics/metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines if json.loads(x)["split"] == "train"]

    assert rows(tmp_path / "b") == rows(tmp_path / "a") and len(rows(tmp_path / "a")) == 6
    # The held-out evaluation reads the file's val clips: the same metrics as from the videos.
    assert result["clips"] == len(TokenClips(path).val_frames)
    assert {"next_frame_token_accuracy", "next_frame_psnr", "masked_accuracy"} <= set(result)
    assert (tmp_path / "b/train/tiny/dynamics/samples").is_dir()


def test_bad_token_files_are_named(token_file, trained, sim_dataset, tmp_path):
    path, _ = token_file
    clips = TokenClips(path)
    with pytest.raises(DatasetError, match="no such file"):
        Trainer(make_cfg(sim_dataset, tmp_path, *_frozen(trained), f"data.tokens={tmp_path}/none.npz"))
    with pytest.raises(ValueError, match="dynamics stage only"):
        Trainer(make_cfg(sim_dataset, tmp_path, *_frozen(trained)[:2], "stage=lam", f"data.tokens={path}"))
    other = write_token_clips(tmp_path / "other.npz", clips.tokens, clips.actions, clips.val_frames, clips.val_actions,
                              {k: v for k, v in clips.meta.items() if k != "format"} | {"lineage": {"tokenizer": "x"}})
    with pytest.raises(DatasetError, match="other frozen checkpoints"):
        Trainer(make_cfg(sim_dataset, tmp_path, *_frozen(trained), f"data.tokens={other}"))
    meta = {k: v for k, v in clips.meta.items() if k != "format"}
    bigger = write_token_clips(tmp_path / "model.npz", clips.tokens, clips.actions, clips.val_frames,
                               clips.val_actions, meta | {"frames": 16})
    with pytest.raises(DatasetError, match="another model: frames 16"):
        Trainer(make_cfg(sim_dataset, tmp_path, *_frozen(trained), f"data.tokens={bigger}"))
    cut = write_token_clips(tmp_path / "cut.npz", clips.tokens, clips.actions[:, :-1], clips.val_frames,
                            clips.val_actions, {k: v for k, v in clips.meta.items() if k != "format"})
    with pytest.raises(DatasetError, match=r"cut.npz: field 'train_actions' must be"):
        TokenClips(cut)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="junk.npz is not a readable tokenized clips file"):
        TokenClips(tmp_path / "junk.npz")


def test_variants_side_by_side_fill_their_budget_and_finish_their_schedules(token_file, trained, sim_dataset,
                                                                              tmp_path):
    """scripts/train_variants.py (how the reference's dynamics was trained on a lent GPU): each variant's steps
    are sized from a probe so that its run ends, schedule complete, inside the budget. Filling 30% of it, so
    that a loaded CI machine's slower stretches cannot push a run past the deadline."""
    import subprocess
    import sys
    from pathlib import Path

    path, _ = token_file
    ckpt = trained / "train/tiny"
    script = Path(__file__).parents[2] / "scripts" / "train_variants.py"
    r = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "v"), "--budget-s", "120",
                        "--probe-steps", "8", "--min-steps", "20", "--fill", "0.3",
                        "--variant", "one=model.dynamics.transformer.num_layers=1",
                        "--variant", "two=model.dynamics.transformer.num_layers=2", "--",
                        "model=tiny", "train=tiny", "stage=dynamics", f"data.tokens={path}", "data.batch_size=2",
                        f"train.tokenizer_ckpt={ckpt}/tokenizer", f"train.lam_ckpt={ckpt}/lam",
                        f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "v" / "variants.json").read_text())
    assert report["wall_s"] < 120
    for row in report["variants"]:
        assert row["exit"] == 0 and row["reached_step"] == row["planned_steps"] >= 20, row
        assert row["eval"]["step"] == row["planned_steps"] and "next_frame_token_accuracy" in row["eval"]
        assert (tmp_path / "v" / row["variant"] / "dynamics" / "checkpoints").is_dir()


def test_remap_actions_carries_a_dynamics_model_over_to_a_new_lams_codes(token_file, trained, sim_dataset, tmp_path):
    """scripts/remap_actions.py: a new LAM whose codes are the old ones renumbered gets exactly the old
    embeddings renumbered, so the carried-over dynamics predicts from the new labels what the old one did from
    the old; the result fine-tunes with train.init_from; token files of other clips are refused."""
    import subprocess
    import sys
    from pathlib import Path

    from omegaconf import OmegaConf

    from genie_robot.checkpoint import load_weights, stage_checkpoint
    from genie_robot.models import ModelConfig, build

    path, _ = token_file
    clips = TokenClips(path)
    meta = {k: v for k, v in clips.meta.items() if k != "format"}
    perm = np.array([3, 0, 7, 5, 1, 6, 2, 4], np.uint8)
    renumbered = write_token_clips(tmp_path / "new.npz", clips.tokens, perm[clips.actions], clips.val_frames,
                                   clips.val_actions, meta)
    old_ckpt = stage_checkpoint(trained / "train/tiny/dynamics")
    script = Path(__file__).parents[2] / "scripts" / "remap_actions.py"
    run = [sys.executable, str(script), "--dynamics", str(old_ckpt), "--old-tokens", str(path)]
    r = subprocess.run([*run, "--new-tokens", str(renumbered), "--out", str(tmp_path / "remap")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = typed(OmegaConf.load(old_ckpt / "config.yaml").model, ModelConfig)
    old, new = build(cfg, "dynamics").eval(), build(cfg, "dynamics").eval()
    load_weights(old_ckpt, old)
    load_weights(tmp_path / "remap", new)
    tokens = torch.from_numpy(clips.tokens[:2].astype(np.int64))
    actions = torch.from_numpy(clips.actions[:2].astype(np.int64))
    with torch.no_grad():
        assert torch.allclose(new(tokens, torch.from_numpy(perm.astype(np.int64))[actions]), old(tokens, actions),
                              atol=1e-5)
    counts = np.array(json.loads((tmp_path / "remap/remap.json").read_text())["cooccurrence_new_by_old"])
    assert counts.sum() == clips.actions.size and (counts > 0).sum() == len(np.unique(clips.actions))
    Trainer(make_cfg(sim_dataset, tmp_path / "ft", *_frozen(trained), f"data.tokens={renumbered}", "train.steps=2",
                     f"train.init_from={tmp_path / 'remap'}", "train.init_from_other_lineage=true")).fit()
    other = write_token_clips(tmp_path / "other.npz", clips.tokens[::-1], clips.actions, clips.val_frames,
                              clips.val_actions, meta)
    r = subprocess.run([*run, "--new-tokens", str(other), "--out", str(tmp_path / "bad")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "do not hold the same clips" in r.stderr
