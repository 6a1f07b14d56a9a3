"""Scripted RT-1-style commands: reaching, pushing and random motion.

The world model learns latent actions from video alone, so the simulated data must make
arm motion the main thing that changes between frames, and spread it over all directions.
Each episode strings together segments of three primitives, every one of which emits what
an RT-1 policy emits at 3 Hz: `world_vector` (end-effector displacement, base frame, m),
`rotation_delta` (roll/pitch/yaw displacement, rad) and `gripper_closedness_action`
(+1 close, -1 open, 0 hold; a relative command, as RT-1 policies are usually evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genie_robot.sim.scene import SceneObject

MAX_STEP = 0.05  # m of end-effector travel per 3 Hz step (0.15 m/s)
MAX_ROT_STEP = 0.12  # rad per step


@dataclass
class Command:
    world_vector: np.ndarray  # (3,)
    rotation_delta: np.ndarray  # (3,)
    gripper: float  # in [-1, 1]


@dataclass
class Segment:
    """One primitive: a list of waypoints (or None for random motion) and its instruction."""

    kind: str  # reach | push | random
    steps: int
    instruction: str
    target: int | None = None  # index of the object the primitive is about
    waypoints: list[np.ndarray] | None = None
    gripper_at: list[float] | None = None  # gripper command once waypoint i is reached


def plan_segments(
    rng: np.random.Generator, objects: tuple[SceneObject, ...], table_z: float, total_steps: int,
    mix: tuple[float, float, float] = (0.35, 0.3, 0.35),
) -> list[Segment]:
    """Choose primitives until the episode's steps are covered."""
    segments: list[Segment] = []
    left = total_steps
    while left > 0:
        kind = ("reach", "push", "random")[int(rng.choice(3, p=np.asarray(mix) / sum(mix)))]
        steps = min(left, int(rng.integers(8, 16)))
        if kind != "random" and objects:
            i = int(rng.integers(len(objects)))
            obj = objects[i]
            top = np.array([obj.pos[0], obj.pos[1], table_z + 2 * obj.half_height])
            if kind == "reach":
                segments.append(Segment(
                    kind, steps, f"pick up the {obj.name}", i,
                    [top + [0, 0, 0.12], top + [0, 0, 0.03], top + [0, 0, 0.15]],
                    [-1.0, 1.0, 0.0],
                ))
            else:
                angle = rng.uniform(-np.pi, np.pi)
                d = np.array([np.cos(angle), np.sin(angle), 0.0])
                low = np.array([obj.pos[0], obj.pos[1], table_z + 0.04])
                word = _direction_word(d)
                segments.append(Segment(
                    kind, steps, f"push the {obj.name} {word}", i,
                    [low - 0.09 * d + [0, 0, 0.1], low - 0.09 * d, low + 0.12 * d],
                    [1.0, 0.0, 0.0],
                ))
        else:
            segments.append(Segment("random", steps, "move the arm around"))
        left -= steps
    return segments


def _direction_word(d: np.ndarray) -> str:
    # Base frame: +x away from the robot, +y to its left.
    if abs(d[0]) > abs(d[1]):
        return "away from you" if d[0] > 0 else "towards you"
    return "left" if d[1] > 0 else "right"


class ScriptedController:
    """Turns a segment plan into per-step commands with a P-controller plus noise."""

    def __init__(self, rng: np.random.Generator, segments: list[Segment]):
        self.rng = rng
        self.segments = segments
        self.seg_idx = 0
        self.seg_step = 0
        self.wp_idx = 0
        self.random_dir = np.zeros(3)
        self.random_rot = np.zeros(3)
        self.random_hold = 0

    @property
    def segment(self) -> Segment:
        return self.segments[min(self.seg_idx, len(self.segments) - 1)]

    def current_goal(self) -> np.ndarray | None:
        seg = self.segment
        if seg.waypoints is None:
            return None
        return seg.waypoints[min(self.wp_idx, len(seg.waypoints) - 1)]

    def command(self, ee_pos: np.ndarray) -> Command:
        """The next command given the end-effector position (base frame)."""
        seg = self.segment
        if seg.waypoints is None:
            cmd = self._random_command()
        else:
            goal = seg.waypoints[self.wp_idx]
            delta = goal - ee_pos
            dist = float(np.linalg.norm(delta))
            gripper = 0.0
            if dist < 0.02 and self.wp_idx < len(seg.waypoints) - 1:
                gripper = seg.gripper_at[self.wp_idx] if seg.gripper_at else 0.0
                self.wp_idx += 1
                delta = seg.waypoints[self.wp_idx] - ee_pos
                dist = float(np.linalg.norm(delta))
            step = delta * min(1.0, MAX_STEP / max(dist, 1e-9))
            step = step + self.rng.normal(0.0, 0.004, 3)
            rot = self.rng.normal(0.0, 0.03, 3) if self.rng.random() < 0.3 else np.zeros(3)
            cmd = Command(step, rot, gripper)
        self.seg_step += 1
        if self.seg_step >= seg.steps:
            self.seg_idx += 1
            self.seg_step = 0
            self.wp_idx = 0
            self.random_hold = 0
        return Command(
            np.clip(cmd.world_vector, -MAX_STEP, MAX_STEP).astype(np.float32),
            np.clip(cmd.rotation_delta, -MAX_ROT_STEP, MAX_ROT_STEP).astype(np.float32),
            float(np.clip(cmd.gripper, -1.0, 1.0)),
        )

    def _random_command(self) -> Command:
        # Hold a random direction (uniform on the sphere) for a few steps, so motion is
        # smooth enough to read from two frames yet covers every direction.
        if self.random_hold <= 0:
            v = self.rng.normal(size=3)
            self.random_dir = v / np.linalg.norm(v) * self.rng.uniform(0.015, MAX_STEP)
            self.random_rot = (
                self.rng.uniform(-MAX_ROT_STEP, MAX_ROT_STEP, 3) if self.rng.random() < 0.4 else np.zeros(3)
            )
            self.random_hold = int(self.rng.integers(2, 5))
        self.random_hold -= 1
        gripper = float(self.rng.choice([-1.0, 1.0])) if self.rng.random() < 0.15 else 0.0
        return Command(self.random_dir.copy(), self.random_rot.copy(), gripper)
