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


def sample_step(logits_BSV: np.ndarray, tokens_BS: np.ndarray, step: int, steps: int, temperature: float,
                rng: np.random.Generator) -> np.ndarray:
    """One MaskGIT step: new token ids [B, S] (MASK where still masked) from the model's logits.

    `tokens_BS` holds the frame's current ids (MASK for masked). Sampling is inverse-CDF on a
    float64 softmax, so equal logits give equal tokens on any platform.
    """
    b, s, v = logits_BSV.shape
    u = rng.random((b, s))  # drawn before anything else: same stream whatever is masked
    masked = tokens_BS == MASK
    out = tokens_BS.copy()
    confidence = np.full((b, s), np.inf)
    if masked.any():
        z = logits_BSV[masked].astype(np.float64) / temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        cdf = np.cumsum(p, axis=1)
        total = cdf[:, -1:]
        drawn = np.minimum((cdf < u[masked][:, None] * total).sum(axis=1), v - 1)
        out[masked] = drawn
        confidence[masked] = np.log(p[np.arange(len(drawn)), drawn] / total[:, 0])
    keep_masked = min(still_masked(step, steps, s), max(int(masked.sum(axis=1).min()) - 1, 0))
    if keep_masked > 0:
        # The least confident new samples go back under the mask; known tokens have +inf.
        order = np.argsort(confidence, axis=1, kind="stable")[:, :keep_masked]
        np.put_along_axis(out, order, MASK, axis=1)
    return out
