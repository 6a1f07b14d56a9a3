"""The one ST-transformer every Genie component is built on.

Genie's block (arXiv 2402.15391, Sec. 2.1): spatial attention over the H*W tokens of one
frame, then causal temporal attention over the T positions of one spatial location, then
ONE feed-forward layer. Memory grows linearly in T instead of quadratically in T*H*W.
Pre-norm, QK-norm (RMSNorm on queries and keys per head, which keeps large bf16 models
stable), and `F.scaled_dot_product_attention`, so GPUs take the flash-attention path.

Tensors carry their axes in their names: x_BTSD is [batch, time, space, width].
Two ablation layouts share the block: `spatial` (ViT: no temporal mixing) and `full`
(C-ViViT: one attention over all T*S tokens, causal across frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genie_robot.models import cpu_kernels
from genie_robot.models.config import STConfig


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm over the second-to-last axis of [N, L, D]."""

    def __init__(self, d_model: int, num_heads: int, inner_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = inner_dim // num_heads
        self.qkv = nn.Linear(d_model, 3 * inner_dim, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)
        self.out = nn.Linear(inner_dim, d_model, bias=False)

    def project(self, x_NLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed queries and keys, and values: each [N, heads, L, head_dim]."""
        n, length, _ = x_NLD.shape
        q, k, v = self.qkv(x_NLD).view(n, length, 3, self.num_heads, self.head_dim).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
               mask_LL: torch.Tensor | None = None) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL, is_causal=causal and mask_LL is None)
        return self.out(y.transpose(1, 2).flatten(2))

    def forward(self, x_NLD: torch.Tensor, causal: bool = False, mask_LL: torch.Tensor | None = None) -> torch.Tensor:
        if mask_LL is None and cpu_kernels.in_use(x_NLD, self.head_dim):
            return self.out(self._fused(x_NLD, causal, keys=False)[0])
        return self.attend(*self.project(x_NLD), causal=causal, mask_LL=mask_LL)

    def query_at(self, x_NLD: torch.Tensor, at: int) -> torch.Tensor:
        """`forward`'s output [N, 1, D] at position `at` alone: every position's key and value, one query."""
        n, length, _ = x_NLD.shape
        inner = self.num_heads * self.head_dim
        q = F.linear(x_NLD[:, at : at + 1], self.qkv.weight[:inner]).view(n, 1, self.num_heads, self.head_dim)
        k, v = F.linear(x_NLD, self.qkv.weight[inner:]).view(n, length, 2, self.num_heads, self.head_dim).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        return self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

    def with_kv(self, x_NLD: torch.Tensor, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward`, and the normed keys and the values [N, heads, L, head_dim] (what a sampling cache holds)."""
        if cpu_kernels.in_use(x_NLD, self.head_dim):
            y, k, v = self._fused(x_NLD, causal, keys=True)
            return self.out(y), k, v
        q, k, v = self.project(x_NLD)
        return self.attend(q, k, v, causal=causal), k, v

    def step(self, x_N1D: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, valid_W: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention of ONE new position per sequence (x [N, 1, D]) over the valid slots of a cache (cache_k/cache_v
        [N, heads, W, head_dim] of normed keys and values, valid_W boolean [W]) and itself: the output [N, 1, D] and
        the position's normed key and value [N, heads, 1, head_dim], for the caller to cache once final."""
        if cpu_kernels.in_use(x_N1D, self.head_dim):
            n = x_N1D.shape[0]
            qkv = self.qkv(x_N1D).view(n, 3, self.num_heads, self.head_dim)
            y, k = torch.ops.genie.cached_attention(qkv, self.q_norm.weight, self.k_norm.weight, self._eps(x_N1D),
                                                    cache_k, cache_v, valid_W, self.head_dim**-0.5)
            return self.out(y).unsqueeze(1), k.unsqueeze(2), qkv[:, 2].unsqueeze(2)
        q, k, v = self.project(x_N1D)
        return self.attend_cached(q, k, v, cache_k, cache_v, valid_W), k, v

    def _fused(self, x_NLD: torch.Tensor, causal: bool, keys: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`genie::attention` on the qkv projection as the matmul leaves it: the output [N, L, inner] (heads side by
        side), and (`keys`) the normed keys and the values [N, heads, L, head_dim]."""
        n, length, _ = x_NLD.shape
        qkv = self.qkv(x_NLD).view(n, length, 3, self.num_heads, self.head_dim)
        y, k = torch.ops.genie.attention(qkv, self.q_norm.weight, self.k_norm.weight, self._eps(x_NLD),
                                         self.head_dim**-0.5, causal, keys)
        return y, (k.transpose(1, 2) if keys else k), qkv[:, :, 2].transpose(1, 2)

    def _eps(self, x: torch.Tensor) -> float:
        return self.q_norm.eps if self.q_norm.eps is not None else torch.finfo(x.dtype).eps

    def attend_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_k: torch.Tensor,
                      cache_v: torch.Tensor, valid_W: torch.Tensor) -> torch.Tensor:
        """`step`'s attention in torch's operators, from projected q, k, v [N, heads, 1, head_dim].

        The new key is never concatenated to the cache: a concatenation copied the whole cache in every layer
        on every step. In torch the cache is read by matmuls on a transposed view (no copy). In an exported ONNX
        graph that transpose would copy the cache, so there it is read by multiply-and-sum, in place.
        """
        in_place = torch.onnx.is_in_onnx_export()  # multiply-and-sum; matmuls on views otherwise
        past = (q * cache_k).sum(-1) if in_place else (q @ cache_k.transpose(-1, -2)).squeeze(-2)  # [N, heads, W]
        p = torch.cat([past.masked_fill(~valid_W, float("-inf")), (q * k).sum(-1)], dim=-1)
        p = (p * self.head_dim**-0.5).softmax(-1)  # [N, heads, W + 1]
        w = cache_k.shape[2]
        y = (p[..., :w, None] * cache_v).sum(2, keepdim=True) if in_place else p[..., None, :w] @ cache_v
        y = y + p[..., w:, None] * v  # [N, heads, 1, head_dim]
        return self.out(y.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class STBlock(nn.Module):
    """Spatial attention, causal temporal attention, one FFN; each pre-normed and residual."""

    def __init__(self, cfg: STConfig):
        super().__init__()
        self.layout = cfg.attention
        self.norm_s = nn.LayerNorm(cfg.d_model)
        self.attn_s = Attention(cfg.d_model, cfg.num_heads, cfg.inner_dim)
        if self.layout == "st":
            self.norm_t = nn.LayerNorm(cfg.d_model)
            self.attn_t = Attention(cfg.d_model, cfg.num_heads, cfg.inner_dim)
        self.norm_f = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim)

    def forward(self, x_BTSD: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        """`kv`: a list to append this block's temporal keys and values to ([B*S, heads, T, head_dim] each: what a
        sampling cache holds for these frames; layout `st`)."""
        b, t, s, d = x_BTSD.shape
        if self.layout == "full":
            # One attention over all frames' tokens; frame t sees frames <= t.
            frame = torch.arange(t, device=x_BTSD.device).repeat_interleave(s)
            mask = frame[:, None] >= frame[None, :]
            x = x_BTSD.reshape(b, t * s, d)
            x = x + self.attn_s(self.norm_s(x), mask_LL=mask)
            x_BTSD = x.view(b, t, s, d)
        else:
            # --- spatial: tokens of one frame attend to each other ---
            x = x_BTSD.reshape(b * t, s, d)
            x = x + self.attn_s(self.norm_s(x))
            x_BTSD = x.view(b, t, s, d)
            if self.layout == "st":
                # --- temporal: one spatial location across frames, causal ---
                x = x_BTSD.transpose(1, 2).reshape(b * s, t, d)
                if kv is None:
                    x = x + self.attn_t(self.norm_t(x), causal=True)
                else:
                    y, k, v = self.attn_t.with_kv(self.norm_t(x), causal=True)
                    kv.append((k, v))
                    x = x + y
                x_BTSD = x.view(b, s, t, d).transpose(1, 2)
        return x_BTSD + self.ffn(self.norm_f(x_BTSD))

    def forward_at(self, x_BTSD: torch.Tensor, at: int) -> torch.Tensor:
        """`forward`'s output at spatial position `at` alone, [B, T, 1, D] (layouts `st` and `spatial`): the
        position's query attends over its frame's tokens, then over its own past; what only the other positions'
        outputs need (their queries, temporal attention and feed-forward) is not computed."""
        b, t, s, d = x_BTSD.shape
        x = x_BTSD.reshape(b * t, s, d)
        x = x[:, at : at + 1] + self.attn_s.query_at(self.norm_s(x), at)  # [B*T, 1, D]
        if self.layout == "st":
            x = x.view(b, t, d)  # the position over time
            x = (x + self.attn_t(self.norm_t(x), causal=True)).view(b * t, 1, d)
        return (x + self.ffn(self.norm_f(x))).view(b, t, 1, d)

    def step(self, x_BSD: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, valid_W: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new frame after cached earlier frames (layout `st` only).

        x_BSD: the new frame's tokens; cache_k/cache_v: this layer's temporal keys/values of the window's
        frames, [B*S, heads, W, head_dim], of which the slots where valid_W is True are earlier frames (the
        rest are ignored). Returns the frame's output and its own temporal key/value ([B*S, heads, 1,
        head_dim]), for the caller to write into the cache. Equals `forward` on the whole sequence at the
        last frame, since temporal attention is causal.
        """
        b, s, d = x_BSD.shape
        x = x_BSD + self.attn_s(self.norm_s(x_BSD))
        y, k, v = self.attn_t.step(self.norm_t(x).reshape(b * s, 1, d), cache_k, cache_v, valid_W)
        x = x + y.view(b, s, d)
        return x + self.ffn(self.norm_f(x)), k, v


class STTransformer(nn.Module):
    """A stack of STBlocks with a final norm; input and output are [B, T, S, D]."""

    def __init__(self, cfg: STConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(STBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.checkpointing = False  # set by training.parallel.apply_activation_checkpointing

    def forward(self, x_BTSD: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                kv: list | None = None, at: int | None = None) -> torch.Tensor:
        """`film`: per block, (scale, shift) broadcastable to x; each block's input becomes
        x * (1 + scale) + shift (feature-wise modulation by a condition, e.g. the LAM's action).
        `kv`: a list that gets every block's temporal (keys, values) (`STBlock.forward`).
        `at`: the output at that spatial position alone, [B, T, 1, D] (`STBlock.forward_at` in the last block):
        the LAM reads only its action token's."""
        if at is not None and kv is not None:
            raise ValueError("at= gives one position's outputs; a cache (kv=) needs every position's")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if film is not None:
                scale, shift = film[i]
                x_BTSD = x_BTSD * (1 + scale) + shift
            if at is not None and i == last:  # (`full` attends over every frame's tokens at once: sliced after)
                x_BTSD = block.forward_at(x_BTSD, at) if block.layout != "full" else block(x_BTSD)[:, :, at : at + 1]
            elif self.checkpointing and self.training:
                x_BTSD = torch.utils.checkpoint.checkpoint(block, x_BTSD, use_reentrant=False)
            else:
                x_BTSD = block(x_BTSD, kv)
        return self.norm(x_BTSD)

    def step(self, x_BSD: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, valid_W: torch.Tensor,
             film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`STBlock.step` through every layer; cache_k/cache_v are [layers, B*S, heads, W, head_dim].

        `film` as in `forward`, broadcastable to the one frame [B, S, D]. Returns the new frame's
        output and its keys/values [layers, B*S, heads, 1, head_dim].
        """
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            if film is not None:
                scale, shift = film[i]
                x_BSD = x_BSD * (1 + scale) + shift
            x_BSD, k, v = block.step(x_BSD, cache_k[i], cache_v[i], valid_W)
            ks.append(k)
            vs.append(v)
        return self.norm(x_BSD), torch.stack(ks), torch.stack(vs)


class FiLM(nn.Linear):
    """Per-block feature-wise modulation by a condition (the LAM's and the dynamics' action).

    One linear map from the condition to a (scale, shift) pair per block of an STTransformer,
    zero-initialized so training starts unmodulated and learns how far to listen. A subclass of
    nn.Linear, so its checkpoint entries are plain `film.weight` / `film.bias`.
    """

    def __init__(self, cond_dim: int, cfg: STConfig):
        super().__init__(cond_dim, 2 * cfg.num_layers * cfg.d_model)
        self.num_layers = cfg.num_layers
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def blocks(self, cond_XC: torch.Tensor, present_X: torch.Tensor | None = None
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(scale, shift) [..., 1, D] per block for conditions [..., C], to modulate the tokens
        [..., S, D] of each condition; zero where `present` (boolean [...]) is False."""
        mod = self(cond_XC)
        if present_X is not None:
            mod = mod * present_X[..., None].to(mod.dtype)
        mod = mod.unflatten(-1, (self.num_layers, 2, -1)).unsqueeze(-4)  # [..., 1, L, 2, D]
        return [(mod[..., i, 0, :], mod[..., i, 1, :]) for i in range(self.num_layers)]


class PositionEmbedding(nn.Module):
    """Learned, factorized (time + space) additive position embeddings."""

    def __init__(self, max_frames: int, tokens_per_frame: int, d_model: int):
        super().__init__()
        self.time = nn.Parameter(torch.zeros(max_frames, 1, d_model))
        self.space = nn.Parameter(torch.zeros(1, tokens_per_frame, d_model))
        nn.init.normal_(self.time, std=0.02)
        nn.init.normal_(self.space, std=0.02)

    def forward(self, x_BTSD: torch.Tensor) -> torch.Tensor:
        t = x_BTSD.shape[1]
        if t > self.time.shape[0]:
            raise ValueError(f"{t} frames exceed the model's {self.time.shape[0]}-frame window")
        return x_BTSD + self.time[:t] + self.space

    def at(self, x_BSD: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Embeddings for one frame at window position t (an int or a 0-d tensor: a gather, so a compiled or
        exported step takes the position as data)."""
        time = self.time.index_select(0, torch.as_tensor(t, device=self.time.device).reshape(1))[0]
        return x_BSD + time + self.space[0]


def patchify(frames_BTCHW: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T, S, C*p*p] with S = (H/p)*(W/p), row-major patches."""
    b, t, c, h, w = frames_BTCHW.shape
    x = frames_BTCHW.reshape(b, t, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, t, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(x_BTSP: torch.Tensor, patch: int, channels: int, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `patchify`."""
    b, t, _, _ = x_BTSP.shape
    h, w = hw
    x = x_BTSP.reshape(b, t, h // patch, w // patch, channels, patch, patch)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, t, channels, h, w)
