"""The simulated Google Robot as a robot: one scene, stepped by RT-1 actions at 3 Hz.

The data generator and the closed loop drive the same robot: `simulate_episode` feeds it the
scripted controller's commands, `sim_robot_node` the commands a planner sends over ROS 2. Both go
through `SimRobot.limit` (the per-step action limits, the workspace box and the wrist's tilt
limit) and `SimRobot.execute` (the Cartesian target moved, IK, joint targets tracked smoothly over
the control period), so what the world model learned from is what the loop executes.

A scene is named by (seed, index, scene family), as the datasets name their episodes: `start`
draws the scene and the arm's start pose from the generator `simulate_episode` uses, so episode
`index` of `genie-robot sim sim.seed=<seed>` and `SimRobot.start(seed, index)` begin in the same
state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from genie_robot.data.schema import IMAGE_SHAPE
from genie_robot.sim.controller import MAX_ROT_STEP, MAX_STEP
from genie_robot.sim.ik import ELBOW_LOW_POSTURE, FINGER_JOINTS, ArmIK
from genie_robot.sim.scene import SceneParams, build_model, sample_scene

CONTROL_HZ = 3.0
IMAGE_HEIGHT, IMAGE_WIDTH = IMAGE_SHAPE[:2]
FINGER_OPEN, FINGER_CLOSED = 0.01, 1.3
# Nominal gripper orientation: fingers pointing forward and down at the table.
_Z = np.array([0.35, 0.2, -0.9]) / np.linalg.norm([0.35, 0.2, -0.9])
_X = np.cross([0.0, 1.0, 0.0], _Z) / np.linalg.norm(np.cross([0.0, 1.0, 0.0], _Z))
HOME_ROT = np.stack([_X, np.cross(_Z, _X), _Z], axis=1)
MAX_TILT = 0.5  # rad the commanded orientation may drift from HOME_ROT
SETTLE_STEPS = 100  # physics steps for the objects to come to rest before the first frame


def rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    """Rotation matrix of roll, pitch, yaw (RT-1's rotation_delta convention)."""
    cr, sr = np.cos(rpy[0]), np.sin(rpy[0])
    cp, sp = np.cos(rpy[1]), np.sin(rpy[1])
    cy, sy = np.cos(rpy[2]), np.sin(rpy[2])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def rot_to_rpy(r: np.ndarray) -> np.ndarray:
    return np.array([
        np.arctan2(r[2, 1], r[2, 2]),
        np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)),
        np.arctan2(r[1, 0], r[0, 0]),
    ])


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def quat(rot: np.ndarray) -> np.ndarray:
    """MuJoCo's (w, x, y, z) quaternion of a rotation matrix."""
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, rot.flatten())
    return q


def workspace_bounds(table_z: float) -> np.ndarray:
    """[2, 3] lower and upper corner of the box the end-effector target is kept in (base frame, m)."""
    return np.array([[0.45, -0.45, table_z + 0.03], [0.95, 0.25, table_z + 0.35]])


@dataclass(frozen=True)
class ActionLimits:
    """Largest command the robot executes in one 3 Hz step; larger ones are clipped (and reported)."""

    world_vector: float = MAX_STEP  # m per axis
    rotation_delta: float = MAX_ROT_STEP  # rad per axis
    gripper: float = 1.0  # relative gripper command, per step

    def __post_init__(self) -> None:
        for name in ("world_vector", "rotation_delta", "gripper"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"action limit {name} must be a positive number, got {value}")


@dataclass
class Command:
    """One RT-1 action as the robot executes it, and what was clipped to get there."""

    world_vector: np.ndarray  # (3,) end-effector displacement, base frame, m
    rotation_delta: np.ndarray  # (3,) roll, pitch, yaw displacement, rad
    gripper: float  # relative: +1 close, -1 open, 0 hold
    target_pos: np.ndarray  # (3,) the Cartesian target it leads to (exact; world_vector is its float32 step)
    target_rot: np.ndarray  # (3, 3)
    clipped: list[str] = field(default_factory=list)  # e.g. "world_vector: step limit 0.05"


@dataclass
class RobotState:
    """What the robot senses at one control step."""

    image: np.ndarray  # uint8 [H, W, 3], the head camera
    ee_pos: np.ndarray  # (3,) gripper site, base frame, m
    ee_rot: np.ndarray  # (3, 3)
    gripper_closed: float  # 0 open .. 1 closed, measured from the fingers
    gripper_commanded: float  # 0 .. 1, the integral of the relative gripper commands
    target_pos: np.ndarray  # (3,) the Cartesian target the arm tracks
    target_rot: np.ndarray  # (3, 3)


class SimRobot:
    """One scene's MuJoCo model and state, with the head camera and the arm's Cartesian controller."""

    def __init__(self, params: SceneParams, start_pos: np.ndarray, height: int = IMAGE_HEIGHT,
                 width: int = IMAGE_WIDTH, limits: ActionLimits | None = None):
        self.params = params
        self.limits = limits or ActionLimits()
        self.model = build_model(params)
        self.data = mujoco.MjData(self.model)
        self.ik = ArmIK(self.model)
        model, data = self.model, self.data
        finger_ids = [model.joint(j).id for j in FINGER_JOINTS]
        self._finger_adr = [model.joint(j).qposadr[0] for j in FINGER_JOINTS]
        self._finger_act = [model.actuator(i).id for i in range(model.nu) if model.actuator(i).trnid[0] in finger_ids]
        self._arm_act = [i for i in range(model.nu) if i not in self._finger_act]
        self.bounds = workspace_bounds(params.table_height)
        self.target_pos = np.asarray(start_pos, dtype=np.float64).copy()
        self.target_rot = HOME_ROT.copy()
        self.closed = 0.0  # episodes start with the gripper open
        q, _ = self.ik.solve(ELBOW_LOW_POSTURE, self.target_pos, self.target_rot, iters=300)
        data.qpos[self.ik.qadr] = q
        data.qpos[self._finger_adr] = FINGER_OPEN
        data.ctrl[self._arm_act] = q
        data.ctrl[self._finger_act] = FINGER_OPEN
        mujoco.mj_forward(model, data)
        for _ in range(SETTLE_STEPS):
            mujoco.mj_step(model, data)
        self.substeps = int(round(1.0 / CONTROL_HZ / model.opt.timestep))
        self.renderer = mujoco.Renderer(model, height, width)
        self.site = model.site("gripper").id
        self.start_quat = quat(data.site_xmat[self.site].reshape(3, 3))
        self.object_start = [self.object_pos(i) for i in range(len(params.objects))]

    @staticmethod
    def start(seed: int, index: int, scene: str = "default", **kwargs) -> tuple[SimRobot, np.random.Generator]:
        """Episode `index` of the dataset seeded `seed`: the robot in its start state, and the episode's
        generator, advanced past the scene and start pose (what the scripted controller draws from next)."""
        if seed < 0 or index < 0:
            raise ValueError(f"a sim scene is a seed and an episode index, both >= 0; got {seed}, {index}")
        rng = np.random.default_rng([seed, index])
        params = sample_scene(rng, scene=scene)
        bounds = workspace_bounds(params.table_height)
        start_pos = rng.uniform(bounds[0] + [0.05, 0.05, 0.1], bounds[1] - [0.1, 0.05, 0.05])
        return SimRobot(params, start_pos, **kwargs), rng

    def object_pos(self, i: int) -> np.ndarray:
        return self.data.body(f"object{i}").xpos.copy()

    @property
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.site].copy()

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera="head")
        return self.renderer.render()

    def observe(self) -> RobotState:
        finger = float(self.data.qpos[self._finger_adr].mean())
        return RobotState(
            image=self.render(), ee_pos=self.ee_pos, ee_rot=self.data.site_xmat[self.site].reshape(3, 3).copy(),
            gripper_closed=(finger - FINGER_OPEN) / (FINGER_CLOSED - FINGER_OPEN),
            gripper_commanded=self.closed, target_pos=self.target_pos.copy(), target_rot=self.target_rot.copy(),
        )

    def limit(self, world_vector, rotation_delta, gripper: float) -> Command:
        """The command as the robot will execute it: each component within its step limit, the target
        within the workspace box and the wrist within MAX_TILT of its home orientation (a rotation that
        would leave it is dropped). `world_vector` comes back as the displacement actually commanded."""
        clipped = []
        wv = np.array(world_vector, dtype=np.float32).reshape(-1)
        rd = np.array(rotation_delta, dtype=np.float32).reshape(-1)
        if wv.shape != (3,) or rd.shape != (3,):
            raise ValueError(f"world_vector and rotation_delta have 3 numbers each, got {wv.size} and {rd.size}")
        if not (np.isfinite(wv).all() and np.isfinite(rd).all() and np.isfinite(gripper)):
            raise ValueError(f"action has a non-finite value: world_vector {wv}, rotation_delta {rd}, "
                             f"gripper {gripper}")
        lim = self.limits
        for name, value, bound in (("world_vector", wv, lim.world_vector), ("rotation_delta", rd, lim.rotation_delta)):
            bound = np.float32(bound)  # a float32 command exactly at the limit is not clipped
            if np.abs(value).max() > bound:
                clipped.append(f"{name}: step limit {float(bound):g}")
                np.clip(value, -bound, bound, out=value)
        if abs(gripper) > lim.gripper:
            clipped.append(f"gripper_closedness_action: limit {lim.gripper:g}")
            gripper = float(np.clip(gripper, -lim.gripper, lim.gripper))
        unclipped = self.target_pos + wv
        target_pos = np.clip(unclipped, self.bounds[0], self.bounds[1])
        if not np.array_equal(target_pos, unclipped):
            clipped.append("world_vector: workspace box")
        target_rot = rpy_matrix(rd) @ self.target_rot
        if rd.any() and angle_between(target_rot, HOME_ROT) > MAX_TILT:
            clipped.append(f"rotation_delta: wrist tilt limit {MAX_TILT} rad")
            rd[:] = 0.0
            target_rot = self.target_rot.copy()
        wv = (target_pos - self.target_pos).astype(np.float32)
        return Command(wv, rd, float(gripper), target_pos, target_rot, clipped)

    def execute(self, cmd: Command) -> None:
        """Run one control period on a command from `limit`: move the Cartesian target, solve IK, and
        track the joint targets smoothly (70% of the period ramping, the rest holding)."""
        self.target_pos, self.target_rot = cmd.target_pos, cmd.target_rot
        self.closed = float(np.clip(self.closed + cmd.gripper, 0.0, 1.0))
        model, data = self.model, self.data
        q_start = data.ctrl[self._arm_act].copy()
        q_goal, _ = self.ik.solve(q_start, self.target_pos, self.target_rot)
        for k in range(self.substeps):
            alpha = min(1.0, (k + 1) / (0.7 * self.substeps))
            data.ctrl[self._arm_act] = q_start + alpha * (q_goal - q_start)
            data.ctrl[self._finger_act] = FINGER_OPEN + self.closed * (FINGER_CLOSED - FINGER_OPEN)
            mujoco.mj_step(model, data)

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> SimRobot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
