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
from genie_robot.core.maskgit import BLOCK, MASK
from genie_robot.models import ModelConfig, build, cpu_kernels
from genie_robot.models.dynamics import repeat_cache, write_cache

__all__ = ["CompiledDynamics", "DeviceSampledDynamics", "Imagination", "Limits", "TorchDynamics", "WorldModel"]


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
        self._compiled = None  # the dynamics' entry points through torch.compile (`compile`); None: eager
        # The tokenizer's and the LAM's calls; `compile` replaces them with compiled ones.
        self._encode_fn, self._decode_fn = self.tokenizer.encode, self.tokenizer.decode
        self._lam_fn = None if lam is None else lam.infer_actions

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
        """Runs the engine through `torch.compile` from now on; returns the engine.

        At batch 1 a step of a small model is mostly per-operation overhead (Python, dispatch, one
        kernel per element-wise op; docs/BENCHMARKS.md "Where a batch-1 step's time goes"). Inductor
        fuses the element-wise ops (the linear layers' bias included, `inductor.BiasIntoNextKernel`) and
        calls the kernels from C++ (`cpp_wrapper`). A frame sampled with no `before_step` hook is one
        compiled call: all its MaskGIT steps, sampling included, in a loop inside the graph
        (`DeviceSampledDynamics`); with a hook, one call per step. On the CPU in float32 the graphs call C++
        kernels for the attention and the sampling (`genie_robot.models.cpu_kernels`, built with g++ here the
        first time on a machine), and the cache keeps the window's slots outermost. The cache has the
        window's size, so a batch size and step count compiles once for every position: the first call at
        each takes seconds for a small model, about a minute at 32 layers (a C++ compiler is needed); later
        ones run the compiled code. The tokens are the same as the eager engine's for the same draws
        wherever the logits' rounding does not flip a draw (tested).
        """
        if self.device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
            raise EngineError("compiling the dynamics step on the CPU needs a C++ compiler (g++, or $CXX); "
                              "install one (apt install g++) or run eager (no compile)")
        self._compiled = CompiledDynamics(self.dynamics)
        from genie_robot.inference.inductor import OPTIONS

        # The tokenizer and the LAM run once per call, on as many frames as the context has: compiled for the
        # first shape, then (torch.compile's automatic dynamic shapes) once more for any number of frames.
        self._encode_fn, self._decode_fn = (torch.compile(f, options=OPTIONS)
                                            for f in (self.tokenizer.encode, self.tokenizer.decode))
        if self.lam is not None:
            self._lam_fn = torch.compile(self.lam.infer_actions, options=OPTIONS)
        return self

    # --- primitives -----------------------------------------------------------------------
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """Checked frames as [0, 1] floats of the model's dtype, on its device."""
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t.to(self.dtype) / 255.0 if t.dtype == torch.uint8 else t.to(self.dtype)

    @torch.no_grad()
    def _encode_window(self, frames: np.ndarray) -> np.ndarray:
        return self._encode_fn(self._tensor(frames)).cpu().numpy()

    @torch.no_grad()
    def _decode_window(self, tokens: np.ndarray) -> np.ndarray:
        tok = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device)
        return self._decode_fn(tok).float().cpu().numpy()

    @torch.no_grad()
    def _lam_window(self, inputs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
        return self._lam_fn(x if self.cfg.lam.input == "tokens" else self._tensor(inputs)).cpu().numpy()

    def _has_lam(self) -> bool:
        return self.lam is not None

    @torch.no_grad()
    def _codebook(self) -> np.ndarray:
        return torch.nn.functional.normalize(self.tokenizer.vq.codebook.float(), dim=-1).cpu().numpy()

    def _backend(self) -> TorchDynamics:
        on_device = self._compiled is not None or self.device.type != "cpu"
        return (DeviceSampledDynamics if on_device else TorchDynamics)(self.dynamics, self.device, self.dtype,
                                                                        self._compiled)

    @torch.no_grad()
    def _plain_logits(self, tokens_BnS: np.ndarray, actions_Bn1: np.ndarray) -> np.ndarray:
        tok = torch.from_numpy(np.ascontiguousarray(tokens_BnS)).to(self.device)
        act = torch.from_numpy(np.ascontiguousarray(actions_Bn1)).to(self.device)
        return self.dynamics(tok, act)[:, -1].float().cpu().numpy()


class CompiledDynamics:
    """The dynamics model's entry points through torch.compile, as `WorldModel.compile` runs them: static shapes
    (a compile per batch size, and per MaskGIT step count for `maskgit_frame`), inductor with a C++ wrapper and
    the linear layers' bias added in the next fused kernel (`inductor.BiasIntoNextKernel`), and on the CPU the
    C++ attention and sampling kernels (`cpu_kernels`, loaded here: the graphs name them when traced). Each
    compiles at its first call (`inductor.OPTIONS` says why each option)."""

    def __init__(self, dynamics: torch.nn.Module):
        from genie_robot.inference.inductor import OPTIONS  # imports inductor (1.5 s): only when compiling

        if next(dynamics.parameters()).device.type == "cpu":
            cpu_kernels.load()  # the C++ kernels the compiled graphs call (built once per machine)

        def compiled(fn):
            return torch.compile(fn, dynamic=False, fullgraph=True, options=OPTIONS)

        self.step = compiled(dynamics.step)  # logits (and keys and values) of one MaskGIT step
        self.frame_kv = compiled(dynamics.frame_kv)  # a finished frame's keys and values
        self.maskgit_step = compiled(dynamics.maskgit_step)
        self.maskgit_frame = compiled(dynamics.maskgit_frame)
        # Once per rollout, on however many context frames: static first, then dynamic in the frames.
        self.prefill = torch.compile(dynamics.prefill, options=OPTIONS)


class TorchDynamics:
    """`DynamicsBackend` and `Prefill` over a torch DynamicsModel; the cache is (keys, values) [layers, B*rows,
    heads, window, dh]. Its logits go to the numpy sampler: on an eager CPU engine that is the faster one
    (docs/BENCHMARKS.md, "One call per frame").

    `compiled` (`WorldModel.compile`) runs the steps through torch.compile. The cache has the window's size
    from the start, so every MaskGIT step of a batch size has the same shapes and runs one compiled graph,
    and a finished frame is written into its slot in place (`append` consumes the cache it is given).
    """

    def __init__(self, dynamics: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 compiled: CompiledDynamics | None = None):
        self.model, self.device, self.dtype, self.compiled = dynamics, device, dtype, compiled
        self.mask_id, self.rows = dynamics.mask_id, dynamics.rows
        # The compiled CPU engine's cache keeps the window's slots outermost (`empty_cache`): its cached attention
        # kernel then reads each frame's keys as one block.
        self.slots_outer = compiled is not None and device.type == "cpu"
        # The entry points called here (step, maskgit_step, maskgit_frame, prefill): the model's, or their
        # compiled twins, which have the same names and signatures.
        self.run = dynamics if compiled is None else compiled

    def _tensor(self, x: np.ndarray, dtype=np.int64) -> torch.Tensor:
        # A fresh copy: a view's strides (0 on a broadcast batch axis) would make a compiled step recompile.
        return torch.from_numpy(np.array(x, dtype=dtype)).to(self.device)

    def _position(self, t: int) -> int | torch.Tensor:
        # A compiled step takes the position as data (one graph for all); eager reads only the filled slots.
        return t if self.compiled is None else torch.tensor(t, device=self.device)

    def _sampling(self, keep, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        # As numpy's sampler scales the logits: by float32(1 / temperature).
        return self._tensor(keep), self._tensor(np.float32(1.0 / temperature), np.float32)

    def empty(self):
        return self.model.empty_cache(1, self.device, self.dtype, self.slots_outer)

    @torch.no_grad()
    def prefill(self, tokens_BTS, actions_BT1):
        return self.run.prefill(self._tensor(tokens_BTS), self._tensor(actions_BT1), self.slots_outer)

    @torch.no_grad()
    def append(self, cache, ids_BS, action_B, t):
        k, v = self.run.frame_kv(self._tensor(ids_BS), self._tensor(action_B), self._position(t), *cache)
        return write_cache(cache[0], k, t, in_place=True), write_cache(cache[1], v, t, in_place=True)

    @torch.no_grad()
    def logits(self, cache, ids_BS, action_B, t):
        return self.run.step(self._tensor(ids_BS), self._tensor(action_B), self._position(t),
                             *cache)[0].float().cpu().numpy()

    def repeat(self, cache, batch):
        return tuple(repeat_cache(c, batch) for c in cache)

    def batch(self, cache):
        return cache[0].shape[1] // self.rows


class DeviceSampledDynamics(TorchDynamics):
    """`TorchDynamics` that also samples on the model's device (`DeviceSampler`; genie_robot.models.sampling):
    the logits never come back to numpy, and a frame with no hook between its steps is one call. What a
    compiled engine (inside the graph: one call per frame, not per step) and a GPU (no logits copied to the
    host per step) run."""

    @torch.no_grad()
    def sample_step(self, cache, cur_BS, action_B, t, u_BS, keep, temperature):
        ids = self._tensor(np.where(cur_BS == MASK, self.mask_id, cur_BS))
        out = self.run.maskgit_step(ids, self._tensor(action_B), self._position(t), *cache,
                                    self._tensor(u_BS, np.float64), *self._sampling(keep, temperature),
                                    BLOCK).cpu().numpy()
        return np.where(out == self.mask_id, MASK, out)

    @torch.no_grad()
    def sample_frame(self, cache, action_B, t, u_NBS, keep_N, temperature):
        return self.run.maskgit_frame(self._tensor(action_B), self._position(t), *cache,
                                      self._tensor(u_NBS, np.float64), *self._sampling(keep_N, temperature),
                                      BLOCK).cpu().numpy()
