"""Goal-reaching tasks on the simulated robot: a held-out scene and the camera frame after N scripted steps.

A task is a scene (a sim seed and episode index the reference never trained on) and a goal: the
camera frame after the first `goal_steps` steps of the scripted controller that would have made
that episode, from the episode's start state. Where the scripted sequence put the end-effector is
the task's target. The scripted sequence replayed open loop is the upper bound of any policy; the
sim is deterministic, so it reaches its own target exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genie_robot.sim.controller import ScriptedController, plan_segments
from genie_robot.sim.robot import IMAGE_HEIGHT, IMAGE_WIDTH, SimRobot
from genie_robot.sim.writer import SimConfig


@dataclass
class GoalTask:
    seed: int
    episode: int
    scene: str
    goal_steps: int
    actions: np.ndarray  # float32 [goal_steps, 7]: the scripted sequence, as executed
    goal_image: np.ndarray  # uint8 [H, W, 3]
    start_ee: np.ndarray  # (3,)
    goal_ee: np.ndarray  # (3,) where the scripted sequence put the end-effector

    @property
    def distance(self) -> float:
        """How far the goal is from the start (m)."""
        return float(np.linalg.norm(self.goal_ee - self.start_ee))


def make_task(seed: int, episode: int, goal_steps: int, scene: str = "default", height: int = IMAGE_HEIGHT,
              width: int = IMAGE_WIDTH) -> GoalTask:
    """The scripted controller of episode `episode` of `genie-robot sim sim.seed=<seed>`, run `goal_steps` steps.

    The generator is drawn exactly as simulate_episode draws it (scene, start pose, episode length, segments),
    so the goal image is that dataset's frame `goal_steps` when the episode is longer than that."""
    if goal_steps < 1:
        raise ValueError(f"goal_steps must be >= 1, got {goal_steps}")
    sim = SimConfig()
    robot, rng = SimRobot.start(seed, episode, scene, height=height, width=width)
    with robot:
        start_ee = robot.ee_pos
        n_steps = int(rng.integers(sim.min_steps, sim.max_steps + 1))
        controller = ScriptedController(rng, plan_segments(rng, robot.params.objects, robot.params.table_height,
                                                           max(n_steps, goal_steps)))
        actions = []
        for _ in range(goal_steps):
            cmd = controller.command(robot.ee_pos)
            done = robot.limit(cmd.world_vector, cmd.rotation_delta, cmd.gripper)
            robot.execute(done)
            actions.append(np.concatenate([done.world_vector, done.rotation_delta, [done.gripper]]))
        return GoalTask(seed, episode, scene, goal_steps, np.asarray(actions, np.float32), robot.render(), start_ee,
                        robot.ee_pos)
