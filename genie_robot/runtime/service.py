"""The world-model service behind the ROS node, with no ROS imports: request checks and calls.

Each method takes plain values (frames already converted by genie_robot.runtime.camera),
checks them against the node's limits, and calls the engine. Anything wrong raises
`RequestError` with what was wrong and what was expected; the node turns it into
`success=false` and keeps serving. Engine calls run one at a time in arrival order
(`RequestQueue`): on a robot's one GPU (or a CPU) concurrent rollouts only compete for the same
device. At most `max_queue` requests wait or run; one more is refused at once with `Busy`
("retry after N ms"), so waiting stays bounded in time and memory, and the node can size its
executor so a waiting request never holds the thread the camera needs.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from genie_robot.models.config import SAMPLING
from genie_robot.runtime.camera import Context, FrameBuffer

T = TypeVar("T")


class RequestError(ValueError):
    """A request the node answers with success=false and this message."""


class Cancelled(Exception):
    """A plan or rollout whose goal was cancelled while it waited or ran (the message says where)."""


class Busy(RequestError):
    """A request refused because `max_queue` requests are already waiting or running."""

    def __init__(self, queued: int, retry_after_ms: float):
        self.queued, self.retry_after_ms = queued, retry_after_ms
        super().__init__(f"busy: {queued} requests are queued (max_queue), retry after {retry_after_ms:.0f} ms")


class RequestQueue:
    """First come, first served engine work on one worker thread, for at most `capacity` requests at a time.

    A plain lock is neither fair nor bounded: under load a late request can overtake an early one,
    and every waiting request holds a thread. Here requests are queued in arrival order for one
    worker thread, and a request that finds `capacity` requests queued or running is refused with
    `Busy`, its retry hint the expected wait (requests ahead times the mean of the recent engine
    times). One thread, not the caller's: the engine's buffers (onnxruntime's and numpy's) are then
    allocated in one malloc arena. Run from each of the node's executor threads, glibc gave every
    thread an arena of its own, and 8 concurrent clients grew the node by 240-320 MB that it never
    returned (a CI failure of the load test).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"request queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._lock = threading.Lock()
        self._pending = 0  # queued or running
        self.recent_ms: deque[float] = deque(maxlen=20)

    def __len__(self) -> int:
        with self._lock:
            return self._pending

    def retry_after_ms(self, ahead: int) -> float:
        mean = sum(self.recent_ms) / len(self.recent_ms) if self.recent_ms else 100.0
        return max(1.0, ahead * mean)

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)` on the worker after the requests before it; raises Busy if the queue is full,
        and whatever `fn` raised."""
        with self._lock:  # admitted and enqueued as one step, so the order admitted is the order run
            if self._pending >= self.capacity:
                raise Busy(self._pending, self.retry_after_ms(self._pending))
            future = self._worker.submit(self._timed, fn, args, kwargs)  # raises if shut down: nothing counted
            self._pending += 1
        return future.result()

    def _timed(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self.recent_ms.append((time.perf_counter() - start) * 1000)
                self._pending -= 1

    def close(self) -> None:
        """Refuses new requests, cancels the queued ones and lets the running one finish."""
        self._worker.shutdown(wait=False, cancel_futures=True)


@dataclass
class ServiceLimits:
    context_frames: int = 8  # camera frames used when a request brings no context
    max_candidates: int = 64
    max_horizon: int = 16
    max_context: int = 16
    temperature: float = 0.0  # defaults for requests that leave them at 0 (temperature 0: the model's own)
    maskgit_steps: int = SAMPLING.serve_steps  # MaskGIT steps of a rollout that asks for 0
    plan_maskgit_steps: int = SAMPLING.plan_steps  # MaskGIT steps inside a plan
    plan_context_frames: int = 0  # newest context frames a plan keeps; 0: what fits beside its horizon (plan_context)
    max_queue: int = 16  # requests waiting or running at once; one more is refused with Busy


def rss_mb() -> float:
    """This process's resident memory (MB): /proc on Linux, else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux; macOS reports bytes


class RequestStats:
    """Requests served and failed per endpoint, and the recent engine latencies: what /diagnostics shows."""

    def __init__(self, window: int = 256):
        self.served: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, endpoint: str, ok: bool, latency_ms: float | None = None) -> None:
        with self._lock:
            counts = self.served if ok else self.failed
            counts[endpoint] = counts.get(endpoint, 0) + 1
            if ok and latency_ms is not None:
                self.latencies_ms.append(latency_ms)

    def summary(self) -> dict:
        """Totals, per-endpoint counts, and latency percentiles (ms) over the last `window` answered requests."""
        with self._lock:
            lat = np.asarray(self.latencies_ms)
            out = {"served": sum(self.served.values()), "failed": sum(self.failed.values()),
                   "served_by_endpoint": dict(self.served), "failed_by_endpoint": dict(self.failed)}
        for q in (50, 90, 99):
            out[f"latency_p{q}_ms"] = round(float(np.percentile(lat, q)), 1) if lat.size else None
        return out


@dataclass
class RolloutResult:
    frames: np.ndarray  # uint8 [num_candidates * horizon, 3, h, w], candidate-major
    stamps: list[float]  # each frame's time: the last context frame's plus its step times the model period
    context: Context
    inference_ms: float


class WorldModelService:
    def __init__(self, engine, limits: ServiceLimits, buffer: FrameBuffer):
        self.engine, self.limits, self.buffer = engine, limits, buffer
        self.queue = RequestQueue(limits.max_queue)
        self.stats = RequestStats()
        self.last_latency_ms: float | None = None

    # --- checks ---------------------------------------------------------------------------
    def _within_context(self, n: int, what: str) -> None:
        if n > self.limits.max_context:
            raise RequestError(f"{n} {what} exceed max_context={self.limits.max_context}")

    def context(self, request: Context | None) -> Context:
        """The request's frames, or the latest camera frames when it sent none."""
        if request is not None:
            self._within_context(len(request.frames), "context frames")
            return request
        latest = self.buffer.latest(self.limits.context_frames)
        if latest is None:
            raise RequestError("no camera frame received yet and the request's context is empty: publish images "
                               "on the node's `image` topic or send context frames")
        return latest

    @property
    def period(self) -> float:
        """Seconds between the model's frames (1 / frame_rate): the step of predicted frames' stamps."""
        return self.buffer.period

    def _count(self, name: str, value: int, limit: int, param: str) -> int:
        if not 1 <= value <= limit:
            raise RequestError(f"{name} must be in 1..{limit} ({param}), got {value}")
        return int(value)

    def _actions(self, ids, count: int, what: str) -> np.ndarray:
        a = np.frombuffer(bytes(ids), np.uint8).astype(np.int64) if isinstance(ids, (bytes, bytearray)) \
            else np.asarray(list(ids), dtype=np.int64)
        if len(a) != count:
            raise RequestError(f"latent_actions has {len(a)} ids, expected {what} = {count}")
        n = self.engine.cfg.lam.num_actions
        if len(a) and a.max() >= n:
            raise RequestError(f"latent action id {int(a.max())} is out of range: the model has {n} actions "
                               f"(ids 0..{n - 1})")
        return a

    @property
    def default_temperature(self) -> float:
        """What a request that sends no temperature gets: the node's setting, else the model's own."""
        return self.limits.temperature or self.engine.temperature

    def _sampling(self, temperature: float, steps: int) -> tuple[float, int]:
        if math.isnan(temperature) or math.isinf(temperature):
            raise RequestError(f"temperature must be a finite number (<= 0: the node default), got {temperature}")
        return (float(temperature) if temperature > 0 else self.default_temperature,
                int(steps) if steps > 0 else self.limits.maskgit_steps)

    # --- calls ----------------------------------------------------------------------------
    def rollout(self, context: Context | None, latent_actions, num_candidates: int, horizon: int,
                temperature: float, maskgit_steps: int, seed: int, on_frame=None,
                cancelled=lambda: False) -> RolloutResult:
        """Each candidate's predicted frames from `context` (None: the camera's latest frames).
        `on_frame(step, frames [num_candidates, 3, h, w], stamp, frame_id)` as each horizon step is imagined;
        `cancelled()` is asked before every MaskGIT step, and a yes raises Cancelled there."""
        b = self._count("num_candidates", num_candidates, self.limits.max_candidates, "max_candidates")
        h = self._count("horizon", horizon, self.limits.max_horizon, "max_horizon")
        acts = self._actions(latent_actions, b * h, f"num_candidates * horizon = {b} * {h}").reshape(b, h)
        temp, steps = self._sampling(temperature, maskgit_steps)
        ctx = self.context(context)

        stamps = ctx.future_stamps(h, self.period)

        def check(step: int, i: int) -> None:
            if cancelled():
                raise Cancelled(f"rollout cancelled at step {step + 1}/{h}, MaskGIT step {i + 1}/{steps}")

        def run():
            if cancelled():  # cancelled while it waited
                raise Cancelled("rollout cancelled before it started")
            start = time.perf_counter()
            report = None if on_frame is None else \
                (lambda step, frames: on_frame(step, frames, stamps[step], ctx.frame_id))
            out = self.engine.imagine(ctx.frames, acts, steps=steps, temperature=temp, seed=int(seed),
                                      before_step=check, on_frame=report)
            self.last_latency_ms = (time.perf_counter() - start) * 1000  # the engine's time, not the wait
            return out, self.last_latency_ms

        out, ms = self.queue.run(run)
        frames = out.frames.reshape(b * h, *out.frames.shape[2:])
        return RolloutResult(frames, stamps * b, ctx, ms)

    def infer_actions(self, frames: list[np.ndarray]) -> np.ndarray:
        if len(frames) < 2:
            raise RequestError(f"infer_actions needs at least 2 frames, got {len(frames)}")
        self._within_context(len(frames), "frames")
        return self.queue.run(self.engine.infer_actions, np.stack(frames))

    def plan_context(self, ctx: Context, horizon: int) -> Context:
        """The newest frames of `ctx` a plan of `horizon` steps keeps: `plan_context_frames`, or with 0 as many
        as fit beside the horizon in the model's window (at least 1).

        The dynamics' time embeddings are absolute positions in its window, so once context + horizon exceeds
        the window, every imagined frame slides the window and the dynamics' cache is rebuilt. With sim-rt1
        (window 8), make demo's plan (8 samples x 2 iterations, horizon 4) took 59.0 s after 8 camera frames
        and 24.7 s keeping 4, with a goal cost no worse (10 held-out clips; the frame 4 steps ahead scored the
        same too: scripts/bench_context_window.py, docs/BENCHMARKS.md). So by default a plan keeps only what
        fits; the result's context stamps say which frames it used."""
        keep = self.limits.plan_context_frames or max(1, self.engine.cfg.frames - horizon)
        if len(ctx.frames) <= keep:
            return ctx
        return Context(ctx.frames[-keep:], tuple(ctx.stamps[-keep:]), ctx.frame_id)

    def plan(self, goal: np.ndarray, context: Context | None, horizon: int, num_samples: int, iterations: int,
             seed: int, progress=None, cancelled=lambda: False):
        """CEM toward `goal` [3, h, w] from the newest frames of `context` (None: the camera's latest frames)
        that `plan_context` keeps: the plan and the context used. `progress(iteration, best_cost)` per
        iteration; raises Cancelled."""
        from genie_robot.planning.cem import plan

        h = self._count("horizon", horizon, self.limits.max_horizon, "max_horizon")
        n = self._count("num_samples", num_samples, self.limits.max_candidates, "max_candidates")
        its = self._count("iterations", iterations, 100, "at most 100")
        ctx = self.plan_context(self.context(context), h)

        def report(it: int, best: float) -> None:
            if cancelled():
                raise Cancelled()
            if progress is not None:
                progress(it, best)

        def run():
            if cancelled():  # cancelled while it waited
                raise Cancelled()
            return plan(self.engine, ctx.frames, goal, horizon=h, num_samples=n, iterations=its, seed=int(seed),
                        steps=self.limits.plan_maskgit_steps, temperature=self.default_temperature,
                        progress=report)

        return self.queue.run(run), ctx
