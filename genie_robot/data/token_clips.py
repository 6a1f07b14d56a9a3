"""Clips already tokenized: the dynamics stage's training data without video decoding or TensorFlow.

The dynamics model trains on the frozen tokenizer's tokens and the frozen LAM's latent actions of
each clip, never on pixels. Computing them once (`genie-robot tokenize-data`) and training from
the file moves the stage to any machine with torch alone (a GPU machine without TensorFlow or the
dataset's JPEGs) and takes the frozen models and the JPEG decoding out of every step.

One `.npz` file (written atomically, read with `allow_pickle=False`):

    train_tokens   uint16 [N, T, S]     the tokenizer's codes of each training clip (S = h x w per frame)
    train_actions  uint8  [N, T-1]      the LAM's latent action of each transition
    val_frames     uint8  [M, T, 3, H, W]  the held-out clips themselves (evaluation decodes pictures
                                        and scores PSNR against them)
    val_action_<key> float32 [M, T, D]  their real actions (the probes; never trained on)
    meta           str (JSON)           format, model name, frames, resolution, token grid, the frozen
                                        checkpoints' digests (`lineage`), and where the clips came from

Each clip is tokenized alone, as the dynamics stage does on the fly: the tokenizer is causal in
time, so a frame's tokens depend on the clip it starts, and overlapping clips (`data.clip_hop`
below the clip's span) are stored apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from genie_robot.data.layout import DatasetError

FORMAT = 1


def write_token_clips(path: Path, train_tokens: np.ndarray, train_actions: np.ndarray, val_frames: np.ndarray,
                      val_actions: dict[str, np.ndarray], meta: dict) -> Path:
    """Writes the file in one piece: a temporary file renamed into place, so a cut run leaves none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(train_tokens.max(initial=0)) > np.iinfo(np.uint16).max:
        raise ValueError(f"token ids up to {int(train_tokens.max())} do not fit uint16")
    arrays = {"train_tokens": train_tokens.astype(np.uint16), "train_actions": train_actions.astype(np.uint8),
              "val_frames": val_frames.astype(np.uint8),
              **{f"val_action_{k}": v.astype(np.float32) for k, v in val_actions.items()},
              "meta": np.array(json.dumps({"format": FORMAT, **meta}))}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class TokenClips:
    """A tokenized clips file, checked on opening: every field present, shapes that agree, ids in range."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"data.tokens={self.path}: no such file (make one with `genie-robot tokenize-data`)")
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path} is not a readable tokenized clips file: {e}") from e
        for key in ("meta", "train_tokens", "train_actions", "val_frames"):
            if key not in arrays:
                raise DatasetError(f"{self.path} has no field '{key}' (fields: {sorted(arrays)})")
        try:
            self.meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{self.path}: field 'meta' is not JSON: {e}") from e
        if self.meta.get("format") != FORMAT:
            raise DatasetError(f"{self.path}: format {self.meta.get('format')}, expected {FORMAT}")
        self.tokens, self.actions = arrays["train_tokens"], arrays["train_actions"]
        self.val_frames = arrays["val_frames"]
        self.val_actions = {k.removeprefix("val_action_"): v for k, v in arrays.items() if k.startswith("val_action_")}
        n, t = self.tokens.shape[:2] if self.tokens.ndim == 3 else (None, None)
        if self.tokens.ndim != 3 or self.tokens.dtype != np.uint16:
            raise DatasetError(f"{self.path}: field 'train_tokens' must be uint16 [N, T, S], got "
                               f"{self.tokens.dtype} {list(self.tokens.shape)}")
        if self.actions.shape != (n, t - 1):
            raise DatasetError(f"{self.path}: field 'train_actions' must be [{n}, {t - 1}] (one per transition of "
                               f"each clip), got {list(self.actions.shape)}")
        if self.val_frames.ndim != 5 or self.val_frames.shape[1] != t:
            raise DatasetError(f"{self.path}: field 'val_frames' must be uint8 [M, {t}, 3, H, W], got "
                               f"{list(self.val_frames.shape)}")
        for key, a in self.val_actions.items():
            if a.shape[:2] != self.val_frames.shape[:2]:
                raise DatasetError(f"{self.path}: field 'val_action_{key}' has {list(a.shape[:2])} clips x steps, "
                                   f"the val frames {list(self.val_frames.shape[:2])}")
        if n == 0:
            raise DatasetError(f"{self.path} holds no training clips")

    def check(self, model: str, frames: int, resolution: list[int], grid: list[int], num_codes: int,
              num_actions: int, lineage: dict[str, str]) -> None:
        """The file must have been made for this model and by these frozen tokenizer and LAM."""
        m = self.meta
        want = {"model": model, "frames": frames, "resolution": list(resolution), "grid": list(grid)}
        diffs = [f"{k} {m.get(k)} (this run: {v})" for k, v in want.items() if m.get(k) != v]
        if self.tokens.shape[1:] != (frames, grid[0] * grid[1]):
            diffs.append(f"clips of {list(self.tokens.shape[1:])} tokens (this run: {[frames, grid[0] * grid[1]]})")
        if diffs:
            raise DatasetError(f"{self.path} was tokenized for another model: {'; '.join(diffs)}")
        if m.get("lineage") != lineage:
            raise DatasetError(f"{self.path} was tokenized by other frozen checkpoints ({m.get('lineage')}) than this "
                               f"run's ({lineage}); tokenize again with this run's train.tokenizer_ckpt/lam_ckpt")
        if int(self.tokens.max()) >= num_codes or int(self.actions.max()) >= num_actions:
            raise DatasetError(f"{self.path}: ids beyond the model's {num_codes} codes / {num_actions} actions")

    def __len__(self) -> int:
        return len(self.tokens)

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of whole batches in an order fixed by (seed, epoch), so a resumed run skips to its place."""
        if batch_size > len(self):
            raise DatasetError(f"{self.path}: {len(self)} training clips, fewer than one batch of {batch_size}")
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = np.sort(order[i: i + batch_size])
            yield {"tokens": torch.from_numpy(self.tokens[idx].astype(np.int64)),
                   "actions": torch.from_numpy(self.actions[idx].astype(np.int64))}

    def val_batches(self, batch_size: int) -> Iterator[dict]:
        """The held-out clips as `ClipDataset` yields them: frames and real actions."""
        for i in range(0, len(self.val_frames), batch_size):
            yield {"frames": torch.from_numpy(self.val_frames[i: i + batch_size]),
                   "actions": {k: torch.from_numpy(v[i: i + batch_size]) for k, v in self.val_actions.items()}}
