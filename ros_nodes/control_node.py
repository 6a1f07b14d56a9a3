"""`control_node`: closed-loop control of a robot toward a goal image through world_model_node's plans.

A thin layer over genie_robot.control.loop (the MPC loop, no ROS there). The `~/reach` action
(genie_robot_interfaces/action/Reach) takes a goal image; at every control step the node sends
world_model_node's `~/plan` (remappable: `plan`) the goal and the robot's newest camera frames since
the goal began (at the model's 3 Hz, by their stamps), publishes the plan's first robot action (the
model's adapter) on `action` (genie_robot_interfaces/msg/RobotAction), waits for the robot to report
the step on `executed` (ExecutedAction: sim_robot_node's `~/executed`) and for the camera frame after
it on `image`, and plans again, until the goal is reached (`goal_mse`), the step budget is spent, or
the goal is cancelled. Feedback per step: the plan, its cost, the action sent, what the robot clipped,
the camera's distance to the goal.

A plan that fails or takes longer than `plan_timeout_s` (it is then cancelled), a robot that does not
report a step within `step_timeout_s`, or a cancel: the node sends a terminate action (the robot holds
still) and ends the goal with the reason; an action planned before that is never sent. A goal image
with an unsupported encoding, inconsistent fields, or a size other than the camera's is rejected with
the reason, as is a goal while another runs or before any camera frame came. With `gif_dir` set, each
episode is written as a GIF there (camera | goal | imagined, a row per step).

    ros2 run genie_robot control_node --ros-args -r plan:=/world_model_node/plan -r executed:=/sim_robot_node/executed
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from genie_robot.control.loop import (
    Decision,
    Observation,
    PolicyError,
    check_action,
    frame_mse,
    run_episode,
    save_episode_gif,
)
from genie_robot.runtime.camera import FrameError, to_rgb
from genie_robot_interfaces.action import Plan, Reach
from genie_robot_interfaces.msg import ExecutedAction, RobotAction
from genie_robot_ros.msgs import image_msg, to_seconds
from genie_robot_ros.spin import run_node

PARAMETERS = {
    "max_steps": (8, "control steps of a goal that sends 0"),
    "goal_mse": (0.0, "stop once the camera is this close to the goal (pixel MSE); 0: run max_steps"),
    "horizon": (2, "plan horizon (latent actions) per control step"),
    "num_samples": (8, "CEM candidates per iteration"),
    "iterations": (2, "CEM iterations"),
    "context_frames": (4, "newest camera frames sent as the plan's context"),
    "frame_rate": (3.0, "Hz: the model's rate; camera frames closer together are skipped for the context"),
    "resolution": ([64, 80], "height, width the goal distance is measured at (the model's)"),
    "plan_timeout_s": (120.0, "a plan not answered by then is cancelled and the episode stops"),
    "step_timeout_s": (10.0, "the robot must report an executed step and its camera frame within this"),
    "seed": (0, "plan seed of the first step (step k uses seed + k)"),
    "gif_dir": ("", "write each episode's GIF here ('' : none)"),
}


def wait_future(future, timeout: float):
    """The future's result, or None when it is not done within `timeout` s (waits on an event, not the executor)."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    return future.result() if future.done() or done.wait(timeout) else None


class RosRobot:
    """The robot behind `action` / `executed` / `image` / `ee_pose`, as a control loop's Robot."""

    def __init__(self, node: Node, group, frame_rate: float, step_timeout: float):
        self.node, self.period, self.step_timeout = node, 1.0 / frame_rate, step_timeout
        self.cond = threading.Condition()
        self.images: deque[tuple[float, np.ndarray]] = deque(maxlen=256)  # (stamp, rgb) newest last
        self.executed: deque[tuple[int, ExecutedAction]] = deque(maxlen=64)  # (arrival number, message)
        self.arrivals = 0  # steps restart at 1 on every reset: new reports are told apart by arrival
        self.poses: deque[tuple[float, np.ndarray]] = deque(maxlen=64)
        self.episode_start = 0.0
        self.pub = node.create_publisher(RobotAction, "action", 10)
        node.create_subscription(Image, "image", self._on_image, 10, callback_group=group)
        node.create_subscription(ExecutedAction, "executed", self._on_executed, 10, callback_group=group)
        node.create_subscription(PoseStamped, "ee_pose", self._on_pose, 10, callback_group=group)

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, "camera image")
        except FrameError as e:
            self.node.get_logger().error(f"camera frame skipped: {e}")
            return
        with self.cond:
            self.images.append((to_seconds(msg.header.stamp), rgb))
            self.cond.notify_all()

    def _on_executed(self, msg: ExecutedAction) -> None:
        with self.cond:
            self.arrivals += 1
            self.executed.append((self.arrivals, msg))
            self.cond.notify_all()

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self.cond:
            self.poses.append((to_seconds(msg.header.stamp), np.array([p.x, p.y, p.z])))

    def latest(self) -> tuple[float, np.ndarray] | None:
        with self.cond:
            return self.images[-1] if self.images else None

    def begin(self) -> Observation:
        """The episode starts at the newest camera frame."""
        stamp, image = self.latest()
        self.episode_start = stamp
        return Observation(image, self._pose_at(stamp))

    def context(self, n: int) -> list[np.ndarray]:
        """The newest `n` camera frames of this episode, at most one per model period."""
        with self.cond:
            frames = [(s, f) for s, f in self.images if s >= self.episode_start]
        kept: list[tuple[float, np.ndarray]] = []
        for s, f in reversed(frames):  # newest first: keep a frame a full period older than the last kept
            if not kept or kept[-1][0] - s >= self.period * 0.999:
                kept.append((s, f))
            if len(kept) == n:
                break
        return [f for _, f in reversed(kept)]

    def _pose_at(self, stamp: float) -> np.ndarray | None:
        with self.cond:
            match = [p for s, p in self.poses if abs(s - stamp) < 1e-6]
        return match[-1] if match else None

    def act(self, action: np.ndarray) -> Observation:
        with self.cond:
            seen = self.arrivals
        wv, rd, g = action[:3], action[3:6], action[6]
        self.pub.publish(RobotAction(world_vector=wv.tolist(), rotation_delta=rd.tolist(),
                                     gripper_closedness_action=float(g)))
        deadline = time.monotonic() + self.step_timeout
        with self.cond:
            ok = self.cond.wait_for(lambda: any(e.received and n > seen for n, e in self.executed),
                                    timeout=max(0.0, deadline - time.monotonic()))
            if not ok:
                raise RuntimeError(f"the robot reported no executed step within {self.step_timeout} s")
            done = next(e for n, e in self.executed if e.received and n > seen)
            stamp = to_seconds(done.header.stamp)
            ok = self.cond.wait_for(lambda: any(abs(s - stamp) < 1e-6 for s, _ in self.images),
                                    timeout=max(0.0, deadline - time.monotonic()))
            if not ok:
                raise RuntimeError(f"no camera frame stamped at the executed step {done.step} within "
                                  f"{self.step_timeout} s")
            image = next(f for s, f in self.images if abs(s - stamp) < 1e-6)
        return Observation(image, self._pose_at(stamp), list(done.clipped))

    def stop(self) -> None:
        self.pub.publish(RobotAction(terminate_episode=True))


class RosMPC:
    """World-model MPC through world_model_node's `~/plan` action."""

    name = "mpc"

    def __init__(self, node: Node, client: ActionClient, params: dict, cancelled):
        self.node, self.client, self.p, self.cancelled = node, client, params, cancelled

    def decide(self, context, goal, step) -> Decision:
        p = self.p
        request = Plan.Goal(goal=image_msg(goal), context=[image_msg(f) for f in context], horizon=p["horizon"],
                            num_samples=p["num_samples"], iterations=p["iterations"], seed=p["seed"] + step)
        if not self.client.wait_for_server(timeout_sec=5.0):
            raise PolicyError("world_model_node's plan action is not available (is world_model_node running, and "
                              "`plan` remapped to its ~/plan?)")
        t0 = time.monotonic()
        timeout = p["plan_timeout_s"]
        sent = self.client.send_goal_async(request)
        handle = wait_future(sent, timeout)
        if handle is None:  # cancelled as soon as it is accepted: a late plan must not keep the model busy
            sent.add_done_callback(lambda f: f.result().accepted and f.result().cancel_goal_async())
            raise PolicyError(f"plan timed out after {timeout} s (not yet accepted; cancelled)")
        if not handle.accepted:
            raise PolicyError("world_model_node did not accept the plan")
        result_future = handle.get_result_async()
        while True:
            left = timeout - (time.monotonic() - t0)
            wrapped = wait_future(result_future, min(0.2, max(left, 0.0)))
            if wrapped is not None:
                break
            if left <= 0 or self.cancelled():
                handle.cancel_goal_async()
                if self.cancelled():
                    raise PolicyError("cancelled while planning")
                raise PolicyError(f"plan timed out after {timeout} s (cancelled)")
        r = wrapped.result
        if not r.success:
            raise PolicyError(f"plan failed: {r.message}")
        if len(r.robot_actions) < 7:
            raise PolicyError("world_model_node's plan has no robot actions: its model has no adapter")
        imagined = np.stack([np.frombuffer(bytes(f.data), np.uint8).reshape(f.height, f.width, 3).transpose(2, 0, 1)
                             for f in r.predicted_frames]) if r.predicted_frames else None
        return Decision(check_action(np.asarray(r.robot_actions[:7], np.float32)),
                        np.asarray(r.latent_actions, np.int64), imagined, float(r.cost),
                        (time.monotonic() - t0) * 1000)


class ControlNode(Node):
    def __init__(self):
        super().__init__("control_node")
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.group = ReentrantCallbackGroup()
        p = self.params()
        self.robot = RosRobot(self, self.group, p["frame_rate"], p["step_timeout_s"])
        self.plan_client = ActionClient(self, Plan, "plan", callback_group=self.group)
        self.busy = threading.Lock()
        self.server = ActionServer(self, Reach, "~/reach", execute_callback=self._execute,
                                   goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                   callback_group=self.group)

    def params(self) -> dict:
        return {name: self.get_parameter(name).value for name in PARAMETERS}

    def _goal_image(self, msg: Image) -> np.ndarray:
        """The goal as RGB, or FrameError: unreadable, or not the camera's size."""
        goal = to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, "goal image")
        latest = self.robot.latest()
        if latest is None:
            raise FrameError("no camera frame from the robot yet: a goal is compared with the camera's view")
        if goal.shape != latest[1].shape:
            raise FrameError(f"goal image is {goal.shape[0]}x{goal.shape[1]} but the camera's frames are "
                             f"{latest[1].shape[0]}x{latest[1].shape[1]}: a goal is a view of this camera")
        return goal

    def _on_goal(self, goal: Reach.Goal) -> GoalResponse:
        try:
            self._goal_image(goal.goal)
        except FrameError as e:
            self.get_logger().error(f"reach goal rejected: {e}")
            return GoalResponse.REJECT
        if self.busy.locked():
            self.get_logger().error("reach goal rejected: another goal is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute(self, handle) -> Reach.Result:
        result = Reach.Result()
        if not self.busy.acquire(blocking=False):
            handle.abort()
            result.reason, result.message = "failed", "another goal is running"
            return result
        try:
            return self._run(handle, result)
        finally:
            self.busy.release()

    def _run(self, handle, result: Reach.Result) -> Reach.Result:
        p = self.params()
        try:
            goal = self._goal_image(handle.request.goal)
        except FrameError as e:
            handle.abort()
            result.reason, result.message = "failed", str(e)
            return result
        max_steps = handle.request.max_steps or p["max_steps"]
        goal_mse = handle.request.goal_mse or p["goal_mse"]
        resolution = tuple(p["resolution"])
        policy = RosMPC(self, self.plan_client, p, lambda: handle.is_cancel_requested)
        start = self.robot.begin()

        def feedback(step: int, d: Decision, obs: Observation) -> None:
            handle.publish_feedback(Reach.Feedback(
                step=step, plan=[int(a) for a in d.latent_actions], plan_cost=float(d.cost),
                robot_action=d.action.tolist(), clipped=obs.clipped, goal_mse=frame_mse(obs.image, goal, resolution)))

        ep = run_episode(self.robot, policy, start, goal, max_steps, resolution, p["context_frames"], goal_mse,
                         cancelled=lambda: handle.is_cancel_requested, progress=feedback,
                         context=lambda: self.robot.context(p["context_frames"]))
        if p["gif_dir"]:
            path = Path(p["gif_dir"]) / f"reach_{time.strftime('%Y%m%d_%H%M%S')}.gif"
            result.gif = str(save_episode_gif(ep, resolution, path))
        result.reason, result.message, result.steps = ep.reason, ep.message, ep.steps
        result.goal_mse = [float(m) for m in ep.goal_mse]
        result.latent_actions = [int(d.latent_actions[0]) for d in ep.decisions]
        result.success = ep.reason in ("goal reached", "budget")
        if ep.reason == "cancelled":
            handle.canceled()
        elif result.success:
            handle.succeed()
        else:
            handle.abort()
        self.get_logger().info(f"reach: {ep.reason} after {ep.steps} steps {ep.message}".rstrip())
        return result


def main(argv: list[str] | None = None) -> int:
    # Threads for the goal being run (it waits on plans and on the robot), the camera and robot reports it
    # waits for, a second goal to reject, and cancels.
    return run_node("control_node", ControlNode, lambda: MultiThreadedExecutor(num_threads=6), argv)


if __name__ == "__main__":
    sys.exit(main())
