"""The node's request queue (ROS-free): first come first served on one engine thread, bounded, a busy
refusal with a retry hint."""

from __future__ import annotations

import threading
import time

import pytest

from genie_robot.runtime.service import Busy, RequestQueue


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
