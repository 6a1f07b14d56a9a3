"""Fixed-length video clips from RLDS episode datasets (RT-1 and its Open X-Embodiment kin).

`ClipDataset` is a PyTorch `IterableDataset` over a tf.data pipeline; TensorFlow never
leaves this module. Per epoch it reads this worker's share of episodes, cuts each into
clips of `clip_frames` frames `frame_stride` steps apart (never across an episode's end),
shuffles clips with a seeded buffer, decodes and resizes JPEGs in parallel inside tf.data,
and yields batches:

    frames   uint8  [B, T, 3, H, W]   (models normalise; uint8 keeps host traffic 4x lower)
    actions  dict of float32 [B, T, D] for `action_keys` (evaluation only, never training):
             entry t is the command that leads from frame t to frame t+1, summed over the
             stride for displacements (world_vector, rotation_delta), the last for others
    episode  list[str] (tfds ids), start  int64 [B] (first step of each clip)

Episodes are split train/val by position in the TFDS split (TFDS shuffles examples when
it writes, so a tail slice is a random sample) and divided among (rank, worker) readers as
contiguous, disjoint ranges that together cover the split exactly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from genie_robot.data.layout import DatasetError, DatasetLayout, check_shards_exist, read_layout
from genie_robot.data.schema import ACTION_KEYS
from genie_robot.data.validate import open_builder, read_error

log = logging.getLogger(__name__)
_SUMMED_ACTIONS = ("world_vector", "rotation_delta")


@dataclass
class DataConfig:
    """Where the episodes are and how to cut them into training clips."""

    path: str = "outputs/sim/fractal20220817_data/0.1.0"
    source_split: str = "train"  # the TFDS split episodes come from
    image_key: str = "image"
    clip_frames: int = 16
    frame_stride: int = 1
    clip_hop: int | None = None  # steps between clip starts; None: the clip's span (no overlap)
    resolution: list[int] = field(default_factory=lambda: [64, 80])  # [H, W]
    batch_size: int = 8
    drop_remainder: bool = True
    val_fraction: float = 0.05
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 512
    action_keys: list[str] = field(default_factory=lambda: list(ACTION_KEYS))
    repeat: bool = False  # loop over epochs forever (training); each pass reshuffles
    # Dynamics stage only: train from clips tokenized once (`genie-robot tokenize-data`; data/token_clips.py)
    # instead of decoding and tokenizing `path`'s videos at every step.
    tokens: str | None = None

    @property
    def span(self) -> int:
        return (self.clip_frames - 1) * self.frame_stride + 1

    @property
    def hop(self) -> int:
        return self.clip_hop or self.span


def split_range(n_episodes: int, val_fraction: float, split: str) -> tuple[int, int]:
    """Episode index range [start, end) of `split` ('train' or 'val'); deterministic.

    `val_fraction=1` makes the whole dataset the val split: a held-out set simulated or recorded
    apart from the training data (its train split is empty)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise DatasetError(f"data.val_fraction must be in [0, 1], got {val_fraction}")
    n_val = int(round(n_episodes * val_fraction))
    if val_fraction > 0 and n_episodes > 1:
        n_val = max(1, n_val)
    if split == "train":
        return 0, n_episodes - n_val
    if split == "val":
        return n_episodes - n_val, n_episodes
    raise DatasetError(f"split must be 'train' or 'val', got '{split}'")


def shard_range(start: int, end: int, index: int, count: int) -> tuple[int, int]:
    """Contiguous sub-range `index` of `count`: disjoint, covering, sizes differ by <= 1."""
    n = end - start
    return start + (index * n) // count, start + ((index + 1) * n) // count


def check_resolution(cfg: DataConfig, source_hw: tuple[int, int], where: str) -> None:
    if len(cfg.resolution) != 2 or min(cfg.resolution) < 1:
        raise DatasetError(f"data.resolution must be [H, W] with positive sizes, got {cfg.resolution}")
    h, w = cfg.resolution
    if h > source_hw[0] or w > source_hw[1]:
        raise DatasetError(
            f"data.resolution {h}x{w} is larger than the camera images in {where} "
            f"({source_hw[0]}x{source_hw[1]}); the reader only downsamples: choose H <= "
            f"{source_hw[0]} and W <= {source_hw[1]}")


class ClipDataset(IterableDataset):
    """Batches of clips for one split, sharded over DDP ranks and DataLoader workers.

    Use with `DataLoader(ds, batch_size=None)`; batching happens in tf.data. With worker
    processes use `multiprocessing_context="spawn"` (TensorFlow does not survive fork).
    """

    def __init__(self, cfg: DataConfig, split: str = "train", rank: int = 0, world_size: int = 1):
        if cfg.clip_frames < 1 or cfg.frame_stride < 1 or cfg.hop < 1:
            raise DatasetError(
                f"data.clip_frames, data.frame_stride and data.clip_hop must be >= 1, got "
                f"{cfg.clip_frames}, {cfg.frame_stride}, {cfg.clip_hop}")
        if not 0 <= rank < world_size:
            raise DatasetError(f"rank {rank} is outside world_size {world_size}")
        self.cfg = cfg
        self.split = split
        self.rank, self.world_size = rank, world_size
        self.layout: DatasetLayout = read_layout(cfg.path)
        if cfg.source_split not in self.layout.splits:
            raise DatasetError(
                f"{cfg.path}: no split '{cfg.source_split}' (splits: {sorted(self.layout.splits)})")
        spec = self.layout.image_spec(cfg.image_key)
        check_resolution(cfg, (spec.shape[0], spec.shape[1]), cfg.path)
        missing = [k for k in cfg.action_keys if k not in self.layout.action_keys()]
        if missing:
            raise DatasetError(
                f"{cfg.path}: action keys {missing} not in steps/action (has {self.layout.action_keys()})")
        check_shards_exist(self.layout, cfg.source_split)
        self.episode_range = split_range(self.layout.episodes(cfg.source_split), cfg.val_fraction, split)
        self.epoch = 0
        self._lock = threading.Lock()
        self.stats = {"episodes": 0, "skipped_short": 0, "clips": 0}

    def __getstate__(self) -> dict:
        # DataLoader workers receive a pickled copy; a lock does not pickle, so each copy gets its own.
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def set_epoch(self, epoch: int) -> None:
        """Reseed shuffling for a new pass (as DistributedSampler.set_epoch does)."""
        self.epoch = epoch

    def shard(self) -> tuple[int, int]:
        """This reader's episode range, from (rank, DataLoader worker)."""
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return shard_range(*self.episode_range, self.rank * nw + wid, self.world_size * nw)

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        while True:
            yield from self._one_pass(epoch)
            if not self.cfg.repeat:
                return
            epoch += 1

    # --- tf.data pipeline -------------------------------------------------------------
    def _count(self, length: np.ndarray) -> np.bool_:
        keep = int(length) >= self.cfg.span
        with self._lock:
            self.stats["episodes"] += 1
            self.stats["skipped_short"] += int(not keep)
        return np.bool_(keep)

    def _one_pass(self, epoch: int) -> Iterator[dict]:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        start, end = self.shard()
        if end <= start:
            return
        cfg = self.cfg
        builder = open_builder(cfg.path)
        seed = cfg.seed * 100_003 + epoch
        read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=True, try_autocache=False)
        ds = builder.as_dataset(
            split=f"{cfg.source_split}[{start}:{end}]",
            shuffle_files=cfg.shuffle,
            read_config=read_config,
            decoders={"steps": {"observation": {cfg.image_key: tfds.decode.SkipDecoding()}}},
        )
        ds = ds.map(lambda ep: self._episode_tensors(ep, seed), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        ds = ds.filter(lambda ep: tf.numpy_function(self._count, [ep["length"]], tf.bool, stateful=True))
        ds = ds.flat_map(lambda ep: tf.data.Dataset.from_tensor_slices(ep["clips"]))
        if cfg.shuffle:
            ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        ds = ds.map(self._decode_clip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        try:
            for batch in ds.as_numpy_iterator():
                with self._lock:
                    self.stats["clips"] += len(batch["start"])
                # tf.data hands out read-only buffers; torch wants memory it may write.
                yield {
                    "frames": torch.from_numpy(np.array(batch["frames"])),
                    "actions": {k: torch.from_numpy(np.array(v)) for k, v in batch["actions"].items()},
                    "episode": [e.decode() for e in batch["episode"]],
                    "start": torch.from_numpy(np.array(batch["start"])),
                }
        except GeneratorExit:  # closed early (also at interpreter exit, when `tf` may be gone)
            raise
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise read_error(e, self.layout.shard_files[cfg.source_split], cfg.path) from None
        if self.stats["skipped_short"]:
            log.info("%s %s: %d of %d episodes read so far were shorter than a clip (%d steps) and skipped",
                     cfg.path, self.split, self.stats["skipped_short"], self.stats["episodes"], cfg.span)

    def _episode_tensors(self, ep: dict, seed: int) -> dict:
        """One episode's steps as tensors, cut into clips of frame indices."""
        import tensorflow as tf

        cfg = self.cfg
        steps = ep["steps"].batch(1 << 20).get_single_element()
        images = steps["observation"][cfg.image_key]
        length = tf.shape(images, out_type=tf.int64)[0]
        span, hop, stride = cfg.span, cfg.hop, cfg.frame_stride
        room = tf.maximum(length - span + 1, 0)  # how many start positions fit
        if cfg.shuffle:  # a seeded random phase so every frame is used across epochs
            ep_seed = tf.strings.to_hash_bucket_fast(ep["tfds_id"], 1 << 30)
            phase = tf.random.stateless_uniform(
                [], seed=tf.stack([tf.cast(seed, tf.int64), ep_seed]),
                maxval=tf.maximum(tf.minimum(room, hop), 1), dtype=tf.int64)
        else:
            phase = tf.constant(0, tf.int64)
        n_clips = tf.where(room > 0, (room - 1 - phase) // hop + 1, 0)
        starts = phase + hop * tf.range(n_clips, dtype=tf.int64)
        idx = starts[:, None] + stride * tf.range(cfg.clip_frames, dtype=tf.int64)[None, :]
        actions = {}
        for key in cfg.action_keys:
            a = tf.cast(steps["action"][key], tf.float32)
            a = tf.reshape(a, [length, -1])
            nxt = tf.minimum(idx + stride, length)
            if key in _SUMMED_ACTIONS:
                cs = tf.concat([tf.zeros_like(a[:1]), tf.cumsum(a, axis=0)], axis=0)
                actions[key] = tf.gather(cs, nxt) - tf.gather(cs, idx)
            else:
                actions[key] = tf.gather(a, nxt - 1)
        return {
            "length": length,
            "clips": {
                "images": tf.gather(images, idx),
                "actions": actions,
                "episode": tf.fill([n_clips], ep["tfds_id"]),
                "start": starts,
            },
        }

    def _decode_clip(self, clip: dict) -> dict:
        import tensorflow as tf

        h, w = self.cfg.resolution

        def decode(jpeg):
            img = tf.io.decode_jpeg(jpeg, channels=3)
            ih, iw = tf.shape(img)[0], tf.shape(img)[1]
            # Centre-crop to the target aspect ratio, then area-average down (anti-aliased).
            ch = tf.minimum(ih, tf.cast(tf.round(tf.cast(iw, tf.float32) * h / w), tf.int32))
            cw = tf.minimum(iw, tf.cast(tf.round(tf.cast(ih, tf.float32) * w / h), tf.int32))
            img = tf.image.crop_to_bounding_box(img, (ih - ch) // 2, (iw - cw) // 2, ch, cw)
            img = tf.image.resize(img, [h, w], method="area")
            return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

        frames = tf.map_fn(decode, clip["images"], fn_output_signature=tf.TensorSpec([h, w, 3], tf.uint8))
        return {
            "frames": tf.transpose(frames, [0, 3, 1, 2]),
            "actions": clip["actions"],
            "episode": clip["episode"],
            "start": clip["start"],
        }


def read_clips(cfg: DataConfig, split: str, limit: int, action_keys: tuple[str, ...] | list[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` clips of `split` in reading order (no shuffling) as arrays, for evaluation.

    Returns frames uint8 [N, T, 3, H, W] and the actions of `action_keys`, concatenated in
    that order, [N, T, D] (entry t leads from frame t to t+1; D = 0 for none: a video-only dataset).
    """
    missing = [k for k in action_keys if k not in cfg.action_keys]
    if missing:
        raise ValueError(f"data.action_keys {list(cfg.action_keys)} lacks {missing}, which this command needs")
    frames, actions, n = [], [], 0
    for batch in ClipDataset(replace(cfg, shuffle=False, drop_remainder=False, repeat=False), split):
        frames.append(batch["frames"].numpy())
        parts = [batch["actions"][k].numpy() for k in action_keys]
        actions.append(np.concatenate(parts, axis=-1) if parts else np.zeros((*frames[-1].shape[:2], 0), np.float32))
        n += len(frames[-1])
        if n >= limit:
            break
    if not frames:
        raise ValueError(f"{cfg.path} has no {split} clips of {cfg.clip_frames} frames "
                         f"(data.val_fraction={cfg.val_fraction})")
    return np.concatenate(frames)[:limit], np.concatenate(actions)[:limit]
