"""Device memory of a dynamics training step, known before a GPU is at hand.

A lent GPU comes for minutes, and a step that runs out of memory spends them: rt1_2.5b's dynamics step at 2
clips without activation checkpointing ran a 139.7 GiB H200 out of memory (docs/BENCHMARKS.md). A researcher
sizing a run on their own cards has the same question: which batch fits, with or without checkpointing?

`dynamics_step_memory` runs the trainer's dynamics step from tokenized clips (its loss, `dynamics_loss`; bf16
autocast; `train.activation_checkpointing`; fused AdamW with its state already allocated, as from the second
step on) on fake tensors: shapes and dtypes without storage, so 2.5B parameters cost no memory and no arithmetic
here. torch's MemTracker counts the live bytes by kind at the step's peak; the frozen tokenizer and LAM, which the
stage holds on the device beside its model, are added. The step is scored
at every position (the trainer's only at the masked ones; frame 0 never is), a little more than the trainer
holds. It is one device holding the whole model: FSDP2's shards are not modelled. It runs CPU autocast, whose
op lists differ a little from CUDA's.

Reading the kinds: MemTracker labels a tensor a gradient once it is stored in `.grad`, so gradients the backward
pass has computed but not yet stored are `temporaries`, and at a peak early in the backward pass `grads` reads 0.
The total is the same either way.

What a GPU needs beyond the estimate: its CUDA context, library workspaces and the allocator's fragmentation;
`largest_batch` leaves `headroom` of the budget for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from genie_robot.models import ModelConfig, build
from genie_robot.training.parallel import apply_activation_checkpointing
from genie_robot.training.stages import dynamics_loss

GIB = 2**30
# MemTracker's kinds, named as a reader of the JSON expects them.
KINDS = {"PARAM": "params", "BUFFER": "buffers", "GRAD": "grads", "OPT": "optimizer", "ACT": "activations",
         "TEMP": "temporaries", "OTH": "other", "Total": "total"}
FROZEN = ("tokenizer", "lam")  # what the dynamics stage holds beside its model (load_frozen: fp32, on the device)


@dataclass(frozen=True)
class StepMemory:
    """Peak bytes of one training step on one device, by kind (`total` is their sum at the peak).

    `frozen`: the frozen tokenizer's and LAM's weights, which the dynamics stage keeps on the device."""

    model: str
    batch: int
    checkpointing: bool
    params: int
    buffers: int
    grads: int
    optimizer: int
    activations: int
    temporaries: int
    other: int
    frozen: int
    total: int

    def as_gib(self) -> dict:
        """The JSON record: the sizes in GiB."""
        sizes = {*KINDS.values(), "frozen"}
        return {k: round(v / GIB, 3) if k in sizes else v for k, v in asdict(self).items()}


def _fake_parameters(model: nn.Module) -> None:
    """Every parameter and buffer replaced by a fake tensor of its shape and dtype (run inside FakeTensorMode).

    Built on the meta device first: initializing 2.5B parameters, even fake, would draw random numbers."""
    for m in model.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)


def dynamics_step_memory(cfg: ModelConfig, batch: int, checkpointing: bool = True, fake: bool = True) -> StepMemory:
    """The peak memory of one dynamics training step at `batch` clips of `cfg.frames` frames (bf16 autocast).

    `fake=False` runs the same step on real CPU tensors, random weights: what the fake run is checked against."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if batch < 1:
        raise ValueError(f"batch must be at least 1 clip, got {batch}")
    if not fake:
        torch.manual_seed(0)
        frozen = [build(cfg, c).requires_grad_(False) for c in FROZEN]  # held through the step, as the stage does
        return _step_peak(cfg, build(cfg, "dynamics"), batch, checkpointing, _bytes(frozen))
    with torch.device("meta"):
        model = build(cfg, "dynamics")
        frozen = [build(cfg, c) for c in FROZEN]  # counted, not run: the step from tokenized clips never calls them
    with FakeTensorMode():
        _fake_parameters(model)
        return _step_peak(cfg, model, batch, checkpointing, _bytes(frozen))


def _bytes(modules: list[nn.Module]) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


def _step_peak(cfg: ModelConfig, model: nn.Module, batch: int, checkpointing: bool, frozen: int) -> StepMemory:
    from torch.distributed._tools.mem_tracker import MemTracker

    if checkpointing:
        apply_activation_checkpointing(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the trainer on CUDA: no foreach copies
    for p in model.parameters():  # the optimizer's state, as every step after the first has it
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t, s = cfg.frames, cfg.tokens_per_frame()
    tokens = torch.zeros((batch, t, s), dtype=torch.long)
    actions = torch.zeros((batch, t - 1), dtype=torch.long)
    # The tokenizer's codebook (counted in `frozen`), for soft targets (`code_smoothing`): for every token, at most
    # what `changed` builds.
    codebook = torch.zeros(cfg.tokenizer.num_codes, cfg.tokenizer.code_dim)
    tracker = MemTracker()
    tracker.track_external(model, opt)
    with tracker:
        inp = tokens.clone()
        inp[:, 1:] = model.mask_id  # frames 1..T masked: the most the training mask draws
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the metrics too: their [N, vocab] scores are live here
            loss, _ = dynamics_loss(model, model, cfg.dynamics, codebook, inp, actions, tokens.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    by_kind = {KINDS[getattr(k, "name", str(k))]: int(v) for k, v in peak.items()}
    by_kind["total"] = by_kind.get("total", 0) + frozen
    return StepMemory(model=cfg.name, batch=batch, checkpointing=checkpointing, frozen=frozen,
                      **{k: by_kind.get(k, 0) for k in KINDS.values()})


def largest_batch(cfg: ModelConfig, budget_bytes: float, checkpointing: bool = True, headroom: float = 0.1,
                  limit: int = 4096) -> StepMemory | None:
    """The step at the largest batch whose estimate fits `(1 - headroom) * budget_bytes`; None if 1 clip does not.

    The peak grows with the batch (by the activations alone): doubling finds a batch that does not fit, then a
    bisection over the estimates themselves, not a line through two of them, settles it (`limit` caps the search)."""
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    room = (1 - headroom) * budget_bytes
    best = dynamics_step_memory(cfg, 1, checkpointing)
    if best.total > room:
        return None
    lo, hi = 1, None
    b = 2
    while hi is None:  # double until a batch does not fit
        step = dynamics_step_memory(cfg, b, checkpointing)
        if step.total > room:
            hi = b
        elif b >= limit:
            return step
        else:
            lo, best, b = b, step, min(2 * b, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        step = dynamics_step_memory(cfg, mid, checkpointing)
        if step.total > room:
            hi = mid
        else:
            lo, best = mid, step
    return best
