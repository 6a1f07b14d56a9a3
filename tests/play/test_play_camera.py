"""A played world started from a ROS 2 camera topic's latest frame, over real DDS: a camera process publishing
sensor_msgs/Image, and the `genie-robot play` server subscribed to it."""

from __future__ import annotations

import http.client
import io
import subprocess
import sys
import textwrap
import time

import numpy as np
from PIL import Image

# A 240x320 bgr8 camera: left half one colour, right half another (RGB (200, 40, 40) and (30, 60, 220)).
CAMERA = textwrap.dedent("""
    import time, numpy as np, rclpy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("camera")
    pub = node.create_publisher(Image, "/play_test/image", 10)
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, :160] = (200, 40, 40)
    rgb[:, 160:] = (30, 60, 220)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    while rclpy.ok():
        msg = Image(height=240, width=320, encoding="bgr8", step=320 * 3, data=bgr.tobytes())
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(0.1)
""")


def test_start_from_the_latest_camera_frame(exported, ros_env, launch_play, api):
    _, export = exported
    port, _ = launch_play([f"ckpt={export}", "play.camera_topic=/play_test/image", "play.start_data=null"],
                          env=ros_env)
    info = api(port, "GET", "/api/info")[1]
    assert info["camera"]["topic"] == "/play_test/image" and info["starts"] == 0
    sid = api(port, "POST", "/api/sessions", {})[1]["session"]
    status, answer = api(port, "POST", f"/api/sessions/{sid}/start", {"camera": True})
    assert status == 400 and "no frame on /play_test/image yet" in answer["error"]

    camera = subprocess.Popen([sys.executable, "-c", CAMERA], env=ros_env)
    try:
        deadline = time.monotonic() + 60
        while api(port, "GET", "/api/info")[1]["camera"]["age_s"] is None:
            assert time.monotonic() < deadline, "no camera frame reached the play server"
            time.sleep(0.2)
        status, state = api(port, "POST", f"/api/sessions/{sid}/start", {"camera": True})
        assert status == 200 and state["source"].startswith("camera /play_test/image")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/api/sessions/{sid}/frames/0.png")
        frame = np.asarray(Image.open(io.BytesIO(conn.getresponse().read())))
        h, w = state["resolution"]
        assert frame.shape == (h, w, 3)
        # The camera's picture, centre-cropped and resized as world_model_node fits it (bgr8 read as such).
        assert tuple(frame[h // 2, 1]) == (200, 40, 40) and tuple(frame[h // 2, w - 2]) == (30, 60, 220)
        status, state = api(port, "POST", f"/api/sessions/{sid}/step", {"key": 2})
        assert status == 200 and state["frames"] == 2
    finally:
        camera.terminate()
        camera.wait(timeout=20)
