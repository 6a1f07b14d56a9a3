"""What every world-model engine shares: the public API, its input checks, and the windowing.

`Engine` is written in numpy only. A concrete engine (`WorldModel` on torch,
`genie_robot.runtime.OnnxWorldModel` on onnxruntime) supplies the primitives over one window
of at most `cfg.frames` frames (`_encode_window`, `_decode_window`, `_lam_window`,
`_has_lam`, `_codebook`, and `_backend` for the dynamics model), and gets `encode`,
`decode`, `infer_actions`, `token_embeddings` and `imagine` with identical semantics and
identical error messages. The planner (genie_robot.planning.cem) only calls this API, so it
runs on either engine.

Frames are [T, 3, H, W] (or [B, T, 3, H, W]), uint8 in 0..255 or float in [0, 1], at the
model's resolution; results are numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from genie_robot.core.maskgit import check_sampling
from genie_robot.core.rollout import DynamicsBackend, rollout
from genie_robot.models.config import SAMPLING, ModelConfig


class EngineError(RuntimeError):
    """A model directory or export that cannot serve a call (missing part, bad file, wrong version)."""


@dataclass
class Limits:
    """Request sizes an engine accepts (a planner's batch of candidates and its horizon)."""

    max_batch: int = 256
    max_horizon: int = 64


@dataclass
class Imagination:
    frames: np.ndarray  # uint8 [B, H, 3, h, w]: the predicted frames
    tokens: np.ndarray  # int64 [B, H, S]: their tokens


class Engine:
    cfg: ModelConfig
    limits: Limits
    source: str
    adapter = None  # latent -> robot action mapping (genie_robot.planning.adapter), when one exists
    # The MaskGIT temperature a call gets when it names none: the one the model was judged at (a reference's
    # card, an export's manifest), else Genie's default. One model's rollouts can go from sharp to blocky
    # between temperatures (sim-rt1: 0.5 vs 2), so a server or planner must not guess it.
    temperature: float = SAMPLING.temperature

    # --- primitives (one window, batch first) ---------------------------------------------
    def _encode_window(self, frames: np.ndarray) -> np.ndarray:
        """Token ids int64 [B, T, S] of checked frames (uint8 or float [B, T, C, H, W], T <= window)."""
        raise NotImplementedError

    def _decode_window(self, tokens: np.ndarray) -> np.ndarray:
        """Frames float [B, T, C, H, W] in [0, 1] of token ids [B, T, S], T <= window."""
        raise NotImplementedError

    def _lam_window(self, inputs: np.ndarray) -> np.ndarray:
        """Latent action ids int64 [B, T-1]; inputs are frames or token ids per `cfg.lam.input`."""
        raise NotImplementedError

    def _has_lam(self) -> bool:
        raise NotImplementedError

    def _codebook(self) -> np.ndarray:
        """The tokenizer's unit-norm code vectors [num_codes, code_dim]."""
        raise NotImplementedError

    def _backend(self) -> DynamicsBackend:
        raise NotImplementedError

    # --- input checks ---------------------------------------------------------------------
    def _frames(self, frames, name: str = "frames") -> np.ndarray:
        """[B, T, C, H, W] uint8 or float in [0, 1], or a clear error."""
        x = np.asarray(frames)
        if x.ndim == 4:
            x = x[None]
        h, w = self.cfg.resolution
        c = self.cfg.channels
        if x.ndim != 5 or x.shape[2] != c or tuple(x.shape[3:]) != (h, w):
            raise ValueError(f"{name} must be [T, {c}, {h}, {w}] or [B, T, {c}, {h}, {w}] (channels first, the "
                             f"model's resolution), got shape {tuple(x.shape)}; "
                             f"genie_robot.core.image.fit_image resizes any picture")
        if np.issubdtype(x.dtype, np.floating):
            if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
                raise ValueError(f"float {name} must be finite and in [0, 1]")
        elif x.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
        return x

    def _need_lam(self, why: str) -> None:
        if not self._has_lam():
            raise EngineError(f"{why} needs the latent action model, and {self.source} has no LAM "
                              f"(expected {Path(self.source) / 'lam'})")

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

    def match_data(self, data):
        """A DataConfig cut to this model's resolution and window (data configs follow `model=`)."""
        return replace(data, resolution=list(self.cfg.resolution), clip_frames=self.cfg.frames)

    # --- tokens and actions ---------------------------------------------------------------
    def _encode(self, x: np.ndarray) -> np.ndarray:
        """Token ids [B, T, S], window by window (each window starts without a past, as in training)."""
        w = self.cfg.frames
        return np.concatenate([self._encode_window(x[:, i : i + w]) for i in range(0, x.shape[1], w)], axis=1)

    def encode(self, frames) -> np.ndarray:
        x = self._frames(frames)
        out = self._encode(x)
        return out[0] if np.ndim(frames) == 4 else out

    def _decode(self, tokens: np.ndarray) -> np.ndarray:
        """Frames [B, T, 3, H, W] in [0, 1]; frame i sees tokens of at most the window's earlier frames."""
        w, t = self.cfg.frames, tokens.shape[1]
        first = self._decode_window(tokens[:, :w])
        rest = [self._decode_window(tokens[:, i - w + 1 : i + 1])[:, -1:] for i in range(w, t)]
        return np.concatenate([first, *rest], axis=1)

    def decode(self, tokens) -> np.ndarray:
        tok = np.asarray(tokens)
        single = tok.ndim == 2
        tok = tok[None] if single else tok
        s, v = self.cfg.tokens_per_frame(), self.cfg.tokenizer.num_codes
        if tok.ndim != 3 or tok.shape[2] != s or (tok.size and not np.issubdtype(tok.dtype, np.integer)):
            raise ValueError(f"tokens must be integer ids [T, {s}] or [B, T, {s}], got {tok.dtype} {tuple(tok.shape)}")
        if tok.size and (tok.min() < 0 or tok.max() >= v):
            raise ValueError(f"token ids must be in [0, {v})")
        out = to_uint8(self._decode(tok.astype(np.int64)))
        return out[0] if single else out

    def token_embeddings(self, tokens) -> np.ndarray:
        """The tokenizer's (unit-norm) code vectors of token ids [..., S]: [..., S, code_dim]."""
        return self._codebook()[np.asarray(tokens, dtype=np.int64)].astype(np.float32)

    def _infer_actions(self, x: np.ndarray) -> np.ndarray:
        """Latent actions [B, T-1], over windows that overlap by one frame."""
        self._need_lam("inferring latent actions")
        w = self.cfg.frames
        inp = self._encode(x) if self.cfg.lam.input == "tokens" else x
        parts = [self._lam_window(inp[:, i : i + w]) for i in range(0, max(x.shape[1] - 1, 1), w - 1)]
        return np.concatenate(parts, axis=1)

    def infer_actions(self, frames) -> np.ndarray:
        """Latent action ids between consecutive frames: [T-1] (or [B, T-1])."""
        x = self._frames(frames)
        if x.shape[1] < 2:
            raise ValueError(f"inferring actions needs at least 2 frames, got {x.shape[1]}")
        out = self._infer_actions(x)
        return out[0] if np.ndim(frames) == 4 else out

    # --- imagination ----------------------------------------------------------------------
    def imagine(self, context, latent_actions, steps: int = SAMPLING.steps, temperature: float | None = None,
                seed: int | None = None, rng: np.random.Generator | None = None, context_actions=None,
                cached: bool = True, before_step=None, on_frame=None) -> Imagination:
        """Predicted frames for each row of `latent_actions` [B, H], all from one context.

        context: [T, 3, H, W] frames, oldest first (T >= 1; only the last window's worth is used).
        context_actions: latent actions between the context frames; inferred by the LAM if None.
        temperature: None takes the model's own (`self.temperature`).
        Randomness comes only from `rng` (or a fresh generator seeded with `seed`).
        `cached=False` recomputes the whole window every MaskGIT step (engines that keep that
        path, to test the cache against it).
        `before_step(h, i)` runs before MaskGIT step i of horizon step h; an exception it raises
        stops the rollout there (a cancel). `on_frame(h, frames [B, 3, H, W] uint8)` gets each
        horizon step's frames as soon as they are sampled (decoded from the window that ends at that
        frame), for feedback; they are also the frames returned, so a caller's feedback and result
        agree and nothing is decoded twice. Without it the first window's frames come from one decoder
        call; the tokens are the same either way and the frames within 1/255 (the decoder's rounding).
        """
        temperature = self.temperature if temperature is None else temperature
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
            ctx_actions = given[len(given) - need :]
        elif need:
            ctx_actions = self._infer_actions(ctx)[0]
        else:
            ctx_actions = np.zeros(0, dtype=np.int64)
        plain = None
        if not cached:
            plain = self._plain_logits
        rng = rng if rng is not None else np.random.default_rng(seed)
        tokens = self._encode(ctx)[0]  # [T, S]
        after, reported = None, []
        if on_frame is not None:
            def after(h: int, seq: np.ndarray) -> None:
                reported.append(to_uint8(self._decode_window(seq[:, -self.cfg.frames :])[:, -1]))
                on_frame(h, reported[-1].copy())
        new = rollout(self._backend(), tokens, ctx_actions, acts, self.cfg.frames, steps, temperature, rng, plain,
                      before_step, after)
        if on_frame is not None:
            return Imagination(np.stack(reported, axis=1), new)
        window = np.concatenate([np.broadcast_to(tokens, (len(new), *tokens.shape)), new], axis=1)
        frames = self._decode(window)[:, len(tokens) :]
        return Imagination(to_uint8(frames), new)

    def _plain_logits(self, tokens_BnS: np.ndarray, actions_Bn1: np.ndarray) -> np.ndarray:
        """Logits of the last frame from the whole window (no cache); only engines that test the cache."""
        raise ValueError(f"{type(self).__name__} samples with its context cache only (cached=True)")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frames.astype(np.float32), 0, 1) * 255).astype(np.uint8)
