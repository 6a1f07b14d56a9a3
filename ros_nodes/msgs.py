"""Message conversions the nodes share: stamps in seconds <-> builtin_interfaces/Time, and rgb8 images.

One place for them so every node stamps and lays out its camera images the same way (a planner that
compares the sim's camera with imagined frames relies on it)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header


def to_time(seconds: float) -> Time:
    """A Time of `seconds` since the epoch, rounded to the nanosecond (no float error in `nanosec`)."""
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_seconds(t: Time) -> float:
    return t.sec + t.nanosec * 1e-9


def header(stamp: float = 0.0, frame_id: str = "") -> Header:
    return Header(stamp=to_time(stamp), frame_id=frame_id)


def image_msg(image: np.ndarray, head: Header | None = None) -> Image:
    """An rgb8 sensor_msgs/Image of a uint8 [h, w, 3] picture (a camera's layout, not a model's [3, h, w])."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_msg: expected a uint8 [h, w, 3] picture, got {image.dtype} {list(image.shape)}")
    h, w = image.shape[:2]
    return Image(header=head or Header(), height=h, width=w, encoding="rgb8", step=w * 3,
                 data=np.ascontiguousarray(image).tobytes())
