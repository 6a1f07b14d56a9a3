"""Fine-tuning the shipped reference: `train=finetune` (or `train.init_from=sim-rt1`) starts a stage from the
reference's weights, takes its tokenizer and LAM frozen or this run's tuned ones, and names a wrong model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from genie_robot.checkpoint import CheckpointError
from genie_robot.config import load_config
from genie_robot.reference import REFERENCES_DIR, ReferenceError
from genie_robot.training.trainer import Trainer

REF = REFERENCES_DIR / "sim-rt1"


def cfg(data, out, *overrides):
    return load_config(["model=sim_rt1", "train=finetune", f"data.path={data}", f"output_dir={out}",
                        "data.batch_size=1", "data.val_fraction=0.34", "train.progress=false", *overrides])


def test_the_preset_starts_each_stage_from_the_reference(heldout_sim, tmp_path):
    c = cfg(heldout_sim, tmp_path, "stage=dynamics", "train.steps=1", "train.eval_every=1", "train.ckpt_every=1")
    assert c.train.optim.dynamics.lr == pytest.approx(1e-4)  # a tenth of the reference recipe's 1e-3
    trainer = Trainer(c)
    # Frozen: the reference's own tokenizer and LAM, checked against its card.
    assert trainer.tcfg.tokenizer_ckpt == str(REF / "tokenizer") and trainer.tcfg.lam_ckpt == str(REF / "lam")
    shipped = load_file(REF / "dynamics/model.safetensors")
    mine = trainer.model.state_dict()
    # The shipped dynamics stores float16 (package_reference.py --fp16): the float32 model rounds to it. `codes`
    # is the tokenizer's codebook normalized again here (on the CPU; the shipped one on the GPU that trained it).
    assert [k for k, v in shipped.items() if k != "codes" and not torch.equal(mine[k].to(v.dtype), v)] == []
    assert torch.allclose(mine["codes"], shipped["codes"].float(), atol=1e-3)
    result = trainer.fit()
    assert result["step"] == 1 and (tmp_path / "finetune/sim_rt1/dynamics/checkpoints/step_0000001").is_dir()


def test_a_tuned_tokenizer_is_taken_by_the_later_stage(heldout_sim, tmp_path):
    Trainer(cfg(heldout_sim, tmp_path, "stage=tokenizer", "train.steps=1", "train.eval_every=1",
                "train.ckpt_every=1")).fit()
    # The preset tunes the decoder only: the modules that decide the tokens are the reference's, bit for bit.
    shipped = load_file(REF / "tokenizer/model.safetensors")
    tuned = load_file(tmp_path / "finetune/sim_rt1/tokenizer/checkpoints/step_0000001/model.safetensors")
    code_modules = ("embed.", "enc_pos.", "encoder.", "to_code.", "vq.")
    assert all(torch.equal(tuned[k], v) for k, v in shipped.items() if k.startswith(code_modules))
    assert not all(torch.equal(tuned[k], v) for k, v in shipped.items() if k.startswith("decoder."))
    trainer = Trainer(cfg(heldout_sim, tmp_path, "stage=dynamics", "train.steps=1"))
    assert trainer.tcfg.tokenizer_ckpt == str(tmp_path / "finetune/sim_rt1/tokenizer")  # tuned here
    assert trainer.tcfg.lam_ckpt == str(REF / "lam")  # not tuned: the reference's
    codes = torch.nn.functional.normalize(trainer.stage.tokenizer.vq.codebook.float(), dim=-1)
    assert torch.allclose(trainer.model.codes, codes)  # the code-vector head scores this run's codes
    # Without the preset's init_from_other_lineage, starting the reference's dynamics on it is refused.
    with pytest.raises(CheckpointError, match=r"trained against other frozen checkpoints.*init_from_other_lineage"):
        Trainer(cfg(heldout_sim, tmp_path / "b", "stage=dynamics",
                    f"train.tokenizer_ckpt={tmp_path / 'finetune/sim_rt1/tokenizer'}",
                    "train.init_from_other_lineage=false"))


def test_wrong_model_or_name_is_named(heldout_sim, tmp_path):
    with pytest.raises(CheckpointError, match=r"init_from=sim-rt1: the reference's dynamics is a model=sim_rt1 model "
                                              r"and this run's config \(model=demo\) differs in \[.*\]; fine-tune it "
                                              r"with model=sim_rt1"):
        Trainer(load_config(["model=demo", "train=finetune", "stage=dynamics", f"data.path={heldout_sim}",
                             f"output_dir={tmp_path}", "data.clip_frames=8", "data.resolution=[64,80]"]))
    with pytest.raises(ReferenceError, match=r"no reference model named 'sim-rt9'; shipped references: sim-rt1"):
        Trainer(cfg(heldout_sim, tmp_path, "stage=dynamics", "train.init_from=sim-rt9"))
    with pytest.raises(CheckpointError, match=r"tokenizer_codes_frozen=true keeps the codes of a trained tokenizer: "
                                              r"set train.init_from="):
        Trainer(cfg(heldout_sim, tmp_path, "stage=tokenizer", "train.init_from=null"))
