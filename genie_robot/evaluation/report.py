"""`genie-robot eval`: Genie's evaluation of a trained run on held-out clips, as JSON + Markdown + pictures.

- Tokenizer reconstruction PSNR and SSIM (torchmetrics) of every validation clip.
- ΔtPSNR at t (the paper's controllability metric, t=4): from the clip's first frame, generate
  t frames with the latent actions the LAM infers from the real clip, and t frames with latent
  actions drawn uniformly at random; ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t). Positive means
  the inferred actions steer the model towards what really happened.
- Latent actions against the dataset's real actions (never seen in training): NMI with k-means
  clusters of the standardized `world_vector`, and k-NN accuracy of predicting the latent
  code from the full real action (world_vector, rotation_delta, gripper), with its baseline.
- FVD only with a user-supplied I3D network (`eval.i3d`): without one it is reported as not
  computed, with the reason; no stand-in network is ever used. The file is TorchScript (the
  `i3d_torchscript.pt` FVD implementations share), which runs its own code: give only a file
  you trust, as with any model weights that are not safetensors.
- The Genie picture: for a few validation contexts, a row of rollouts under each latent action,
  and how far apart those rollouts end (`grid_rollouts`): a grid in which two codes draw the same
  rollout shows it as a small distance between them, not only to an eye on the picture.
- Planning: on held-out clips, CEM from the first frame towards the frame `plan_horizon`
  steps later, against random search with the same number of imagined candidates; the
  goal cost of both (mean and spread) and a GIF of one plan next to what really happened.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genie_robot import reference
from genie_robot.data.reader import DataConfig, read_clips
from genie_robot.inference.world_model import WorldModel
from genie_robot.metrics import frechet_distance, kmeans, knn_accuracy, nmi, psnr, ssim, standardize
from genie_robot.models.config import SAMPLING
from genie_robot.pictures import grid, save_gif, save_png
from genie_robot.planning.adapter import ACTION_KEYS, held_out_error
from genie_robot.planning.cem import plan, random_search


@dataclass
class EvalConfig:
    out: str = "outputs/eval"
    max_clips: int = 64          # validation clips to evaluate (all of them if fewer)
    t: int = 4                   # ΔtPSNR horizon, the paper's t
    steps: int = SAMPLING.steps  # MaskGIT steps per generated frame
    temperature: float | None = None  # None: the model's own (a reference's card, else Genie's 2.0)
    seed: int = 0
    grid_contexts: int = 3       # validation contexts in the per-action picture
    grid_horizon: int = 6        # frames per rollout in it (repeats of one action)
    i3d: str | None = None       # TorchScript I3D (e.g. i3d_torchscript.pt) for FVD
    plan_episodes: int = 20      # held-out clips on which CEM planning is compared with random search
    plan_horizon: int = 4        # goal = the clip's frame at this index, context = its first frame
    plan_samples: int = 16
    plan_iterations: int = 3
    plan_steps: int = 8          # MaskGIT steps inside planning (cheaper than eval.steps)
    plan_cost: str = "pixel"
    # Planning episodes are logged to <out>/planning.jsonl as they finish; true: reuse those logged with the same
    # model, clips and settings, so a cut evaluation continues (40 episodes plan for over 2 hours on 2 cores).
    resume: bool = False


def _fvd(i3d: str | None, real: np.ndarray, fake: np.ndarray) -> tuple[float | None, str]:
    if not i3d:
        return None, "not computed: no I3D network given (eval.i3d=<TorchScript I3D, e.g. i3d_torchscript.pt>)"
    path = Path(i3d)
    if not path.is_file():
        return None, f"not computed: I3D file {path} does not exist"
    if len(real) < 2:
        return None, "not computed: FVD needs at least 2 videos"
    import torch

    net = torch.jit.load(str(path), map_location="cpu").eval()

    def features(videos: np.ndarray) -> np.ndarray:
        # The common TorchScript I3D takes [N, 3, T, H, W] in [-1, 1] at 224x224.
        x = torch.from_numpy(videos).float().div(127.5).sub(1).permute(0, 2, 1, 3, 4)
        x = torch.nn.functional.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        with torch.no_grad():
            out = net(x, rescale=False, resize=False, return_features=True)
        return out.reshape(len(videos), -1).double().numpy()

    return frechet_distance(features(real), features(fake)), f"computed with {path.name}"


def evaluate(engine: WorldModel, data: DataConfig, cfg: EvalConfig) -> dict:
    """`data` must already match the model's resolution and window (`WorldModel.match_data`)."""
    if cfg.temperature is None:  # the report names the temperature it used
        cfg = replace(cfg, temperature=engine.temperature)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, real_actions = read_clips(data, "val", cfg.max_clips, ACTION_KEYS)  # world_vector first
    n, t_len = frames.shape[:2]
    if cfg.t >= t_len:
        raise ValueError(f"ΔtPSNR at t={cfg.t} needs clips of more than {cfg.t} frames, these have {t_len}")
    rng = np.random.default_rng(cfg.seed)
    num_actions = engine.cfg.lam.num_actions
    rec_psnr, rec_ssim, inferred_psnr, random_psnr, copy_psnr, codes, generated = [], [], [], [], [], [], []
    for clip in tqdm(frames, desc="eval clips", unit="clip"):
        recon = engine.decode(engine.encode(clip))
        rec_psnr.append(psnr(recon, clip).mean())
        rec_ssim.append(ssim(recon, clip))
        a = engine.infer_actions(clip)
        codes.append(a)
        plan = np.stack([a[: cfg.t], rng.integers(0, num_actions, cfg.t)])
        gen = engine.imagine(clip[:1], plan, steps=cfg.steps, temperature=cfg.temperature, rng=rng)
        target = clip[cfg.t][None]
        inferred_psnr.append(psnr(gen.frames[0, cfg.t - 1][None], target)[0])
        random_psnr.append(psnr(gen.frames[1, cfg.t - 1][None], target)[0])
        copy_psnr.append(psnr(clip[:1], target)[0])  # no motion at all: the first frame repeated
        generated.append(np.concatenate([clip[:1], gen.frames[0]]))
    codes_flat = np.concatenate(codes)
    delta = np.array(inferred_psnr) - np.array(random_psnr)
    acts = real_actions[:, :-1].reshape(-1, real_actions.shape[-1])  # entry t leads from frame t to t+1
    clusters = kmeans(standardize(acts[:, :3]), num_actions, seed=cfg.seed)
    knn, majority = knn_accuracy(standardize(acts), codes_flat, seed=cfg.seed)
    fvd, fvd_note = _fvd(cfg.i3d, frames[:, : cfg.t + 1], np.stack(generated))
    result = {
        "data": str(data.path),
        "clips": int(n), "frames_per_clip": int(t_len), "maskgit_steps": cfg.steps, "temperature": cfg.temperature,
        "vocab": int(engine.cfg.tokenizer.num_codes),
        "tokenizer_psnr": float(np.mean(rec_psnr)),
        "tokenizer_ssim": float(np.mean(rec_ssim)),
        f"psnr_t{cfg.t}_inferred_actions": float(np.mean(inferred_psnr)),
        f"psnr_t{cfg.t}_inferred_actions_std": float(np.std(inferred_psnr)),
        f"psnr_t{cfg.t}_random_actions": float(np.mean(random_psnr)),
        f"psnr_t{cfg.t}_random_actions_std": float(np.std(random_psnr)),
        f"psnr_t{cfg.t}_copy_first_frame": float(np.mean(copy_psnr)),
        f"psnr_t{cfg.t}_copy_first_frame_std": float(np.std(copy_psnr)),
        f"delta_psnr_t{cfg.t}": float(delta.mean()),
        f"delta_psnr_t{cfg.t}_std": float(delta.std()),
        "latent_actions_used": int(len(np.unique(codes_flat))),
        "latent_action_histogram": np.bincount(codes_flat, minlength=num_actions).tolist(),
        "nmi_latent_vs_world_vector_clusters": nmi(codes_flat, clusters),
        "knn_accuracy_latent_from_real_action": knn,
        "majority_baseline_accuracy": majority,
        "fvd": fvd, "fvd_note": fvd_note,
        "model": reference.name_of(engine.source) or engine.source,
        **action_response(engine, frames, np.stack(codes), cfg.seed),
        **_adapter_error(engine, codes, real_actions),
        "world_vector_per_latent_action": mean_world_vector(codes_flat, acts[:, :3], pixel_change(frames),
                                                             num_actions),
    }
    result["pictures"], result["grid_rollouts"] = action_grid(engine, frames, cfg, out)
    if cfg.plan_episodes > 0:
        result.update(_planning(engine, frames, cfg, out))
        result["pictures"].append(str(out / "plan.gif"))
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    (out / "eval.md").write_text(_markdown(result, cfg))
    return result


def action_response(engine: WorldModel, frames: np.ndarray, codes: np.ndarray, seed: int,
                    transitions: Sequence[int] | None = None, per_clip: bool = False) -> dict:
    """Does each part use the latent action? One teacher-forced step per transition, no sampling.

    ΔtPSNR is near zero both when the LAM's codes carry no motion and when the dynamics model
    ignores them, and sampling noise hides which; these figures separate the two, each against
    copying the previous frame:
    - LAM: next-frame PSNR of its decoder with the inferred action, a random action, and the
      best of all actions per transition (what the codes can say at most).
    - Dynamics: frame t fully masked after real frames 0..t-1, one pass; token accuracy and
      PSNR of the decoded argmax frame with inferred vs random actions, and on the tokens that
      change from frame t-1 (where copying scores nothing) accuracy and the negative
      log-likelihood of the true code (uniform over the vocabulary: log V nats). The likelihood
      moves long before the argmax does, so a short training run's effect shows there first.
    `transitions`: the frames t the dynamics predicts (default every one, 1..T-1).
    Each value: mean and standard deviation over clips of the per-clip mean over transitions;
    `per_clip` adds the per-clip values (`per_clip`: key -> list), for paired comparisons of two models.
    `scripts/dynamics_probe.py` runs this on a dynamics checkpoint alone, without rollouts.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed + 1)
    num_actions = engine.cfg.lam.num_actions
    rows: dict[str, list[float]] = {}

    def add(key: str, values) -> None:
        rows.setdefault(key, []).append(float(np.mean(values)))

    def u8(x: torch.Tensor) -> np.ndarray:
        return (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    with torch.no_grad():
        for clip, a in zip(frames, codes, strict=True):
            x = engine._tensor(clip[None])
            inferred = torch.from_numpy(a[None]).to(engine.device)
            random = torch.from_numpy(rng.integers(0, num_actions, inferred.shape)).to(engine.device)
            add("copy_previous_frame_psnr", psnr(clip[:-1], clip[1:]))
            if engine.lam is not None and engine.cfg.lam.input == "pixels":
                lam = engine.lam
                add("lam_psnr_inferred", psnr(u8(lam.decode_ids(x, inferred)[0]), clip[1:]))
                add("lam_psnr_random", psnr(u8(lam.decode_ids(x, random)[0]), clip[1:]))
                each = [psnr(u8(lam.decode_ids(x, torch.full_like(inferred, k))[0]), clip[1:])
                        for k in range(num_actions)]
                add("lam_psnr_best_of_all_actions", np.max(each, axis=0))
            z = engine.tokenizer.encode(x)
            acc: dict[str, list[float]] = {}
            for t in transitions or range(1, z.shape[1]):
                acc.setdefault("copy", []).append(float((z[:, t - 1] == z[:, t]).float().mean()))
                masked = z[:, : t + 1].clone()
                masked[:, t] = engine.dynamics.mask_id
                changed = z[:, t - 1] != z[:, t]
                for name, act in (("inferred", inferred), ("random", random)):
                    logits = engine.dynamics(masked, act[:, :t])[:, t]
                    ids = logits.argmax(-1)
                    acc.setdefault(name, []).append(float((ids == z[:, t]).float().mean()))
                    if changed.any():  # copying gets none of these: only the action and the motion can
                        acc.setdefault(f"changed_{name}", []).append(float((ids == z[:, t])[changed].float().mean()))
                        acc.setdefault(f"nll_{name}", []).append(
                            float(F.cross_entropy(logits[changed].float(), z[:, t][changed])))
                    decoded = u8(engine.tokenizer.decode(ids[:, None])[0])
                    acc.setdefault(f"psnr_{name}", []).append(float(psnr(decoded, clip[t][None])[0]))
            add("copy_previous_frame_token_accuracy", acc["copy"])
            for name in ("inferred", "random"):
                add(f"dynamics_next_frame_token_accuracy_{name}", acc[name])
                if acc.get(f"changed_{name}"):
                    add(f"dynamics_changed_token_accuracy_{name}", acc[f"changed_{name}"])
                    add(f"dynamics_changed_token_nll_{name}", acc[f"nll_{name}"])
                add(f"dynamics_next_frame_psnr_{name}", acc[f"psnr_{name}"])
    out: dict = {}
    for key, values in rows.items():
        out[key], out[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    if per_clip:
        out["per_clip"] = rows
    return out


def _adapter_error(engine: WorldModel, codes: list[np.ndarray], real_actions: np.ndarray) -> dict:
    """The fitted latent-to-robot adapter on these clips: its per-group MSE against predicting the
    mean action of the data it was fitted on (what a planner loses by not using it). Nothing
    without an adapter, or with one saved before adapters recorded that mean."""
    if engine.adapter is None or "train_mean_action" not in engine.adapter.info:
        return {}
    err = held_out_error(engine.adapter, codes, list(real_actions[:, :-1]),
                         np.asarray(engine.adapter.info["train_mean_action"]))
    return {"adapter_method": engine.adapter.method, **{f"adapter_{k}": v for k, v in err.items()}}


def pixel_change(frames: np.ndarray) -> np.ndarray:
    """Mean absolute pixel difference (0-255) of each transition [N * (T - 1)], in the order of the codes."""
    return np.stack([np.abs(c[1:].astype(np.float32) - c[:-1].astype(np.float32)).mean(axis=(1, 2, 3))
                     for c in frames]).reshape(-1)


def mean_world_vector(codes: np.ndarray, world_vector: np.ndarray, pixel_change: np.ndarray,
                       num_actions: int) -> list[dict]:
    """For each latent action: how many transitions it labels, the mean real world_vector of those (which
    way that code moves the arm, in the dataset's units) and its spread per axis, and how much the real
    frames change across them (mean absolute pixel difference, 0-255). A code whose transitions move
    the frame but whose mean world_vector is small labels motions in differing directions: a model that
    averages draws it as holding still."""
    rows = []
    for k in range(num_actions):
        sel = codes == k
        rows.append({"action": k, "count": int(sel.sum()),
                     "mean_world_vector": world_vector[sel].mean(0).round(4).tolist() if sel.any() else None,
                     "world_vector_std": world_vector[sel].std(0).round(4).tolist() if sel.any() else None,
                     "mean_pixel_change": round(float(pixel_change[sel].mean()), 2) if sel.any() else None})
    return rows


def action_grid(engine: WorldModel, frames: np.ndarray, cfg: EvalConfig, out: Path) -> tuple[list[str], dict]:
    """Per context: one row per latent action, that action repeated, after the context frame; and how far
    apart the rows end (`grid_distances`)."""
    paths, motion, pairwise = [], [], []
    num_actions = engine.cfg.lam.num_actions
    picks = np.linspace(0, len(frames) - 1, min(cfg.grid_contexts, len(frames))).round().astype(int)
    for i, idx in enumerate(picks):
        ctx = frames[idx, :1]
        plan = np.repeat(np.arange(num_actions)[:, None], cfg.grid_horizon, axis=1)
        gen = engine.imagine(ctx, plan, steps=cfg.steps, temperature=cfg.temperature, seed=cfg.seed + i)
        rows = [np.concatenate([ctx, gen.frames[a]]) for a in range(num_actions)]
        image = grid(rows, [f"latent action {a}" for a in range(num_actions)])
        paths.append(str(save_png(image, out / f"actions_context{i}.png")))
        side = np.concatenate(rows, axis=3)  # GIF: all actions side by side, frame by frame
        paths.append(str(save_gif(side, out / f"actions_context{i}.gif", fps=2, scale=2)))
        m, d = grid_distances(engine.decode(engine.encode(ctx))[0], gen.frames[:, -1])
        motion.append(m)
        pairwise.append(d)
    return paths, _grid_summary(np.array(motion), np.array(pairwise), cfg.grid_horizon)


def grid_distances(start: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far each action's rollout ends from where it started and from every other action's end.

    `start` uint8 [3, h, w] is the context frame through the tokenizer (so its own reconstruction error
    is not counted as motion); `last` uint8 [A, 3, h, w] each action's last imagined frame. Returns the
    mean absolute pixel difference (0-255) of each last frame to `start` [A], and between every two [A, A].
    """
    end = last.astype(np.float32)
    motion = np.abs(end - start.astype(np.float32)).mean(axis=(1, 2, 3))
    pairwise = np.abs(end[:, None] - end[None]).mean(axis=(2, 3, 4))
    return motion, pairwise


def _grid_summary(motion: np.ndarray, pairwise: np.ndarray, horizon: int) -> dict:
    """Means over the grid's contexts: each action's motion and its nearest other action, and the closest pair."""
    m, d = motion.mean(0, dtype=np.float64), pairwise.mean(0, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(1)
    a, b = np.unravel_index(d.argmin(), d.shape)
    return {"contexts": int(len(motion)), "horizon": horizon, "motion": m.round(2).tolist(),
            "nearest_other": [[int(k), round(float(d[i, k]), 2)] for i, k in enumerate(nearest)],
            "closest_pair": [int(min(a, b)), int(max(a, b)), round(float(d[a, b]), 2)]}


def _planning(engine: WorldModel, frames: np.ndarray, cfg: EvalConfig, out: Path) -> dict:
    """CEM vs random search toward real future frames of held-out clips (same imagined budget)."""
    if cfg.plan_horizon >= frames.shape[1]:
        raise ValueError(f"eval.plan_horizon={cfg.plan_horizon} needs clips of more frames than {frames.shape[1]}")
    picks = np.linspace(0, len(frames) - 1, min(cfg.plan_episodes, len(frames))).round().astype(int)
    budget = cfg.plan_samples * cfg.plan_iterations
    # What makes a logged episode reusable: the model, the clips (a digest of their frames) and every setting.
    key = {"model": reference.name_of(engine.source) or str(engine.source),
           "clips": hashlib.sha256(frames.tobytes()).hexdigest()[:16],
           "temperature": engine.temperature if cfg.temperature is None else cfg.temperature,
           **{k: getattr(cfg, k) for k in ("plan_horizon", "plan_samples", "plan_iterations", "plan_steps",
                                           "plan_cost", "seed")}}
    log_path = out / "planning.jsonl"
    logged = {}
    if cfg.resume and log_path.is_file():
        for line in log_path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("key") == key:
                logged[(rec["clip"], rec["seed"])] = rec
    elif log_path.exists():
        log_path.unlink()
    cem, rand = [], []
    with log_path.open("a") as log:
        for i, idx in enumerate(tqdm(picks, desc="planning", unit="clip")):
            seed = cfg.seed + i
            if (int(idx), seed) in logged:
                cem.append(logged[(int(idx), seed)]["cem"])
                rand.append(logged[(int(idx), seed)]["random"])
                continue
            ctx, goal = frames[idx, :1], frames[idx, cfg.plan_horizon]
            res = plan(engine, ctx, goal, cfg.plan_horizon, cfg.plan_samples, cfg.plan_iterations, seed=seed,
                       cost=cfg.plan_cost, steps=cfg.plan_steps, temperature=cfg.temperature)
            cem.append(res.cost)
            rand.append(random_search(engine, ctx, goal, cfg.plan_horizon, budget, cfg.plan_samples,
                                      seed=seed, cost=cfg.plan_cost, steps=cfg.plan_steps,
                                      temperature=cfg.temperature))
            log.write(json.dumps({"key": key, "clip": int(idx), "seed": seed, "cem": cem[-1], "random": rand[-1]})
                      + "\n")
            log.flush()
            if i == 0:  # real clip (context .. goal) left, the plan's imagined frames right
                real = frames[idx, : cfg.plan_horizon + 1]
                imagined = np.concatenate([ctx, res.frames])
                save_gif(np.concatenate([real, imagined], axis=3), out / "plan.gif", fps=2, scale=3)
    cem_a, rand_a = np.array(cem), np.array(rand)
    # Paired by clip: random search's cost minus CEM's, and its standard error (CEM is better by more
    # than two standard errors when the mean exceeds twice the SE).
    gain = rand_a - cem_a
    gain_se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else None
    return {"plan_episodes": len(picks), "plan_cost": cfg.plan_cost, "plan_budget": budget,
            "plan_maskgit_steps": cfg.plan_steps,
            "plan_cem_cost_mean": float(cem_a.mean()), "plan_cem_cost_std": float(cem_a.std()),
            "plan_random_cost_mean": float(rand_a.mean()), "plan_random_cost_std": float(rand_a.std()),
            "plan_cem_wins": int((cem_a < rand_a).sum()), "plan_cem_gain_mean": float(gain.mean()),
            "plan_cem_gain_se": gain_se, "plan_cem_costs": cem_a.tolist(), "plan_random_costs": rand_a.tolist()}


def _pm(r: dict, key: str, digits: int = 2) -> str:
    """'mean ± std' of a result key that has a `_std` twin."""
    return f"{r[key]:.{digits}f} ± {r[key + '_std']:.{digits}f}"


def _plan_steps(r: dict) -> str:
    """', N MaskGIT steps' of a result's planning; results written before the key existed have none."""
    return f", {r['plan_maskgit_steps']} MaskGIT steps" if "plan_maskgit_steps" in r else ""


def _vec(v: list[float] | None, fmt: str) -> str:
    return ", ".join(format(x, fmt) for x in v) if v else "-"


def _grid_table(g: dict | None) -> list[str]:
    """The grid's distances as a table (results written before they existed have none)."""
    if not g:
        return []
    a, b, dist = g["closest_pair"]
    return [
        f"How far apart the rollouts below end: mean absolute pixel difference (0-255) of each action's frame "
        f"{g['horizon']} from the context frame (through the tokenizer) and from the nearest other action's frame "
        f"{g['horizon']}, mean over {g['contexts']} context(s). Closest pair: actions {a} and {b}, {dist:.2f}.",
        "",
        "| latent action | moved from the context | nearest other action | distance to it |",
        "| --- | --- | --- | --- |",
        *[f"| {i} | {m:.2f} | {k} | {dk:.2f} |" for i, (m, (k, dk)) in enumerate(zip(g["motion"], g["nearest_other"],
                                                                                    strict=True))],
        "",
    ]


def _markdown(r: dict, cfg: EvalConfig) -> str:
    t = cfg.t
    return "\n".join([
        f"# Evaluation of {r['model']}",
        "",
        f"{r['clips']} validation clips of {r['frames_per_clip']} frames; MaskGIT {r['maskgit_steps']} steps at "
        f"temperature {r['temperature']}.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| tokenizer reconstruction PSNR | {r['tokenizer_psnr']:.2f} dB |",
        f"| tokenizer reconstruction SSIM | {r['tokenizer_ssim']:.3f} |",
        f"| PSNR at t={t}, inferred latent actions | {_pm(r, f'psnr_t{t}_inferred_actions')} dB |",
        f"| PSNR at t={t}, random latent actions | {_pm(r, f'psnr_t{t}_random_actions')} dB |",
        f"| PSNR at t={t}, the first frame repeated (no motion) | {_pm(r, f'psnr_t{t}_copy_first_frame')} dB |",
        f"| **ΔtPSNR at t={t}** | **{r[f'delta_psnr_t{t}']:.2f} dB** (std over clips "
        f"{r[f'delta_psnr_t{t}_std']:.2f}) |",
        f"| latent actions used | {r['latent_actions_used']} (histogram {r['latent_action_histogram']}) |",
        f"| NMI(latent action, k-means of world_vector) | {r['nmi_latent_vs_world_vector_clusters']:.3f} |",
        f"| k-NN accuracy of latent action from real action | {r['knn_accuracy_latent_from_real_action']:.3f} "
        f"(majority baseline {r['majority_baseline_accuracy']:.3f}) |",
        f"| FVD | {r['fvd'] if r['fvd'] is not None else '-'} ({r['fvd_note']}) |",
        *([f"| planning cost ({r['plan_cost']}), CEM, {r['plan_episodes']} clips, {r['plan_budget']} candidates"
           f"{_plan_steps(r)} | "
           f"{r['plan_cem_cost_mean']:.4f} ± {r['plan_cem_cost_std']:.4f} |",
           f"| planning cost, random search, same budget | {r['plan_random_cost_mean']:.4f} ± "
           f"{r['plan_random_cost_std']:.4f} (CEM lower on {r['plan_cem_wins']} of {r['plan_episodes']}) |",
           f"| random search's cost minus CEM's, paired by clip | {r['plan_cem_gain_mean']:+.4f}"
           + (f" ± {r['plan_cem_gain_se']:.4f} (standard error) |" if r.get("plan_cem_gain_se") is not None
              else " (one clip: no standard error) |")]
          if "plan_episodes" in r else []),
        *([f"| latent-to-robot adapter ({r['adapter_method']}), world_vector MSE | "
           f"{r['adapter_mse_world_vector']:.3g} vs {r['adapter_baseline_mse_world_vector']:.3g} predicting the "
           f"mean (the adapter's error is {r['adapter_mse_world_vector'] / r['adapter_baseline_mse_world_vector']:.0%} "
           f"of the mean's) |"]
          if "adapter_mse_world_vector" in r else []),
        "",
        "## Does the model respond to its latent actions?",
        "",
        "One teacher-forced step per transition (real frames before it, no sampling), mean ± std over clips.",
        "",
        "| next frame | inferred action | random action | best of all actions | copy previous frame |",
        "| --- | --- | --- | --- | --- |",
        *([f"| LAM decoder PSNR (dB) | {_pm(r, 'lam_psnr_inferred')} | {_pm(r, 'lam_psnr_random')} | "
           f"{_pm(r, 'lam_psnr_best_of_all_actions')} | {_pm(r, 'copy_previous_frame_psnr')} |"]
          if "lam_psnr_inferred" in r else []),
        f"| dynamics PSNR (dB) | {_pm(r, 'dynamics_next_frame_psnr_inferred')} | "
        f"{_pm(r, 'dynamics_next_frame_psnr_random')} | - | {_pm(r, 'copy_previous_frame_psnr')} |",
        f"| dynamics token accuracy | {_pm(r, 'dynamics_next_frame_token_accuracy_inferred', 3)} | "
        f"{_pm(r, 'dynamics_next_frame_token_accuracy_random', 3)} | - | "
        f"{_pm(r, 'copy_previous_frame_token_accuracy', 3)} |",
        *([f"| dynamics token accuracy where the frame changes | "
           f"{_pm(r, 'dynamics_changed_token_accuracy_inferred', 3)} | "
           f"{_pm(r, 'dynamics_changed_token_accuracy_random', 3)} | - | 0 |"]
          if "dynamics_changed_token_accuracy_inferred" in r else []),
        *([f"| dynamics NLL of the true code where the frame changes (nats; uniform "
           f"{math.log(r['vocab']):.2f}) | {_pm(r, 'dynamics_changed_token_nll_inferred')} | "
           f"{_pm(r, 'dynamics_changed_token_nll_random')} | - | - |"]
          if "dynamics_changed_token_nll_inferred" in r else []),
        "",
        "Which way each latent action moves the arm: the mean real `world_vector` of the transitions it labels, its "
        "spread, and how much the real frames change across them (mean absolute pixel difference, 0-255).",
        "",
        "| latent action | transitions | mean world_vector (x, y, z) | its std (x, y, z) | real frame change |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {row['action']} | {row['count']} | {_vec(row.get('mean_world_vector'), '+.4f')} | "
          f"{_vec(row.get('world_vector_std'), '.4f')} | "
          f"{row['mean_pixel_change'] if row.get('mean_pixel_change') is not None else '-'} |"
          for row in r["world_vector_per_latent_action"]],
        "",
        *_grid_table(r.get("grid_rollouts")),
        "Rollouts under each latent action:",
        "",
        *[f"![]({Path(p).name})" for p in r["pictures"] if p.endswith(".png")],
        "",
    ])
