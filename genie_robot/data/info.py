"""`genie-robot data-info`: one JSON description of any RLDS/TFDS episode dataset."""

from __future__ import annotations

from tqdm import tqdm

from genie_robot.data.layout import check_shards_exist, read_layout
from genie_robot.data.validate import open_builder, read_error


def describe(path: str, image_key: str = "image", clip_span: int | None = None, progress: bool = True) -> dict:
    """Counts come from a scan of every episode (step counts are not in the metadata).

    Images are not decoded during the scan, so it runs at the speed of reading the shards.
    """
    layout = read_layout(path)
    spec = layout.image_spec(image_key)
    for split in layout.splits:
        check_shards_exist(layout, split)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.get_logger().setLevel("ERROR")
    builder = open_builder(layout.path)
    splits, lengths_all = {}, []
    for split, shard_lengths in layout.splits.items():
        ds = builder.as_dataset(
            split=split, shuffle_files=False,
            decoders={"steps": {"observation": {image_key: tfds.decode.SkipDecoding()}}},
        ).map(lambda ep: ep["steps"].cardinality(), num_parallel_calls=tf.data.AUTOTUNE)
        lengths = []
        try:
            for n in tqdm(ds.as_numpy_iterator(), total=sum(shard_lengths), desc=f"scanning {split}",
                          unit="ep", disable=not progress):
                lengths.append(int(n))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise read_error(e, layout.shard_files[split], f"split '{split}' of {path}") from None
        splits[split] = {"episodes": len(lengths), "steps": sum(lengths), "shards": len(shard_lengths)}
        lengths_all += lengths
    out = {
        "path": layout.path,
        "name": layout.name,
        "version": layout.version,
        "episodes": len(lengths_all),
        "steps": sum(lengths_all),
        "episode_length": {
            "min": min(lengths_all, default=0),
            "mean": round(sum(lengths_all) / max(len(lengths_all), 1), 2),
            "max": max(lengths_all, default=0),
        },
        "image_key": image_key,
        "image_keys": layout.image_keys(),
        "image_shape": list(spec.shape),
        "image_encoding": spec.encoding,
        "action_keys": layout.action_keys(),
        "action_shapes": {k: list(layout.step_features[f"action/{k}"].shape) for k in layout.action_keys()},
        "splits": splits,
    }
    if clip_span is not None:
        out["clip_span"] = clip_span
        out["episodes_shorter_than_clip"] = sum(n < clip_span for n in lengths_all)
    return out
