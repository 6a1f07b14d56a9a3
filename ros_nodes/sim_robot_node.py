"""`sim_robot_node`: the simulated Google Robot of `genie-robot sim` as a ROS 2 robot.

A thin layer over genie_robot.sim.service.SimRobotService (no ROS there). It serves one scene at a
time: `~/reset` (genie_robot_interfaces/srv/ResetScene) loads episode `episode` of the dataset
`genie-robot sim sim.seed=<seed>` would write, in its start state, and answers with the start
camera frame and pose. Every control step it executes the newest action received on `action`
(genie_robot_interfaces/msg/RobotAction: RT-1's world_vector, rotation_delta,
gripper_closedness_action, terminate_episode) through the data generator's IK and controller, or holds
the arm still when none came, and publishes:

- `image` (sensor_msgs/Image, rgb8, the head camera; frame_id `camera_frame_id`),
- `ee_pose` (geometry_msgs/PoseStamped, the gripper site in the robot base frame `base_frame_id`),
- `joint_states` (sensor_msgs/JointState: the arm's seven joints and the two fingers),
- `~/executed` (genie_robot_interfaces/msg/ExecutedAction: the step, what was requested, what ran
  after the action limits, and what was clipped).

Time is the simulation's: the messages of step k after a reset are stamped at the reset's wall
time plus k / 3 Hz. With `rate_hz` > 0 a timer steps the robot at that wall-clock rate (3: real
time); with `rate_hz` 0 it steps once per action received (synchronous mode, as simulators offer
for benchmarks: a slow planner then costs no simulated time). Actions with a non-finite value or
the wrong length are refused (logged, counted, the robot holds); actions beyond `max_world_vector`
/ `max_rotation_delta` / `max_gripper` per step are clipped and reported. A reset with an unknown
scene gets success=false with the reason, and the node keeps serving the scene it had.

    ros2 run genie_robot sim_robot_node --ros-args -p seed:=1000 -p rate_hz:=3.0
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header

from genie_robot.sim.ik import ARM_JOINTS, FINGER_JOINTS
from genie_robot.sim.robot import ActionLimits, RobotState, quat
from genie_robot.sim.service import RobotAction as Action
from genie_robot.sim.service import SimRobotService, StepResult
from genie_robot_interfaces.msg import ExecutedAction, RobotAction
from genie_robot_interfaces.srv import ResetScene
from genie_robot_ros.msgs import header, image_msg
from genie_robot_ros.spin import run_node

PARAMETERS = {
    "seed": (1000, "sim dataset seed of the scene loaded at start (make demo's held-out seed)"),
    "episode": (0, "episode index of the scene loaded at start"),
    "scene": ("default", "scene family: default or workshop"),
    "rate_hz": (3.0, "control steps per wall-clock second; 0: one step per action received (synchronous)"),
    "height": (256, "camera image height (RT-1: 256)"),
    "width": (320, "camera image width (RT-1: 320)"),
    "max_world_vector": (0.05, "m per axis per step; larger commands are clipped and reported"),
    "max_rotation_delta": (0.12, "rad per axis per step; larger commands are clipped and reported"),
    "max_gripper": (1.0, "relative gripper command per step; larger ones are clipped and reported"),
    "camera_frame_id": ("head_camera_optical", "frame_id of the camera images"),
    "base_frame_id": ("base_link", "frame_id of the end-effector pose"),
}


def pose_msg(state: RobotState, header: Header) -> PoseStamped:
    w, x, y, z = quat(state.ee_rot)
    p = state.ee_pos
    return PoseStamped(header=header, pose=Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                                               orientation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))))


def action_msg(action: Action, header: Header) -> RobotAction:
    return RobotAction(header=header, world_vector=action.world_vector.astype(np.float32).tolist(),
                       rotation_delta=action.rotation_delta.astype(np.float32).tolist(),
                       gripper_closedness_action=float(action.gripper_closedness_action),
                       terminate_episode=bool(action.terminate_episode))


def from_msg(msg: RobotAction) -> Action:
    """The message as an action, or ValueError saying what is wrong with it."""
    wv = np.asarray(msg.world_vector, dtype=np.float32)
    rd = np.asarray(msg.rotation_delta, dtype=np.float32)
    g = float(msg.gripper_closedness_action)
    if not (np.isfinite(wv).all() and np.isfinite(rd).all() and np.isfinite(g)):
        raise ValueError(f"non-finite value in action: world_vector {wv.tolist()}, rotation_delta {rd.tolist()}, "
                         f"gripper_closedness_action {g}")
    return Action(wv, rd, g, bool(msg.terminate_episode))


class SimRobotNode(Node):
    def __init__(self):
        super().__init__("sim_robot_node")
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        if p["rate_hz"] < 0:
            raise ValueError(f"rate_hz must be >= 0 (0: one step per action), got {p['rate_hz']}")
        limits = ActionLimits(p["max_world_vector"], p["max_rotation_delta"], p["max_gripper"])
        self.service = SimRobotService(p["height"], p["width"], limits)
        self.camera_frame_id, self.base_frame_id = p["camera_frame_id"], p["base_frame_id"]
        self.pending: Action | None = None
        self.refused = 0
        self.synchronous = p["rate_hz"] == 0
        self.image_pub = self.create_publisher(Image, "image", 10)
        self.pose_pub = self.create_publisher(PoseStamped, "ee_pose", 10)
        self.joint_pub = self.create_publisher(JointState, "joint_states", 10)
        self.executed_pub = self.create_publisher(ExecutedAction, "~/executed", 10)
        group = MutuallyExclusiveCallbackGroup()  # steps, actions and resets never interleave (and share a thread)
        self.create_subscription(RobotAction, "action", self._on_action, 10, callback_group=group)
        self.create_service(ResetScene, "~/reset", self._on_reset, callback_group=group)
        state = self._reset(p["seed"], p["episode"], p["scene"])
        self._publish_state(state)
        if not self.synchronous:
            self.create_timer(1.0 / p["rate_hz"], self._on_timer, callback_group=group)
        self.get_logger().info(f"sim robot: scene seed {p['seed']} episode {p['episode']} ({p['scene']}), "
                               + ("synchronous (a step per action)" if self.synchronous else f"{p['rate_hz']} Hz"))

    def _reset(self, seed: int, episode: int, scene: str) -> RobotState:
        now = self.get_clock().now().nanoseconds * 1e-9
        state = self.service.reset(seed, episode, scene, start_stamp=now)
        self.pending = None
        return state

    def _header(self, frame_id: str) -> Header:
        return header(self.service.stamp, frame_id)

    def _publish_state(self, state: RobotState) -> None:
        self.image_pub.publish(image_msg(state.image, self._header(self.camera_frame_id)))
        self.pose_pub.publish(pose_msg(state, self._header(self.base_frame_id)))
        robot = self.service.robot
        names = [*ARM_JOINTS, *FINGER_JOINTS]
        position = [float(robot.data.qpos[robot.model.joint(j).qposadr[0]]) for j in names]
        self.joint_pub.publish(JointState(header=self._header(self.base_frame_id), name=names, position=position))

    def _on_action(self, msg: RobotAction) -> None:
        try:
            action = from_msg(msg)
        except ValueError as e:
            self.refused += 1
            self.get_logger().error(f"action refused ({self.refused} so far), the robot holds: {e}")
            return
        self.pending = action
        if self.synchronous:
            self._step()

    def _on_timer(self) -> None:
        self._step()

    def _step(self) -> None:
        action, self.pending = self.pending, None
        result = self.service.step(action)
        if result.clipped:
            self.get_logger().warning(f"step {result.step}: action clipped: {'; '.join(result.clipped)}")
        self._publish_state(result.state)
        self.executed_pub.publish(self._executed_msg(result))

    def _executed_msg(self, r: StepResult) -> ExecutedAction:
        header = self._header(self.base_frame_id)
        return ExecutedAction(header=header, step=r.step, received=r.received,
                              requested=action_msg(r.requested, header), executed=action_msg(r.executed, header),
                              clipped=r.clipped)

    def _on_reset(self, request: ResetScene.Request, response: ResetScene.Response) -> ResetScene.Response:
        try:
            state = self._reset(int(request.seed), int(request.episode), request.scene)
        except ValueError as e:
            response.success, response.message = False, f"reset refused, still serving the previous scene: {e}"
            return response
        self._publish_state(state)
        seed, episode, scene = self.service.scene_name
        response.success, response.message = True, f"scene seed {seed} episode {episode} ({scene}) loaded"
        response.image = image_msg(state.image, self._header(self.camera_frame_id))
        response.ee_pose = pose_msg(state, self._header(self.base_frame_id))
        response.gripper_closed = float(state.gripper_closed)
        return response


def main(argv: list[str] | None = None) -> int:
    # One thread runs every callback: MuJoCo's EGL renderer is current in the thread that made it, and a
    # render from an executor's other thread fails with EGL_BAD_ACCESS.
    return run_node("sim_robot_node", SimRobotNode, SingleThreadedExecutor, argv,
                    cleanup=lambda node: node.service.close())


if __name__ == "__main__":
    sys.exit(main())
