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

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def apply_fsdp(model: nn.Module, bf16: bool) -> nn.Module:
    """FSDP2: shard each ST block, then the rest; parameters gathered per block on use."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": mp} if mp else {}
    for m in model.modules():
        if isinstance(m, STBlock):
            fully_shard(m, **kwargs)
    fully_shard(model, **kwargs)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
