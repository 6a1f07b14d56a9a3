"""Checkpoints: a directory per step, written atomically, readable without unpickling anything.

    step_000100/
      model.safetensors       weights (full, unsharded)
      optimizer.safetensors   optimizer tensors, keys "<param fqn>/<name>"
      trainer.json            step, data position, RNG states, optimizer hyper-parameters, metrics
      config.yaml             the resolved config that produced it

A checkpoint is first written to a hidden temp directory and then renamed into place, so a
crash leaves either the whole checkpoint or none of it. Only the last `keep` are kept.

One module below both training (which writes checkpoints) and inference (which loads them):
run directories, the latest checkpoint of a stage, and frozen stages checked against a config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from genie_robot.config import typed
from genie_robot.core.engine import EngineError
from genie_robot.models import ModelConfig, build
from genie_robot.reference import sha256

STEP_PREFIX = "step_"


class CheckpointError(EngineError):
    """A checkpoint that is missing, incomplete or does not fit the model being built."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 and plain modules are their own)."""
    return model.module if hasattr(model, "module") else model


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _full_options() -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=True)



def list_checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and (p / "trainer.json").is_file())


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def stage_checkpoint(path: Path) -> Path | None:
    """A checkpoint directory, or a stage's run directory standing for its latest checkpoint."""
    if (path / "config.yaml").is_file():
        return path
    return latest_checkpoint(path / "checkpoints") if (path / "checkpoints").is_dir() else None


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict, config: DictConfig, keep: int) -> Path | None:
    """Every rank must call this (sharded state is gathered); rank 0 writes. Returns the path on rank 0."""
    model_sd = get_model_state_dict(model, options=_full_options())
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if _distributed() and dist.get_rank() != 0:
        return None
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in model_sd.items()}, tmp / "model.safetensors")
    tensors, groups = {}, []
    for fqn, state in optim_sd["state"].items():
        for name, value in state.items():
            tensors[f"{fqn}/{name}"] = torch.as_tensor(value).contiguous()
    for g in optim_sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    save_file(tensors, tmp / "optimizer.safetensors")
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"torch_cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(rng, tmp / "rng.safetensors")
    (tmp / "trainer.json").write_text(json.dumps({**trainer_state, "param_groups": groups,
                                                  "saved_at": time.time()}, indent=2))
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore weights (and optimizer and RNG when given an optimizer); returns trainer.json."""
    for name in ("model.safetensors", "trainer.json", "config.yaml"):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
    state = json.loads((path / "trainer.json").read_text())
    load_weights(path, model)
    if optimizer is not None:
        flat = load_file(path / "optimizer.safetensors")
        optim_state: dict[str, dict] = {}
        for key, value in flat.items():
            fqn, name = key.rsplit("/", 1)
            optim_state.setdefault(fqn, {})[name] = value
        set_optimizer_state_dict(unwrap(model), optimizer,
                                 {"state": optim_state, "param_groups": state["param_groups"]},
                                 options=StateDictOptions(full_state_dict=True))
        rng = load_file(path / "rng.safetensors")
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda")]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
    return state


def load_weights(path: Path, model: nn.Module, allow_new: bool = False) -> list[str]:
    """Load model.safetensors, naming every missing, unexpected or mis-shaped tensor on failure.

    `allow_new`: tensors the checkpoint lacks (layers the model's config adds, e.g. temporal
    attention in a LAM decoder that was spatial) keep their initialization, except residual output
    projections (`*.out.weight`, `*.down.weight`), which start at zero so the model computes what
    the loaded one did. Returns the names of the tensors that were not loaded."""
    file = path / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"no weights at {file}")
    sd = load_file(file)
    # Unwrapped names (no DDP "module." prefix) and global shapes (FSDP DTensors), on every rank.
    own = get_model_state_dict(unwrap(model))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape)]
    if (missing and not allow_new) or unexpected or shapes:
        raise CheckpointError(
            f"weights in {file} do not fit this model (was it trained with another model config?): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {shapes[:5]}")
    for k in missing:
        sd[k] = torch.zeros_like(own[k]) if k.endswith((".out.weight", ".down.weight")) else own[k]
    # Into DDP's inner module (same parameters); every rank reads the files itself, so no
    # broadcast is needed, and FSDP2 shards the full state dict locally.
    set_model_state_dict(unwrap(model), sd, options=StateDictOptions(full_state_dict=True))
    return missing


def weights_digest(path: Path, component: str | None = None) -> str:
    """sha256 of what a later stage depends on: a checkpoint's whole weights file, and for a LAM only
    the state of the modules that decide its codes (`LatentActionModel.CODE_MODULES`), so a decoder
    retrained around frozen codes (`train.lam_codes_frozen`) keeps a dynamics model trained on them."""
    file = path / "model.safetensors"
    if component != "lam":
        return sha256(file)
    from safetensors import safe_open

    from genie_robot.models.lam import LatentActionModel

    digest = hashlib.sha256(b"lam-codes/1")
    with safe_open(str(file), framework="pt") as f:
        for key in sorted(k for k in f.keys() if k.split(".", 1)[0] in LatentActionModel.CODE_MODULES):
            t = f.get_tensor(key).contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def accepted_digests(path: Path, component: str) -> set[str]:
    """The digests a later stage's lineage may name for this checkpoint: the current one, and for a
    LAM the whole-file digest that lineages recorded before the codes-only digest existed."""
    return {weights_digest(path, component), sha256(path / "model.safetensors")}


def load_frozen(
    ckpt: str | None, component: str, model_cfg: ModelConfig, device: torch.device
) -> tuple[nn.Module, str, Path]:
    """A trained component for a later stage, checked against this run's model config.

    A LAM is checked on the part of its config that decides its codes (`LAMConfig.codes_config`)
    and built from its own config: its decoder may differ from the one this run's config names."""
    if not ckpt:
        raise CheckpointError(f"this stage needs a trained {component}: set train.{component}_ckpt=<checkpoint dir>")
    path = stage_checkpoint(Path(ckpt)) or Path(ckpt)  # a stage's run directory: its latest checkpoint
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"train.{component}_ckpt={ckpt} is not a checkpoint directory (no config.yaml)")
    saved = typed(OmegaConf.load(path / "config.yaml").model, ModelConfig)
    ours = getattr(model_cfg, component)
    theirs = getattr(saved, component)
    same = ours.codes_config() == theirs.codes_config() if component == "lam" else ours == theirs
    if not same or saved.resolution != model_cfg.resolution or saved.frames != model_cfg.frames:
        raise CheckpointError(
            f"{component} checkpoint {path} was trained with a different model config "
            f"(resolution {saved.resolution}, frames {saved.frames}, {component}={theirs}) than this run "
            f"(resolution {model_cfg.resolution}, frames {model_cfg.frames}, {component}={ours})")
    model = build(saved if component == "lam" else model_cfg, component)
    load_weights(path, model)
    model.to(device).eval().requires_grad_(False)
    return model, weights_digest(path, component), path
