"""`genie-robot bench agent`: Genie's latent-action agent (paper section 3.3) on the simulated robot.

Genie trains a policy on action-free expert videos by labelling each transition with the LAM's latent
action, then learns what each latent action means on the real robot from a few labelled episodes, and
compares that agent with an oracle trained on the real actions of every episode. Here:

1. The expert episodes are the sim's scripted episodes (`data`, one clip of `clip_frames` from each
   episode's start). The LAM labels each transition with its latent action; a pair of identical frames
   gets the LAM's label for "nothing moved" (the hold the policy needs once the goal is reached).
2. One goal-conditioned policy (a small CNN on the camera frame, the goal frame and their difference)
   is trained by hindsight: for the frame at step t and a goal k = 0..`goal_horizon` steps later in the
   same episode, predict the latent action of the transition t -> t+1 (k = 0: the hold label).
3. The adapter maps a latent action to a robot action: Genie's co-occurrence estimate (the mean real
   action of the transitions the LAM gave that latent action, genie_robot.planning.adapter `mean`),
   fit from the real actions of only the first N episodes, for each N in `labelled`.
4. The oracle is the same network and training, predicting the real 7-number action of every episode.
5. All of them, random latent actions through the adapter of every episode, and holding still run
   closed loop on `bench control`'s held-out tasks (the same scenes, goals, budget and success radius).

Reported: each policy's success rate with its 95% Wilson interval; the curve of the latent agent's
success over N, as a fraction of the oracle's; the policies' offline accuracy on held-out episodes.
Writes `<out>/agent.json`, `<out>/curve.png` (the paper's figure), the episodes and a few GIFs, and
TensorBoard logs of the policies' training.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genie_robot.control.bench import (
    ControlBenchConfig,
    intervals_overlap,
    policy_summary,
    run_tasks,
)
from genie_robot.control.loop import Decision, HoldPolicy, RandomLatentPolicy, check_action
from genie_robot.core.image import fit_image
from genie_robot.data.reader import DataConfig, read_clips
from genie_robot.data.schema import ACTION_KEYS
from genie_robot.pictures import line_chart
from genie_robot.planning.adapter import ACTION_DIM, Adapter, fit


@dataclass
class AgentConfig:
    data: str = DataConfig.path  # the expert episodes (a sim dataset)
    clip_frames: int = 26  # frames taken from each episode's start (the sim's episodes have 26-34 steps)
    val_fraction: float = 0.05  # episodes held out for the policies' offline accuracy
    goal_horizon: int = 4  # hindsight goals 0..this many steps ahead (bench control's goal_steps)
    labelled: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50])  # episodes the adapter sees
    steps: int = 3000  # training steps of each policy
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 32  # the CNN's first layer's channels (doubling twice)
    seed: int = 0
    out: str = "outputs/bench/agent"

    def validate(self) -> None:
        for name in ("goal_horizon", "steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench.agent.{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_frames < 2:
            raise ValueError(f"bench.agent.clip_frames must be >= 2 (a transition), got {self.clip_frames}")
        if not self.labelled or min(self.labelled) < 1:
            raise ValueError(f"bench.agent.labelled must list episode counts >= 1, got {self.labelled}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"bench.agent.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class Experts:
    """Expert episodes at the model's resolution, with what each policy learns from."""

    frames: np.ndarray  # uint8 [N, T, 3, H, W]
    actions: np.ndarray  # float32 [N, T-1, 7]: the real action from frame t to t+1 (oracle and adapter only)
    latent: np.ndarray  # int64 [N, T-1]: the LAM's latent action from frame t to t+1
    hold: np.ndarray  # int64 [N, T]: the LAM's latent action from frame t to itself


def _label(engine, frames: np.ndarray, batch: int = 16, desc: str = "LAM labels") -> tuple[np.ndarray, np.ndarray]:
    """(latent [N, T-1], hold [N, T]) for clips [N, T, 3, H, W]."""
    latent, hold = [], []
    for i in tqdm(range(0, len(frames), batch), desc=desc, unit="batch"):
        clips = frames[i: i + batch]
        latent.append(engine.infer_actions(clips))
        same = clips.reshape(-1, 1, *clips.shape[2:]).repeat(2, axis=1)  # [n*T, 2, 3, H, W]
        hold.append(engine.infer_actions(same)[:, 0].reshape(len(clips), -1))
    return np.concatenate(latent).astype(np.int64), np.concatenate(hold).astype(np.int64)


def load_experts(engine, cfg: AgentConfig, split: str) -> Experts:
    """Clips of `clip_frames` from the start of each episode of `split` (never across an episode's end)."""
    data = DataConfig(path=cfg.data, clip_frames=cfg.clip_frames, resolution=list(engine.cfg.resolution),
                      val_fraction=cfg.val_fraction, batch_size=16, shuffle=False, drop_remainder=False)
    frames, actions = read_clips(data, split, 1 << 30, ACTION_KEYS)
    latent, hold = _label(engine, frames, desc=f"LAM labels ({split})")
    return Experts(frames, actions[:, :-1].astype(np.float32), latent, hold)


def features(frame: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """float32 [B, 9, H, W] in [-1, 1]: the frame, the goal and goal - frame, from uint8 [B, 3, H, W] each."""
    f, g = frame.astype(np.float32) / 127.5 - 1, goal.astype(np.float32) / 127.5 - 1
    return np.concatenate([f, g, (g - f) / 2], axis=1)


class GoalNet(nn.Module):
    """A small CNN from (frame, goal) features to `out` numbers: latent-action logits or a robot action."""

    def __init__(self, resolution: tuple[int, int], out: int, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(9, w, 4, 2, 1), nn.GELU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.GELU(), nn.Conv2d(4 * w, 4 * w, 3, 2, 1), nn.GELU(), nn.Flatten())
        with torch.no_grad():
            n = self.body(torch.zeros(1, 9, *resolution)).shape[1]
        self.head = nn.Sequential(nn.Linear(n, 256), nn.GELU(), nn.Linear(256, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def hindsight_batch(ex: Experts, rng: np.random.Generator, size: int, horizon: int, latent: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(features [B, 9, H, W], targets): frame t of a random episode, its goal k = 0..horizon steps on, and the
    latent id (or real action) from t to t+1; k = 0 is "already there": the hold label (or no motion)."""
    n, t_len = ex.frames.shape[:2]
    i = rng.integers(0, n, size)
    t = rng.integers(0, t_len - 1, size)
    k = rng.integers(0, horizon + 1, size)
    g = np.minimum(t + k, t_len - 1)
    x = features(ex.frames[i, t], ex.frames[i, g])
    if latent:
        return x, np.where(k == 0, ex.hold[i, t], ex.latent[i, t])
    return x, np.where((k == 0)[:, None], 0.0, ex.actions[i, t]).astype(np.float32)


@dataclass
class TrainedPolicy:
    net: GoalNet
    latent: bool  # True: latent-action logits; False: a robot action (normalised by mean/std)
    mean: np.ndarray  # (7,) robot action normalisation (oracle)
    std: np.ndarray
    val: dict


def train_policy(ex: Experts, val: Experts, cfg: AgentConfig, num_actions: int, latent: bool, log_dir: Path
                 ) -> TrainedPolicy:
    """Behaviour cloning by hindsight goals: cross-entropy on latent ids, or squared error on normalised actions."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    res = tuple(ex.frames.shape[-2:])
    net = GoalNet(res, num_actions if latent else ACTION_DIM, cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    warm = max(1, cfg.steps // 20)  # linear warm-up, then cosine decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (1 + np.cos(
        np.pi * min(s / cfg.steps, 1.0)))))
    mean = ex.actions.reshape(-1, ACTION_DIM).mean(0)
    std = np.maximum(ex.actions.reshape(-1, ACTION_DIM).std(0), 1e-3)
    writer = SummaryWriter(str(log_dir))
    name = "latent" if latent else "oracle"
    net.train()
    for step in (bar := tqdm(range(cfg.steps), desc=f"train {name} policy", unit="step")):
        x, y = hindsight_batch(ex, rng, cfg.batch_size, cfg.goal_horizon, latent)
        out = net(torch.from_numpy(x))
        if latent:
            loss = nn.functional.cross_entropy(out, torch.from_numpy(y))
        else:
            loss = nn.functional.mse_loss(out, torch.from_numpy((y - mean) / std))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            writer.add_scalar(f"{name}/loss", float(loss), step)
            bar.set_postfix(loss=f"{float(loss):.3f}")
    net.eval()
    policy = TrainedPolicy(net, latent, mean, std, {})
    policy.val = offline_accuracy(policy, val, cfg)
    for k, v in policy.val.items():
        writer.add_scalar(f"{name}/val_{k}", v, cfg.steps)
    writer.close()
    return policy


@torch.no_grad()
def _predict(policy: TrainedPolicy, x: np.ndarray) -> np.ndarray:
    out = policy.net(torch.from_numpy(x)).numpy()
    return out.argmax(-1) if policy.latent else out * policy.std + policy.mean


def offline_accuracy(policy: TrainedPolicy, val: Experts, cfg: AgentConfig, size: int = 2048) -> dict:
    """On held-out episodes' hindsight samples (a fixed draw): latent accuracy (and the majority label's), or
    the oracle's world_vector MSE (and predicting the training mean's)."""
    x, y = hindsight_batch(val, np.random.default_rng(12345), size, cfg.goal_horizon, policy.latent)
    pred = np.concatenate([_predict(policy, x[i: i + 256]) for i in range(0, len(x), 256)])
    if policy.latent:
        return {"accuracy": float((pred == y).mean()), "majority_accuracy": float(np.bincount(y).max() / len(y))}
    return {"mse_world_vector": float(((pred[:, :3] - y[:, :3]) ** 2).mean()),
            "baseline_mse_world_vector": float(((policy.mean[:3] - y[:, :3]) ** 2).mean())}


class GoalPolicy:
    """A trained goal-conditioned policy in the control loop: the newest camera frame and the goal in; a robot
    action out, directly (the oracle) or as a latent action through an adapter (Genie's latent agent)."""

    def __init__(self, name: str, policy: TrainedPolicy, resolution: tuple[int, int], adapter: Adapter | None = None):
        if policy.latent and adapter is None:
            raise ValueError("a latent-action policy needs an adapter to act on the robot")
        self.name, self.policy, self.resolution, self.adapter = name, policy, resolution, adapter

    def decide(self, context, goal, step) -> Decision:
        x = features(fit_image(context[-1], self.resolution)[None], fit_image(goal, self.resolution)[None])
        out = _predict(self.policy, x)[0]
        if self.policy.latent:
            ids = np.array([int(out)])
            return Decision(check_action(self.adapter.predict(ids)[0]), latent_actions=ids)
        return Decision(check_action(out))


def adapters(ex: Experts, counts: list[int], num_actions: int) -> dict[int, Adapter]:
    """Genie's mapping fit from the real actions of the first N episodes, for each N (capped at what there is)."""
    out = {}
    for n in sorted({min(c, len(ex.frames)) for c in counts} | {len(ex.frames)}):
        out[n] = fit("mean", list(ex.latent[:n]), list(ex.actions[:n]), num_actions)
    return out


def bench_agent(engine, cfg: AgentConfig, tasks: ControlBenchConfig) -> dict:
    """Train the latent and oracle policies, fit the adapters, and run everything on `tasks` (bench control's)."""
    cfg.validate()
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    res = tuple(engine.cfg.resolution)
    num_actions = engine.cfg.lam.num_actions
    train, val = load_experts(engine, cfg, "train"), load_experts(engine, cfg, "val")
    latent = train_policy(train, val, cfg, num_actions, True, out / "tb")
    oracle = train_policy(train, val, cfg, num_actions, False, out / "tb")
    maps = adapters(train, cfg.labelled, num_actions)
    everything = maps[len(train.frames)]
    factories = {"oracle": lambda task, index: GoalPolicy("oracle", oracle, res)}
    for n, adapter in maps.items():
        factories[f"latent_{n}"] = lambda task, index, a=adapter, n=n: GoalPolicy(f"latent_{n}", latent, res, a)
    factories["random"] = lambda task, index: RandomLatentPolicy(everything, seed=tasks.plan_seed * 100_003 + index)
    factories["nothing"] = lambda task, index: HoldPolicy()
    run_cfg = replace(tasks, out=cfg.out, resume=False)  # the policies were trained anew: nothing to resume
    records, skipped, _ = run_tasks(factories, run_cfg, res)
    policies = {name: policy_summary(records, name) for name in factories}
    orc = policies["oracle"]["success_rate"]
    curve = [{"labelled_episodes": n, **{k: policies[f"latent_{n}"][k] for k in ("success_rate", "success_ci95")},
              "fraction_of_oracle": policies[f"latent_{n}"]["success_rate"] / orc if orc else None,
              "overlaps_oracle": intervals_overlap(policies[f"latent_{n}"], policies["oracle"]),
              "adapter_transitions": maps[n].info["fitted_transitions"]} for n in maps]
    result = {"bench": "agent", "policies": policies, "curve": curve, "skipped_episodes": skipped,
              "expert_episodes": {"train": len(train.frames), "val": len(val.frames),
                                  "transitions": int(train.latent.size)},
              "latent_usage": np.bincount(train.latent.reshape(-1), minlength=num_actions).tolist(),
              "hold_label": int(np.bincount(train.hold.reshape(-1), minlength=num_actions).argmax()),
              "offline": {"latent": latent.val, "oracle": oracle.val},
              "seconds": round(time.perf_counter() - start, 1), "config": asdict(cfg),
              "tasks": {k: getattr(tasks, k) for k in ("seed", "episodes", "first_episode", "scene", "goal_steps",
                                                        "max_steps", "success_radius", "min_distance")}}
    (out / "agent.json").write_text(json.dumps(result, indent=1))
    curve_chart(result).save(out / "curve.png")
    result["curve_png"] = str(out / "curve.png")
    return result


def curve_chart(result: dict):
    """Genie's figure from a `bench agent` result: the latent agent's success over labelled episodes, with the
    oracle's and random actions' levels (a PIL image)."""
    curve, policies = result["curve"], result["policies"]
    return line_chart(
        [c["labelled_episodes"] for c in curve], [c["success_rate"] for c in curve],
        [c["success_ci95"] for c in curve],
        bands={name: (policies[key]["success_rate"], policies[key]["success_ci95"])
               for name, key in (("oracle (real actions, all episodes)", "oracle"),
                                 ("random latent actions", "random"))},
        title=f"latent-action agent, {result['tasks']['episodes']} held-out goal-reaching tasks",
        xlabel="labelled episodes for the adapter (log)", ylabel="success rate")
