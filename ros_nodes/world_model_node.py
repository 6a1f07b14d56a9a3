"""`world_model_node`: the world model as a ROS 2 lifecycle node (a thin layer over genie_robot.runtime).

Lifecycle: configure loads the model, activate serves, deactivate stops, cleanup frees the model
(`WorldModelNode`); with `autostart` it brings itself up. While active it watches the camera
(`image`, remappable; rgb8, bgr8, rgba8, bgra8 or mono8, any size; or with `camera_transport:
compressed`, sensor_msgs/CompressedImage JPEG or PNG on `image/compressed`, as image_transport
names it) and keeps the latest frames at the model's rate; serves `~/rollout` and `~/infer_actions`
(genie_robot_interfaces/srv), the `~/plan` action (feedback per CEM iteration, cancel honoured; it plans
from the newest context frames that fit beside its horizon in the model's window: `plan_context_frames`) and
the `~/rollout_action` action (feedback per imagined frame, cancel honoured before the next MaskGIT step).
It publishes its health at 1 Hz on `/diagnostics` (DiagnosticArray: model, engine, provider, camera
rate and age, requests served and failed, latency percentiles, memory) and as JSON on `~/status`.
Predicted frames carry the camera's frame_id and stamps (the last context frame's plus each step
times the model period); responses list the context frames' stamps.
Requests run one at a time, in arrival order, on one engine thread (genie_robot.runtime.service.RequestQueue);
a plan goal is accepted while another runs and waits its turn. At most `max_queue` requests wait or run;
one more gets success=false, "busy: ..., retry after N ms". The executor has a thread for each of
those plus spare ones, so the camera, the status timer and cancels always find one: when waiting
requests held every thread, rclpy's executor spun on the callbacks queued behind them, and with a
30 Hz camera 8 concurrent clients got 0.27x the throughput of one client in sequence
(docs/BENCHMARKS.md). Every bad request gets success=false with a message saying what was wrong,
and the node keeps serving.

    ros2 run genie_robot world_model_node --ros-args --params-file world_model.yaml
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from genie_robot.models.config import SAMPLING
from genie_robot.runtime.camera import Context, FrameBuffer, FrameError, compressed_to_model_frame, to_model_frame
from genie_robot.runtime.engine import CPU_MEMORY
from genie_robot.runtime.service import Cancelled, RequestError, RolloutResult, ServiceLimits, WorldModelService, rss_mb
from genie_robot_interfaces.action import Plan, RolloutAction
from genie_robot_interfaces.srv import InferActions, Rollout
from genie_robot_ros.msgs import header, image_msg, to_seconds, to_time

# name: (default, description, (low, high) range or None, when a change applies). `live`: at once, through
# the parameter callback (the next request uses it); `start`: read-only, the node's subscriptions,
# executor or engine limits are sized from it; `model`: only while no model is loaded (rejected now,
# with the reason).
PARAMETERS = {
    "model_dir": ("", "exported model directory (engine onnx) or training run directory (engine torch)", None,
                  "model"),
    "engine": ("onnx", "onnx (onnxruntime, no torch) or torch", None, "model"),
    "providers": (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                  "onnxruntime execution providers, first available wins", None, "model"),
    "cpu_memory": (CPU_MEMORY[0], "onnxruntime CPU memory between calls: shrink (free arena chunks go back after each "
                                  "call), arena (keeps the largest call's: GBs after one plan), off (no arena)",
                   None, "model"),
    "context_frames": (8, "camera frames used as context when a request brings none (at most the model's window)",
                       (1, 64), "live"),
    "frame_rate": (3.0, "Hz: camera frames are subsampled to the model's rate (RT-1: 3 Hz)", (0.1, 100.0), "live"),
    "max_candidates": (64, "largest num_candidates / num_samples accepted", (1, 1024), "start"),
    "max_horizon": (16, "largest horizon accepted", (1, 256), "start"),
    "max_context": (16, "most context frames a request may send", (1, 256), "start"),
    "temperature": (0.0, "MaskGIT temperature for requests that send <= 0; 0: the model's own (a reference's card "
                         "temperature, carried by its export), else Genie's 2.0", (0.0, 100.0), "live"),
    "maskgit_steps": (SAMPLING.serve_steps, "MaskGIT steps for rollouts that send 0", (1, 256), "live"),
    "plan_maskgit_steps": (SAMPLING.plan_steps, "MaskGIT steps inside a plan (CEM)", (1, 256), "live"),
    "plan_context_frames": (0, "newest context frames a plan keeps (at most the model's window); 0: as many as fit "
                               "beside its horizon in the window, so its rollouts never slide the window and rebuild "
                               "the dynamics' cache (2.4x faster with sim-rt1 at horizon 4, no worse)",
                            (0, 64), "live"),
    "camera_qos": ("sensor_data", "sensor_data (best effort) or reliable", None, "start"),
    "camera_transport": ("raw", "raw (sensor_msgs/Image on `image`) or compressed (sensor_msgs/CompressedImage, "
                                "JPEG or PNG, on `image/compressed`)", None, "start"),
    "camera_depth": (5, "camera subscription queue depth", (1, 1000), "start"),
    "max_queue": (16, "requests waiting or running at once; one more is refused as busy with a retry hint",
                  (1, 1024), "start"),
    "autostart": (True, "configure and activate at start; false: wait for lifecycle transitions (a launch file's "
                        "or a lifecycle manager's)", None, "start"),
}


def descriptor(name: str) -> ParameterDescriptor:
    """The parameter's description, range and read-only flag, as `ros2 param describe` shows them."""
    default, description, bounds, applies = PARAMETERS[name]
    d = ParameterDescriptor(description=f"{description} [applies: {applies}]", read_only=applies == "start")
    if bounds is not None and isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=bounds[0], to_value=bounds[1], step=1)]
    elif bounds is not None:
        d.floating_point_range = [FloatingPointRange(from_value=bounds[0], to_value=bounds[1], step=0.0)]
    return d


# Executor threads beyond one per queued request: the camera, the status timer, action goal and
# cancel callbacks, and a request being refused as busy.
SPARE_THREADS = 4


def frame_msg(frame: np.ndarray, stamp: float = 0.0, frame_id: str = "") -> Image:
    """An rgb8 sensor_msgs/Image of a model's uint8 [3, h, w] frame, stamped."""
    return image_msg(frame.transpose(1, 2, 0), header(stamp, frame_id))


class WorldModelNode(LifecycleNode):
    """A managed (lifecycle) node. configure loads and checks the model; activate subscribes to the camera
    and starts answering; deactivate stops answering (requests already running finish first, a running
    plan is stopped at its next iteration); cleanup frees the model. A model swap: deactivate, cleanup,
    set model_dir, configure, activate. With `autostart` (the default) the node configures and
    activates itself. Its endpoints exist in every state and answer success=false with the state
    while it is not active: a service destroyed under a request in flight would lose the answer."""

    def __init__(self):
        super().__init__("world_model_node")
        for name, (default, *_) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor(name))
        self.engine = self.service = None
        self.phase, self.last_error = "unconfigured", ""
        self.engine_kind, self.provider = "", ""
        self._camera = None
        self._dropped_warned = 0.0
        self._inflight, self._inflight_lock = 0, threading.Lock()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._camera_group, work = MutuallyExclusiveCallbackGroup(), ReentrantCallbackGroup()
        self.create_service(Rollout, "~/rollout", self._rollout, callback_group=work)
        self.create_service(InferActions, "~/infer_actions", self._infer_actions, callback_group=work)
        self.plan_server = ActionServer(self, Plan, "~/plan", execute_callback=self._plan,
                                        goal_callback=lambda _: GoalResponse.ACCEPT,
                                        cancel_callback=lambda _: CancelResponse.ACCEPT, callback_group=work)
        self.rollout_server = ActionServer(self, RolloutAction, "~/rollout_action", execute_callback=self._rollout_goal,
                                           goal_callback=lambda _: GoalResponse.ACCEPT,
                                           cancel_callback=lambda _: CancelResponse.ACCEPT, callback_group=work)
        self.status = self.create_publisher(String, "~/status", 10)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_status, callback_group=self._camera_group)

    def _params(self) -> dict:
        return {name: self.get_parameter(name).value for name in PARAMETERS}

    # --- lifecycle ------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._params()
        try:
            self._check(p)
            engine = self._load(p)
        except Exception as e:  # a bad model_dir or parameter: stays unconfigured, says why
            self.last_error = f"configure failed: {e}"
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        cfg = engine.cfg
        limits = ServiceLimits(context_frames=min(p["context_frames"], cfg.frames), max_candidates=p["max_candidates"],
                               max_horizon=p["max_horizon"], max_context=p["max_context"],
                               temperature=p["temperature"], maskgit_steps=p["maskgit_steps"],
                               plan_maskgit_steps=p["plan_maskgit_steps"], max_queue=p["max_queue"],
                               plan_context_frames=min(p["plan_context_frames"], cfg.frames))
        self.service = WorldModelService(engine, limits, FrameBuffer(p["max_context"], p["frame_rate"]))
        self.engine, self.engine_kind = engine, p["engine"]
        self.provider = getattr(engine, "active", "torch")
        self.phase, self.last_error = "inactive", ""
        self.get_logger().info(f"world model {p['model_dir']} ({p['engine']}, {self.provider}) loaded: "
                               f"{cfg.name}, {cfg.resolution[0]}x{cfg.resolution[1]}, window {cfg.frames}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._params()
        if not Path(p["model_dir"]).exists():  # what is served must still be what is deployed
            self.last_error = (f"activate failed: model_dir {p['model_dir']} no longer exists (it was loaded at "
                               "configure): clean up and configure again with a model that exists")
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        # sensor_data: best effort, like rclpy's preset (a new profile: the preset is a shared global).
        qos = QoSProfile(depth=p["camera_depth"], reliability=ReliabilityPolicy.BEST_EFFORT
                         if p["camera_qos"] == "sensor_data" else ReliabilityPolicy.RELIABLE)
        kind, topic = (CompressedImage, "image/compressed") if p["camera_transport"] == "compressed" \
            else (Image, "image")
        self._camera = self.create_subscription(kind, topic, self._on_image, qos, callback_group=self._camera_group)
        self.phase, self.last_error = "active", ""
        self.get_logger().info("world model active: serving")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.phase = "inactive"  # new requests are refused from here on
        if self._camera is not None:
            self.destroy_subscription(self._camera)
            self._camera = None
        deadline = time.monotonic() + 300
        while self._inflight and time.monotonic() < deadline:  # running requests finish on this model
            time.sleep(0.01)
        self.get_logger().info("world model inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unload()
        self.phase = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._camera is not None:
            self.destroy_subscription(self._camera)
            self._camera = None
        self._unload()
        self.phase = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _unload(self) -> None:
        if self.service is not None:
            self.service.queue.close()
        self.engine = self.service = None

    @contextmanager
    def _serving(self):
        """Counts a request in flight (deactivate waits for it); refuses it unless the node is active."""
        with self._inflight_lock:
            self._inflight += 1
        try:
            if self.phase != "active" or self.service is None:
                raise RequestError(f"the world model is not active (lifecycle state: {self.phase}); "
                                   + (self.last_error or "activate the node (it may be swapping its model): "
                                      "retry later"))
            yield self.service
        finally:
            with self._inflight_lock:
                self._inflight -= 1

    # --- parameters -----------------------------------------------------------------------
    @staticmethod
    def _check(p: dict) -> None:
        if not p["model_dir"]:
            raise ValueError("parameter model_dir is required (an exported model directory, `genie-robot export`)")
        if p["engine"] not in ("onnx", "torch"):
            raise ValueError(f"parameter engine must be onnx or torch, got '{p['engine']}'")
        if p["cpu_memory"] not in CPU_MEMORY:
            raise ValueError(f"parameter cpu_memory must be one of {', '.join(CPU_MEMORY)}, got '{p['cpu_memory']}'")
        if p["camera_transport"] not in ("raw", "compressed"):
            raise ValueError(f"parameter camera_transport must be raw or compressed, got '{p['camera_transport']}'")
        if p["camera_qos"] not in ("sensor_data", "reliable"):
            raise ValueError(f"parameter camera_qos must be sensor_data or reliable, got '{p['camera_qos']}'")

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Applies `live` parameters to the next request; refuses the rest with the reason. rclpy has
        already checked types, ranges and read-only flags."""
        engine, service = self.engine, self.service
        for prm in params:
            applies = PARAMETERS.get(prm.name, (None, None, None, None))[3]
            if applies == "model" and engine is not None:
                return SetParametersResult(successful=False, reason=f"{prm.name} selects the model, and one is "
                                           f"loaded (state: {self.phase}): deactivate and clean up the node, set "
                                           f"{prm.name}, then configure and activate it")
            if prm.name in ("context_frames", "plan_context_frames") and engine is not None \
                    and prm.value > engine.cfg.frames:
                return SetParametersResult(successful=False, reason=f"{prm.name} {prm.value} exceeds the "
                                           f"model's window of {engine.cfg.frames} frames")
        if service is None:  # read at the next configure
            return SetParametersResult(successful=True)
        limits, buffer = service.limits, service.buffer
        for prm in params:
            if prm.name in ("context_frames", "temperature", "maskgit_steps", "plan_maskgit_steps",
                            "plan_context_frames"):
                setattr(limits, prm.name, prm.value)
            elif prm.name == "frame_rate":
                buffer.period = 1.0 / prm.value
        return SetParametersResult(successful=True)

    @staticmethod
    def _load(p: dict):
        from genie_robot.core.engine import Limits

        limits = Limits(max_batch=p["max_candidates"], max_horizon=p["max_horizon"])
        if p["engine"] == "onnx":
            from genie_robot.runtime import OnnxWorldModel

            return OnnxWorldModel(p["model_dir"], providers=list(p["providers"]), limits=limits,
                                  cpu_memory=p["cpu_memory"])
        from genie_robot.inference.world_model import WorldModel

        return WorldModel.load(p["model_dir"], limits=limits)

    # --- camera ---------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        service = self.service
        if service is None:  # a message delivered while the node cleaned up
            return
        stamp = to_seconds(msg.header.stamp) or time.time()  # unstamped: arrival
        if isinstance(msg, CompressedImage):
            make = lambda: compressed_to_model_frame(msg.format, msg.data, service.engine.cfg.resolution,  # noqa: E731
                                                     "camera image")
        else:
            make = lambda: self._frame(msg, "camera image", service)  # noqa: E731
        try:
            service.buffer.offer(stamp, make, msg.header.frame_id)
        except FrameError as e:
            now = time.monotonic()
            if now - self._dropped_warned > 5.0:  # throttled: a misconfigured camera sends many
                self.get_logger().warning(f"dropping camera frames: {e}")
                self._dropped_warned = now

    @staticmethod
    def _frame(msg: Image, what: str, service: WorldModelService) -> np.ndarray:
        return to_model_frame(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                              service.engine.cfg.resolution, what)

    def _frames(self, msgs, what: str, service: WorldModelService) -> list[np.ndarray]:
        """The request's images as model frames; they must share one size (one camera)."""
        for i, m in enumerate(msgs[1:], 1):
            if (m.height, m.width) != (msgs[0].height, msgs[0].width):
                raise FrameError(f"{what}[{i}] is {m.height}x{m.width} but {what}[0] is {msgs[0].height}x"
                                 f"{msgs[0].width}: a request's frames must come from one camera (one size)")
        return [self._frame(m, f"{what}[{i}]", service) for i, m in enumerate(msgs)]

    def _request_context(self, msgs, service: WorldModelService) -> Context | None:  # (Node owns `_context`)
        """A request's context frames with their stamps (None when it sent none: the camera's are used).
        Frames sent without stamps (zero) count as taken one model period apart, the last when the
        request arrived, so the predictions' stamps still follow the request."""
        if not msgs:
            return None
        frames = self._frames(msgs, "context", service)
        stamps = [to_seconds(m.header.stamp) for m in msgs]
        if not all(stamps):
            now, period = self.get_clock().now().nanoseconds * 1e-9, service.period
            stamps = [now - (len(msgs) - 1 - i) * period for i in range(len(msgs))]
        return Context(np.stack(frames), tuple(stamps), msgs[-1].header.frame_id)

    # --- endpoints ------------------------------------------------------------------------
    def _answer(self, res, what: str, fill, reraise: tuple = ()) -> object:
        """Runs `fill(res, service)` while the node is active; a bad request, an inactive node or any failure
        inside becomes success=false with the reason (the `reraise` exceptions are counted and passed on).
        Counted for /diagnostics, with the time the caller waited (queue and engine)."""
        start, service = time.perf_counter(), None
        try:
            with self._serving() as service:
                fill(res, service)
            res.success = True
        except reraise:
            res.success = False
            raise
        except (RequestError, FrameError, ValueError) as e:
            res.success, res.message = False, str(e)
        except Exception as e:  # the node keeps serving whatever happens inside one request
            self.get_logger().error(f"{what} failed: {e!r}")
            res.success, res.message = False, f"internal error: {e}"
        finally:
            if service is not None:
                service.stats.record(what, bool(res.success), (time.perf_counter() - start) * 1000)
        return res

    @staticmethod
    def _rollout_result(res, out: RolloutResult) -> None:
        """A Rollout response's or RolloutAction result's frames, time and context stamps."""
        res.frames = [frame_msg(f, t, out.context.frame_id) for f, t in zip(out.frames, out.stamps, strict=True)]
        res.inference_ms = float(out.inference_ms)
        res.context_stamps = [to_time(t) for t in out.context.stamps]

    def _rollout(self, req, res):
        def fill(res, service: WorldModelService):
            self._rollout_result(res, service.rollout(self._request_context(req.context, service), req.latent_actions,
                                                      req.num_candidates, req.horizon, req.temperature,
                                                      req.maskgit_steps, req.seed))

        return self._answer(res, "rollout", fill)

    def _rollout_goal(self, goal_handle):
        """RolloutAction: a rollout with feedback per imagined frame, cancelled within one MaskGIT step."""
        g, result, start = goal_handle.request, RolloutAction.Result(), time.perf_counter()

        def on_frame(step: int, frames: np.ndarray, stamp: float, frame_id: str) -> None:
            goal_handle.publish_feedback(RolloutAction.Feedback(
                step=step + 1, horizon=g.horizon, frames=[frame_msg(f, stamp, frame_id) for f in frames],
                elapsed_ms=(time.perf_counter() - start) * 1000))

        def fill(res, service: WorldModelService):
            self._rollout_result(res, service.rollout(
                self._request_context(g.context, service), g.latent_actions, g.num_candidates, g.horizon,
                g.temperature, g.maskgit_steps, g.seed, on_frame,
                lambda: goal_handle.is_cancel_requested or self.phase != "active"))

        try:
            self._answer(result, "rollout_action", fill, reraise=(Cancelled,))
        except Cancelled as e:
            result.success, result.message = False, str(e)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:  # deactivated under it
                goal_handle.abort()
            return result
        (goal_handle.succeed if result.success else goal_handle.abort)()
        return result

    def _infer_actions(self, req, res):
        def fill(res, service: WorldModelService):
            actions = service.infer_actions(self._frames(req.frames, "frames", service))
            res.latent_actions = actions.astype(np.uint8).tolist()

        return self._answer(res, "infer_actions", fill)

    def _plan(self, goal_handle):
        g = goal_handle.request
        result = Plan.Result()

        def progress(iteration: int, best: float) -> None:
            if self.phase != "active":  # deactivating: stop at this iteration, the model is about to go
                raise RequestError(f"plan stopped at iteration {iteration}: the node was deactivated")
            goal_handle.publish_feedback(Plan.Feedback(iteration=iteration, best_cost=float(best)))

        start, service = time.perf_counter(), None
        try:
            with self._serving() as service:
                if not len(g.goal.data):
                    raise RequestError("goal image has no data (height, width, encoding and data are required)")
                goal = self._frame(g.goal, "goal", service)
                out, ctx = service.plan(goal, self._request_context(g.context, service), g.horizon, g.num_samples,
                                        g.iterations, g.seed, progress, lambda: goal_handle.is_cancel_requested)
            stamps = ctx.future_stamps(len(out.frames), service.period)
            result.latent_actions = out.actions.astype(np.uint8).tolist()
            result.predicted_frames = [frame_msg(f, t, ctx.frame_id) for f, t in zip(out.frames, stamps, strict=True)]
            result.context_stamps = [to_time(t) for t in ctx.stamps]
            result.cost = float(out.cost)
            result.robot_actions = [] if out.robot_actions is None else out.robot_actions.reshape(-1).tolist()
            result.success = True
            goal_handle.succeed()
        except Cancelled:
            result.success, result.message = False, "plan cancelled"
            goal_handle.canceled()
        except (RequestError, FrameError, ValueError) as e:
            result.success, result.message = False, str(e)
            goal_handle.abort()
        except Exception as e:
            self.get_logger().error(f"plan failed: {e!r}")
            result.success, result.message = False, f"internal error: {e}"
            goal_handle.abort()
        if service is not None:
            service.stats.record("plan", result.success, (time.perf_counter() - start) * 1000)
        return result

    # --- health ---------------------------------------------------------------------------
    def _health(self) -> dict:
        """One snapshot for ~/status (JSON) and /diagnostics."""
        s, engine = self.service, self.engine
        h = {"state": self.phase, "error": self.last_error, "rss_mb": round(rss_mb(), 1)}
        if s is None or engine is None:
            return {**h, "model": self.get_parameter("model_dir").value}
        age = s.buffer.age()
        return {
            **h, "model": engine.source, "name": engine.cfg.name, "engine": self.engine_kind,
            "provider": self.provider, "buffer": len(s.buffer), "buffer_capacity": s.buffer.frames.maxlen,
            "queued": len(s.queue), "max_queue": s.queue.capacity,
            "camera_rate_hz": round(s.buffer.rate_hz(), 2), "camera_age_s": None if age is None else round(age, 3),
            "last_latency_ms": None if s.last_latency_ms is None else round(s.last_latency_ms, 1),
            "context_frames": s.limits.context_frames, "frame_rate": round(1.0 / s.buffer.period, 3),
            "temperature": s.default_temperature, "maskgit_steps": s.limits.maskgit_steps,
            "plan_maskgit_steps": s.limits.plan_maskgit_steps, "plan_context_frames": s.limits.plan_context_frames,
            **s.stats.summary()}

    def _level(self, h: dict) -> tuple[bytes, str]:
        """ERROR when a transition failed, WARN while not active, while the camera is silent or stale (older
        than 3 model periods, at least 1 s) or the queue is full: requests that rely on the camera, or any
        new one, would fail."""
        if h["error"]:
            return DiagnosticStatus.ERROR, h["error"]
        if h["state"] != "active":
            return DiagnosticStatus.WARN, f"{h['state']}: not serving"
        if h["camera_age_s"] is None:
            return DiagnosticStatus.WARN, "no camera frame yet: requests must send their context frames"
        if h["camera_age_s"] > max(1.0, 3 / h["frame_rate"]):
            return DiagnosticStatus.WARN, f"camera stale: newest frame {h['camera_age_s']:.1f} s old"
        if h["queued"] >= h["max_queue"]:
            return DiagnosticStatus.WARN, f"busy: {h['queued']} requests queued (max_queue)"
        return DiagnosticStatus.OK, f"serving: {h['served']} requests answered, {h['failed']} failed"

    def _publish_status(self) -> None:
        h = self._health()
        self.status.publish(String(data=json.dumps(h)))
        level, message = self._level(h)
        values = [KeyValue(key=k, value=json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in h.items()]
        self.diagnostics.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()),
            status=[DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: world model",
                                     message=message, hardware_id=h.get("name", ""), values=values)]))


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = WorldModelNode()
    except Exception as e:  # a parameter out of range or of the wrong type: one clear line, exit code 1
        print(f"world_model_node: cannot start: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    # The executor exists before the model loads: a SIGINT during the autostart transitions shuts the
    # context down, and an executor made after that could not be made at all (a traceback, exit 1).
    executor = MultiThreadedExecutor(num_threads=node.get_parameter("max_queue").value + SPARE_THREADS)
    executor.add_node(node)
    try:  # a SIGINT at any point from here (loading the model included) is a clean stop
        if node.get_parameter("autostart").value and (
                node.trigger_configure() != TransitionCallbackReturn.SUCCESS
                or node.trigger_activate() != TransitionCallbackReturn.SUCCESS):
            print(f"world_model_node: cannot start: {node.last_error}", file=sys.stderr)
            return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A SIGINT just as spin starts shuts the context down under it: rclpy then fails to make its wait
        # set (RCLError, not ExternalShutdownException). That is a clean stop too; anything else is not.
        if rclpy.ok():
            raise
    finally:
        executor.shutdown()
        node._unload()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

