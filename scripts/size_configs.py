"""Choose head_dim and ffn_mult so each paper-sized config lands on its named parameter count.

Genie's Table 10 gives layers, heads and width for the dynamics ladder, and Sec. 3 gives
layers/width/heads for the 200M tokenizer and the 300M LAM, but not the attention head
width nor the FFN width; no single choice reproduces all the totals. This script picks,
per config, the first head_dim (d/heads, 64, 48, 32) for which an FFN multiplier in
[0.5, 4] hits the named size, counting on the `meta` device. Its output is what the YAML
files in configs/model/ hold. Run: python scripts/size_configs.py
"""

from __future__ import annotations

import torch

from genie_robot.models import STConfig, STTransformer


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def stack_params(layers: int, d: int, heads: int, head_dim: int, ffn_mult: float) -> int:
    with torch.device("meta"):
        return count(STTransformer(STConfig(d, layers, heads, head_dim, ffn_mult)))


def solve(stacks: list[tuple[int, int, int]], target: float, extra: int = 0) -> tuple[int, float]:
    """stacks: (layers, d, heads) sharing head_dim/ffn_mult; extra: params outside the stacks."""
    d0, h0 = stacks[0][1], stacks[0][2]
    for head_dim in ([d0 // h0] if d0 % h0 == 0 else []) + [64, 48, 32]:
        base = sum(stack_params(L, d, h, head_dim, 0.0) for L, d, h in stacks) + extra
        per_mult = sum(stack_params(L, d, h, head_dim, 1.0) for L, d, h in stacks) + extra - base
        mult = (target - base) / per_mult
        if 0.5 <= mult <= 4.0:
            return head_dim, round(mult, 3)
    raise SystemExit(f"no head_dim fits {stacks} at {target:.3g}")


LADDER = {  # name: (layers, heads, width, named size)
    "41m": (18, 8, 512, 41e6), "96m": (16, 16, 768, 96e6), "192m": (20, 18, 1024, 192e6),
    "404m": (21, 12, 1536, 404e6), "811m": (20, 20, 2048, 811e6), "1.6b": (28, 22, 2560, 1.6e9),
    "2.7b": (36, 22, 3072, 2.7e9),
}

if __name__ == "__main__":
    tokens, vocab = (128 // 4) * (160 // 4), 1024
    for name, (layers, heads, d, size) in LADDER.items():
        extra = (vocab + 1) * d + 8 * d + 16 * d + tokens * d + d * vocab + vocab
        print(f"dynamics {name}: layers={layers} heads={heads} d={d} ->", solve([(layers, d, heads)], size, extra))
    print("tokenizer 200M ->", solve([(12, 512, 8), (20, 1024, 16)], 200e6))
    print("lam 300M ->", solve([(20, 1024, 16), (20, 1024, 16)], 300e6))
