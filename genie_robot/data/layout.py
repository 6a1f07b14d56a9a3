"""What an RLDS/TFDS episode dataset directory holds, read from its JSON metadata.

Validation happens here, before TensorFlow is involved, for two reasons: errors can name
the file and the field a user must fix instead of surfacing from deep inside a tf.data
graph, and the torch side (DataLoader workers are forked) never needs a TensorFlow
runtime in the parent process just to learn episode counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message says what and where."""


@dataclass(frozen=True)
class FeatureSpec:
    kind: str  # Tensor, Scalar, Image, Dataset, ...
    shape: tuple[int | None, ...]
    dtype: str
    encoding: str | None = None  # jpeg/png for images


@dataclass(frozen=True)
class DatasetLayout:
    """The parts of a TFDS directory the reader relies on."""

    path: str
    name: str
    version: str
    file_format: str
    splits: dict[str, list[int]]  # split -> episodes per shard
    shard_files: dict[str, list[str]]  # split -> shard paths
    step_features: dict[str, FeatureSpec] = field(default_factory=dict)  # "observation/image" -> spec

    def episodes(self, split: str = "train") -> int:
        return sum(self.splits[split])

    def image_keys(self) -> list[str]:
        return sorted(
            k.split("/", 1)[1] for k, v in self.step_features.items()
            if v.kind == "Image" and k.startswith("observation/")
        )

    def action_keys(self) -> list[str]:
        return sorted(k.split("/", 1)[1] for k in self.step_features if k.startswith("action/"))

    def image_spec(self, image_key: str) -> FeatureSpec:
        spec = self.step_features.get(f"observation/{image_key}")
        if spec is None or spec.kind != "Image":
            raise DatasetError(
                f"{self.path}: no camera image 'steps/observation/{image_key}' in features.json; "
                f"camera keys in this dataset: {self.image_keys() or 'none'} (set data.image_key)")
        if len(spec.shape) != 3 or spec.shape[2] != 3 or None in spec.shape:
            raise DatasetError(
                f"{self.path}: steps/observation/{image_key} has shape {spec.shape}; "
                "expected a fixed-size RGB image (H, W, 3)")
        return spec


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _is_remote(path: str) -> bool:
    return "://" in path


def _exists(path: str) -> bool:
    if _is_remote(path):
        return _gfile().exists(path)
    import os

    return os.path.exists(path)


def _read_json(path: str, what: str) -> Any:
    try:
        if _is_remote(path):
            with _gfile().GFile(path, "r") as f:
                text = f.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read {what} {path}: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); the {what} is corrupt") from e


def _flatten_features(node: dict, prefix: str, out: dict[str, FeatureSpec], path: str) -> None:
    cls = node.get("pythonClassName", "").rsplit(".", 1)[-1]
    if "featuresDict" in node:
        for key, child in node["featuresDict"]["features"].items():
            _flatten_features(child, f"{prefix}{key}/", out, path)
        return
    if cls == "Image" and "image" in node:
        img = node["image"]
        dims = tuple(int(d) if int(d) >= 0 else None for d in img.get("shape", {}).get("dimensions", []))
        out[prefix.rstrip("/")] = FeatureSpec("Image", dims, img.get("dtype", "uint8"), img.get("encodingFormat"))
        return
    if "tensor" in node:
        t = node["tensor"]
        dims = tuple(int(d) if int(d) >= 0 else None for d in t.get("shape", {}).get("dimensions", []))
        out[prefix.rstrip("/")] = FeatureSpec(cls or "Tensor", dims, t.get("dtype", "?"), t.get("encoding"))
        return
    if "sequence" in node:  # a nested Dataset or Sequence: recorded as itself, not walked
        out[prefix.rstrip("/")] = FeatureSpec(cls or "Sequence", (None,), "sequence")
        return
    out[prefix.rstrip("/")] = FeatureSpec(cls or "unknown", (), "?")


def read_layout(path: str) -> DatasetLayout:
    """Read and check `<path>/dataset_info.json` and `features.json` of an RLDS episode dataset."""
    path = path.rstrip("/")
    if not _exists(path):
        raise DatasetError(
            f"dataset directory {path} does not exist; data.path must point at a TFDS version "
            "directory such as <data_dir>/fractal20220817_data/0.1.0")
    info_path, feat_path = f"{path}/dataset_info.json", f"{path}/features.json"
    for p, what in ((info_path, "dataset_info.json"), (feat_path, "features.json")):
        if not _exists(p):
            raise DatasetError(
                f"{path} is not a TFDS dataset directory: {what} is missing (expected the version "
                "directory that holds dataset_info.json, features.json and the *.tfrecord-* shards)")
    info = _read_json(info_path, "dataset info")
    feats = _read_json(feat_path, "feature spec")

    for key in ("name", "splits"):
        if key not in info:
            raise DatasetError(f"{info_path}: field '{key}' is missing")
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "tfrecord":
        raise DatasetError(f"{info_path}: fileFormat is '{file_format}'; this reader reads 'tfrecord' datasets")
    splits: dict[str, list[int]] = {}
    shard_files: dict[str, list[str]] = {}
    for split in info["splits"]:
        name = split.get("name")
        lengths = [int(n) for n in split.get("shardLengths", [])]
        if not name or not lengths:
            raise DatasetError(f"{info_path}: a split entry lacks 'name' or 'shardLengths': {split}")
        template = split.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
        files = []
        for i in range(len(lengths)):
            fname = (template.replace("{DATASET}", info["name"]).replace("{SPLIT}", name)
                     .replace("{FILEFORMAT}", file_format)
                     .replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{len(lengths):05d}")
                     .replace("{SHARD_INDEX}", f"{i:05d}").replace("{NUM_SHARDS}", f"{len(lengths):05d}"))
            files.append(f"{path}/{fname}")
        splits[name], shard_files[name] = lengths, files

    top = feats.get("featuresDict", {}).get("features", {})
    steps = top.get("steps")
    if steps is None or "sequence" not in steps:
        raise DatasetError(
            f"{feat_path}: no 'steps' sequence feature; expected an RLDS episode dataset "
            f"(top-level features found: {sorted(top) or 'none'})")
    step_features: dict[str, FeatureSpec] = {}
    _flatten_features(steps["sequence"]["feature"], "", step_features, feat_path)
    return DatasetLayout(
        path=path, name=info["name"], version=info.get("version", "?"), file_format=file_format,
        splits=splits, shard_files=shard_files, step_features=step_features,
    )


def check_shards_exist(layout: DatasetLayout, split: str) -> None:
    """Name the first missing shard file instead of failing mid-epoch."""
    for f in layout.shard_files[split]:
        if not _exists(f):
            raise DatasetError(
                f"shard {f} listed in {layout.path}/dataset_info.json (split '{split}', "
                f"{len(layout.shard_files[split])} shards) does not exist; the copy is incomplete")
