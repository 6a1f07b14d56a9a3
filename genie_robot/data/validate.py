"""Locate damaged TFRecord shards, so a read failure can name the file to re-copy."""

from __future__ import annotations


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
