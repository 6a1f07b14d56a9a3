"""MaskGIT sampling where the logits are: the torch twin of `genie_robot.core.maskgit`.

`core.maskgit` samples in numpy, from logits the engine hands back to the host: the onnxruntime
engine's path, and the rule's one definition. The torch engine samples here instead, with the same
rule on the same uniform numbers, so both give the same tokens wherever float rounding does not move
a draw across a boundary. Here the [B, S, vocab] logits never leave the device (on a GPU, no
transfer per step; at sim-rt1's 320 tokens x 8,192 codes the numpy sampler was a third of a compiled
CPU step), and `frame` runs all of a frame's MaskGIT steps in one call under torch's `while_loop`, so
a compiled engine makes one call per frame instead of one per step (the per-call cost of a compiled
graph was most of a small model's step at batch 1; docs/BENCHMARKS.md).

The schedule (how many tokens stay masked after each step) is computed by the caller
(`core.maskgit.keep_schedule`) and passed in as data, like the uniforms and the temperature, so one
compiled graph serves every temperature and seed; the step count is the uniforms' first axis (a
graph compiled for static shapes serves one step count).
"""

from __future__ import annotations

import torch
from torch._higher_order_ops import while_loop

from genie_robot.models import cpu_kernels


def draw(z_NV: torch.Tensor, u_N: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF samples of softmax(z) per row and their log-probabilities (float64): `core.maskgit.draw`'s
    two-level search (float32 numerators, float64 sums per block of `block` entries, the entry found by a
    cumulative sum inside its block alone)."""
    n, v = z_NV.shape
    block = block if v % block == 0 else v
    top = z_NV.amax(dim=1, keepdim=True)
    z = z_NV.view(n, v // block, block)
    # The numerators exp(z - top) (the largest 1 per row) are summed where they are computed and not kept: only
    # the chosen block's are computed again. At 8,192 codes a row's numerators written out and read back cost
    # more than the exponentials.
    cdf = (z - top[:, :, None]).exp().sum(dim=2, dtype=torch.float64).cumsum(dim=1)  # [N, blocks]
    total = cdf[:, -1]
    target = u_N * total
    k = (cdf < target[:, None]).sum(dim=1).clamp(max=cdf.shape[1] - 1)
    before = torch.where(k > 0, cdf.gather(1, (k - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(total))
    p = (z.gather(1, k[:, None, None].expand(n, 1, block))[:, 0] - top).exp()  # [N, block]: the chosen block's
    inside = p.to(torch.float64).cumsum(dim=1)
    j = ((before[:, None] + inside) < target[:, None]).sum(dim=1).clamp(max=block - 1)
    return k * block + j, (p.gather(1, j[:, None])[:, 0].to(torch.float64) / total).log()


def step(logits_BSV: torch.Tensor, ids_BS: torch.Tensor, mask_id: int, u_BS: torch.Tensor, keep: torch.Tensor,
         inv_temperature: torch.Tensor, block: int) -> torch.Tensor:
    """One MaskGIT step (`core.maskgit.sample_step`): new ids [B, S], `mask_id` where still masked.

    Every masked token is drawn from softmax(logits * inv_temperature) with its uniform; then the `keep`
    (a 0-d tensor) least confident new draws go back under the mask (a stable sort, as numpy's, so ties
    fall the same way; known tokens have confidence +inf).
    """
    if cpu_kernels.in_use(logits_BSV):  # compiled, on the CPU: the same rule in one pass over the masked rows
        return torch.ops.genie.maskgit_sample(logits_BSV, ids_BS, mask_id, u_BS, keep, inv_temperature, block)
    b, s, v = logits_BSV.shape
    masked = ids_BS == mask_id
    drawn, logp = draw((logits_BSV.float() * inv_temperature).reshape(b * s, v), u_BS.reshape(b * s), block)
    out = torch.where(masked, drawn.view(b, s), ids_BS)
    confidence = torch.where(masked, logp.view(b, s), torch.full_like(logp.view(b, s), float("inf")))
    order = confidence.sort(dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(s, device=order.device).expand(b, s))
    return torch.where(rank < keep, torch.full_like(out, mask_id), out)


def frame(logits_fn, mask_id: int, u_NBS: torch.Tensor, keep_N: torch.Tensor, inv_temperature: torch.Tensor,
          block: int) -> torch.Tensor:
    """A whole frame by MaskGIT: ids [B, S] after len(keep_N) steps from an all-masked start.

    `logits_fn(ids [B, S]) -> logits [B, S, vocab]` is the model's cached step; `u_NBS` the uniforms of every
    step, `keep_N` how many tokens each step leaves masked. The loop is `while_loop`, so torch.compile makes
    it one graph of one step's size.
    """
    b, s = u_NBS.shape[1:]

    def cond(i: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return i < keep_N.shape[0]

    def body(i: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        at = i.reshape(1)
        return i + 1, step(logits_fn(ids), ids, mask_id, u_NBS.index_select(0, at)[0], keep_N.index_select(0, at)[0],
                           inv_temperature, block)

    start = torch.full((b, s), mask_id, dtype=torch.long, device=u_NBS.device)
    if not torch.compiler.is_compiling():  # eager: a plain loop (an eager while_loop traces its body first)
        for i in range(keep_N.shape[0]):
            start = body(torch.tensor(i, device=u_NBS.device), start)[1]
        return start
    return while_loop(cond, body, (torch.zeros((), dtype=torch.long, device=u_NBS.device), start))[1]
