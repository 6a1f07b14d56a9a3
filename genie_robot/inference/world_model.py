"""`WorldModel`: the trained tokenizer, LAM and dynamics model behind one inference API (torch).

What planners call: `imagine` rolls out future frames for a batch of latent action sequences
from one shared context, `infer_actions` labels real video with latent actions, `encode` /
`decode` convert between frames and tokens. The API, its checks and the rollout loop are
shared with the onnxruntime engine (genie_robot.core.engine, .rollout); this module
supplies the torch primitives: one window through each network, and the dynamics model's
cached step (`DynamicsModel.step`: a MaskGIT step runs only the new frame's tokens against
the temporal keys/values of the finished frames). `cached=False` keeps the plain path (the
whole window every step), which must give the same tokens for the same random draws.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from genie_robot import reference
from genie_robot.checkpoint import CheckpointError, accepted_digests, load_frozen, load_weights, stage_checkpoint
from genie_robot.config import typed
from genie_robot.core.engine import Engine, EngineError, Imagination, Limits
from genie_robot.models import ModelConfig, build
from genie_robot.models.dynamics import write_cache

__all__ = ["Imagination", "Limits", "TorchDynamics", "WorldModel"]


class WorldModel(Engine):
    def __init__(self, cfg: ModelConfig, tokenizer: torch.nn.Module, dynamics: torch.nn.Module,
                 lam: torch.nn.Module | None = None, limits: Limits | None = None, source: str = "<memory>"):
        self.cfg, self.tokenizer, self.dynamics, self.lam = cfg, tokenizer.eval(), dynamics.eval(), lam
        if lam is not None:
            lam.eval()
        self.limits, self.source = limits or Limits(), source
        self.adapter = None  # latent -> robot action mapping, when one was fitted beside the model
        self.device = next(dynamics.parameters()).device
        self.dtype = next(dynamics.parameters()).dtype
        self._step = None  # the dynamics' step, compiled (`compile`); None: eager

    # --- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             limits: Limits | None = None) -> WorldModel:
        """From a training run directory holding `tokenizer/`, `dynamics/` and (optionally) `lam/`,
        or a shipped reference model by name ("sim-rt1"; its files checked against its card first)."""
        if reference.is_reference_name(path):
            path = reference.resolve(str(path))
        root, device = Path(path), torch.device(device)
        if not root.is_dir():
            raise CheckpointError(f"world model directory {root} does not exist")
        dyn_ckpt = stage_checkpoint(root / "dynamics")
        if dyn_ckpt is None:
            raise CheckpointError(f"{root} holds no dynamics checkpoint (expected {root / 'dynamics'}/checkpoints/"
                                  f"step_*/ or a checkpoint directory there): train stage=dynamics first")
        cfg = typed(OmegaConf.load(dyn_ckpt / "config.yaml").model, ModelConfig)
        dynamics = build(cfg, "dynamics")
        load_weights(dyn_ckpt, dynamics)
        lineage = json.loads((dyn_ckpt / "trainer.json").read_text()).get("lineage", {})
        if stage_checkpoint(root / "tokenizer") is None:
            raise CheckpointError(f"{root} holds no tokenizer checkpoint (expected {root / 'tokenizer'})")
        tokenizer, tok_digest, _ = load_frozen(str(root / "tokenizer"), "tokenizer", cfg, device)
        if lineage.get("tokenizer") != tok_digest:
            raise CheckpointError(f"the dynamics model in {dyn_ckpt} was trained on another tokenizer than the "
                                  f"one in {root / 'tokenizer'} (weights digest differs)")
        lam = None
        if stage_checkpoint(root / "lam") is not None:
            lam, _, lam_path = load_frozen(str(root / "lam"), "lam", cfg, device)
            if lineage.get("lam") not in accepted_digests(lam_path, "lam"):
                raise CheckpointError(f"the dynamics model in {dyn_ckpt} was trained with another LAM than the "
                                      f"one in {root / 'lam'} (weights digest differs)")
        modules = [m.to(device=device, dtype=dtype) for m in (tokenizer, dynamics)]
        if lam is not None:
            lam.to(device=device, dtype=dtype)
        engine = cls(cfg, *modules, lam=lam, limits=limits, source=str(root))
        engine.temperature = reference.card_temperature(root) or engine.temperature  # a reference's card
        if (root / "adapter.json").is_file():
            from genie_robot.planning.adapter import Adapter

            engine.adapter = Adapter.load(root / "adapter.json")
        return engine

    def compile(self) -> WorldModel:
        """Runs the dynamics' cached MaskGIT step through `torch.compile` from now on; returns the engine.

        At batch 1 a step of a small model is mostly per-operation overhead (Python, dispatch, one
        kernel per element-wise op; docs/BENCHMARKS.md "Where a batch-1 step's time goes"). Inductor
        fuses the element-wise ops, freezes the weights as constants (prepacked matmuls) and calls the
        kernels from C++ (`cpp_wrapper`). The cache has the window's size, so a batch size compiles once
        for every position: the first call at each new batch size takes seconds (a C++ compiler is
        needed), later ones run the compiled code. For long-lived engines (a planner, a node): the
        weights are frozen into the compiled code, so load the engine again after changing them.
        The tokens are the same as the eager step's for the same draws wherever the logits' rounding
        does not flip a draw (tested).
        """
        if self.device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
            raise EngineError("compiling the dynamics step on the CPU needs a C++ compiler (g++, or $CXX); "
                              "install one (apt install g++) or run eager (no compile)")
        self._step = compiled_step(self.dynamics)
        return self

    # --- primitives -----------------------------------------------------------------------
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """Checked frames as [0, 1] floats of the model's dtype, on its device."""
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t.to(self.dtype) / 255.0 if t.dtype == torch.uint8 else t.to(self.dtype)

    @torch.no_grad()
    def _encode_window(self, frames: np.ndarray) -> np.ndarray:
        return self.tokenizer.encode(self._tensor(frames)).cpu().numpy()

    @torch.no_grad()
    def _decode_window(self, tokens: np.ndarray) -> np.ndarray:
        tok = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device)
        return self.tokenizer.decode(tok).float().cpu().numpy()

    @torch.no_grad()
    def _lam_window(self, inputs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
        return self.lam.infer_actions(x if self.cfg.lam.input == "tokens" else self._tensor(inputs)).cpu().numpy()

    def _has_lam(self) -> bool:
        return self.lam is not None

    @torch.no_grad()
    def _codebook(self) -> np.ndarray:
        return torch.nn.functional.normalize(self.tokenizer.vq.codebook.float(), dim=-1).cpu().numpy()

    def _backend(self) -> TorchDynamics:
        return TorchDynamics(self.dynamics, self.device, self.dtype, self._step)

    @torch.no_grad()
    def _plain_logits(self, tokens_BnS: np.ndarray, actions_Bn1: np.ndarray) -> np.ndarray:
        tok = torch.from_numpy(np.ascontiguousarray(tokens_BnS)).to(self.device)
        act = torch.from_numpy(np.ascontiguousarray(actions_Bn1)).to(self.device)
        return self.dynamics(tok, act)[:, -1].float().cpu().numpy()


def compiled_step(dynamics: torch.nn.Module):
    """`dynamics.step` through torch.compile as `WorldModel.compile` runs it: static shapes (a compile per batch
    size), inductor with the weights frozen as constants and a C++ wrapper."""
    return torch.compile(dynamics.step, dynamic=False, fullgraph=True, options={"freezing": True, "cpp_wrapper": True})


class TorchDynamics:
    """`DynamicsBackend` over a torch DynamicsModel; the cache is (keys, values) [layers, B*rows, heads, window, dh].

    `step` is the model's `step`, or a compiled one (`WorldModel.compile`). The cache has the window's size from
    the start, so every MaskGIT step of a batch size has the same shapes and runs one compiled graph, and a
    finished frame is written into its slot in place (`append` consumes the cache it is given).
    """

    def __init__(self, dynamics: torch.nn.Module, device: torch.device, dtype: torch.dtype, step=None):
        self.model, self.device, self.dtype = dynamics, device, dtype
        self.mask_id, self.rows = dynamics.mask_id, dynamics.rows
        self.step = step or dynamics.step

    def _step(self, cache, ids_BS: np.ndarray, action_B: np.ndarray, t: int):
        # Fresh copies: a view's strides (0 on a broadcast batch axis) would make a compiled step recompile.
        ids = torch.from_numpy(np.array(ids_BS, dtype=np.int64)).to(self.device)
        act = torch.from_numpy(np.array(action_B, dtype=np.int64)).to(self.device)
        # A compiled step takes the position as data (one graph for all); eager reads only the filled slots.
        return self.step(ids, act, t if self.step == self.model.step else torch.tensor(t, device=self.device), *cache)

    def empty(self):
        return self.model.empty_cache(1, self.device, self.dtype)

    @torch.no_grad()
    def append(self, cache, ids_BS, action_B, t):
        _, k, v = self._step(cache, ids_BS, action_B, t)
        return write_cache(cache[0], k, t, in_place=True), write_cache(cache[1], v, t, in_place=True)

    @torch.no_grad()
    def logits(self, cache, ids_BS, action_B, t):
        return self._step(cache, ids_BS, action_B, t)[0].float().cpu().numpy()

    def repeat(self, cache, batch):
        return tuple(c.repeat(1, batch, 1, 1, 1) for c in cache)

    def batch(self, cache):
        return cache[0].shape[1] // self.rows
