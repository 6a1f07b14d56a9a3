"""MaskGIT sampling of one frame's tokens: the schedule and the per-step choice, in numpy only.

Both engines (torch here, onnxruntime in the export runtime) compute logits their own way and
hand them to `sample_step`, so there is one implementation of the sampling rule, and the same
seeded `numpy.random.Generator` gives the same tokens in both. Every step draws one uniform
number per token (a fixed shape whatever is still masked), so the random stream stays aligned
between engines and between the cached and uncached paths.

The rule (Chang et al., MaskGIT; Genie samples 25 steps at temperature 2): start with every
token masked; at each step sample every masked token from softmax(logits / temperature), keep
the most confident samples, and re-mask the rest so that a cosine schedule of tokens stays
masked, reaching zero at the last step.

Sampling is most of a rollout's time on a CPU with a large vocabulary, so `draw` reads each
row of logits only a few times (see there).
"""

from __future__ import annotations

import math

import numpy as np

MASK = -1  # token id of a still-masked position in the arrays passed around here


def check_sampling(steps: int, temperature: float) -> None:
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"maskgit steps must be a positive integer, got {steps!r}")
    if not (isinstance(temperature, (int, float, np.floating)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def still_masked(step: int, steps: int, tokens: int) -> int:
    """How many of a frame's `tokens` stay masked after step `step` (0-based) of `steps`."""
    if step >= steps - 1:
        return 0
    return int(math.floor(tokens * math.cos(math.pi / 2 * (step + 1) / steps)))


def keep_schedule(steps: int, tokens: int) -> list[int]:
    """How many of a frame's `tokens` each of `steps` steps leaves masked, from an all-masked start: what
    `sample_step` does (at most one fewer than were masked, so every step unmasks a token), as data for
    an engine that samples on its own device (genie_robot.models.sampling)."""
    keep, masked = [], tokens
    for i in range(steps):
        masked = min(still_masked(i, steps, tokens), max(masked - 1, 0))
        keep.append(masked)
    return keep


BLOCK = 128  # vocabulary entries per block of the two-level inverse CDF (`draw`)


def draw(z_NV: np.ndarray, u_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF samples of softmax(z) per row, and their log-probabilities: ([N] ids, [N] floats).

    `z_NV` (float32, already divided by the temperature) is overwritten. The softmax numerator is
    taken in float32 and summed per block of `BLOCK` entries in float64; the draw finds its block
    from the block sums, then its entry by a float64 cumulative sum inside that block alone. So
    each row is read about four times in float32, not the whole vocabulary cumulated in float64,
    which at 8,192 codes x 320 tokens a frame made sampling cost more than the model itself.
    """
    n, v = z_NV.shape
    z_NV -= z_NV.max(axis=1, keepdims=True)
    p = np.exp(z_NV, out=z_NV)  # unnormalized probabilities, the largest 1 per row
    block = BLOCK if v % BLOCK == 0 else v
    blocks = p.reshape(n, v // block, block)
    sums = blocks.sum(axis=2, dtype=np.float64)  # [N, blocks]
    cdf = np.cumsum(sums, axis=1)
    total = cdf[:, -1]
    target = u_N * total
    rows = np.arange(n)
    k = np.minimum((cdf < target[:, None]).sum(axis=1), cdf.shape[1] - 1)
    before = np.where(k > 0, cdf[rows, np.maximum(k - 1, 0)], 0.0)
    inner = before[:, None] + np.cumsum(blocks[rows, k], axis=1, dtype=np.float64)
    ids = k * block + np.minimum((inner < target[:, None]).sum(axis=1), block - 1)
    return ids, np.log(p[rows, ids] / total)


def sample_step(logits_BSV: np.ndarray, tokens_BS: np.ndarray, step: int, steps: int, temperature: float,
                rng: np.random.Generator) -> np.ndarray:
    """One MaskGIT step: new token ids [B, S] (MASK where still masked) from the model's logits.

    `tokens_BS` holds the frame's current ids (MASK for masked). Sampling is inverse CDF with one
    uniform number per token (`draw`), so equal logits give equal tokens in every engine.
    """
    b, s, _ = logits_BSV.shape
    u = rng.random((b, s))  # drawn before anything else: same stream whatever is masked
    masked = tokens_BS == MASK
    out = tokens_BS.copy()
    confidence = np.full((b, s), np.inf)
    if masked.any():
        z = logits_BSV[masked]  # a copy (boolean indexing), so `draw` may work in place
        z = z if z.dtype == np.float32 else z.astype(np.float32)
        z *= np.float32(1.0 / temperature)
        drawn, confidence[masked] = draw(z, u[masked])
        out[masked] = drawn
    keep_masked = min(still_masked(step, steps, s), max(int(masked.sum(axis=1).min()) - 1, 0))
    if keep_masked > 0:
        # The least confident new samples go back under the mask; known tokens have +inf.
        order = np.argsort(confidence, axis=1, kind="stable")[:, :keep_masked]
        np.put_along_axis(out, order, MASK, axis=1)
    return out
