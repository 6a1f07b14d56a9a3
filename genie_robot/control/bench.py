"""`genie-robot bench control`: goal-reaching on held-out sim scenes, world-model MPC against its baselines.

Each episode is a task of genie_robot.control.tasks: a scene of a seed the reference never trained on,
and the camera frame after the first `goal_steps` steps of the scripted controller that would have
made that episode. Every policy starts from the same start state and gets `max_steps` control steps:

- `mpc`: world-model MPC (CEM in latent-action space toward the goal image, the first latent action
  through the model's adapter, re-planned every step);
- `random`: a uniformly random latent action every step, through the same adapter;
- `nothing`: holding still;
- `replay`: the scripted sequence replayed open loop (the upper bound).

Success: the end-effector ends within `success_radius` of where the scripted sequence put it. Tasks
whose target is closer than `min_distance` to the start are skipped (holding still would reach them)
and counted. Reported per policy: successes, the rate with its 95% Wilson interval, the final
distances' quartiles, and for MPC the plan time; one JSON line, plus every episode in
`<out>/episodes.jsonl` and the first episodes' GIFs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genie_robot import reference
from genie_robot.control.loop import (
    EngineMPC,
    HoldPolicy,
    PlanSettings,
    Policy,
    RandomLatentPolicy,
    ReplayPolicy,
    run_episode,
    save_episode_gif,
)
from genie_robot.control.tasks import SimRobotPort
from genie_robot.sim.goals import GoalTask
from genie_robot.sim.service import SimProcess

POLICIES = ("mpc", "random", "nothing", "replay")


@dataclass
class ControlBenchConfig:
    seed: int = 2000  # held-out scenes: the reference trained on seeds 0 and 2
    episodes: int = 50  # tasks run (skipped ones do not count)
    first_episode: int = 0
    scene: str = "default"
    goal_steps: int = 4
    max_steps: int = 6
    success_radius: float = 0.05  # m: one full 3 Hz step of the scripted controller
    min_distance: float = 0.1  # m: tasks with the target closer to the start are skipped
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    horizon: int = 2
    num_samples: int = 8
    iterations: int = 2
    context_frames: int = 4
    plan_seed: int = 0
    gifs: int = 4  # episodes whose GIFs are written, per policy
    out: str = "outputs/bench/control"
    resume: bool = False  # reuse the episodes <out>/episodes.jsonl already holds from a cut run of the same settings

    def validate(self) -> None:
        unknown = set(self.policies) - set(POLICIES)
        if unknown or not self.policies:
            raise ValueError(f"bench.control.policies must be some of {list(POLICIES)}, got {self.policies}")
        for name in ("episodes", "goal_steps", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench.control.{name} must be >= 1, got {getattr(self, name)}")
        if not self.success_radius > 0 or self.min_distance < 0:
            raise ValueError(f"bench.control.success_radius must be > 0 and min_distance >= 0, got "
                             f"{self.success_radius}, {self.min_distance}")


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0 and n successes, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _policy(name: str, engine, cfg: ControlBenchConfig, task, index: int):
    if name == "mpc":
        return EngineMPC(engine, PlanSettings(cfg.horizon, cfg.num_samples, cfg.iterations, cfg.context_frames),
                         seed=cfg.plan_seed * 100_003 + index)
    if name == "random":
        return RandomLatentPolicy(engine.adapter, seed=cfg.plan_seed * 100_003 + index)
    if name == "nothing":
        return HoldPolicy()
    return ReplayPolicy(task.actions)


def bench_control(engine, cfg: ControlBenchConfig) -> dict:
    cfg.validate()
    if engine.adapter is None:
        raise ValueError("bench control maps latent actions to robot actions with the model's adapter, and this "
                         "model has none: `genie-robot fit-adapter ckpt=<run>` (a reference ships one)")
    factories = {name: (lambda task, index, name=name: _policy(name, engine, cfg, task, index))
                 for name in cfg.policies}
    records, skipped, seconds = run_tasks(factories, cfg, tuple(engine.cfg.resolution),
                                          {"model": reference.name_of(engine.source) or str(engine.source)})
    return summarize(records, cfg, skipped, seconds)


PolicyFactory = Callable[[GoalTask, int], Policy]


def _logged(out: Path, settings: dict) -> dict[tuple[str, int], dict]:
    """The episodes a cut run with the same `settings` logged in `out`, by (policy, task index)."""
    saved = out / "bench_config.json"
    if not saved.is_file() or not (out / "episodes.jsonl").is_file():
        return {}
    before = json.loads(saved.read_text())
    if before != settings:
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        raise ValueError(f"resume: {out} holds a run with other settings ({', '.join(changed)} differ); "
                         "use another out= or resume=false")
    records = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines() if x.strip()]
    return {(r["policy"], r["episode"]): r for r in records}


def run_tasks(factories: dict[str, PolicyFactory], cfg: ControlBenchConfig, resolution: tuple[int, int],
              identity: dict | None = None) -> tuple[list[dict], list[int], float]:
    """Every policy (a fresh one per task, from its factory) on the same held-out tasks of `cfg`.

    Returns the episode records (also written to `<cfg.out>/episodes.jsonl` as each ends), the skipped task
    indices and the seconds it took. Shared by `bench control` and `bench agent`, so both score the same tasks.
    With `cfg.resume`, episodes a cut run of the same settings and `identity` (the model) logged are reused."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(factories)
    settings = {**{k: v for k, v in asdict(cfg).items() if k not in ("out", "resume", "gifs", "policies")},
                "policies": names, **(identity or {})}
    done = _logged(out, settings) if cfg.resume else {}
    (out / "bench_config.json").write_text(json.dumps(settings, indent=1))
    service = SimProcess()
    port = SimRobotPort(service)
    records, skipped, index = [], [], cfg.first_episode
    start = time.perf_counter()
    bar = tqdm(total=cfg.episodes, desc="control episodes", unit="ep")
    try:
        with (out / "episodes.jsonl").open("a" if done else "w") as log:
            while len(records) < cfg.episodes * len(names):
                if all((name, index) in done for name in names):  # a task the cut run finished
                    records.extend(done[(name, index)] for name in names)
                    bar.update(1)
                    index += 1
                    continue
                task = service.goal_task(cfg.seed, index, cfg.goal_steps, cfg.scene)
                if task.distance < cfg.min_distance:
                    skipped.append(index)
                    index += 1
                    continue
                n_done = len(records) // len(names)
                for name, make in factories.items():
                    if (name, index) in done:
                        records.append(done[(name, index)])
                        continue
                    ep = run_episode(port, make(task, index), port.reset(cfg.seed, index, cfg.scene),
                                     task.goal_image, cfg.max_steps, resolution, cfg.context_frames)
                    dist = float(np.linalg.norm(ep.final_ee_pos - task.goal_ee))
                    rec = {"policy": name, "episode": index, "target_m": task.distance, "final_m": dist,
                           "success": dist <= cfg.success_radius, "reason": ep.reason, "message": ep.message,
                           "steps": ep.steps, "goal_mse_end": ep.goal_mse[-1],
                           "plan_ms": [d.plan_ms for d in ep.decisions if d.plan_ms is not None],
                           "latent_actions": [None if d.latent_actions is None else int(d.latent_actions[0])
                                              for d in ep.decisions]}
                    records.append(rec)
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    if n_done < cfg.gifs:
                        save_episode_gif(ep, resolution, out / f"{name}_episode{index}.gif")
                bar.update(1)
                bar.set_postfix({p: sum(r["success"] for r in records if r["policy"] == p) for p in names})
                index += 1
    finally:
        bar.close()
        service.close()
    return records, skipped, time.perf_counter() - start


def policy_summary(records: list[dict], name: str) -> dict:
    """One policy's successes, rate with its 95% Wilson interval, final distances' quartiles, failures."""
    mine = [r for r in records if r["policy"] == name]
    wins = sum(r["success"] for r in mine)
    lo, hi = wilson(wins, len(mine))
    final = np.array([r["final_m"] for r in mine])
    plan_ms = [ms for r in mine for ms in r["plan_ms"]]
    return {
        "episodes": len(mine), "successes": wins, "success_rate": wins / max(len(mine), 1),
        "success_ci95": [lo, hi], "final_m_quartiles": np.percentile(final, [25, 50, 75]).round(4).tolist(),
        "failed_episodes": sum(r["reason"] == "failed" for r in mine),
        **({"plan_ms_median": float(np.median(plan_ms))} if plan_ms else {}),
    }


def intervals_overlap(a: dict, b: dict) -> bool:
    return not (a["success_ci95"][0] > b["success_ci95"][1] or b["success_ci95"][0] > a["success_ci95"][1])


def summarize(records: list[dict], cfg: ControlBenchConfig, skipped: list[int], seconds: float) -> dict:
    policies = {name: policy_summary(records, name) for name in cfg.policies}
    result = {"bench": "control", "policies": policies, "skipped_episodes": skipped,
              "target_m_quartiles": np.percentile([r["target_m"] for r in records if r["policy"] == cfg.policies[0]],
                                                  [25, 50, 75]).round(4).tolist(),
              "seconds": round(seconds, 1), "config": asdict(cfg)}
    if "mpc" in policies and "random" in policies:
        m, r = policies["mpc"], policies["random"]
        result["mpc_vs_random"] = {"ratio": m["success_rate"] / r["success_rate"] if r["success_rate"] else None,
                                   "intervals_overlap": intervals_overlap(m, r)}
    return result
