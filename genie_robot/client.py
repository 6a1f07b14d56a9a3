"""`WorldModelClient`: world_model_node from a planner that is not a ROS node itself.

A planner written as a plain Python program (a CEM loop, a notebook, an RL agent) should not have to
manage an rclpy context, an executor and futures to ask the node a question. This client owns all
three (its own rclpy context, so it neither needs nor disturbs the caller's `rclpy.init`), spins
them on a background thread, and turns each call into a blocking method with a timeout:

    from genie_robot.client import WorldModelClient
    with WorldModelClient() as wm:                           # /world_model_node, ROS_DOMAIN_ID from the env
        out = wm.rollout([0, 3, 3, 5], horizon=4)             # context: the node's camera
        out.frames.shape                                     # (1, 4, 64, 80, 3) uint8 RGB
        plan = wm.plan(goal_rgb, horizon=4, num_samples=16)  # goal: HxWx3 uint8

Safe resend: Rollout and InferActions have no side effects, so a request whose answer does not
come within `timeout` is sent again (`retries` times): Fast DDS drops a service's answer when the
node has not yet discovered a freshly started client (README, "Clients"). A "busy, retry after N
ms" refusal is retried after the node's hint. A Plan goal is never resent (it runs a search on the
node); its timeout cancels it. A refusal the node explains (a bad request, an inactive node)
raises `WorldModelError` with the node's message.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

BUSY = re.compile(r"^busy: .*retry after (\d+) ms")


class WorldModelError(RuntimeError):
    """The node answered success=false; the message says why."""


@dataclass
class Rollout:
    frames: np.ndarray  # uint8 [num_candidates, horizon, h, w, 3] RGB
    stamps: np.ndarray  # float64 [num_candidates, horizon] seconds: each predicted frame's time
    frame_id: str
    context_stamps: np.ndarray  # float64 [T] seconds: the context frames used
    inference_ms: float


@dataclass
class Plan:
    latent_actions: np.ndarray  # int64 [horizon]
    frames: np.ndarray  # uint8 [horizon, h, w, 3] RGB
    cost: float
    robot_actions: np.ndarray | None  # float32 [horizon, 7] when the model has an adapter
    context_stamps: np.ndarray


def _seconds(t) -> float:
    return t.sec + t.nanosec * 1e-9


def _image(frame: np.ndarray):
    """An rgb8 sensor_msgs/Image of a uint8 HxWx3 RGB frame."""
    from sensor_msgs.msg import Image

    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be uint8 HxWx3 RGB arrays, got {frame.dtype} {list(frame.shape)}")
    h, w = frame.shape[:2]
    return Image(height=h, width=w, encoding="rgb8", step=w * 3, data=np.ascontiguousarray(frame).tobytes())


def _array(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


class WorldModelClient:
    def __init__(self, node: str = "/world_model_node", timeout: float = 30.0, retries: int = 2,
                 connect_timeout: float = 30.0):
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor

        from genie_robot_interfaces.action import Plan as PlanAction
        from genie_robot_interfaces.srv import InferActions
        from genie_robot_interfaces.srv import Rollout as RolloutSrv

        self.node_name, self.timeout, self.retries = node.rstrip("/"), timeout, retries
        self._types = {"rollout": RolloutSrv, "infer_actions": InferActions, "plan": PlanAction}
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        try:
            self._node = rclpy.create_node(f"world_model_client_{id(self):x}", context=self._context)
            self._rollout = self._node.create_client(RolloutSrv, f"{self.node_name}/rollout")
            self._infer = self._node.create_client(InferActions, f"{self.node_name}/infer_actions")
            self._plan = ActionClient(self._node, PlanAction, f"{self.node_name}/plan")
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self._node)
            self._spinner = threading.Thread(target=self._spin, name="world_model_client", daemon=True)
            self._spinner.start()
            for name, ready in (("rollout", self._rollout.wait_for_service),
                                ("infer_actions", self._infer.wait_for_service), ("plan", self._plan.wait_for_server)):
                if not ready(timeout_sec=connect_timeout):
                    raise TimeoutError(f"no {self.node_name}/{name} within {connect_timeout:.0f} s: is "
                                       "world_model_node running, in this ROS_DOMAIN_ID, under that name?")
        except BaseException:
            self.close()
            raise

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    # --- calls ----------------------------------------------------------------------------
    def _wait(self, future, timeout: float) -> bool:
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        return done.wait(timeout)

    def _call(self, client, request, what: str, timeout: float | None):
        """Sends `request`, resending after a lost answer or a busy refusal; the answer, or an error."""
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(self.retries + 1):
            future = client.call_async(request)
            if not self._wait(future, timeout):
                client.remove_pending_request(future)
                continue
            res = future.result()
            if res.success:
                return res
            busy = BUSY.match(res.message)
            if busy and attempt < self.retries:
                time.sleep(int(busy.group(1)) / 1000)
                continue
            raise WorldModelError(f"{what}: {res.message}")
        raise TimeoutError(f"{what}: no answer from {self.node_name} in {self.retries + 1} tries of {timeout:.0f} s")

    def rollout(self, latent_actions: Sequence[int] | np.ndarray, context: Sequence[np.ndarray] | None = None,
                horizon: int | None = None, temperature: float = 0.0, maskgit_steps: int = 0, seed: int = 0,
                timeout: float | None = None) -> Rollout:
        """Predicted frames for latent action sequences [num_candidates, horizon] (a flat list: one candidate),
        from `context` frames (HxWx3 uint8 RGB, oldest first; None: the node's camera)."""
        acts = np.asarray(latent_actions, dtype=np.int64)
        acts = acts.reshape(1, -1) if acts.ndim == 1 else acts
        if acts.ndim != 2 or (horizon is not None and acts.shape[1] != horizon):
            raise ValueError(f"latent_actions must be [num_candidates, horizon], got shape {list(acts.shape)}")
        b, h = acts.shape
        req = self._types["rollout"].Request(
            context=[_image(f) for f in (context or [])], latent_actions=acts.reshape(-1).astype(np.uint8).tolist(),
            num_candidates=b, horizon=h, temperature=float(temperature), maskgit_steps=int(maskgit_steps),
            seed=int(seed))
        res = self._call(self._rollout, req, "rollout", timeout)
        frames = np.stack([_array(m) for m in res.frames])
        return Rollout(frames.reshape(b, h, *frames.shape[1:]),
                       np.array([_seconds(m.header.stamp) for m in res.frames]).reshape(b, h),
                       res.frames[0].header.frame_id, np.array([_seconds(t) for t in res.context_stamps]),
                       float(res.inference_ms))

    def infer_actions(self, frames: Sequence[np.ndarray], timeout: float | None = None) -> np.ndarray:
        """The latent action between each pair of consecutive frames (HxWx3 uint8 RGB): int64 [T - 1]."""
        req = self._types["infer_actions"].Request(frames=[_image(f) for f in frames])
        res = self._call(self._infer, req, "infer_actions", timeout)
        return np.asarray(res.latent_actions, dtype=np.int64)

    def plan(self, goal: np.ndarray, context: Sequence[np.ndarray] | None = None, horizon: int = 4,
             num_samples: int = 16, iterations: int = 3, seed: int = 0,
             feedback: Callable[[int, float], None] | None = None, timeout: float | None = None) -> Plan:
        """The latent actions whose predicted last frame comes closest to `goal` (CEM on the node). Not
        resent; a plan without an answer within `timeout` is cancelled and raises TimeoutError."""
        action = self._types["plan"]
        timeout = self.timeout if timeout is None else timeout
        goal_msg = action.Goal(goal=_image(goal), context=[_image(f) for f in (context or [])], horizon=horizon,
                               num_samples=num_samples, iterations=iterations, seed=int(seed))
        on_feedback = None if feedback is None else \
            (lambda m: feedback(int(m.feedback.iteration), float(m.feedback.best_cost)))
        sent = self._plan.send_goal_async(goal_msg, feedback_callback=on_feedback)
        start = time.monotonic()
        if not self._wait(sent, timeout):
            raise TimeoutError(f"plan: {self.node_name} did not accept the goal within {timeout:.0f} s")
        handle = sent.result()
        if not handle.accepted:
            raise WorldModelError("plan: the goal was rejected")
        result = handle.get_result_async()
        if not self._wait(result, max(0.0, timeout - (time.monotonic() - start))):
            cancel = handle.cancel_goal_async()
            self._wait(cancel, 5.0)
            raise TimeoutError(f"plan: no result within {timeout:.0f} s (the goal was cancelled)")
        res = result.result().result
        if not res.success:
            raise WorldModelError(f"plan: {res.message}")
        robot = np.asarray(res.robot_actions, dtype=np.float32).reshape(len(res.latent_actions), -1) \
            if len(res.robot_actions) else None
        return Plan(np.asarray(res.latent_actions, dtype=np.int64), np.stack([_array(m) for m in res.predicted_frames]),
                    float(res.cost), robot, np.array([_seconds(t) for t in res.context_stamps]))

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stops the spinner and frees the client's rclpy context (idempotent)."""
        import rclpy

        if self._context.ok():
            rclpy.try_shutdown(context=self._context)
        spinner = getattr(self, "_spinner", None)
        if spinner is not None and spinner is not threading.current_thread():
            spinner.join(timeout=5)

    def __enter__(self) -> WorldModelClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
