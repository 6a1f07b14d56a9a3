"""The `fractal20220817_data` 0.1.0 feature spec (RT-1 in Open X-Embodiment RLDS).

Written once here so the simulator writes exactly what the real dataset stores
(same keys, shapes, dtypes, descriptions and JPEG encoding) and the reader can name
what it expects. Importing this module imports TensorFlow Datasets.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from genie_robot.data.schema import ACTION_KEYS, IMAGE_SHAPE  # noqa: F401 (part of the spec)

DATASET_NAME = "fractal20220817_data"
DATASET_VERSION = "0.1.0"

_T = tfds.features.Tensor


def _f32(shape: tuple[int, ...], doc: str | None = None) -> tfds.features.Tensor:
    return _T(shape=shape, dtype=np.float32, doc=doc)


def _scalar(dtype) -> tfds.features.Tensor:
    return _T(shape=(), dtype=dtype)


def rt1_features() -> tfds.features.FeaturesDict:
    """Features of one episode, field for field as in the public dataset."""
    return tfds.features.FeaturesDict({
        "aspects": tfds.features.FeaturesDict({
            k: _scalar(np.bool_)
            for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")
        }),
        "attributes": tfds.features.FeaturesDict({
            **{k: _scalar(np.int64) for k in (
                "collection_mode", "data_type", "env", "location", "objects_family", "task_family")},
            **{f"{k}_name": _scalar(np.object_) for k in (
                "collection_mode", "data_type", "env", "location", "objects_family", "task_family")},
        }),
        "steps": tfds.features.Dataset({
            "action": tfds.features.FeaturesDict({
                "base_displacement_vector": _f32((2,)),
                "base_displacement_vertical_rotation": _f32((1,)),
                "gripper_closedness_action": _f32((1,), "continuous gripper position"),
                "rotation_delta": _f32(
                    (3,), "rpy commanded orientation displacement, in base-relative frame"),
                "terminate_episode": _T(shape=(3,), dtype=np.int32),
                "world_vector": _f32(
                    (3,), "commanded end-effector displacement, in base-relative frame"),
            }),
            "is_first": _scalar(np.bool_),
            "is_last": _scalar(np.bool_),
            "is_terminal": _scalar(np.bool_),
            "observation": tfds.features.FeaturesDict({
                "base_pose_tool_reached": _f32(
                    (7,), "end-effector base-relative position+quaternion pose"),
                "gripper_closed": _f32((1,)),
                "gripper_closedness_commanded": _f32((1,), "continuous gripper position"),
                "height_to_bottom": _f32((1,), "height of end-effector from ground"),
                "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg"),
                "natural_language_embedding": _f32((512,)),
                "natural_language_instruction": _scalar(np.object_),
                "orientation_box": _f32((2, 3)),
                "orientation_start": _f32((4,)),
                "robot_orientation_positions_box": _f32((3, 3)),
                "rotation_delta_to_go": _f32(
                    (3,), "rotational displacement from current orientation to target"),
                "src_rotation": _f32((4,)),
                "vector_to_go": _f32(
                    (3,), "displacement from current end-effector position to target"),
                "workspace_bounds": _f32((3, 3)),
            }),
            "reward": tfds.features.Scalar(dtype=np.float32),
        }),
    })
