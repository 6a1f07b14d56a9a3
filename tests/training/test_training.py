"""The one training loop: every stage learns, resume is exact, DDP/FSDP match one process, bad input is named."""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file, save_file

from genie_robot.checkpoint import CheckpointError, list_checkpoints
from genie_robot.config import load_config
from genie_robot.training.trainer import Trainer, TrainingError


def losses(out: Path, model: str, stage: str) -> list[float]:
    rows = [json.loads(x) for x in (out / "train" / model / stage / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]




@pytest.mark.parametrize("stage", ["tokenizer", "lam", "dynamics"])
def test_each_stage_lowers_its_loss(trained, stage):
    seq = losses(trained, "tiny", stage)
    assert len(seq) == 30
    assert sum(seq[-5:]) / 5 < 0.8 * sum(seq[:5]) / 5, seq


@pytest.mark.parametrize(("stage", "keys", "picture"), [
    ("tokenizer", {"psnr", "codes_used"}, "reconstruction"),
    ("lam", {"psnr", "actions_used"}, "next_frame"),
    ("dynamics", {"masked_accuracy", "next_frame_token_accuracy", "actions_used"}, "next_frame"),
])
def test_final_evaluation_over_the_held_out_split(trained, stage, keys, picture):
    from PIL import Image

    result = json.loads((trained / "train/tiny" / stage / "eval.json").read_text())
    assert keys <= set(result) and result["clips"] > 0 and result["step"] == 30
    if "psnr" in result:
        assert 5 < result["psnr"] < 60
    png = trained / "train/tiny" / stage / "samples" / f"{picture}_step0000030.png"
    assert Image.open(png).size[0] > 0


def test_checkpoint_layout_and_lineage(trained):
    ckpt = trained / "train/tiny/dynamics/checkpoints/step_0000030"
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer.json", "config.yaml"}
    state = json.loads((ckpt / "trainer.json").read_text())
    assert state["step"] == 30 and set(state["lineage"]) == {"tokenizer", "lam"}
    assert not list(ckpt.parent.glob(".tmp-*"))  # no half-written checkpoints left behind
    tb = list((trained / "train/tiny/dynamics/tb").glob("events.out.tfevents.*"))
    assert tb


def test_resume_continues_the_exact_loss_sequence(sim_dataset, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(make_cfg(sim_dataset, straight, "stage=tokenizer", "train.steps=8", "train.ckpt_every=4")).fit()
    Trainer(make_cfg(sim_dataset, split, "stage=tokenizer", "train.steps=8", "train.stop_at=5")).fit()
    Trainer(make_cfg(sim_dataset, split, "stage=tokenizer", "train.steps=8", "train.ckpt_every=4",
                     "train.resume=true")).fit()
    assert losses(split, "tiny", "tokenizer") == losses(straight, "tiny", "tokenizer")


@pytest.mark.parametrize("recipe", [[], ["model.dynamics.code_smoothing=0.05", "model.dynamics.embed_init=mixed",
                                     "model.dynamics.code_smoothing_tokens=changed",
                                     "model.dynamics.masking=clean_past"],
                                    ["model.dynamics.masking=clean_past", "model.dynamics.lam_teacher=0.5"],
                                    ["model.dynamics.target=code_vector", "model.dynamics.code_groups=4",
                                     "model.dynamics.action_conditioning=prepend"]],
                         ids=["genie", "soft-targets", "lam-teacher", "code-vector"])
def test_dynamics_resume_draws_the_same_masks(trained, sim_dataset, tmp_path, recipe):
    """Dynamics uses the global RNG (masking): resume must restore it exactly (with either recipe)."""
    ckpt = trained / "train/tiny"
    frozen = [f"train.tokenizer_ckpt={ckpt}/tokenizer", f"train.lam_ckpt={ckpt}/lam", "stage=dynamics", "train.steps=6",
              *recipe]
    Trainer(make_cfg(sim_dataset, tmp_path / "a", *frozen)).fit()
    Trainer(make_cfg(sim_dataset, tmp_path / "b", *frozen, "train.stop_at=3")).fit()
    Trainer(make_cfg(sim_dataset, tmp_path / "b", *frozen, "train.resume=true")).fit()
    assert losses(tmp_path / "b", "tiny", "dynamics") == losses(tmp_path / "a", "tiny", "dynamics")
    if "model.dynamics.target=code_vector" in recipe:  # the tokenizer's codes travel with the weights
        from safetensors.torch import load_file

        from genie_robot.checkpoint import load_frozen

        tokenizer = load_frozen(f"{ckpt}/tokenizer", "tokenizer", Trainer(make_cfg(sim_dataset, tmp_path / "c",
                                                                                   *frozen)).stage.cfg,
                                torch.device("cpu"))[0]
        saved = load_file(str(next((tmp_path / "b").rglob("dynamics/**/model.safetensors"))))
        assert torch.allclose(saved["codes"], torch.nn.functional.normalize(tokenizer.vq.codebook, dim=-1))
        assert torch.equal(saved["code_group"].bincount(), torch.full((4,), tokenizer.vq.codebook.shape[0] // 4))


def test_lam_teacher_scores_the_decoders_next_frame_and_only_that_frame(trained, sim_dataset, tmp_path):
    """`lam_teacher=1`: each clip's first masked frame k is the tokens of the LAM decoder's prediction
    from real frame k-1 and the inferred action, tokenized after the real frames; frames < k keep
    their real tokens and nothing after k is scored."""
    ckpt = trained / "train/tiny"
    trainer = Trainer(make_cfg(sim_dataset, tmp_path, "stage=dynamics", f"train.tokenizer_ckpt={ckpt}/tokenizer",
                               f"train.lam_ckpt={ckpt}/lam", "model.dynamics.masking=clean_past",
                               "model.dynamics.lam_teacher=1.0"))
    stage = trainer.stage
    x, tokens, actions = stage.targets(next(trainer._batches()))
    b, t, s = tokens.shape
    first = torch.tensor([1, t - 1, 2, 1][:b])
    mask = (torch.arange(t)[None, :, None] >= first[:, None, None]).expand(b, t, s).clone()
    mask[:, :, ::2] &= torch.arange(t)[None, :, None] > first[:, None, None]  # frame k half masked
    taught, scored = stage._teacher(x, tokens, actions, mask)
    frame = torch.arange(t)[None, :, None]
    assert torch.equal(scored, mask & (frame == first[:, None, None]))
    for i, k in enumerate(first.tolist()):
        assert torch.equal(taught[i, :k], tokens[i, :k])
        pred = stage.lam.decode_ids(x[i : i + 1], actions[i : i + 1])[:, k - 1 : k]
        expect = stage.tokenizer.encode(torch.cat([x[i : i + 1, :k], pred], dim=1))[0, k]
        assert torch.equal(taught[i, k], expect)
        assert not torch.equal(taught[i, k], tokens[i, k])  # the tiny LAM's guess is not the real frame
    with pytest.raises(ValueError, match=r"lam_teacher > 0 needs model.dynamics.masking=clean_past"):
        Trainer(make_cfg(sim_dataset, tmp_path / "g", "stage=dynamics", f"train.tokenizer_ckpt={ckpt}/tokenizer",
                         f"train.lam_ckpt={ckpt}/lam", "model.dynamics.lam_teacher=0.5"))


def test_init_from_starts_from_a_trained_stage_and_checks_its_lineage(trained, sim_dataset, tmp_path):
    ckpt = trained / "train/tiny"
    frozen = ["stage=dynamics", f"train.tokenizer_ckpt={ckpt}/tokenizer", f"train.lam_ckpt={ckpt}/lam"]
    trainer = Trainer(make_cfg(sim_dataset, tmp_path, *frozen, f"train.init_from={ckpt}/dynamics"))
    saved = load_file(ckpt / "dynamics/checkpoints/step_0000030/model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in trainer.model.state_dict().items())
    other = tmp_path / "other"
    shutil.copytree(ckpt / "dynamics/checkpoints/step_0000030", other)
    meta = json.loads((other / "trainer.json").read_text())
    meta["lineage"]["lam"] = "0" * 64
    (other / "trainer.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"init_from=.*other was trained against other frozen checkpoints"):
        Trainer(make_cfg(sim_dataset, tmp_path / "o", *frozen, f"train.init_from={other}"))
    with pytest.raises(CheckpointError, match=r"init_from=.*missing is not a checkpoint \(no model.safetensors"):
        Trainer(make_cfg(sim_dataset, tmp_path / "m", *frozen, f"train.init_from={tmp_path / 'missing'}"))


def test_keeps_only_the_last_k_checkpoints(sim_dataset, tmp_path):
    Trainer(make_cfg(sim_dataset, tmp_path, "stage=tokenizer", "train.steps=8", "train.ckpt_every=2",
                     "train.keep_last=2")).fit()
    names = [p.name for p in list_checkpoints(tmp_path / "train/tiny/tokenizer/checkpoints")]
    assert names == ["step_0000006", "step_0000008"]


def test_nan_loss_stops_without_a_poisoned_checkpoint(sim_dataset, tmp_path):
    trainer = Trainer(make_cfg(sim_dataset, tmp_path, "stage=tokenizer", "train.steps=4"))
    frames = next(trainer._batches())
    trainer.train_step([frames])
    good = trainer.save()
    with torch.no_grad():
        trainer.model.to_pixels.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match=rf"non-finite loss .* at step 1 .*last good checkpoint: {good}"):
        trainer.train_step([frames])
    assert [p.name for p in list_checkpoints(good.parent)] == [good.name]


def test_unwritable_output_directory(sim_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainingError, match=r"output directory .*file/train/tiny/tokenizer is not writable"):
        Trainer(make_cfg(sim_dataset, blocker, "stage=tokenizer"))


def test_dynamics_refuses_a_tokenizer_from_another_config(trained, sim_dataset, tmp_path):
    ckpt = trained / "train/tiny"
    with pytest.raises(CheckpointError, match=r"tokenizer checkpoint .* different model config"):
        Trainer(make_cfg(sim_dataset, tmp_path, "stage=dynamics", "model.tokenizer.num_codes=32",
                         f"train.tokenizer_ckpt={ckpt}/tokenizer/checkpoints/step_0000030",
                         f"train.lam_ckpt={ckpt}/lam/checkpoints/step_0000030"))
    with pytest.raises(CheckpointError, match=r"needs a trained tokenizer"):
        Trainer(make_cfg(sim_dataset, tmp_path, "stage=dynamics"))


def test_weights_of_the_wrong_shape_are_named(trained, sim_dataset, tmp_path):
    src = trained / "train/tiny/tokenizer/checkpoints/step_0000030"
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    sd = load_file(bad / "model.safetensors")
    sd["to_code.weight"] = torch.zeros(3, 3)
    save_file(sd, bad / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"to_code.weight: checkpoint \(3, 3\) vs model"):
        Trainer(make_cfg(sim_dataset, tmp_path / "o", "stage=dynamics", f"train.tokenizer_ckpt={bad}",
                         f"train.lam_ckpt={trained}/train/tiny/lam/checkpoints/step_0000030"))


def test_model_and_data_resolution_must_agree(sim_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"do not match the model"):
        Trainer(make_cfg(sim_dataset, tmp_path, "stage=tokenizer", "data.resolution=[32,40]"))


# --- distributed: 2 gloo processes vs one process with the same global batch -----------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_args: list[str], batches_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    from genie_robot.config import load_config

    trainer = Trainer(load_config(cfg_args))
    batches = load_file(batches_file)
    for i in range(len(batches)):
        full = batches[f"b{i}"]
        per = full.shape[0] // world
        trainer.train_step([full[rank * per : (rank + 1) * per]])
    trainer.save()
    if "train.parallel=ddp" in cfg_args:  # the DDP-wrapped model reloads its checkpoint
        assert Trainer(load_config([*cfg_args, "train.resume=true"])).step == len(batches)
    # Both ranks past every collective and rank 0's checkpoint write before either tears the group down: a rank
    # that destroyed it while the other still used it died of gloo's SIGABRT ("terminate called without an
    # active exception": twice in clean-clone make test runs, the second time rank 1, as rank 0 still saved).
    # Still one in a third clean-clone run (rank 1, after the barrier was added): gloo's threads racing the
    # interpreter's teardown. So the ranks drop their modules and the group, then leave without the C++ static
    # destructors (os._exit: the checkpoint is already written, atomically; spawn reads exit code 0 as success).
    del trainer
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture()
def float64_one_thread():
    """float64 and one thread for this test, restored after it whatever happens: a test that failed midway
    (a worker's SIGABRT, once in a clean clone's make test) left float64 as the default for every later test,
    so the next one failed too."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(sim_dataset, tmp_path, mode, float64_one_thread):
    import torch.multiprocessing as mp

    # float64: summation-order rounding between one big batch and two all-reduced halves stays
    # ~1e-16, far below what could flip a VQ code assignment; a missing gradient sync is ~1e-3.
    common = ["model=tiny", "train=tiny", f"data.path={sim_dataset}", "data.val_fraction=0", "data.clip_hop=1",
              "stage=tokenizer",
              "train.progress=false"]
    single = Trainer(load_config([*common, f"output_dir={tmp_path / 'one'}", "train.parallel=none"]))
    frames = next(iter(single._loader("train")))["frames"]
    assert frames.shape[0] == 8
    batches = {f"b{i}": frames.roll(i, dims=0).contiguous() for i in range(3)}
    save_file(batches, tmp_path / "batches.safetensors")
    for i in range(3):
        single.train_step([batches[f"b{i}"]])
    single_path = single.save()

    args = [*common, f"output_dir={tmp_path / 'two'}", f"train.parallel={mode}"]
    mp.spawn(_worker, args=(2, _free_port(), args, str(tmp_path / "batches.safetensors")), nprocs=2)
    one = load_file(single_path / "model.safetensors")
    two = load_file(tmp_path / "two/train/tiny/tokenizer/checkpoints/step_0000003/model.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-10, rtol=1e-8), k


def test_lam_decoder_retrained_around_frozen_codes_keeps_the_dynamics_trained_on_them(trained, sim_dataset,
                                                                                      tmp_path):
    """train.lam_codes_frozen: a temporal decoder grown on the trained LAM's spatial one (the new layers'
    residual outputs start at zero, so it first predicts exactly what the old one did) and trained on: the
    decoder changes, every code stays, and the dynamics trained on the old LAM loads with the new one."""
    from genie_robot.checkpoint import load_frozen, stage_checkpoint, weights_digest
    from genie_robot.inference.world_model import WorldModel
    from genie_robot.reference import sha256

    ckpt = trained / "train/tiny"
    grow = ["stage=lam", "model.lam.decoder.attention=st", f"train.init_from={ckpt}/lam"]
    with pytest.raises(CheckpointError, match=r"do not fit this model.*missing \['decoder.blocks.0.attn_t"):
        Trainer(make_cfg(sim_dataset, tmp_path / "strict", *grow))
    with pytest.raises(CheckpointError, match=r"lam_codes_frozen=true keeps the codes of a trained LAM: set "
                                              r"train.init_from"):
        Trainer(make_cfg(sim_dataset, tmp_path / "none", "stage=lam", "train.lam_codes_frozen=true"))
    trainer = Trainer(make_cfg(sim_dataset, tmp_path, *grow, "train.init_from_allow_new=true",
                               "train.lam_codes_frozen=true", "train.steps=6", "train.ckpt_every=6",
                               "train.eval_every=6"))
    old_dir = stage_checkpoint(ckpt / "lam")
    old, _, _ = load_frozen(str(old_dir), "lam", trainer.mcfg, torch.device("cpu"))
    x = next(trainer._batches()).float() / 255
    with torch.no_grad():
        ids = old.infer_actions(x)
        assert torch.allclose(trainer.model.decode_ids(x, ids), old.decode_ids(x, ids), atol=1e-6)
    trainer.fit()
    new_dir = stage_checkpoint(tmp_path / "train/tiny/lam")
    new, _, _ = load_frozen(str(new_dir), "lam", trainer.mcfg, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(new.infer_actions(x), ids)
        assert not torch.allclose(new.decode_ids(x, ids), old.decode_ids(x, ids), atol=1e-4)
    assert weights_digest(new_dir, "lam") == weights_digest(old_dir, "lam")
    assert sha256(new_dir / "model.safetensors") != sha256(old_dir / "model.safetensors")

    root = tmp_path / "model"
    for stage, src in (("tokenizer", ckpt / "tokenizer"), ("dynamics", ckpt / "dynamics"), ("lam", new_dir)):
        shutil.copytree(stage_checkpoint(src), root / stage)
    engine = WorldModel.load(root)
    assert engine.lam.decoder.blocks[0].layout == "st"
    # A lineage written before the codes-only digest (the whole file's) still matches that same LAM, and
    # scripts/relink_lam.py moves it to the codes digest once it has checked that the new LAM's codes are equal.
    meta = json.loads((root / "dynamics/trainer.json").read_text())
    meta["lineage"]["lam"] = sha256(old_dir / "model.safetensors")
    (root / "dynamics/trainer.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"trained with another LAM than the one in .*model/lam"):
        WorldModel.load(root)
    shutil.rmtree(root / "lam")
    shutil.copytree(old_dir, root / "lam")
    WorldModel.load(root)
    script = Path(__file__).parents[2] / "scripts/relink_lam.py"
    relink = [sys.executable, str(script), "--dynamics", str(root / "dynamics"), "--lam-was", str(old_dir), "--lam"]
    other = tmp_path / "other"
    Trainer(make_cfg(sim_dataset, other, "stage=lam", "train.steps=2", "train.ckpt_every=2",
                     "train.eval_every=2", "train.seed=5")).fit()
    other_dir = stage_checkpoint(other / "train/tiny/lam")
    refused = subprocess.run([*relink, str(other_dir)], capture_output=True, text=True)
    assert refused.returncode != 0 and "decides other codes than the one in" in refused.stderr
    subprocess.run([*relink, str(new_dir)], check=True, capture_output=True)
    shutil.rmtree(root / "lam")
    shutil.copytree(new_dir, root / "lam")
    WorldModel.load(root)
    # A LAM whose codes differ does not load with it.
    shutil.rmtree(root / "lam")
    shutil.copytree(other_dir, root / "lam")
    with pytest.raises(CheckpointError, match=r"trained with another LAM than the one in .*model/lam"):
        WorldModel.load(root)


def test_relative_loss_weighs_each_transition_by_its_own_frame_change():
    """model.lam.relative_loss: weights 1 / (frame change energy + floor x the batch's mean), mean 1; a still
    transition weighs most but at most 1/floor times a mean-energy one; an all-still batch stays finite."""
    from genie_robot.training.stages import relative_weights

    x = torch.zeros(2, 3, 3, 4, 4)
    x[0, 1] = 0.5  # clip 0: a large change, then back (two large transitions)
    x[1, 2] = 0.1  # clip 1: still, then a small change
    w = relative_weights(x[:, 1:] - x[:, :-1], 0.25)
    assert w.shape == (2, 2) and w.mean().item() == pytest.approx(1.0)
    assert w[1, 0] > w[1, 1] > w[0, 0] == w[0, 1]
    energy = (x[:, 1:] - x[:, :-1]).pow(2).mean((2, 3, 4))
    expected = 1 / (energy + 0.25 * energy.mean())
    assert torch.allclose(w, expected / expected.mean())
    assert torch.isfinite(relative_weights(torch.zeros(2, 2, 3, 4, 4), 0.25)).all()


def test_the_trainer_bounds_onednns_primitive_cache_unless_told_otherwise():
    """bf16 training on a CPU grew by a oneDNN primitive per step (the masked-token count changes every step) until
    it was killed; the trainer caps the cache before oneDNN reads it, and leaves a value the user set alone."""
    code = "import os, genie_robot.training.trainer; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "16", out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", code], env=env | {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256"},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "256", out.stderr[-2000:]
