"""Distribution, compilation and activation checkpointing, applied from outside the model.

The models stay plain `nn.Module`s with no distributed code (the torchtitan pattern); each
`apply_*` wraps or flags an unchanged model.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from genie_robot.models.st_transformer import STBlock, STTransformer
from genie_robot.models.vq import VectorQuantizer


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's environment; single process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each ST block in the backward pass instead of storing its activations."""
    for m in model.modules():
        if isinstance(m, STTransformer):
            m.checkpointing = True


def apply_compile(model: nn.Module) -> None:
    """torch.compile each ST block (small graphs compile fast and reuse across blocks)."""
    for m in model.modules():
        if isinstance(m, STTransformer):
            for i, block in enumerate(m.blocks):
                m.blocks[i] = torch.compile(block)


def apply_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":  # batch statistics over the global batch (the LAM's pre-VQ norm)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)  # CPU: SyncBatchNorm needs CUDA; batch statistics stay per rank


def apply_fsdp(model: nn.Module, bf16: bool) -> nn.Module:
    """FSDP2: shard each ST block, then the rest; parameters gathered per block on use.

    VQ codebooks stay whole on every rank: data-dependent initialization and dead-code
    restarts rewrite codebook rows inside the forward pass, which a sharded parameter would
    not keep. Their (small) gradients are averaged across ranks by a hook instead.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": mp} if mp else {}
    codebooks = {m.codebook for m in model.modules() if isinstance(m, VectorQuantizer)}
    for p in codebooks:
        p.register_post_accumulate_grad_hook(_average_grad)
    for m in model.modules():
        if isinstance(m, STBlock):
            fully_shard(m, **kwargs)
    fully_shard(model, ignored_params=codebooks, **kwargs)
    return model


def _average_grad(p: torch.Tensor) -> None:
    dist.all_reduce(p.grad)  # SUM: gloo has no AVG
    p.grad.div_(dist.get_world_size())


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Global gradient-norm clipping that also works when FSDP2 shards some parameters (DTensor)
    and leaves others whole (the VQ codebooks)."""
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    sharded = [p for p in params if isinstance(p.grad, DTensor)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    whole = [p for p in params if not isinstance(p.grad, DTensor)]
    norm = torch.nn.utils.get_total_norm([p.grad for p in sharded]).full_tensor()
    if whole:
        norm = torch.linalg.vector_norm(torch.stack([norm, torch.nn.utils.get_total_norm([p.grad for p in whole])]))
    torch.nn.utils.clip_grads_with_norm_(sharded, max_norm, norm)
    if whole:
        torch.nn.utils.clip_grads_with_norm_(whole, max_norm, norm)
    return norm
