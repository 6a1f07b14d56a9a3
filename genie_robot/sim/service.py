"""The simulated robot as a service: reset a scene by name, step it one control period at a time.

What `sim_robot_node` serves, without ROS: the node is a thin layer that turns messages into these
calls. Each step executes the action it is given (RT-1's fields, clipped to the robot's limits and
reported) or, given none, holds the arm still for the period; after a terminate action the robot
holds still until the next reset. Time is simulated: step k of an episode is stamped
`start_stamp + k / CONTROL_HZ`, so a camera consumer sees the robot's 3 Hz however fast or slow the
steps are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genie_robot.sim.goals import GoalTask, make_task
from genie_robot.sim.robot import CONTROL_HZ, IMAGE_HEIGHT, IMAGE_WIDTH, ActionLimits, Command, RobotState, SimRobot
from genie_robot.sim.scene import SCENES

MAX_SEED = 2**63 - 1


@dataclass
class RobotAction:
    """One RT-1 action as a robot receives it."""

    world_vector: np.ndarray  # (3,) m
    rotation_delta: np.ndarray  # (3,) rad
    gripper_closedness_action: float
    terminate_episode: bool = False

    @staticmethod
    def zero() -> RobotAction:
        return RobotAction(np.zeros(3, np.float32), np.zeros(3, np.float32), 0.0)

    @staticmethod
    def from_vector(v, terminate: bool = False) -> RobotAction:
        """From the adapter's 7 numbers: world_vector (3), rotation_delta (3), gripper_closedness_action (1)."""
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        if v.shape != (7,):
            raise ValueError(f"a robot action vector has 7 numbers (world_vector 3, rotation_delta 3, gripper 1), "
                             f"got {v.shape[0]}")
        return RobotAction(v[:3].copy(), v[3:6].copy(), float(v[6]), terminate)


@dataclass
class StepResult:
    """One control period: what was asked, what ran, and the robot's state after it."""

    step: int  # control steps since the reset; `state` is the robot after this many
    stamp: float  # simulated time of `state`, s
    received: bool  # an action was given for this step (else the robot held still)
    requested: RobotAction
    executed: RobotAction
    clipped: list[str]
    state: RobotState
    terminated: bool  # the episode was ended by a terminate action (now or earlier)


class SimRobotService:
    """One simulated robot, reset to named scenes and stepped by RT-1 actions."""

    def __init__(self, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH, limits: ActionLimits | None = None):
        if not (16 <= height <= 2048 and 16 <= width <= 2048):
            raise ValueError(f"camera size must be 16..2048 pixels a side, got {height}x{width}")
        self.height, self.width = height, width
        self.limits = limits or ActionLimits()
        self.robot: SimRobot | None = None
        self.scene_name: tuple[int, int, str] | None = None
        self.steps = 0
        self.start_stamp = 0.0
        self.terminated = False

    def reset(self, seed: int, episode: int, scene: str = "default", start_stamp: float = 0.0) -> RobotState:
        """Load episode `episode` of the sim dataset seeded `seed` (scene family `scene`) in its start state."""
        scene = scene or "default"
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"unknown scene seed {seed}: seeds are integers in [0, 2**63)")
        if episode < 0:
            raise ValueError(f"episode index must be >= 0, got {episode}")
        if scene not in SCENES:
            raise ValueError(f"unknown scene family '{scene}'; families: {list(SCENES)}")
        robot, _ = SimRobot.start(seed, episode, scene, height=self.height, width=self.width, limits=self.limits)
        self.close()
        self.robot, self.scene_name = robot, (seed, episode, scene)
        self.steps, self.start_stamp, self.terminated = 0, start_stamp, False
        return robot.observe()

    @property
    def stamp(self) -> float:
        return self.start_stamp + self.steps / CONTROL_HZ

    def step(self, action: RobotAction | None) -> StepResult:
        """Run one control period with `action` (None: hold still)."""
        if self.robot is None:
            raise RuntimeError("no scene loaded: reset the robot to a scene first")
        received = action is not None
        requested = action if received else RobotAction.zero()
        self.terminated = self.terminated or requested.terminate_episode
        run = RobotAction.zero() if self.terminated else requested
        cmd = self.robot.limit(run.world_vector, run.rotation_delta, run.gripper_closedness_action)
        self.robot.execute(cmd)
        self.steps += 1
        return StepResult(self.steps, self.stamp, received, requested, _executed(cmd, self.terminated), cmd.clipped,
                          self.robot.observe(), self.terminated)

    def goal_task(self, seed: int, episode: int, goal_steps: int, scene: str = "default") -> GoalTask:
        """The scene's scripted goal at this service's camera size (genie_robot.sim.goals)."""
        return make_task(seed, episode, goal_steps, scene, self.height, self.width)

    def close(self) -> None:
        if self.robot is not None:
            self.robot.close()
            self.robot = None


def _executed(cmd: Command, terminated: bool) -> RobotAction:
    return RobotAction(cmd.world_vector.copy(), cmd.rotation_delta.copy(), cmd.gripper, terminated)


def _serve(conn, height: int, width: int, limits: ActionLimits | None) -> None:
    """The child's loop: calls on a SimRobotService, answered with their results or the exception raised."""
    service = SimRobotService(height, width, limits)
    try:
        while True:
            name, args = conn.recv()
            if name == "close":
                break
            try:
                if name == "terminated":
                    result = service.terminated
                else:
                    result = getattr(service, name)(*args)
                conn.send(("ok", result))
            except Exception as e:  # noqa: BLE001 - the caller re-raises it
                conn.send(("error", e))
    finally:
        service.close()
        conn.close()


class SimProcess:
    """A SimRobotService in a spawned child process, with the same reset / step / terminated / close.

    Mesa's EGL renderer segfaults in a process that has loaded TensorFlow (the sim writer runs its
    episodes in child processes for the same reason), and an evaluation or a benchmark process may have:
    here the robot renders in a process of its own, whatever the caller has loaded."""

    def __init__(self, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH, limits: ActionLimits | None = None):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, height, width, limits), daemon=True)
        self._proc.start()
        child.close()

    def _call(self, name: str, *args):
        if self._proc is None:
            raise RuntimeError("the sim process is closed")
        try:
            self._conn.send((name, args))
            status, value = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as e:
            raise RuntimeError(f"the sim process died (exit code {self._proc.exitcode})") from e
        if status == "error":
            raise value
        return value

    def reset(self, seed: int, episode: int, scene: str = "default", start_stamp: float = 0.0) -> RobotState:
        return self._call("reset", seed, episode, scene, start_stamp)

    def step(self, action: RobotAction | None) -> StepResult:
        return self._call("step", action)

    def goal_task(self, seed: int, episode: int, goal_steps: int, scene: str = "default") -> GoalTask:
        return self._call("goal_task", seed, episode, goal_steps, scene)

    @property
    def terminated(self) -> bool:
        return self._call("terminated")

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send(("close", ()))
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
        self._proc = None

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
