"""The node's service (ROS-free): its request queue (first come first served on one engine thread, bounded, a
busy refusal with a retry hint) and the context a plan keeps."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from genie_robot.runtime.camera import Context, FrameBuffer
from genie_robot.runtime.service import Busy, RequestQueue, ServiceLimits, WorldModelService


def _hold(queue: RequestQueue, release: threading.Event, order: list[tuple[int, str]], i: int) -> None:
    def work() -> None:
        order.append((i, threading.current_thread().name))
        release.wait(10)

    queue.run(work)


def test_requests_run_in_arrival_order_on_one_thread_and_one_past_capacity_is_refused_with_a_retry_hint():
    queue = RequestQueue(capacity=4)
    queue.recent_ms.extend([200.0, 300.0])  # engine times so far: mean 250 ms
    release, order, threads = threading.Event(), [], []
    for i in range(4):
        threads.append(threading.Thread(target=_hold, args=(queue, release, order, i)))
        threads[-1].start()
        deadline = time.time() + 10
        while len(queue) < i + 1 and time.time() < deadline:  # this request is queued before the next asks
            time.sleep(0.001)
    assert len(queue) == 4 and [i for i, _ in order] == [0]  # one runs, three wait
    with pytest.raises(Busy, match=r"busy: 4 requests are queued \(max_queue\), retry after 1000 ms") as e:
        queue.run(lambda: None)
    assert e.value.retry_after_ms == 1000.0
    release.set()
    for t in threads:
        t.join(10)
    assert [i for i, _ in order] == [0, 1, 2, 3] and len(queue) == 0
    # Every request ran on the queue's one engine thread, none on its caller's: one malloc arena for the
    # engine's buffers, however many executor threads call in.
    assert len({name for _, name in order}) == 1 and order[0][1].startswith("engine")
    assert queue.run(lambda x: x + 1, 1) == 2  # room again, and the result comes back


def test_a_request_that_fails_gives_up_its_turn_and_its_error_reaches_the_caller():
    queue = RequestQueue(capacity=1)

    def fail() -> None:
        raise RuntimeError("engine failed")

    with pytest.raises(RuntimeError, match="engine failed"):
        queue.run(fail)
    assert len(queue) == 0
    assert queue.run(lambda: "ok") == "ok"
    queue.close()
    with pytest.raises(RuntimeError, match="shutdown"):  # a closed queue refuses, and counts nothing
        queue.run(lambda: None)
    assert len(queue) == 0
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        RequestQueue(0)


def test_a_plan_keeps_the_newest_context_frames_that_fit_beside_its_horizon(exported):
    """Context + horizon beyond the window slides it on every imagined frame and rebuilds the dynamics' cache
    (about 2x a plan's time with sim-rt1), so a plan keeps what fits unless `plan_context_frames` says
    otherwise, and reports the frames it used."""
    from genie_robot.runtime import OnnxWorldModel

    engine = OnnxWorldModel(exported[1])
    window, (h, w) = engine.cfg.frames, engine.cfg.resolution
    assert window == 4
    frames = np.random.default_rng(0).integers(0, 256, (window, 3, h, w), dtype=np.uint8)
    ctx = Context(frames, tuple(float(i) for i in range(window)), "cam")
    service = WorldModelService(engine, ServiceLimits(max_candidates=4, max_horizon=6), FrameBuffer(8, 5.0))
    kept = service.plan_context(ctx, 2)
    assert kept.stamps == (2.0, 3.0) and np.array_equal(kept.frames, frames[2:]) and kept.frame_id == "cam"
    assert service.plan_context(ctx, 1).stamps == (1.0, 2.0, 3.0)
    assert service.plan_context(ctx, 6).stamps == (3.0,)  # a horizon past the window still keeps the newest frame
    assert service.plan_context(Context(frames[:1], (0.0,), "cam"), 2).stamps == (0.0,)  # fewer than fit: all
    service.limits.plan_context_frames = 3  # the node's parameter: kept even though the window then slides
    assert service.plan_context(ctx, 2).stamps == (1.0, 2.0, 3.0)
    service.limits.plan_context_frames = 0
    out, used = service.plan(frames[-1], ctx, horizon=2, num_samples=2, iterations=1, seed=0)
    assert used.stamps == (2.0, 3.0) and out.actions.shape == (2,) and out.frames.shape == (2, 3, h, w)
    service.queue.close()
