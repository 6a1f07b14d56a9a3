"""`WorldModel`: the trained tokenizer, LAM and dynamics model behind one inference API.

What planners call: `imagine` rolls out future frames for a batch of latent action sequences
from one shared context, `infer_actions` labels real video with latent actions, `encode` /
`decode` convert between frames and tokens. Frames are [T, 3, H, W] (or [B, T, 3, H, W]),
uint8 in 0..255 or float in [0, 1], at the model's resolution; results are numpy arrays.

Speed comes from the KV cache: in the causal ST-transformer a finished frame's temporal
keys/values never change, so they are computed once per generated frame and every MaskGIT
step runs only the new frame's tokens (`DynamicsModel.step`). The candidates of one request
share the context's computation. The model's time embeddings are absolute positions in its
window, so once the sequence outgrows the window it slides and the cache is rebuilt, once per
generated frame. `cached=False` keeps the plain path (the whole window every step), which must
give the same tokens for the same random draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from genie_robot.config import typed
from genie_robot.inference.maskgit import MASK, check_sampling, sample_step
from genie_robot.models import ModelConfig, build
from genie_robot.training.checkpoint import CheckpointError, latest_checkpoint, load_weights
from genie_robot.training.stages import load_frozen


@dataclass
class Limits:
    """Request sizes an engine accepts (a planner's batch of candidates and its horizon)."""

    max_batch: int = 256
    max_horizon: int = 64


@dataclass
class Imagination:
    frames: np.ndarray  # uint8 [B, H, 3, h, w]: the predicted frames
    tokens: np.ndarray  # int64 [B, H, S]: their tokens


def stage_checkpoint(path: Path) -> Path | None:
    """A checkpoint directory, or a stage's run directory standing for its latest checkpoint."""
    if (path / "config.yaml").is_file():
        return path
    return latest_checkpoint(path / "checkpoints") if (path / "checkpoints").is_dir() else None


class WorldModel:
    def __init__(self, cfg: ModelConfig, tokenizer: torch.nn.Module, dynamics: torch.nn.Module,
                 lam: torch.nn.Module | None = None, limits: Limits | None = None, source: str = "<memory>"):
        self.cfg, self.tokenizer, self.dynamics, self.lam = cfg, tokenizer.eval(), dynamics.eval(), lam
        if lam is not None:
            lam.eval()
        self.limits, self.source = limits or Limits(), source
        self.adapter = None  # latent -> robot action mapping, when one was fitted beside the model
        self.device = next(dynamics.parameters()).device
        self.dtype = next(dynamics.parameters()).dtype

    # --- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             limits: Limits | None = None) -> WorldModel:
        """From a training run directory holding `tokenizer/`, `dynamics/` and (optionally) `lam/`."""
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
            lam, lam_digest, _ = load_frozen(str(root / "lam"), "lam", cfg, device)
            if lineage.get("lam") != lam_digest:
                raise CheckpointError(f"the dynamics model in {dyn_ckpt} was trained with another LAM than the "
                                      f"one in {root / 'lam'} (weights digest differs)")
        modules = [m.to(device=device, dtype=dtype) for m in (tokenizer, dynamics)]
        if lam is not None:
            lam.to(device=device, dtype=dtype)
        engine = cls(cfg, *modules, lam=lam, limits=limits, source=str(root))
        if (root / "adapter.json").is_file():
            from genie_robot.planning.adapter import Adapter

            engine.adapter = Adapter.load(root / "adapter.json")
        return engine

    def match_data(self, data):
        """A DataConfig cut to this model's resolution and window (data configs follow `model=`)."""
        return replace(data, resolution=list(self.cfg.resolution), clip_frames=self.cfg.frames)

    # --- input checks ---------------------------------------------------------------------
    def _frames(self, frames, name: str = "frames") -> torch.Tensor:
        """[B, T, 3, H, W] float in [0, 1] on the model's device, or a clear error."""
        x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
        if x.ndim == 4:
            x = x[None]
        h, w = self.cfg.resolution
        if x.ndim != 5 or x.shape[2] != self.cfg.channels or tuple(x.shape[3:]) != (h, w):
            raise ValueError(f"{name} must be [T, {self.cfg.channels}, {h}, {w}] or [B, T, {self.cfg.channels}, "
                             f"{h}, {w}] (channels first, the model's resolution), got shape {tuple(x.shape)}; "
                             f"genie_robot.inference.image.fit_image resizes any picture")
        if x.dtype == torch.uint8:
            x = x.to(self.dtype) / 255.0
        elif x.is_floating_point():
            if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
                raise ValueError(f"float {name} must be finite and in [0, 1]")
        else:
            raise ValueError(f"{name} must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
        return x.to(self.device, self.dtype)

    def _need_lam(self, why: str) -> torch.nn.Module:
        if self.lam is None:
            raise CheckpointError(f"{why} needs the latent action model, and {self.source} has no LAM checkpoint "
                                  f"(expected {Path(self.source) / 'lam'})")
        return self.lam

    # --- tokens and actions ---------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T, S], window by window (each window starts without a past, as in training)."""
        w = self.cfg.frames
        return torch.cat([self.tokenizer.encode(x[:, i : i + w]) for i in range(0, x.shape[1], w)], dim=1)

    def encode(self, frames) -> np.ndarray:
        x = self._frames(frames)
        out = self._encode(x).cpu().numpy()
        return out[0] if frames.ndim == 4 else out

    @torch.no_grad()
    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] in [0, 1]; frame i sees tokens of at most the window's earlier frames."""
        w, t = self.cfg.frames, tokens.shape[1]
        first = self.tokenizer.decode(tokens[:, :w])
        rest = [self.tokenizer.decode(tokens[:, i - w + 1 : i + 1])[:, -1:] for i in range(w, t)]
        return torch.cat([first, *rest], dim=1)

    def decode(self, tokens) -> np.ndarray:
        tok = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        single = tok.ndim == 2
        tok = tok[None] if single else tok
        if tok.ndim != 3 or tok.shape[2] != self.cfg.tokens_per_frame():
            raise ValueError(f"tokens must be [T, {self.cfg.tokens_per_frame()}] or [B, T, "
                             f"{self.cfg.tokens_per_frame()}], got shape {tuple(tok.shape)}")
        if tok.numel() and (tok.min() < 0 or tok.max() >= self.cfg.tokenizer.num_codes):
            raise ValueError(f"token ids must be in [0, {self.cfg.tokenizer.num_codes})")
        out = _to_uint8(self._decode(tok.to(self.device)))
        return out[0] if single else out

    def token_embeddings(self, tokens) -> np.ndarray:
        """The tokenizer's (unit-norm) code vectors of token ids [..., S]: [..., S, code_dim]."""
        tok = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=self.device)
        with torch.no_grad():
            return self.tokenizer.vq.lookup(tok).float().cpu().numpy()

    @torch.no_grad()
    def _infer_actions(self, x: torch.Tensor) -> torch.Tensor:
        """Latent actions [B, T-1], over windows that overlap by one frame."""
        lam, w = self._need_lam("inferring latent actions"), self.cfg.frames
        inp = self._encode(x) if self.cfg.lam.input == "tokens" else x
        parts = [lam.infer_actions(inp[:, i : i + w]) for i in range(0, max(x.shape[1] - 1, 1), w - 1)]
        return torch.cat(parts, dim=1)

    def infer_actions(self, frames) -> np.ndarray:
        """Latent action ids between consecutive frames: [T-1] (or [B, T-1])."""
        x = self._frames(frames)
        if x.shape[1] < 2:
            raise ValueError(f"inferring actions needs at least 2 frames, got {x.shape[1]}")
        out = self._infer_actions(x).cpu().numpy()
        return out[0] if frames.ndim == 4 else out

    # --- imagination ----------------------------------------------------------------------
    def _check_actions(self, latent_actions, name: str = "latent_actions", limit: bool = True) -> np.ndarray:
        a = np.asarray(latent_actions)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or (limit and a.size == 0) or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name} must be integer ids [B, H] (or [H]), got {a.dtype} {a.shape}")
        b, h = a.shape
        n = self.cfg.lam.num_actions
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"{name}: latent action ids must be in [0, {n}), got {a.min()}..{a.max()}")
        if limit and (b > self.limits.max_batch or h > self.limits.max_horizon):
            raise ValueError(f"{b} candidates x {h} steps exceed the limits ({self.limits.max_batch} candidates, "
                             f"{self.limits.max_horizon} steps)")
        return a.astype(np.int64)

    @torch.no_grad()
    def imagine(self, context, latent_actions, steps: int = 25, temperature: float = 2.0,
                seed: int | None = None, rng: np.random.Generator | None = None, context_actions=None,
                cached: bool = True) -> Imagination:
        """Predicted frames for each row of `latent_actions` [B, H], all from one context.

        context: [T, 3, H, W] frames, oldest first (T >= 1; only the last window's worth is used).
        context_actions: latent actions between the context frames; inferred by the LAM if None.
        Randomness comes only from `rng` (or a fresh generator seeded with `seed`).
        """
        check_sampling(steps, temperature)
        acts = self._check_actions(latent_actions)
        ctx = self._frames(context, "context")
        if ctx.shape[0] != 1:
            raise ValueError(f"context is one sequence of frames [T, 3, H, W], got {ctx.shape[0]} sequences")
        ctx = ctx[:, -self.cfg.frames :]
        need = ctx.shape[1] - 1
        if context_actions is not None:
            given = self._check_actions(context_actions, "context_actions", limit=False).reshape(-1)
            if len(given) < need:
                raise ValueError(f"context_actions has {len(given)} ids; the context needs {need} "
                                 f"(one per pair of consecutive frames)")
            ctx_actions = torch.from_numpy(given[len(given) - need :])[None]
        elif need:
            ctx_actions = self._infer_actions(ctx)
        else:
            ctx_actions = torch.zeros((1, 0), dtype=torch.long)
        rng = rng if rng is not None else np.random.default_rng(seed)
        tokens = self._encode(ctx)  # [1, T, S]
        new = self._rollout(tokens, ctx_actions.to(self.device), torch.from_numpy(acts).to(self.device), steps,
                            temperature, rng, cached)
        window = torch.cat([tokens.expand(new.shape[0], -1, -1), new], dim=1)
        frames = self._decode(window)[:, tokens.shape[1] :]
        return Imagination(_to_uint8(frames), new.cpu().numpy())

    def _rollout(self, tokens: torch.Tensor, actions: torch.Tensor, plan: torch.Tensor, steps: int,
                 temperature: float, rng: np.random.Generator, cached: bool) -> torch.Tensor:
        """Generated tokens [B, H, S]. tokens [1, T, S] and actions [1, T-1] are the shared context."""
        b, horizon = plan.shape
        w = self.cfg.frames
        seq, seq_actions = tokens, actions  # batch 1 until the candidates diverge
        cache, cache_start = None, -1
        for h in range(horizon):
            if h == 1:  # from here on every candidate has its own past
                seq, seq_actions = seq.expand(b, -1, -1), seq_actions.expand(b, -1)
            a = plan[:, h]
            n = seq.shape[1]
            start = max(0, n + 1 - w)  # the window holds frames start..n, the new frame n last
            win_tokens, win_actions = seq[:, start:], seq_actions[:, start:]
            if not cached:
                new = self._sample_plain(win_tokens.expand(b, -1, -1), win_actions.expand(b, -1), a, steps,
                                         temperature, rng)
            else:
                if cache is None or start != cache_start:
                    cache, cache_start = self._build_cache(win_tokens, win_actions), start
                if cache[0].shape[1] != b * self.cfg.tokens_per_frame():  # shared context -> one per candidate
                    cache = tuple(c.repeat(1, b, 1, 1, 1) for c in cache)
                new, cache = self._sample_cached(cache, a, n - start, steps, temperature, rng)
            seq = torch.cat([seq.expand(b, -1, -1), new[:, None]], dim=1)
            seq_actions = torch.cat([seq_actions.expand(b, -1), a[:, None]], dim=1)
        return seq[:, -horizon:]

    def _build_cache(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal keys/values of every frame in `tokens` [B, t, S] (window positions 0..t-1)."""
        k, v = self.dynamics.empty_cache(tokens.shape[0], self.device, self.dtype)
        for j in range(tokens.shape[1]):
            _, kj, vj = self.dynamics.step(tokens[:, j], actions[:, j - 1] if j else None, j, k, v)
            k, v = torch.cat([k, kj], dim=3), torch.cat([v, vj], dim=3)
        return k, v

    def _sample_cached(self, cache, action, t, steps, temperature, rng):
        k, v = cache
        b, s = action.shape[0], self.cfg.tokens_per_frame()
        cur = np.full((b, s), MASK, dtype=np.int64)
        act = action if t > 0 else None
        for i in range(steps):
            logits, _, _ = self.dynamics.step(self._model_ids(cur), act, t, k, v)
            cur = sample_step(logits.float().cpu().numpy(), cur, i, steps, temperature, rng)
        final = torch.from_numpy(cur).to(self.device)
        _, kn, vn = self.dynamics.step(final, act, t, k, v)  # the finished frame joins the cache
        return final, (torch.cat([k, kn], dim=3), torch.cat([v, vn], dim=3))

    def _sample_plain(self, tokens, actions, action, steps, temperature, rng):
        b, s = action.shape[0], self.cfg.tokens_per_frame()
        cur = np.full((b, s), MASK, dtype=np.int64)
        all_actions = torch.cat([actions, action[:, None]], dim=1)
        for i in range(steps):
            x = torch.cat([tokens, self._model_ids(cur)[:, None]], dim=1)
            logits = self.dynamics(x, all_actions)[:, -1]
            cur = sample_step(logits.float().cpu().numpy(), cur, i, steps, temperature, rng)
        return torch.from_numpy(cur).to(self.device)

    def _model_ids(self, cur: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.where(cur == MASK, self.dynamics.mask_id, cur)).to(self.device)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
