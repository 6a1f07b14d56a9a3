"""The play server's sessions, models and uploads on the tiny export, without the web layer."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from genie_robot.play.app import PlayConfig
from genie_robot.play.models import FINGERPRINT, ModelRegistry
from genie_robot.play.session import Busy, Full, PlayError, SessionGone, SessionStore, Settings
from genie_robot.play.starts import TooLarge, UploadError, UploadLimits, decode_upload


def png(w: int, h: int, color=(200, 30, 30), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def store(exported, tmp_path):
    _, export = exported
    models = ModelRegistry([str(export), str(tmp_path / "missing_model")], tmp_path / "cache")
    s = SessionStore(models.get, lambda m: Settings(steps=2, temperature=1.0, preview_steps=1), max_sessions=3,
                     timeout_s=60, max_frames=6)
    yield s
    s.shutdown()


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def start_frame(session) -> np.ndarray:
    h, w = session.model.engine.cfg.resolution
    return np.random.default_rng(0).integers(0, 256, (3, h, w), dtype=np.uint8)


def test_step_undo_reset_previews_and_gif(store, exported):
    s = store.create("tiny", seed=7)
    with pytest.raises(PlayError, match="no start frame yet"):
        s.step(0)
    s.start(start_frame(s), "test frame")
    wait_for(lambda: len(s.state()["previews"]) == s.num_codes)  # the worker fills every code's preview
    assert PNG_SIG == s.preview_png(s.version, 3)[:8]
    version = s.version
    out = s.step(2)
    assert out["frame"] == 1 and out["latency_ms"] > 0
    assert s.version == version + 1 and s.state()["actions"] == [2]
    with pytest.raises(SessionGone, match="no preview of code 3 for version"):
        s.preview_png(version, 3)  # previews belong to the world they were made for
    for code in (5, 7):
        s.step(code)
    state = s.state()
    assert state["frames"] == 4 and state["actions"] == [2, 5, 7] and len(state["latencies_ms"]) == 3
    # The context of the next step is the frames so far with the actions the player took (not re-inferred).
    calls = []
    real = s.model.engine.imagine
    s.model.engine.imagine = lambda *a, **k: calls.append(k.get("context_actions")) or real(*a, **k)
    try:
        s.step(1)
    finally:
        s.model.engine.imagine = real
    assert calls[0].tolist() == [2, 5, 7]
    s.undo()
    assert s.state()["actions"] == [2, 5, 7]
    gif = Image.open(io.BytesIO(s.gif()))
    assert gif.n_frames == 4 and json.loads(gif.info["comment"])["latent_actions"] == [2, 5, 7]
    s.reset()
    assert s.state()["frames"] == 1
    with pytest.raises(PlayError, match="nothing to undo"):
        s.undo()


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def test_bad_steps_settings_and_history_limit(store):
    s = store.create("tiny")
    s.start(start_frame(s), "test frame")
    for bad in (-1, 8, 2.0, True, "3"):
        with pytest.raises(PlayError, match="latent action is one of keys 1-8"):
            s.step(bad)
    with pytest.raises(PlayError, match="steps must be a whole number of MaskGIT steps in 1..64"):
        s.configure(steps=0)
    with pytest.raises(PlayError, match=r"temperature must be a number in \(0, 10\]"):
        s.configure(temperature=0)
    with pytest.raises(PlayError, match="unknown settings"):
        s.configure(speed=3)
    s.configure(previews=False, steps=1)
    assert s.state()["settings"]["steps"] == 1 and not s.state()["previews_pending"]
    while s.state()["frames"] < store.max_frames:
        s.step(0)
    with pytest.raises(PlayError, match="at most 6 frames: download the GIF"):
        s.step(0)


def test_a_second_press_while_stepping_is_refused_not_queued(store):
    s = store.create("tiny")
    s.configure(previews=False, steps=64)
    s.start(start_frame(s), "test frame")
    t = threading.Thread(target=s.step, args=(1,))
    t.start()
    wait_for(lambda: s.state()["stepping"], 10)
    with pytest.raises(Busy, match="still running"):
        s.step(2)
    s.configure(temperature=0.7)  # a settings change meanwhile renews the previews and keeps the step
    t.join()
    assert s.state()["actions"] == [1]


def test_previews_give_way_to_a_step(store):
    """A step that asks for the engine stops a running preview at its next MaskGIT step."""
    s = store.create("tiny")
    s.configure(preview_steps=64)
    s.start(start_frame(s), "test frame")
    wait_for(lambda: s.model.gate._lock.locked(), 10)  # a preview holds the engine
    s.step(4)
    assert s.state()["actions"] == [4] and s.preview_yields >= 1  # the running preview stopped for the step
    wait_for(lambda: len(s.state()["previews"]) == 8)  # and the new world's previews were made after it


def test_sessions_time_out_and_are_capped(store):
    a, b = store.create("tiny"), store.create("tiny")
    store.create("tiny")
    with pytest.raises(Full, match="3 sessions are open"):
        store.create("tiny")
    a.last_seen -= 120  # idle longer than the 60 s time-out
    assert store.expire() == [a.id]
    with pytest.raises(SessionGone, match="timed out"):
        store.get(a.id)
    assert store.get(b.id) is b
    store.create("tiny")  # the freed place is usable


def test_a_model_that_does_not_load_is_a_message_and_others_keep_playing(store):
    with pytest.raises(PlayError, match="model missing_model does not load: .*missing_model does not exist"):
        store.create("missing_model")
    with pytest.raises(PlayError, match="unknown model 'nope'; this server offers tiny, missing_model"):
        store.create("nope")
    s = store.create("tiny")
    s.start(start_frame(s), "test frame")
    s.step(0)


def test_a_run_directory_is_exported_once_into_the_cache(exported, tmp_path):
    run, _ = exported
    first = ModelRegistry([str(run)], tmp_path / "cache")
    model = first.get("tiny")
    stamp = tmp_path / "cache" / "tiny" / FINGERPRINT
    assert stamp.is_file() and model.engine.source == str(tmp_path / "cache" / "tiny")
    before = stamp.stat().st_mtime_ns
    ModelRegistry([str(run)], tmp_path / "cache").get("tiny")
    assert stamp.stat().st_mtime_ns == before  # reused, not exported again


def test_uploads_are_checked_by_size_and_content():
    limits = UploadLimits(max_bytes=200_000, max_pixels=1_000_000)
    frame = decode_upload(png(333, 101), limits, (16, 20))  # any size: centre-cropped and resized
    assert frame.shape == (3, 16, 20) and frame.dtype == np.uint8 and tuple(frame[:, 8, 10]) == (200, 30, 30)
    assert decode_upload(png(40, 30, fmt="JPEG"), limits, (16, 20)).shape == (3, 16, 20)
    with pytest.raises(UploadError, match="not an image"):
        decode_upload(b"%PDF-1.4 not a picture", limits, (16, 20))
    with pytest.raises(UploadError, match="empty"):
        decode_upload(b"", limits, (16, 20))
    with pytest.raises(UploadError, match="a TIFF image; accepted: PNG, JPEG"):
        decode_upload(png(10, 10, fmt="TIFF"), limits, (16, 20))
    with pytest.raises(TooLarge, match="the most this server takes"):
        decode_upload(b"\0" * 200_001, limits, (16, 20))
    with pytest.raises(TooLarge, match="1200x1000 pixels"):
        decode_upload(png(1200, 1000), limits, (16, 20))
    with pytest.raises(UploadError, match="damaged"):
        decode_upload(png(50, 50)[:60], limits, (16, 20))


def test_binding_beyond_loopback_needs_expose():
    assert PlayConfig().check_host() == "127.0.0.1"
    assert PlayConfig(host="::1").check_host() == "::1"
    with pytest.raises(ValueError, match="play.expose=true"):
        PlayConfig(host="0.0.0.0").check_host()
    assert PlayConfig(host="0.0.0.0", expose=True).check_host() == "0.0.0.0"
