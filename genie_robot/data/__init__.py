"""RT-1 episodes (Open X-Embodiment RLDS) as clips for training and evaluation.

`ClipDataset` (a PyTorch `IterableDataset`), `DataConfig` and `read_clips` load TensorFlow
Datasets on first use, so `genie_robot.data.schema` (names and shapes) imports without it.
"""

from __future__ import annotations

import importlib

_LAZY = {"ClipDataset": "reader", "DataConfig": "reader", "read_clips": "reader", "DatasetError": "layout"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"genie_robot.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'genie_robot.data' has no attribute '{name}'")


__all__ = ["ClipDataset", "DataConfig", "DatasetError", "read_clips"]
