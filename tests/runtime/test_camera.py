"""Camera images to model frames and the frame buffer (ROS-free parts of the node)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from genie_robot.runtime.camera import FrameBuffer, FrameError, to_model_frame, to_rgb


def test_every_supported_encoding_becomes_rgb_with_row_padding_skipped():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    pad = lambda rows, step: b"".join(r.tobytes().ljust(step, b"\xff") for r in rows)  # noqa: E731
    assert (to_rgb("rgb8", 2, 3, 10, pad(rgb, 10)) == rgb).all()
    assert (to_rgb("bgr8", 2, 3, 9, pad(rgb[..., ::-1], 9)) == rgb).all()
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], axis=2)
    assert (to_rgb("rgba8", 2, 3, 12, pad(rgba, 12)) == rgb).all()
    assert (to_rgb("bgra8", 2, 3, 12, pad(rgba[..., [2, 1, 0, 3]], 12)) == rgb).all()
    mono = rgb[..., 0]
    assert (to_rgb("mono8", 2, 3, 4, pad(mono, 4)) == np.repeat(mono[..., None], 3, axis=2)).all()
    frame = to_model_frame("rgb8", 256, 320, 960, bytes(256 * 960), (16, 20))
    assert frame.shape == (3, 16, 20) and frame.dtype == np.uint8


@pytest.mark.parametrize("args,message", [
    (("16UC1", 2, 3, 6, bytes(12)), "unsupported encoding '16UC1'"),
    (("rgb8", 0, 3, 9, b""), "height and width must be > 0"),
    (("rgb8", 2, 3, 8, bytes(16)), "step 8 is less than width * 3 bytes"),
    (("rgb8", 2, 3, 9, bytes(17)), "data has 17 bytes, expected step * height = 9 * 2 = 18"),
])
def test_bad_images_say_what_is_wrong(args, message):
    with pytest.raises(FrameError, match=message.replace("*", r"\*")):
        to_rgb(*args)


def test_frame_buffer_keeps_the_model_rate_with_stamps_and_survives_a_camera_restart():
    buf = FrameBuffer(capacity=3, frame_rate=3.0)
    frame = lambda v: (lambda: np.full((3, 2, 2), v, np.uint8))  # noqa: E731
    kept = [buf.offer(t, frame(i), "cam") for i, t in enumerate([0.0, 0.1, 0.34, 0.5, 0.7, 1.04])]
    assert kept == [True, False, True, False, True, True]
    ctx = buf.latest(5)
    assert ctx.frames[:, 0, 0, 0].tolist() == [2, 4, 5]  # capacity 3: the oldest dropped out
    assert ctx.stamps == (0.34, 0.7, 1.04) and ctx.frame_id == "cam"
    # Predicted frames follow the last context frame at the model's rate.
    assert ctx.future_stamps(2, buf.period) == pytest.approx([1.04 + 1 / 3, 1.04 + 2 / 3])
    assert buf.offer(0.0, frame(9), "cam2")  # stamps went back (restart, looping recording): not stalled
    last = buf.latest(1)
    assert last.frames[0, 0, 0, 0] == 9 and last.stamps == (0.0,) and last.frame_id == "cam2" and len(buf) == 3
    assert FrameBuffer(2, 3.0).latest(2) is None


def test_frame_buffer_reports_the_camera_rate_counting_skipped_messages():
    buf = FrameBuffer(capacity=2, frame_rate=1.0)
    assert buf.rate_hz() == 0.0
    for i in range(11):  # 11 messages 20 ms apart: 50 Hz, of which the buffer keeps one (1 Hz model rate)
        buf.offer(i * 0.02, lambda: np.zeros((3, 2, 2), np.uint8))
        time.sleep(0.02)
    assert len(buf) == 1 and 30 < buf.rate_hz() < 55


def test_compressed_camera_images_decode_by_content_and_bad_ones_say_why():
    import io

    from PIL import Image

    from genie_robot.runtime.camera import compressed_to_model_frame, compressed_to_rgb

    rgb = np.zeros((24, 30, 3), np.uint8)
    rgb[:, :15] = (200, 30, 10)  # red left half, black right half
    for fmt, name in (("PNG", "png"), ("JPEG", "bgr8; jpeg compressed bgr8")):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, quality=95)
        out = compressed_to_rgb(name, buf.getvalue())
        assert out.shape == (24, 30, 3)
        inner = np.r_[0:10, 20:30]  # away from the colour edge, where JPEG's chroma subsampling rings
        assert np.abs(out[:, inner].astype(int) - rgb[:, inner]).max() <= (0 if fmt == "PNG" else 12)
    frame = compressed_to_model_frame("png", buf.getvalue(), (12, 15))
    assert frame.shape == (3, 12, 15) and frame[0, :, :6].min() > 150 and frame[0, :, 9:].max() < 20
    with pytest.raises(FrameError, match=r"camera: 5 bytes that do not decode as JPEG or PNG \(format 'jpeg'\)"):
        compressed_to_rgb("jpeg", b"\xff\xd8abc", "camera")
    with pytest.raises(FrameError, match="camera: no data"):
        compressed_to_rgb("jpeg", b"", "camera")
    gif = io.BytesIO()
    Image.fromarray(rgb).save(gif, format="GIF")
    with pytest.raises(FrameError, match="a GIF image .* supported: JPEG, PNG"):
        compressed_to_rgb("gif", gif.getvalue(), "camera")
