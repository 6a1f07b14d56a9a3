"""The message conversions every node shares: what one node writes, the receiving side reads back unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from genie_robot.runtime.camera import to_model_frame, to_rgb
from genie_robot_ros.msgs import header, image_msg, to_seconds, to_time
from genie_robot_ros.world_model_node import frame_msg


def test_a_camera_picture_reads_back_through_the_receivers_decoder():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = image_msg(image, header(12.5, "head_camera_optical"))
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, "rgb8")
    assert msg.header.frame_id == "head_camera_optical" and to_seconds(msg.header.stamp) == 12.5
    np.testing.assert_array_equal(to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data), image)


def test_a_model_frame_goes_out_in_camera_layout_and_comes_back_as_the_same_frame():
    frame = np.random.default_rng(1).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    msg = frame_msg(frame, 3.0, "cam")
    assert (msg.height, msg.width) == (4, 5)
    back = to_model_frame(msg.encoding, msg.height, msg.width, msg.step, msg.data, (4, 5))
    np.testing.assert_array_equal(back, frame)


@pytest.mark.parametrize("seconds", [0.0, 1.0, 1796479902.4330518, 2.9999999999])
def test_stamps_round_to_the_nanosecond_and_never_overflow_nanosec(seconds):
    t = to_time(seconds)
    assert 0 <= t.nanosec < 1_000_000_000
    assert abs(to_seconds(t) - seconds) < 1e-6


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 5), np.uint8), np.zeros((4, 5, 3), np.float32),
                                 np.zeros((4, 5), np.uint8)])
def test_a_picture_in_the_wrong_layout_or_type_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"expected a uint8 \[h, w, 3\] picture"):
        image_msg(bad)
