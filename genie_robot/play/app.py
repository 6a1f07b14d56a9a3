"""The play server: a Starlette app over `SessionStore`, served by uvicorn (`genie-robot play`).

Every route is a few lines: parse the request, call the session, answer JSON (or a PNG or GIF). A `PlayError`
becomes `{"error": message}` with its status, which the page shows as it is; anything unexpected is logged with
its traceback and answered 500 with one line, and the server goes on serving. Model calls run on worker threads
(`run_in_threadpool`), so a step in one tab never holds up another tab's page, polls or uploads.

A step whose page disconnects mid-call (a closed tab, a dropped network) is not cancelled: it finishes, is kept,
and is logged; the page sees the new frame when it reconnects (it polls its state), so no key press is lost half
way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from genie_robot.core.image import fit_image
from genie_robot.play.models import ModelRegistry
from genie_robot.play.session import PlayError, PlaySession, SessionGone, SessionStore, Settings, png_bytes
from genie_robot.play.starts import UploadLimits, check_size, decode_upload, heldout_frames

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
LOOPBACK = ("localhost",)


@dataclass
class PlayConfig:
    """`play:` in configs/config.yaml."""

    host: str = "127.0.0.1"
    port: int = 8765
    expose: bool = False  # required to bind anything but loopback: the page drives the model and takes uploads
    models: list[str] = field(default_factory=list)  # more models for the page's selector, after ckpt
    cache_dir: str = "outputs/play"  # exports of references and run directories
    start_data: str | None = None  # a held-out dataset whose frames are offered as starts
    start_frames: int = 12
    camera_topic: str | None = None  # a ROS 2 image topic whose latest frame is offered as a start
    camera_transport: str = "raw"  # raw (sensor_msgs/Image) | compressed (sensor_msgs/CompressedImage)
    steps: int | None = None  # MaskGIT steps of a step; None: serving's default (SAMPLING.serve_steps)
    temperature: float | None = None  # None: the model's own (a reference's card temperature)
    previews: bool = True
    preview_steps: int = 4
    max_sessions: int = 16
    session_timeout_s: float = 600.0
    max_frames: int = 256
    max_upload_mb: float = 10.0
    max_upload_megapixels: float = 40.0

    def check_host(self) -> str:
        """The address to bind; anything but loopback needs `expose`."""
        host = self.host
        try:
            loopback = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and not self.expose:
            raise ValueError(f"play.host={host} would let other machines drive the model and upload files: add "
                             f"play.expose=true to mean it (the default binds 127.0.0.1 only)")
        return host


class Play:
    """What the routes share: the sessions, the offered models and starts, the upload limits, the camera."""

    def __init__(self, cfg: PlayConfig, models: ModelRegistry, camera=None):
        self.cfg, self.models, self.camera = cfg, models, camera
        self.limits = UploadLimits(int(cfg.max_upload_mb * 2**20), int(cfg.max_upload_megapixels * 1e6))
        self.store = SessionStore(models.get, self.settings_for, cfg.max_sessions, cfg.session_timeout_s,
                                  cfg.max_frames)
        self.starts: list[np.ndarray] = []
        self.starts_note = "loading held-out frames"

    def settings_for(self, model) -> Settings:
        base = Settings()
        return Settings(steps=self.cfg.steps or base.steps,
                        temperature=self.cfg.temperature if self.cfg.temperature is not None
                        else model.engine.temperature,
                        previews=self.cfg.previews, preview_steps=self.cfg.preview_steps).check()

    def load_starts(self, resolution) -> None:
        self.starts, self.starts_note = heldout_frames(self.cfg.start_data, resolution, self.cfg.start_frames)
        log.info("%d start frames: %s", len(self.starts), self.starts_note)


def error(e: PlayError) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=e.status)


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise PlayError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise PlayError("the request body must be a JSON object")
    return body


def _session(request: Request) -> PlaySession:
    play: Play = request.app.state.play
    return play.store.get(request.path_params["sid"])


async def index(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def info(request: Request) -> Response:
    play: Play = request.app.state.play
    camera = None
    if play.camera is not None:
        latest = play.camera.latest()
        camera = {"topic": play.camera.topic, "age_s": None if latest is None else round(latest[1], 2),
                  "error": play.camera.error}
    return JSONResponse({
        "models": play.models.names, "default_model": play.models.default,
        "starts": len(play.starts), "starts_note": play.starts_note, "camera": camera,
        "max_upload_mb": play.cfg.max_upload_mb, "sessions": len(play.store),
        "session_timeout_s": play.cfg.session_timeout_s,
    })


async def start_png(request: Request) -> Response:
    play: Play = request.app.state.play
    i = request.path_params["i"]
    if not 0 <= i < len(play.starts):
        raise SessionGone(f"there is no start frame {i} ({len(play.starts)} offered)")
    return Response(png_bytes(play.starts[i]), media_type="image/png", headers={"Cache-Control": "max-age=3600"})


async def create_session(request: Request) -> Response:
    play: Play = request.app.state.play
    body = await _json(request)
    name = body.get("model") or play.models.default
    session = await run_in_threadpool(play.store.create, str(name))  # may load (and export) the model
    return JSONResponse(session.state())


async def get_state(request: Request) -> Response:
    return JSONResponse(_session(request).state())


async def close_session(request: Request) -> Response:
    request.app.state.play.store.close(request.path_params["sid"])
    return JSONResponse({"closed": request.path_params["sid"]})


async def start(request: Request) -> Response:
    """Start from held-out frame `heldout` or the camera's latest frame (`camera: true`)."""
    play: Play = request.app.state.play
    session = _session(request)
    body = await _json(request)
    resolution = session.model.engine.cfg.resolution
    if "heldout" in body:
        i = body["heldout"]
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(play.starts):
            raise PlayError(f"heldout must be a start frame number in 0..{len(play.starts) - 1}, got {i!r}"
                            if play.starts else f"no held-out start frames: {play.starts_note}")
        frame = play.starts[i]
        if frame.shape[1:] != tuple(resolution):
            frame = fit_image(np.ascontiguousarray(frame.transpose(1, 2, 0)), resolution)
        source = f"held-out frame {i}"
    elif body.get("camera"):
        if play.camera is None:
            raise PlayError("no camera topic: start the server with play.camera_topic=<image topic>")
        latest = play.camera.latest()
        if latest is None:
            raise PlayError(f"no frame on {play.camera.topic} yet" + (f" ({play.camera.error})" if play.camera.error
                                                                     else ": is the camera publishing?"))
        frame = fit_image(latest[0], resolution)
        source = f"camera {play.camera.topic} (frame {latest[1]:.1f} s old)"
    else:
        raise PlayError("say where to start: {\"heldout\": <n>} or {\"camera\": true} (uploads go to /upload)")
    await run_in_threadpool(session.start, frame, source)
    return JSONResponse(session.state())


async def upload(request: Request) -> Response:
    """The request body is the image file itself; checked by size, then by content."""
    play: Play = request.app.state.play
    session = _session(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        check_size(int(length), play.limits)  # refused before a byte of it is read
    chunks, size = [], 0
    async for chunk in request.stream():  # a sender without Content-Length (or a lying one) is cut off too
        size += len(chunk)
        check_size(size, play.limits, partial=True)
        chunks.append(chunk)
    name = unquote(request.headers.get("x-filename", "upload"))[:120]
    frame = await run_in_threadpool(decode_upload, b"".join(chunks), play.limits, session.model.engine.cfg.resolution)
    await run_in_threadpool(session.start, frame, f"upload {name}")
    return JSONResponse(session.state())


async def step(request: Request) -> Response:
    session = _session(request)
    body = await _json(request)
    key, n = body.get("key"), session.num_codes
    if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= n:
        raise PlayError(f"keys 1-{n} choose a latent action; {key!r} is not one of them")
    task = asyncio.ensure_future(run_in_threadpool(session.step, key - 1))
    lost = False
    while not lost:
        # Polled while the step runs, and once more after it: a step that ends within a poll of the hang-up
        # has still lost its page, since the answer was not sent yet.
        await asyncio.wait({task}, timeout=0.2)
        lost = await request.is_disconnected()
        if lost:
            log.warning("session %s: the page's connection was lost during the step of key %d; the step goes on "
                        "and is kept (the page shows it when it reconnects)", session.id, key)
        if task.done():
            break
    result = await task
    if lost:
        log.info("session %s: the step of key %d finished after its page disconnected (frame %d, %.0f ms)",
                 session.id, key, result["frame"], result["latency_ms"])
    return JSONResponse({**session.state(), "step": result})


async def undo(request: Request) -> Response:
    session = _session(request)
    await run_in_threadpool(session.undo)
    return JSONResponse(session.state())


async def reset(request: Request) -> Response:
    session = _session(request)
    await run_in_threadpool(session.reset)
    return JSONResponse(session.state())


async def settings(request: Request) -> Response:
    session = _session(request)
    session.configure(**await _json(request))
    return JSONResponse(session.state())


async def frame_png(request: Request) -> Response:
    session = _session(request)
    return Response(session.frame_png(request.path_params["i"]), media_type="image/png")


async def preview_png(request: Request) -> Response:
    session = _session(request)
    data = session.preview_png(request.path_params["version"], request.path_params["code"])
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=600"})


async def gif(request: Request) -> Response:
    session = _session(request)
    data = await run_in_threadpool(session.gif)
    return Response(data, media_type="image/gif",
                    headers={"Content-Disposition": f'attachment; filename="genie-play-{session.model.name}.gif"'})


async def play_error(_request: Request, e: Exception) -> Response:
    return error(e)


async def internal_error(request: Request, e: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=e)
    return JSONResponse({"error": f"internal error in {request.url.path}: {type(e).__name__}: {e} (the server is "
                                  f"still serving; see its log)"}, status_code=500)


def create_app(play: Play) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async def janitor() -> None:
            while True:
                await asyncio.sleep(max(0.5, min(30.0, play.cfg.session_timeout_s / 4)))
                play.store.expire()

        task = asyncio.create_task(janitor())
        try:
            yield
        finally:
            task.cancel()
            play.store.shutdown()
            if play.camera is not None:
                play.camera.close()

    sid = "/api/sessions/{sid:str}"
    app = Starlette(routes=[
        Route("/", index),
        Route("/api/info", info),
        Route("/api/starts/{i:int}.png", start_png),
        Route("/api/sessions", create_session, methods=["POST"]),
        Route(sid, get_state),
        Route(sid, close_session, methods=["DELETE"]),
        Route(sid + "/start", start, methods=["POST"]),
        Route(sid + "/upload", upload, methods=["POST"]),
        Route(sid + "/step", step, methods=["POST"]),
        Route(sid + "/undo", undo, methods=["POST"]),
        Route(sid + "/reset", reset, methods=["POST"]),
        Route(sid + "/settings", settings, methods=["POST"]),
        Route(sid + "/frames/{i:int}.png", frame_png),
        Route(sid + "/previews/{version:int}/{code:int}.png", preview_png),
        Route(sid + "/play.gif", gif),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], exception_handlers={PlayError: play_error, Exception: internal_error}, lifespan=lifespan)
    app.state.play = play
    return app


def serve(cfg: PlayConfig, sources: list[str], providers: list[str] | None = None, threads: int = 0) -> int:
    """Loads the first model (a broken one is an error before anything is served), then serves until Ctrl-C."""
    import uvicorn

    host = cfg.check_host()
    models = ModelRegistry([*sources, *cfg.models], cfg.cache_dir, providers, threads)
    first = models.get(models.default)
    camera = None
    if cfg.camera_topic:
        from genie_robot.play.camera import CameraFeed

        camera = CameraFeed(cfg.camera_topic, cfg.camera_transport)
    play = Play(cfg, models, camera)
    play.load_starts(first.engine.cfg.resolution)
    shown = f"[{host}]" if ":" in host else host
    print(f"genie-robot play: {models.default} on http://{shown}:{cfg.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.Server(uvicorn.Config(create_app(play), host=host, port=cfg.port, log_level="warning",
                                  timeout_graceful_shutdown=5)).run()
    return 0
