"""Camera images to model frames, and the ring buffer of recent frames: no ROS imports.

The ROS node hands over a sensor_msgs/Image's fields (encoding, height, width, step, data), or a
sensor_msgs/CompressedImage's (format, data: JPEG or PNG, what robot cameras usually publish);
everything that can be wrong with them is checked here, with a message that says what was
expected, so the node can answer a bad request with that message and keep serving.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from genie_robot.core.image import fit_image

# encoding -> (bytes per pixel, channel order giving RGB)
ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
             "mono8": (1, (0, 0, 0))}


class FrameError(ValueError):
    """An image that cannot become a model frame (encoding, size or data length)."""


def to_rgb(encoding: str, height: int, width: int, step: int, data: bytes | bytearray | memoryview,
           what: str = "image") -> np.ndarray:
    """uint8 [height, width, 3] RGB from an image's raw fields, or a FrameError saying what is wrong."""
    if encoding not in ENCODINGS:
        raise FrameError(f"{what}: unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise FrameError(f"{what}: height and width must be > 0, got {height}x{width}")
    channels, order = ENCODINGS[encoding]
    if step < width * channels:
        raise FrameError(f"{what}: step {step} is less than width * {channels} bytes ({width * channels}) for "
                         f"{encoding}")
    if len(data) != step * height:
        raise FrameError(f"{what}: data has {len(data)} bytes, expected step * height = {step} * {height} = "
                         f"{step * height}")
    rows = np.frombuffer(bytes(data), np.uint8).reshape(height, step)[:, : width * channels]
    return rows.reshape(height, width, channels)[..., list(order)]


def to_model_frame(encoding: str, height: int, width: int, step: int, data, resolution, what: str = "image"
                   ) -> np.ndarray:
    """uint8 [3, h, w] at the model's resolution (centre crop to its aspect ratio, area resize)."""
    return fit_image(to_rgb(encoding, height, width, step, data, what), tuple(resolution))


COMPRESSED_FORMATS = ("JPEG", "PNG")


def compressed_to_rgb(fmt: str, data: bytes | bytearray | memoryview, what: str = "compressed image") -> np.ndarray:
    """uint8 [height, width, 3] RGB of a CompressedImage's data (JPEG or PNG), or a FrameError.

    The data is decoded by what it is, not by the `format` string, which image_transport writes in
    several forms ("jpeg", "bgr8; jpeg compressed bgr8", ...); the string is only quoted in errors.
    A JPEG or PNG of a bgr8 camera is stored in the standard channel order, so it decodes to RGB.
    """
    if not len(data):
        raise FrameError(f"{what}: no data (format '{fmt}')")
    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise FrameError(f"{what}: {len(data)} bytes that do not decode as JPEG or PNG (format '{fmt}'): {e}") from e
    if img.format not in COMPRESSED_FORMATS:
        raise FrameError(f"{what}: a {img.format} image (format '{fmt}'); supported: JPEG, PNG")
    return np.asarray(img.convert("RGB"))


def compressed_to_model_frame(fmt: str, data, resolution, what: str = "compressed image") -> np.ndarray:
    """`to_model_frame` for a CompressedImage."""
    return fit_image(compressed_to_rgb(fmt, data, what), tuple(resolution))


@dataclass(frozen=True)
class Context:
    """Frames a request is answered from, with where and when they were taken.

    `stamps` are the frames' capture times (seconds, the camera's clock: its messages' header
    stamps); the node stamps each predicted frame with the last of them plus its step times the
    model period, in `frame_id` (the camera's optical frame), so a consumer can line predictions
    up with the camera stream.
    """

    frames: np.ndarray  # uint8 [T, 3, h, w], oldest first
    stamps: tuple[float, ...]
    frame_id: str = ""

    def future_stamps(self, steps: int, period: float) -> list[float]:
        """Capture times of the next `steps` frames at the model's rate."""
        return [self.stamps[-1] + (k + 1) * period for k in range(steps)]


class FrameBuffer:
    """The latest camera frames at the model's frame rate (older frames drop out).

    Thread-safe: the camera callback adds while service calls read. Every offered message counts
    toward `rate_hz` (the camera's rate, what a monitor shows), kept or not.
    """

    def __init__(self, capacity: int, frame_rate: float):
        if capacity < 1 or not frame_rate > 0:
            raise ValueError(f"frame buffer needs capacity >= 1 and frame_rate > 0, got {capacity}, {frame_rate}")
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=capacity)  # (stamp, frame)
        self.period = 1.0 / frame_rate
        self.frame_id = ""
        self.last_stamp: float | None = None
        self.kept_at: float | None = None  # monotonic time the newest frame was kept
        self.arrivals: deque[float] = deque(maxlen=64)  # monotonic times of the last offered messages
        self.lock = threading.Lock()

    def offer(self, stamp: float, make_frame, frame_id: str = "") -> bool:
        """Keeps the frame `make_frame()` builds if `period` has passed since the last kept one.

        Camera frames come faster than the model's rate (RT-1: 3 Hz); the skipped ones are
        never decoded. A stamp earlier than the last kept one (a restarted camera, a looping
        recording) starts the count again instead of stalling the buffer.
        """
        with self.lock:
            self.arrivals.append(time.monotonic())
        if self.last_stamp is not None and 0 <= stamp - self.last_stamp < self.period * 0.999:
            return False
        frame = make_frame()
        with self.lock:
            self.frames.append((stamp, frame))
            self.last_stamp, self.kept_at, self.frame_id = stamp, time.monotonic(), frame_id
        return True

    def age(self) -> float | None:
        """Seconds since the newest frame was kept (None before the first): a stalled camera shows here."""
        with self.lock:
            return None if self.kept_at is None else time.monotonic() - self.kept_at

    def rate_hz(self, window: float = 5.0) -> float:
        """Camera messages per second over the last `window` seconds (0 when none came)."""
        now = time.monotonic()
        with self.lock:
            recent = [t for t in self.arrivals if now - t <= window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], 1e-6)

    def latest(self, n: int) -> Context | None:
        """The last n kept frames (fewer if fewer were kept) with their stamps, or None if there are none."""
        with self.lock:
            kept, frame_id = list(self.frames)[-n:], self.frame_id
        if not kept:
            return None
        return Context(np.stack([f for _, f in kept]), tuple(t for t, _ in kept), frame_id)

    def __len__(self) -> int:
        with self.lock:
            return len(self.frames)
