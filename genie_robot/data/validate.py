"""TFDS access that fails with a message naming the directory or the damaged shard.

TensorFlow's own errors rarely say which file is broken; these helpers find out and say.
"""

from __future__ import annotations

from genie_robot.data.layout import DatasetError


def open_builder(path: str):
    """`tfds.builder_from_directory`, with any failure reported against `path`."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    try:
        return tfds.builder_from_directory(path)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; name the directory
        raise DatasetError(f"TFDS cannot open {path}: {type(e).__name__}: {e}") from e


def find_corrupt_shard(files: list[str]) -> tuple[str, str] | None:
    """The first shard whose records fail TFRecord's length/CRC checks, with the reason."""
    import tensorflow as tf

    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.OpError as e:
            return path, str(e).strip().splitlines()[0][:300]
    return None


def read_error(err: Exception, files: list[str], where: str) -> DatasetError:
    """Turn a tf.data read failure into an error naming the damaged shard."""
    bad = find_corrupt_shard(files)
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    if bad:
        return DatasetError(f"corrupt or truncated shard {bad[0]}: {bad[1]} (TensorFlow: {first})")
    return DatasetError(f"cannot decode an episode in {where}: {first}")
