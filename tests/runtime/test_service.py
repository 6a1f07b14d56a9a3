"""The node's request queue (ROS-free): first come first served, bounded, a busy refusal with a retry hint."""

from __future__ import annotations

import threading
import time

import pytest

from genie_robot.runtime.service import Busy, RequestQueue


def _hold(queue: RequestQueue, release: threading.Event, order: list[int], i: int) -> None:
    with queue.turn():
        order.append(i)
        release.wait(10)


def test_requests_run_in_arrival_order_and_one_past_capacity_is_refused_with_a_retry_hint():
    queue = RequestQueue(capacity=4)
    queue.recent_ms.extend([200.0, 300.0])  # engine times so far: mean 250 ms
    release, order, threads = threading.Event(), [], []
    for i in range(4):
        threads.append(threading.Thread(target=_hold, args=(queue, release, order, i)))
        threads[-1].start()
        deadline = time.time() + 10
        while len(queue) < i + 1 and time.time() < deadline:  # this request has its ticket before the next asks
            time.sleep(0.001)
    assert len(queue) == 4 and order == [0]  # one runs, three wait
    with pytest.raises(Busy, match=r"busy: 4 requests are queued \(max_queue\), retry after 1000 ms") as e:
        with queue.turn():
            pass
    assert e.value.retry_after_ms == 1000.0
    release.set()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3] and len(queue) == 0
    with queue.turn():  # room again
        pass


def test_a_request_that_fails_gives_up_its_turn():
    queue = RequestQueue(capacity=1)
    with pytest.raises(RuntimeError):
        with queue.turn():
            raise RuntimeError("engine failed")
    assert len(queue) == 0
    with queue.turn():
        pass
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        RequestQueue(0)
