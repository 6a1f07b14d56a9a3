"""A ROS 2 camera topic's latest frame, as a start for a played world (`play.camera_topic`).

The play server is not a ROS node: like `genie_robot.client`, this owns its own rclpy context and spins it on a
background thread, so rclpy is imported only when a camera topic is asked for (a plain pip install without ROS
plays held-out frames and uploads). Frames are converted exactly as world_model_node converts its camera
(`genie_robot.runtime.camera`: raw rgb8/bgr8/rgba8/bgra8/mono8 Images, or JPEG/PNG CompressedImages), so a
world started here starts from what the node would see.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from genie_robot.runtime.camera import FrameError, compressed_to_rgb, to_rgb

log = logging.getLogger(__name__)
TRANSPORTS = ("raw", "compressed")


class CameraFeed:
    """Keeps the latest RGB frame (HxWx3 uint8, full size) of `topic`; `latest()` is (frame, age in s) or None."""

    def __init__(self, topic: str, transport: str = "raw"):
        if transport not in TRANSPORTS:
            raise ValueError(f"play.camera_transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        self.topic, self.transport = topic, transport
        self._frame: np.ndarray | None = None
        self._received = 0.0
        self.error = ""  # the last frame that could not be converted, said once per kind
        self._lock = threading.Lock()
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        try:
            self._node = rclpy.create_node(f"genie_robot_play_{id(self):x}", context=self._context)
            kind = CompressedImage if transport == "compressed" else Image
            self._node.create_subscription(kind, topic, self._on_message, qos_profile_sensor_data)
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self._node)
            self._spinner = threading.Thread(target=self._spin, name="play-camera", daemon=True)
            self._spinner.start()
        except BaseException:
            self.close()
            raise
        log.info("camera: watching %s (%s)", topic, transport)

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def _on_message(self, msg) -> None:
        try:
            if self.transport == "compressed":
                frame = compressed_to_rgb(msg.format, msg.data, f"{self.topic} frame")
            else:
                frame = to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, f"{self.topic} frame")
        except FrameError as e:
            if str(e) != self.error:
                log.warning("camera: %s", e)
            self.error = str(e)
            return
        with self._lock:
            self._frame, self._received, self.error = frame, time.monotonic(), ""

    def latest(self) -> tuple[np.ndarray, float] | None:
        with self._lock:
            if self._frame is None:
                return None
            return self._frame, time.monotonic() - self._received

    def close(self) -> None:
        import rclpy

        if self._context.ok():
            rclpy.try_shutdown(context=self._context)
        spinner = getattr(self, "_spinner", None)
        if spinner is not None and spinner is not threading.current_thread():
            spinner.join(timeout=5)
