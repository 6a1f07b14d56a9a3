"""One player's world: the frames so far, the latent actions taken, undo and reset, and a preview of what each
of the 8 codes would do next.

No web imports: `genie_robot.play.app` is a thin HTTP layer over `SessionStore` and `PlaySession`, and the tests
drive these classes directly too.

How a step runs. The model's context is the last window of frames (`cfg.frames`) with the actions the player took
between them (never re-inferred by the LAM: the player chose them), so the world continues from what was shown.
A step is one `Engine.imagine` call at batch 1 with the session's MaskGIT steps and temperature; its latency is
what the page shows. Previews are separate, lower-cost samples (`preview_steps`, default 4 MaskGIT steps) made by
one background worker after each change, one code at a time so they appear as they finish. They only show what
a code tends to do: pressing the key samples afresh at the session's own settings.

One model call runs at a time per model (`EngineGate`): on 2 cores two calls side by side are each slower than
the two in turn. A step waiting for the engine stops a running preview at its next MaskGIT step, so a key press
is never queued behind eight previews.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from genie_robot.core.engine import Engine
from genie_robot.models.config import SAMPLING

log = logging.getLogger(__name__)


class PlayError(ValueError):
    """A request the page must be told about; `status` is the HTTP status the app answers with."""

    status = 400


class SessionGone(PlayError):
    status = 404


class Busy(PlayError):
    status = 409


class Full(PlayError):
    status = 503


class _Yield(Exception):
    """Raised inside a preview rollout: stop here (a step wants the engine, or the world changed)."""


class EngineGate:
    """One call at a time on a model's engine; steps go before previews."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self._steps_waiting = 0

    @contextmanager
    def step(self) -> Iterator[None]:
        with self._count:
            self._steps_waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self._steps_waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def preview(self) -> Iterator[None]:
        with self._lock:
            yield

    def step_waiting(self) -> bool:
        return self._steps_waiting > 0


@dataclass
class PlayModel:
    """A loaded model a session plays: its name on the page, its engine, and the gate to it."""

    name: str
    engine: Engine
    gate: EngineGate


@dataclass(frozen=True)
class Settings:
    """What the page's controls set; `check` gives each a clear range."""

    steps: int = SAMPLING.serve_steps  # MaskGIT steps of a step (serving's default: SAMPLING says why)
    temperature: float = SAMPLING.temperature  # a session starts at its model's own (`Engine.temperature`)
    previews: bool = True  # sample a preview of each code after every change
    preview_steps: int = 4  # MaskGIT steps of a preview

    MAX_STEPS = 64
    MAX_TEMPERATURE = 10.0

    def check(self) -> Settings:
        for name in ("steps", "preview_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= self.MAX_STEPS:
                raise PlayError(f"{name} must be a whole number of MaskGIT steps in 1..{self.MAX_STEPS}, got {v!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= self.MAX_TEMPERATURE:
            raise PlayError(f"temperature must be a number in (0, {self.MAX_TEMPERATURE:g}], got {t!r}")
        if not isinstance(self.previews, bool):
            raise PlayError(f"previews must be true or false, got {self.previews!r}")
        return replace(self, temperature=float(t))


def png_bytes(frame_CHW: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame_CHW.transpose(1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()


def key_label(code: int) -> str:
    """Keys 1-8 on the page are codes 0-7 of the model."""
    return f"key {code + 1} (code {code})"


class PlaySession:
    """One browser tab's world. Every public method holds the state lock only briefly: a step's model call
    runs outside it, so the page can poll the state while the step runs."""

    def __init__(self, sid: str, model: PlayModel, settings: Settings, max_frames: int, seed: int | None = None):
        self.id, self.model, self.max_frames = sid, model, max_frames
        self.settings = settings.check()
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.frames: list[np.ndarray] = []  # uint8 [3, H, W]; frames[0] is the start
        self.actions: list[int] = []  # actions[i] led from frames[i] to frames[i + 1]
        self.latencies_ms: list[float] = []  # of each step's model call
        self.source = ""
        self.version = 0  # bumped by every change; previews belong to one version
        self.previews: dict[int, np.ndarray] = {}
        self.preview_ms: dict[int, float] = {}
        self.preview_yields = 0  # previews stopped for a step or a change (the gate works when this grows)
        self.stepping = False
        self.last_seen = time.monotonic()
        self._lock = threading.Lock()
        self.on_change: Callable[[PlaySession], None] = lambda _s: None  # the store schedules previews

    # --- the world -------------------------------------------------------------------------------------------
    @property
    def num_codes(self) -> int:
        return self.model.engine.cfg.lam.num_actions

    def _changed(self) -> None:
        """Under the state lock: a new version; old previews are dropped."""
        self.version += 1
        self.previews, self.preview_ms = {}, {}

    def start(self, frame: np.ndarray, source: str) -> None:
        """A new world from one frame (uint8 [3, H, W] at the model's resolution)."""
        h, w = self.model.engine.cfg.resolution
        if frame.dtype != np.uint8 or frame.shape != (3, h, w):
            raise PlayError(f"a start frame must be uint8 [3, {h}, {w}], got {frame.dtype} {frame.shape}")
        with self._lock:
            if self.stepping:
                raise Busy("a step is still running; start again when it has finished")
            self.frames, self.actions, self.latencies_ms, self.source = [frame], [], [], source
            self._changed()
        self.on_change(self)

    def _context(self) -> tuple[np.ndarray, np.ndarray]:
        """Under the state lock: the last window of frames and the actions the player took between them."""
        context = np.stack(self.frames[-self.model.engine.cfg.frames:])
        return context, np.array(self.actions[len(self.actions) - (len(context) - 1):], dtype=np.int64)

    def _previews_pending(self) -> bool:
        """Under the state lock: previews are on and some code of this world has none yet."""
        return bool(self.frames) and self.settings.previews and len(self.previews) < self.num_codes

    def _need_start(self) -> None:
        if not self.frames:
            raise PlayError("no start frame yet: pick a held-out frame, upload an image or take the camera's")

    def step(self, code) -> dict:
        """Imagine the next frame under latent action `code` (0..7) and append it."""
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < self.num_codes:
            raise PlayError(f"a latent action is one of keys 1-{self.num_codes} (codes 0-{self.num_codes - 1}), "
                            f"got {code!r}")
        with self._lock:
            self._need_start()
            if self.stepping:
                raise Busy("the previous step is still running; press again when its frame has appeared")
            if len(self.frames) >= self.max_frames:
                raise PlayError(f"this session holds at most {self.max_frames} frames: download the GIF, then undo "
                                f"or reset")
            self.stepping = True
            context, context_actions = self._context()
            settings = self.settings
        try:
            with self.model.gate.step():
                t0 = time.perf_counter()
                out = self.model.engine.imagine(context, np.array([[code]]), steps=settings.steps,
                                                temperature=settings.temperature, rng=self.rng,
                                                context_actions=context_actions)
                latency = (time.perf_counter() - t0) * 1000
        except BaseException:
            with self._lock:
                self.stepping = False
            raise
        # Start, undo and reset refuse while `stepping`, which ends under the same lock as the commit: the step
        # extends the world it was given. (A settings change may land meanwhile; it only renews the previews.)
        with self._lock:
            self.stepping = False
            self.frames.append(out.frames[0, 0])
            self.actions.append(code)
            self.latencies_ms.append(latency)
            self._changed()
        self.on_change(self)
        return {"frame": len(self.frames) - 1, "latency_ms": latency}

    def undo(self) -> None:
        with self._lock:
            self._need_start()
            if self.stepping:
                raise Busy("a step is still running; undo when it has finished")
            if len(self.frames) == 1:
                raise PlayError("nothing to undo: this is the start frame")
            self.frames.pop(), self.actions.pop(), self.latencies_ms.pop()
            self._changed()
        self.on_change(self)

    def reset(self) -> None:
        """Back to the start frame."""
        with self._lock:
            self._need_start()
            if self.stepping:
                raise Busy("a step is still running; reset when it has finished")
            self.frames, self.actions, self.latencies_ms = self.frames[:1], [], []
            self._changed()
        self.on_change(self)

    def configure(self, **changes) -> None:
        unknown = sorted(set(changes) - {"steps", "temperature", "previews", "preview_steps"})
        if unknown:
            raise PlayError(f"unknown settings {unknown}; known: steps, temperature, previews, preview_steps")
        settings = replace(self.settings, **changes).check()
        with self._lock:
            preview_changed = (settings.preview_steps, settings.temperature, settings.previews) != (
                self.settings.preview_steps, self.settings.temperature, self.settings.previews)
            self.settings = settings
            if preview_changed:
                self._changed()
        if preview_changed:
            self.on_change(self)

    # --- previews --------------------------------------------------------------------------------------------
    def wants_previews(self) -> bool:
        with self._lock:
            return self._previews_pending()

    def fill_previews(self) -> bool:
        """Sample the missing previews of the current version, one code at a time. Returns True when all are
        there, False when it stopped early (a step wants the engine, or the world changed)."""
        gate = self.model.gate
        while True:
            with self._lock:
                if not self._previews_pending():
                    return True
                code = min(set(range(self.num_codes)) - set(self.previews))
                version, settings = self.version, self.settings
                context, context_actions = self._context()

            def stop_if_needed(_h: int, _i: int, version: int = version) -> None:
                if gate.step_waiting() or self.version != version:
                    raise _Yield

            try:
                with gate.preview():
                    t0 = time.perf_counter()
                    out = self.model.engine.imagine(
                        context, np.array([[code]]), steps=settings.preview_steps, temperature=settings.temperature,
                        seed=(self.seed * 1_000_003 + version * 101 + code) % 2**63, context_actions=context_actions,
                        before_step=stop_if_needed)
                    ms = (time.perf_counter() - t0) * 1000
            except _Yield:
                self.preview_yields += 1
                return False
            with self._lock:
                if self.version != version:
                    return False
                self.previews[code] = out.frames[0, 0]
                self.preview_ms[code] = ms

    # --- what the page reads ---------------------------------------------------------------------------------
    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def state(self) -> dict:
        with self._lock:
            engine = self.model.engine
            return {
                "session": self.id,
                "model": self.model.name,
                "version": self.version,
                "frames": len(self.frames),
                "actions": list(self.actions),
                "latencies_ms": [round(x, 1) for x in self.latencies_ms],
                "source": self.source,
                "stepping": self.stepping,
                "settings": asdict(self.settings),
                "model_temperature": engine.temperature,
                "previews": sorted(self.previews),
                "preview_ms": {str(k): round(v, 1) for k, v in sorted(self.preview_ms.items())},
                "previews_pending": self._previews_pending(),
                "num_codes": self.num_codes,
                "window": engine.cfg.frames,
                "resolution": list(engine.cfg.resolution),
                "max_frames": self.max_frames,
                "seed": self.seed,
            }

    def frame_png(self, index: int) -> bytes:
        with self._lock:
            if not 0 <= index < len(self.frames):
                raise SessionGone(f"frame {index} does not exist (this session has {len(self.frames)})")
            frame = self.frames[index]
        return png_bytes(frame)

    def preview_png(self, version: int, code: int) -> bytes:
        with self._lock:
            if version != self.version or code not in self.previews:
                raise SessionGone(f"no preview of code {code} for version {version} (now {self.version})")
            frame = self.previews[code]
        return png_bytes(frame)

    def gif(self, scale: int = 4, fps: float = 2.0) -> bytes:
        """The played sequence, each frame captioned with the action that led to it; the actions are also in the
        GIF's comment, as JSON."""
        with self._lock:
            self._need_start()
            frames, actions, source = list(self.frames), list(self.actions), self.source
        caption_h = 14
        pictures = []
        for i, frame in enumerate(frames):
            big = np.ascontiguousarray(frame.transpose(1, 2, 0)).repeat(scale, 0).repeat(scale, 1)
            canvas = Image.new("RGB", (big.shape[1], big.shape[0] + caption_h), "white")
            canvas.paste(Image.fromarray(big), (0, 0))
            text = "start" if i == 0 else f"{i}: {key_label(actions[i - 1])}"
            ImageDraw.Draw(canvas).text((3, big.shape[0] + 1), text, fill="black")
            pictures.append(canvas)
        comment = json.dumps({"model": self.model.name, "source": source, "latent_actions": actions,
                              "keys": [a + 1 for a in actions]})
        buf = io.BytesIO()
        pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=int(1000 / fps),
                         loop=0, comment=comment.encode())
        return buf.getvalue()


class SessionStore:
    """The sessions of all tabs, their time-out, and the one worker that samples previews.

    A session idle for `timeout_s` (no request from its page: the page polls while open) is dropped with its
    frames; at most `max_sessions` live at once, so a forgotten tab cannot hold memory for ever."""

    def __init__(self, load_model: Callable[[str], PlayModel], default_settings: Callable[[PlayModel], Settings],
                 max_sessions: int = 16, timeout_s: float = 600.0, max_frames: int = 256):
        self.load_model, self.default_settings = load_model, default_settings
        self.max_sessions, self.timeout_s, self.max_frames = max_sessions, timeout_s, max_frames
        self._sessions: dict[str, PlaySession] = {}
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._preview_loop, name="play-previews", daemon=True)
        self._worker.start()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self, model_name: str, seed: int | None = None) -> PlaySession:
        self.expire()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise Full(f"{self.max_sessions} sessions are open, the most this server keeps: close a tab, or "
                           f"wait until an idle one times out ({self.timeout_s:g} s)")
        model = self.load_model(model_name)  # a PlayError naming the model and why it does not load
        session = PlaySession(secrets.token_urlsafe(12), model, self.default_settings(model), self.max_frames, seed)
        session.on_change = self._schedule
        with self._lock:
            self._sessions[session.id] = session
        log.info("session %s opened on %s (%d open)", session.id, model.name, len(self))
        return session

    def get(self, sid: str) -> PlaySession:
        with self._lock:
            session = self._sessions.get(sid)
        if session is None:
            raise SessionGone(f"session {sid!r} is unknown or timed out after {self.timeout_s:g} s idle: reload "
                              f"the page for a new one")
        session.touch()
        return session

    def close(self, sid: str) -> None:
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is not None:
            log.info("session %s closed (%d open)", sid, len(self))

    def expire(self) -> list[str]:
        """Drops sessions idle for longer than the time-out (never one that is stepping)."""
        now = time.monotonic()
        with self._lock:
            gone = [sid for sid, s in self._sessions.items()
                    if now - s.last_seen > self.timeout_s and not s.stepping]
            for sid in gone:
                del self._sessions[sid]
        for sid in gone:
            log.info("session %s timed out after %g s idle; its frames are freed", sid, self.timeout_s)
        return gone

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._worker.join(timeout=5)

    # --- previews --------------------------------------------------------------------------------------------
    def _schedule(self, session: PlaySession) -> None:
        with self._wake:
            if session.id in self._queue:
                self._queue.remove(session.id)
            self._queue.appendleft(session.id)  # the latest change first
            self._wake.notify()

    def _preview_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                sid = self._queue.popleft()
            with self._lock:
                session = self._sessions.get(sid)
            if session is None or not session.wants_previews():
                continue
            try:
                done = session.fill_previews()
            except Exception:  # a failing preview must not stop the worker that serves every session
                log.exception("previews of session %s failed", sid)
                continue
            if not done:
                with self._wake:  # a step took the engine: come back to it after the queue's others
                    if sid not in self._queue:
                        self._queue.append(sid)
                time.sleep(0.01)
