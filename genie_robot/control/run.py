"""`genie-robot control`: one closed-loop episode of world-model MPC on the simulated robot, in-process.

The scene is a held-out sim scene (`control.seed`, `control.episode`); the goal is an image file
(`control.goal`) or the scene's own scripted goal (`control.goal_steps` steps of the controller that
made the dataset, genie_robot.control.tasks). Writes `<control.out>/episode.gif` (camera, goal and the
plan's imagined frame side by side, a row per control step) and `episode.json` (per step: the latent
plan, the robot action sent, what the robot clipped, the goal distance in pixels and, on the sim, in
metres), and prints the summary as one JSON line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from genie_robot.control.loop import Decision, EngineMPC, Observation, PlanSettings, run_episode, save_episode_gif
from genie_robot.control.tasks import SimRobotPort
from genie_robot.core.image import fit_image
from genie_robot.sim.robot import ActionLimits
from genie_robot.sim.service import SimProcess


@dataclass
class ControlConfig:
    seed: int = 2000  # held-out sim scenes: the reference trained on seeds 0 and 2, make demo evaluates on 1001
    episode: int = 0
    scene: str = "default"
    goal: str | None = None  # a goal image file (any size; centre-cropped like the camera); None: the scene's own
    goal_steps: int = 4  # the scene's own goal: the camera after this many scripted steps
    max_steps: int = 8  # control steps in an episode
    goal_mse: float = 0.0  # stop once the camera is this close to the goal (pixel MSE, model resolution); 0: never
    horizon: int = 2
    num_samples: int = 8
    iterations: int = 2
    context_frames: int = 4
    plan_seed: int = 0
    out: str = "outputs/control"

    def validate(self) -> None:
        for name in ("goal_steps", "max_steps", "horizon", "num_samples", "iterations", "context_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"control.{name} must be >= 1, got {getattr(self, name)}")
        if self.goal_mse < 0:
            raise ValueError(f"control.goal_mse must be >= 0, got {self.goal_mse}")

    @property
    def plan(self) -> PlanSettings:
        return PlanSettings(self.horizon, self.num_samples, self.iterations, self.context_frames)


def load_goal(path: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file, or a ValueError naming the file and what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"control.goal={path}: no such file")
    try:
        with Image.open(p) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as e:
        raise ValueError(f"control.goal={path} is not a readable image (PNG, JPEG, ...): {e}") from e


def step_record(t: int, d: Decision, obs: Observation, mse: float, goal_ee: np.ndarray | None) -> dict:
    return {"step": t, "latent_actions": None if d.latent_actions is None else [int(a) for a in d.latent_actions],
            "action": [round(float(v), 5) for v in d.action], "plan_cost": d.cost, "plan_ms": d.plan_ms,
            "clipped": obs.clipped, "goal_mse": mse,
            "ee_to_goal_m": (None if goal_ee is None or obs.ee_pos is None
                             else float(np.linalg.norm(obs.ee_pos - goal_ee)))}


def control(engine, cfg: ControlConfig, limits: ActionLimits | None = None) -> dict:
    """Run one MPC episode of `engine` on the sim scene; write its GIF and JSON; return the summary."""
    cfg.validate()
    res = tuple(engine.cfg.resolution)
    task = None
    if cfg.goal is not None:
        goal = load_goal(cfg.goal)
        fit_image(goal, res)  # a picture the model cannot take fails here, before the robot moves
    policy = EngineMPC(engine, cfg.plan, seed=cfg.plan_seed)
    service = SimProcess(limits=limits)
    robot = SimRobotPort(service)
    try:
        if cfg.goal is None:
            task = service.goal_task(cfg.seed, cfg.episode, cfg.goal_steps, cfg.scene)
            goal = task.goal_image
        start = robot.reset(cfg.seed, cfg.episode, cfg.scene)
        with tqdm(total=cfg.max_steps, desc="control steps", unit="step") as bar:
            ep = run_episode(robot, policy, start, goal, cfg.max_steps, res, cfg.context_frames, cfg.goal_mse,
                             progress=lambda t, d, o: (bar.update(1), bar.set_postfix(cost=f"{d.cost:.4f}")))
    finally:
        service.close()
    out = Path(cfg.out)
    gif = save_episode_gif(ep, res, out / "episode.gif")
    goal_ee = task.goal_ee if task is not None else None
    summary = {
        "scene": {"seed": cfg.seed, "episode": cfg.episode, "scene": cfg.scene},
        "goal": cfg.goal or f"scripted, {cfg.goal_steps} steps",
        "reason": ep.reason, "message": ep.message, "steps": ep.steps,
        "goal_mse_start": ep.goal_mse[0], "goal_mse_end": ep.goal_mse[-1],
        "ee_to_goal_start_m": None if task is None else task.distance,
        "ee_to_goal_end_m": None if goal_ee is None else float(np.linalg.norm(ep.final_ee_pos - goal_ee)),
        "gif": str(gif), "config": asdict(cfg),
    }
    records = [step_record(t, d, o, m, goal_ee)
               for t, (d, o, m) in enumerate(zip(ep.decisions, ep.observations[1:], ep.goal_mse[1:], strict=True))]
    (out / "episode.json").write_text(json.dumps({**summary, "steps_detail": records}, indent=1))
    return summary
