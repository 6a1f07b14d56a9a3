"""Analytic FLOP counts for the ST-transformer, dynamics steps and generated frames.

Counted as 2 FLOPs per multiply-accumulate of every matmul and attention product (the
convention of torch.utils.flop_counter, against which tests/models/test_models.py checks the
formula); norms, softmax and elementwise work are left out.
"""

from __future__ import annotations

from genie_robot.models.config import SAMPLING, ModelConfig, STConfig


def st_layer_flops(cfg: STConfig, new_tokens: int, frame_tokens: int, temporal_keys: int) -> float:
    """One ST block over `new_tokens` tokens (whole frames of `frame_tokens`), each attending
    to `temporal_keys` time steps at its spatial location."""
    d, inner, ffn = cfg.d_model, cfg.inner_dim, cfg.ffn_dim
    attn_proj = 4 * new_tokens * d * inner  # qkv + out
    spatial = 2 * new_tokens * frame_tokens * inner  # scores + weighted values
    flops = attn_proj + spatial
    if cfg.attention == "st":
        flops += attn_proj + 2 * new_tokens * temporal_keys * inner
    flops += 2 * new_tokens * d * ffn
    return 2.0 * flops


def dynamics_forward_flops(cfg: ModelConfig, frames: int, skip_masked: bool = True) -> float:
    """A plain (uncached) dynamics forward over `frames` frames. With `skip_masked`, frame t
    attends to the t+1 time steps a causal kernel computes; without, to all `frames` (what a
    dense attention kernel, and torch's flop counter, charge)."""
    s, st = cfg.tokens_per_frame(), cfg.dynamics.transformer
    total = 0.0
    for t in range(frames):
        total += st.num_layers * st_layer_flops(st, s, s, t + 1 if skip_masked else frames)
    return total + 2.0 * frames * s * st.d_model * cfg.tokenizer.num_codes  # output head


def generated_frame_flops(cfg: ModelConfig, maskgit_steps: int = SAMPLING.steps,
                          context: int | None = None) -> dict[str, float]:
    """FLOPs to generate one frame after `context` frames (default: a full window).

    cached: each MaskGIT step runs only the new frame's tokens against cached past keys and
    values, plus one pass to append the finished frame to the cache; uncached: every step
    re-runs the whole window. Both add the tokenizer decoder for the new frame.
    """
    context = cfg.frames - 1 if context is None else context
    s, st = cfg.tokens_per_frame(), cfg.dynamics.transformer
    head = 2.0 * s * st.d_model * cfg.tokenizer.num_codes
    step_new = st.num_layers * st_layer_flops(st, s, s, context + 1) + head
    dec = cfg.tokenizer.decoder
    to_pixels = 2.0 * s * dec.d_model * cfg.channels * cfg.tokenizer.patch**2
    decode = dec.num_layers * st_layer_flops(dec, s, s, context + 1) + to_pixels
    cached = (maskgit_steps + 1) * step_new + decode
    uncached = maskgit_steps * dynamics_forward_flops(cfg, context + 1) + decode
    return {"tokens_per_frame": float(s), "cached": cached, "uncached": uncached, "tokenizer_decode": decode}
