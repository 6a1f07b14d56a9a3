"""The MaskGIT rollout loop, written once for every engine (torch and onnxruntime).

An engine supplies a `DynamicsBackend`: four primitives over its own cache type (torch
tensors, onnxruntime values on the GPU, ...). Everything else lives here in numpy: the
window bookkeeping, when the cache is built, shared and slid, and the sampling itself
(`maskgit.sample_step`). So the same random draws give the same tokens in any engine whose
logits agree. An engine may also sample on its own device (`DeviceSampler`: the torch
engine, genie_robot.models.sampling): the same rule, fed the same uniforms and the schedule
from here, and a whole frame in one call when nothing needs to run between its steps.

The cache holds every dynamics layer's temporal keys/values of the frames in the window, one
slot per window frame (slots from the new frame's position on are ignored).
In the causal ST-transformer they do not change while a new frame is being unmasked, so each
MaskGIT step runs only the new frame's tokens. The candidates of a request share the context's
cache until they diverge. Time embeddings are absolute positions in the window, so once the
sequence outgrows the window it slides and the cache is rebuilt (once per generated frame).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from genie_robot.core.maskgit import MASK, keep_schedule, sample_step

NO_ACTION = -1  # the action into a window's first frame, which has none (genie_robot.models.dynamics)


class DynamicsBackend(Protocol):
    """What an engine's dynamics model must provide. Ids are model ids (the mask id, not MASK)."""

    mask_id: int

    def empty(self) -> Any:
        """A cache of zero frames for one sequence."""

    def append(self, cache: Any, ids_BS: np.ndarray, action_B: np.ndarray, t: int) -> Any:
        """The cache with finished frame `ids_BS` (window position t, reached by `action_B`) in its slot t.

        It may write into `cache` itself (the torch engine does): the rollout never reads a cache it has
        handed to `append` again."""

    def logits(self, cache: Any, ids_BS: np.ndarray, action_B: np.ndarray, t: int) -> np.ndarray:
        """Float logits [B, S, vocab] of the frame at window position t given the cache."""

    def repeat(self, cache: Any, batch: int) -> Any:
        """A one-sequence cache copied for `batch` candidates."""

    def batch(self, cache: Any) -> int:
        """How many sequences a cache holds."""


@runtime_checkable
class Prefill(Protocol):
    """A `DynamicsBackend` that builds a cache of several frames in one call (optional; found by `isinstance`)."""

    def prefill(self, tokens_BTS: np.ndarray, actions_BT1: np.ndarray) -> Any:
        """The cache of frames 0..T-1 (window positions 0..T-1; actions_BT1[:, j] leads into frame j+1), as T
        `append` calls would build it."""


@runtime_checkable
class DeviceSampler(Protocol):
    """A `DynamicsBackend` that also samples where its logits are (optional; found by `isinstance`).

    Ids here are rollout ids (MASK where masked). `u` are the uniform numbers `maskgit.sample_step` would
    draw, `keep` how many tokens stay masked after the step (`maskgit.keep_schedule`)."""

    def sample_step(self, cache: Any, cur_BS: np.ndarray, action_B: np.ndarray, t: int, u_BS: np.ndarray,
                    keep: int, temperature: float) -> np.ndarray:
        """One MaskGIT step: the new ids [B, S]."""

    def sample_frame(self, cache: Any, action_B: np.ndarray, t: int, u_NBS: np.ndarray, keep_N: list[int],
                     temperature: float) -> np.ndarray:
        """Every MaskGIT step of a frame (u_NBS: each step's uniforms) in one call: the frame's ids [B, S]."""


def rollout(backend: DynamicsBackend, tokens_TS: np.ndarray, actions_T1: np.ndarray, plan_BH: np.ndarray,
            window: int, steps: int, temperature: float, rng: np.random.Generator,
            plain_logits=None, before_step=None, after_frame=None) -> np.ndarray:
    """Generated tokens [B, H, S] for each candidate row of `plan_BH`, after one shared context.

    tokens_TS: the context's tokens (T <= window); actions_T1: the T-1 actions between them.
    `plain_logits(tokens [B, n, S], actions [B, n-1]) -> logits of frame n-1` switches to the
    uncached path (the whole window each step), kept to prove the cache changes nothing.
    `before_step(h, i)` runs before MaskGIT step i of horizon step h: an exception it raises stops
    the rollout there, so a cancel costs at most the step already running. `after_frame(h, tokens
    [B, n, S])` runs when step h's frame is done, with the sequence so far (context and new frames).
    """
    b, horizon = plan_BH.shape
    seq, seq_actions = tokens_TS[None], actions_T1[None]  # one sequence until the candidates diverge
    cache, cache_start = None, -1
    for h in range(horizon):
        a = plan_BH[:, h]
        n = seq.shape[1]
        start = max(0, n + 1 - window)  # the window holds frames start..n, the new frame n last
        t = n - start
        if plain_logits is not None:
            win = seq[:, start:]
            win_actions = np.concatenate([np.broadcast_to(seq_actions[:, start:], (b, t - 1)), a[:, None]], axis=1)
            past = np.broadcast_to(win, (b, *win.shape[1:]))

            def logits(ids, past=past, win_actions=win_actions):
                return plain_logits(np.concatenate([past, ids[:, None]], axis=1), win_actions)
        else:
            if cache is None or start != cache_start:
                cache, cache_start = _build(backend, seq[:, start:], seq_actions[:, start:]), start
            if backend.batch(cache) != b:  # shared context -> one copy per candidate
                cache = backend.repeat(cache, b)
            act = a if t > 0 else np.full_like(a, NO_ACTION)

            def logits(ids, cache=cache, act=act, t=t):
                return backend.logits(cache, ids, act, t)
        hook = None if before_step is None else (lambda i, h=h: before_step(h, i))
        if plain_logits is None and isinstance(backend, DeviceSampler):
            new = _sample_on_device(backend, cache, act, t, b, seq.shape[2], steps, temperature, rng, hook)
        else:
            new = _sample(logits, backend.mask_id, b, seq.shape[2], steps, temperature, rng, hook)
        if plain_logits is None and h < horizon - 1:  # the last frame's keys and values would go unread
            cache = backend.append(cache, new, act, t)
        seq = np.concatenate([np.broadcast_to(seq, (b, *seq.shape[1:])), new[:, None]], axis=1)
        seq_actions = np.concatenate([np.broadcast_to(seq_actions, (b, seq_actions.shape[1])), a[:, None]], axis=1)
        if after_frame is not None:
            after_frame(h, seq)
    return np.ascontiguousarray(seq[:, -horizon:])


def _build(backend: DynamicsBackend, tokens_BTS: np.ndarray, actions_BT: np.ndarray) -> Any:
    """The cache of every frame in `tokens_BTS` (window positions 0..T-1)."""
    if isinstance(backend, Prefill):
        return backend.prefill(np.ascontiguousarray(tokens_BTS), np.ascontiguousarray(actions_BT, dtype=np.int64))
    cache = backend.empty()
    if tokens_BTS.shape[0] > 1:
        cache = backend.repeat(cache, tokens_BTS.shape[0])
    for j in range(tokens_BTS.shape[1]):
        act = _action_into(actions_BT, j, tokens_BTS.shape[0])
        cache = backend.append(cache, np.ascontiguousarray(tokens_BTS[:, j]), act, j)
    return cache


def _action_into(actions_BT: np.ndarray, j: int, batch: int) -> np.ndarray:
    """The action into window frame j: actions_BT[:, j-1], or NO_ACTION for the first frame."""
    if j == 0:
        return np.full(batch, NO_ACTION, dtype=np.int64)
    return np.ascontiguousarray(actions_BT[:, j - 1], dtype=np.int64)


def _sample(logits, mask_id: int, b: int, s: int, steps: int, temperature: float,
            rng: np.random.Generator, before_step=None) -> np.ndarray:
    """One frame's tokens [B, S] by MaskGIT from an all-masked start."""
    cur = np.full((b, s), MASK, dtype=np.int64)
    for i in range(steps):
        if before_step is not None:
            before_step(i)
        cur = sample_step(logits(np.where(cur == MASK, mask_id, cur)), cur, i, steps, temperature, rng)
    return cur


def _sample_on_device(backend: DeviceSampler, cache: Any, action_B: np.ndarray, t: int, b: int, s: int, steps: int,
                      temperature: float, rng: np.random.Generator, before_step=None) -> np.ndarray:
    """`_sample` by the engine's own sampler, on the same uniforms: the whole frame in one call, or step by step
    when `before_step` must run between the steps."""
    keep = keep_schedule(steps, s)
    if before_step is None:
        return backend.sample_frame(cache, action_B, t, rng.random((steps, b, s)), keep, temperature)
    cur = np.full((b, s), MASK, dtype=np.int64)
    for i in range(steps):
        before_step(i)
        cur = backend.sample_step(cache, cur, action_B, t, rng.random((b, s)), keep[i], temperature)
    return cur
