"""A LAM's codes merged into fewer actions (genie_robot.training.merge, scripts/merge_actions.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg
from omegaconf import OmegaConf

from genie_robot.checkpoint import load_weights, stage_checkpoint
from genie_robot.cli import main
from genie_robot.config import typed
from genie_robot.data.reader import DataConfig, read_clips
from genie_robot.data.token_clips import TokenClips
from genie_robot.models import ModelConfig, build
from genie_robot.training.merge import CodeEffects, code_effects, merge_codes
from genie_robot.training.trainer import Trainer

SCRIPT = Path(__file__).parents[2] / "scripts" / "merge_actions.py"


def _effects() -> CodeEffects:
    """Six codes: 0 and 1 draw the same still frame, 2 and 3 one motion, 4 another; 5 is rare and like 4."""
    position = np.array([0.0, 0.5, 10.0, 10.6, 20.0, 20.4])
    return CodeEffects(distance=np.abs(position[:, None] - position[None, :]),
                       change=np.array([1.0, 1.2, 9.0, 9.5, 15.0, 15.0]),
                       usage=np.array([40, 60, 30, 25, 50, 1]))


def test_alike_codes_become_one_action_numbered_by_how_much_they_change_the_frame():
    code_action, action_code = merge_codes(_effects(), 3)
    assert code_action.tolist() == [0, 0, 1, 1, 2, 2]
    assert action_code.tolist() == [1, 2, 4]  # each action's most used code
    # With a share threshold the rare code 5 joins its nearest common code instead of starting an action.
    code_action, _ = merge_codes(_effects(), 5, min_share=0.05)
    assert code_action[5] == code_action[4] and len(set(code_action.tolist())) == 5
    with pytest.raises(ValueError, match="only 2 of the 6 codes"):
        merge_codes(_effects(), 5, min_share=0.2)
    with pytest.raises(ValueError, match="num_actions"):
        merge_codes(_effects(), 6)


def test_code_effects_are_the_distances_between_the_decoders_frames(trained, sim_dataset):
    ckpt = stage_checkpoint(trained / "train/tiny/lam")
    cfg = typed(OmegaConf.load(ckpt / "config.yaml").model, ModelConfig)
    lam = build(cfg, "lam").eval()
    load_weights(ckpt, lam)
    frames, _ = read_clips(DataConfig(path=str(sim_dataset), resolution=list(cfg.resolution),
                                      clip_frames=cfg.frames, val_fraction=0.25), "train", 3, [])
    effects = code_effects(lam, frames, batch_size=2)
    q = cfg.lam.num_actions
    assert effects.distance.shape == (q, q) and np.allclose(effects.distance, effects.distance.T, atol=1e-3)
    assert np.allclose(np.diag(effects.distance), 0, atol=1e-2)
    assert effects.usage.sum() == frames.shape[0] * (frames.shape[1] - 1)
    x = torch.from_numpy(frames).float() / 255
    ids = torch.zeros(x.shape[0], x.shape[1] - 1, dtype=torch.long)
    with torch.no_grad():
        a, b = lam.decode_ids(x, ids + 1), lam.decode_ids(x, ids + 3)
    assert effects.distance[1, 3] == pytest.approx(((a - b) ** 2).mean().sqrt().item() * 255, rel=1e-3)
    assert effects.change[2] == pytest.approx(
        ((lam.decode_ids(x, ids + 2) - x[:, :-1]) ** 2).mean().sqrt().item() * 255, rel=1e-3)


def test_a_merged_lam_labels_and_decodes_through_its_merge_and_its_decoder_retrains(trained, sim_dataset, tmp_path):
    """scripts/merge_actions.py on the tiny LAM (8 codes -> 4 actions): the written LAM labels every transition
    with the action of the code the unmerged one gave it and decodes an action as its standing code; a token
    file is relabelled for it, and a dynamics stage accepts the pair; its decoder retrains around the frozen
    merge (make reference's second LAM stage)."""
    lam_dir = stage_checkpoint(trained / "train/tiny/lam")
    tokens = tmp_path / "tokens.npz"
    overrides = [f"{k}={v}" for k, v in (("model", "tiny"), ("train", "tiny"), ("data.path", sim_dataset),
                                         ("data.clip_hop", 1), ("data.val_fraction", 0.25), ("tokens.out", tokens))]
    assert main(["tokenize-data", *overrides, f"train.tokenizer_ckpt={trained}/train/tiny/tokenizer",
                 f"train.lam_ckpt={lam_dir}"]) == 0
    out = tmp_path / "merged"
    r = subprocess.run([sys.executable, str(SCRIPT), "--lam", str(lam_dir), "--out", str(out), "--actions", "4",
                        "--data", str(sim_dataset), "--clips", "4", "--min-share", "0", "--tokens", str(tokens),
                        "--tokens-out", str(tmp_path / "merged.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "merge.json").read_text())
    code_action, action_code = np.array(report["code_action"]), np.array(report["action_code"])
    assert sorted(sum(report["groups"], [])) == list(range(8)) and len(report["groups"]) == 4

    old_cfg = typed(OmegaConf.load(lam_dir / "config.yaml").model, ModelConfig)
    new_cfg = typed(OmegaConf.load(out / "config.yaml").model, ModelConfig)
    assert (new_cfg.lam.num_actions, new_cfg.lam.quantizer_codes) == (4, 8)
    old, new = build(old_cfg, "lam").eval(), build(new_cfg, "lam").eval()
    load_weights(lam_dir, old)
    load_weights(out, new)
    frames, _ = read_clips(DataConfig(path=str(sim_dataset), resolution=list(old_cfg.resolution),
                                      clip_frames=old_cfg.frames, val_fraction=0.25), "val", 2, [])
    x = torch.from_numpy(frames).float() / 255
    with torch.no_grad():
        raw = old.infer_actions(x)
        assert torch.equal(new.infer_actions(x), torch.from_numpy(code_action)[raw])
        ids = torch.full_like(raw, 2)
        assert torch.allclose(new.decode_ids(x, ids), old.decode_ids(x, ids * 0 + int(action_code[2])), atol=1e-6)
        assert torch.allclose(new(x).recon, old.decode_ids(x, torch.from_numpy(action_code)[new(x).actions]),
                              atol=1e-6)

    relabelled = TokenClips(tmp_path / "merged.npz")
    assert np.array_equal(relabelled.actions, code_action[TokenClips(tokens).actions])
    Trainer(make_cfg(sim_dataset, tmp_path / "dyn", "stage=dynamics", "train.steps=2", "model.lam.num_actions=4",
                     "model.lam.quantizer_codes=8", f"data.tokens={tmp_path / 'merged.npz'}",
                     f"train.tokenizer_ckpt={trained}/train/tiny/tokenizer", f"train.lam_ckpt={out}")).fit()

    Trainer(make_cfg(sim_dataset, tmp_path / "dec", "stage=lam", "train.steps=2", "model.lam.num_actions=4",
                     "model.lam.quantizer_codes=8", f"train.init_from={out}", "train.lam_codes_frozen=true")).fit()
    retrained = build(new_cfg, "lam").eval()
    load_weights(stage_checkpoint(tmp_path / "dec/train/tiny/lam"), retrained)
    with torch.no_grad():
        assert torch.equal(retrained.infer_actions(x), new.infer_actions(x))

    # Merging a merged LAM again is refused by name.
    r = subprocess.run([sys.executable, str(SCRIPT), "--lam", str(out), "--out", str(tmp_path / "again"),
                        "--data", str(sim_dataset)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "already merged" in r.stderr


def test_an_unmerged_lam_of_merged_codes_refuses_to_run_and_bad_merges_are_named():
    cfg = typed(OmegaConf.merge(OmegaConf.load(Path(__file__).parents[2] / "configs/model/tiny.yaml"),
                                {"lam": {"num_actions": 4, "quantizer_codes": 8}}), ModelConfig)
    lam = build(cfg, "lam").eval()
    x = torch.rand(1, cfg.frames, 3, *cfg.resolution)
    with pytest.raises(RuntimeError, match="not merged into 4 actions"):
        lam.infer_actions(x)
    with pytest.raises(ValueError, match="standing code must be one of its own"):
        lam.vq.set_merge(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([2, 0, 4, 6]))
    lam.vq.set_merge(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([1, 2, 4, 6]))
    assert lam.infer_actions(x).max() < 4
    with pytest.raises(ValueError, match="quantizer_codes must be 0"):
        typed(OmegaConf.merge(OmegaConf.load(Path(__file__).parents[2] / "configs/model/tiny.yaml"),
                              {"lam": {"num_actions": 8, "quantizer_codes": 8}}), ModelConfig).validate()
