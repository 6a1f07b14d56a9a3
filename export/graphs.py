"""The torch modules that become the exported ONNX graphs, one per runtime primitive.

Each wrapper is a thin view of a trained component with plain tensor inputs and outputs and
no Python control flow on data, so `torch.onnx.export` sees exactly the code the torch engine
runs (the same `encode`, `decode`, `infer_actions` and `DynamicsModel.step`):

- `tokenizer_encoder`: frames float [B, T, C, H, W] in [0, 1] -> token ids int64 [B, T, S]
- `tokenizer_decoder`: token ids [B, T, S] -> frames float [B, T, C, H, W] in [0, 1]
- `lam_encoder`: frames (or token ids, for `lam.input=tokens`) [B, T, ...] -> action ids [B, T-1]
- `dynamics_step`: one MaskGIT step of the frame at window position t: logits [B, S, vocab]
- `dynamics_append`: the cache with a finished frame's temporal keys/values in its slot t

The cache is laid out [layers, B, rows, heads, window, head_dim] (the torch engine flattens
B*rows), so its batch axis is the request's batch axis and nothing in the graph depends on
B*rows. It has the window's size at every position (slots t.. are ignored), so the step graph
reads it in place and never concatenates to it.
"""

from __future__ import annotations

import torch
from torch import nn

from genie_robot.models.dynamics import write_cache


class MethodGraph(nn.Module):
    """One method of a component as a graph: `tokenizer.encode`, `tokenizer.decode`, `lam.infer_actions`."""

    def __init__(self, component: nn.Module, method: str):
        super().__init__()
        self.component, self.method = component, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.component, self.method)(x)


class _DynamicsGraph(nn.Module):
    def __init__(self, dynamics: nn.Module):
        super().__init__()
        self.dynamics = dynamics

    def _step(self, tokens, action, t, past_k, past_v):
        layers, b, s, heads, window, dh = past_k.shape
        flat = (layers, b * s, heads, window, dh)
        logits, k, v = self.dynamics.step(tokens, action, t, past_k.reshape(flat), past_v.reshape(flat))
        return logits, k.reshape(layers, b, s, heads, 1, dh), v.reshape(layers, b, s, heads, 1, dh)


class DynamicsStep(_DynamicsGraph):
    """tokens [B, S] (mask id where masked), action [B] (-1: none), t [] -> logits [B, S, vocab]."""

    def forward(self, tokens, action, t, past_k, past_v):
        return self._step(tokens, action, t, past_k, past_v)[0]


class DynamicsAppend(_DynamicsGraph):
    """The same inputs -> the cache with this frame's keys/values in slot t (same shape as the cache)."""

    def forward(self, tokens, action, t, past_k, past_v):
        _, k, v = self._step(tokens, action, t, past_k, past_v)
        return write_cache(past_k, k, t), write_cache(past_v, v, t)
