"""Closed-loop control: drive a robot toward a goal image by re-planning in the world model.

Model-predictive control in latent-action space: at every control step the policy looks at the
newest camera frames and the goal image, decides one robot action (world-model MPC: plan a latent
action sequence with CEM, map its first latent action to RT-1's action fields with the adapter,
keep none of the rest), the robot executes it, and the next step plans again from what the camera
then shows. Nothing here knows ROS or MuJoCo: a `Robot` is anything that executes a 7-number RT-1
action and returns the next camera frame (the sim in-process, or sim_robot_node over ROS 2), a
`Policy` anything that chooses the action (world-model MPC in-process or through world_model_node's
`~/plan`, or a baseline: random latent actions through the same adapter, holding still, a recorded
sequence replayed open loop).

An episode ends when the goal is reached (the camera frame within `goal_mse` of the goal image at
the model's resolution, when `goal_mse` > 0), the step budget is spent, the caller cancels, or the
policy fails; on failure or cancel the robot is stopped before anything else, and no action decided
before the failure is ever sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

from genie_robot.core.image import fit_image
from genie_robot.models.config import SAMPLING
from genie_robot.planning.adapter import ACTION_DIM, Adapter
from genie_robot.planning.cem import plan

REASONS = ("goal reached", "budget", "cancelled", "failed")


@dataclass
class Observation:
    """What the robot reports after a reset or a step."""

    image: np.ndarray  # uint8 [H, W, 3], the camera
    ee_pos: np.ndarray | None = None  # (3,) end-effector position when the robot reports it (the sim does)
    clipped: list[str] = field(default_factory=list)  # what the robot clipped of the action it was sent


class Robot(Protocol):
    def act(self, action: np.ndarray) -> Observation:
        """Execute one RT-1 action (float32 [7]: world_vector, rotation_delta, gripper) for one control period."""

    def stop(self) -> None:
        """Hold still and execute nothing more this episode (RT-1's terminate)."""


@dataclass
class Decision:
    """One control step's choice."""

    action: np.ndarray  # float32 [7] sent to the robot
    latent_actions: np.ndarray | None = None  # the plan's latent sequence (its first is executed)
    imagined: np.ndarray | None = None  # uint8 [H, 3, h, w]: the frames the plan expects
    cost: float | None = None  # the plan's goal cost
    plan_ms: float | None = None


class Policy(Protocol):
    name: str

    def decide(self, context: list[np.ndarray], goal: np.ndarray, step: int) -> Decision:
        """The action for this step from the newest camera frames (uint8 [H, W, 3], oldest first) and the goal."""


class PolicyError(RuntimeError):
    """The policy could not decide (a plan failed or timed out): the episode stops, the robot holds."""


def check_action(action) -> np.ndarray:
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    if a.shape != (ACTION_DIM,) or not np.isfinite(a).all():
        raise PolicyError(f"a robot action is {ACTION_DIM} finite numbers, got {np.asarray(action).tolist()}")
    return a


class HoldPolicy:
    """Do nothing: the no-motion baseline."""

    name = "nothing"

    def decide(self, context, goal, step) -> Decision:
        return Decision(np.zeros(ACTION_DIM, np.float32))


class ReplayPolicy:
    """A recorded action sequence, replayed open loop (the scripted sequence that made the goal: the upper bound)."""

    name = "replay"

    def __init__(self, actions: np.ndarray):
        self.actions = np.asarray(actions, dtype=np.float32).reshape(-1, ACTION_DIM)

    def decide(self, context, goal, step) -> Decision:
        if step >= len(self.actions):
            return Decision(np.zeros(ACTION_DIM, np.float32))
        return Decision(self.actions[step].copy())


class RandomLatentPolicy:
    """A uniformly random latent action each step, mapped by the same adapter as MPC's."""

    name = "random"

    def __init__(self, adapter: Adapter, seed: int = 0):
        self.adapter = adapter
        self.rng = np.random.default_rng(seed)

    def decide(self, context, goal, step) -> Decision:
        latent = self.rng.integers(0, self.adapter.num_actions, size=1)
        return Decision(self.adapter.predict(latent)[0], latent_actions=latent)


@dataclass
class PlanSettings:
    """CEM's budget per control step (genie-robot control's `control.*`)."""

    horizon: int = 2
    num_samples: int = 8
    iterations: int = 2
    context_frames: int = 4


class EngineMPC:
    """World-model MPC in-process: CEM on an engine (torch WorldModel or onnxruntime), its adapter's first action."""

    name = "mpc"

    def __init__(self, engine, settings: PlanSettings, seed: int = 0, steps: int | None = None):
        if getattr(engine, "adapter", None) is None:
            raise ValueError("world-model MPC maps latent actions to robot actions with the model's adapter, and this "
                             "model has none: run `genie-robot fit-adapter ckpt=<run>` (a reference ships one)")
        self.engine, self.settings, self.seed, self.steps = engine, settings, seed, steps

    def decide(self, context, goal, step) -> Decision:

        res = tuple(self.engine.cfg.resolution)
        frames = np.stack([fit_image(f, res) for f in context[-self.settings.context_frames:]])
        s = self.settings
        t0 = time.perf_counter()
        out = plan(self.engine, frames, fit_image(goal, res), horizon=s.horizon, num_samples=s.num_samples,
                   iterations=s.iterations, seed=self.seed * 1_000_003 + step,
                   steps=self.steps or SAMPLING.plan_steps)
        return Decision(check_action(out.robot_actions[0]), out.actions, out.frames, out.cost,
                        (time.perf_counter() - t0) * 1000)


@dataclass
class Episode:
    """One closed-loop episode, as it happened."""

    policy: str
    goal: np.ndarray  # uint8 [H, W, 3]
    frames: list[np.ndarray]  # camera frames, the start first: one more than the steps taken
    decisions: list[Decision]
    observations: list[Observation]
    reason: str  # one of REASONS
    message: str = ""
    goal_mse: list[float] = field(default_factory=list)  # per camera frame, at the model's resolution

    @property
    def steps(self) -> int:
        return len(self.decisions)

    @property
    def final_ee_pos(self) -> np.ndarray | None:
        return self.observations[-1].ee_pos if self.observations else None


def frame_mse(a: np.ndarray, b: np.ndarray, resolution: tuple[int, int]) -> float:
    """Mean squared error in [0, 1] pixels of two camera images at the model's resolution (the plan's cost)."""
    fa, fb = fit_image(a, resolution).astype(np.float32) / 255.0, fit_image(b, resolution).astype(np.float32) / 255.0
    return float(((fa - fb) ** 2).mean())


def run_episode(robot: Robot, policy: Policy, start: Observation, goal: np.ndarray, max_steps: int,
                resolution: tuple[int, int], context_frames: int = 8, goal_mse: float = 0.0,
                cancelled: Callable[[], bool] = lambda: False,
                progress: Callable[[int, Decision, Observation], None] | None = None,
                context: Callable[[], list[np.ndarray]] | None = None) -> Episode:
    """Run `policy` on `robot` from `start` toward `goal` for at most `max_steps` control steps.

    The policy sees the newest `context_frames` frames the loop has (one per step), or what `context()`
    returns: a robot whose camera runs on while the policy thinks (sim_robot_node in real time, holding
    still) has more frames at the model's rate than the loop's steps."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    goal = np.asarray(goal)
    if goal.dtype != np.uint8 or goal.ndim != 3 or goal.shape[2] != 3:
        raise ValueError(f"goal image must be uint8 [H, W, 3] RGB, got {goal.dtype} {goal.shape}")
    ep = Episode(policy.name, goal, [start.image], [], [start], "budget")
    ep.goal_mse.append(frame_mse(start.image, goal, resolution))
    for step in range(max_steps):
        if goal_mse > 0 and ep.goal_mse[-1] <= goal_mse:
            ep.reason = "goal reached"
            break
        if cancelled():
            robot.stop()
            ep.reason, ep.message = "cancelled", f"cancelled before step {step}"
            break
        try:
            frames = context() if context is not None else ep.frames[-context_frames:]
            decision = policy.decide(frames, goal, step)
            action = check_action(decision.action)
        except Exception as e:  # noqa: BLE001 - any failure of the policy ends the episode the same way
            robot.stop()
            ep.reason = "cancelled" if cancelled() else "failed"
            ep.message = f"step {step}: {type(e).__name__}: {e}"
            break
        if cancelled():  # cancelled while it planned: the plan is never sent
            robot.stop()
            ep.reason, ep.message = "cancelled", f"cancelled while planning step {step}"
            break
        try:
            obs = robot.act(action)
        except Exception as e:  # noqa: BLE001 - a robot that does not report its step: stop it, end the episode
            robot.stop()
            ep.reason, ep.message = "failed", f"step {step}: the robot: {type(e).__name__}: {e}"
            break
        ep.decisions.append(decision)
        ep.observations.append(obs)
        ep.frames.append(obs.image)
        ep.goal_mse.append(frame_mse(obs.image, goal, resolution))
        if progress is not None:
            progress(step, decision, obs)
    else:
        if goal_mse > 0 and ep.goal_mse[-1] <= goal_mse:
            ep.reason = "goal reached"
    return ep


def episode_picture(ep: Episode, resolution: tuple[int, int]) -> np.ndarray:
    """uint8 [T, 3, h, 3w]: per step the camera, the goal and the frame the step's plan imagined at its
    horizon (grey for a policy that imagines nothing), side by side at the model's resolution."""
    goal = fit_image(ep.goal, resolution)
    blank = np.full_like(goal, 128)
    out = []
    for t, frame in enumerate(ep.frames):
        d = ep.decisions[t] if t < len(ep.decisions) else None
        imagined = d.imagined[-1] if d is not None and d.imagined is not None else blank
        out.append(np.concatenate([fit_image(frame, resolution), goal, imagined], axis=2))
    return np.stack(out)


def save_episode_gif(ep: Episode, resolution: tuple[int, int], path: Path, scale: int = 3) -> Path:
    """The episode as a GIF: camera | goal | imagined, labelled, one frame per control step."""
    frames = episode_picture(ep, resolution)
    out = []
    for t, f in enumerate(frames):
        img = Image.fromarray(f.transpose(1, 2, 0)).resize((f.shape[2] * scale, f.shape[1] * scale),
                                                            Image.Resampling.NEAREST)
        canvas = Image.new("RGB", (img.width, img.height + 26), "white")
        canvas.paste(img, (0, 26))
        d = ep.decisions[t] if t < len(ep.decisions) else None
        plan = "" if d is None or d.latent_actions is None else f"  plan {list(map(int, d.latent_actions))}"
        draw = ImageDraw.Draw(canvas)
        draw.text((2, 1), "camera | goal | imagined", fill="black")
        draw.text((2, 13), f"step {t}{plan}  mse {ep.goal_mse[t]:.4f}", fill="black")
        out.append(np.asarray(canvas))
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(out), duration=1000 / 3, loop=0)
    return path
