"""Package a training run's finished stages as a shipped reference model (genie_robot/references/<name>/).

    python scripts/package_reference.py --run outputs/train/sim_rt1 --name sim-rt1 \\
        --stages tokenizer lam dynamics [--eval outputs/eval/sim-rt1/eval.json]

For each stage: the latest checkpoint's `model.safetensors`, `config.yaml` and `trainer.json`
(no optimizer or RNG state: a reference is for inference and for starting later stages from),
plus the run's `adapter.json` when it has one. `reference.json` gets the sha256 of every file,
the training provenance read from each stage's metrics (steps, wall time, final held-out
metrics from its eval.json), and the held-out evaluation given with --eval. Stages already
packaged and not named again are kept, so stages can be added one at a time as they finish
(`train.tokenizer_ckpt=genie_robot/references/<name>/tokenizer` starts the next one from it).
Written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from genie_robot.checkpoint import stage_checkpoint
from genie_robot.reference import CARD, HEADLINE_METRICS, REFERENCES_DIR, STAGE_FILES, sha256
from genie_robot.training.stages import STAGES


def stage_provenance(stage_dir: Path, ckpt: Path) -> dict:
    """Steps, training wall time and the held-out eval.json of one stage's run directory."""
    rows = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    trainer = json.loads((ckpt / "trainer.json").read_text())
    # TensorBoard names each event file after the Unix time its run started (a resumed run adds one).
    starts = [float(p.name.split(".")[3]) for p in (stage_dir / "tb").glob("events.out.tfevents.*")]
    wall = trainer["saved_at"] - min(starts) if starts else None
    eval_file = stage_dir / "eval.json"
    return {
        "step": trainer["step"],
        "train_wall_s": round(wall, 1) if wall is not None else None,  # first start to last save, pauses included
        "last_train_metrics": next((r for r in reversed(rows) if r["split"] == "train"), None),
        "heldout_eval": json.loads(eval_file.read_text()) if eval_file.is_file() else None,
    }


STAGE_METRICS = {
    "tokenizer": [("psnr", "reconstruction PSNR (dB)"), ("codes_used", "codes used")],
    "lam": [("psnr", "next-frame PSNR, inferred action (dB)"), ("psnr_random_actions", "... random action (dB)"),
            ("psnr_best_action", "... best of all actions (dB)"),
            ("psnr_copy_previous_frame", "copying the previous frame (dB)"),
            ("nmi_world_vector", "NMI codes vs world_vector clusters"), ("actions_used", "actions used")],
    "dynamics": [("masked_accuracy", "masked-token accuracy"),
                 ("next_frame_token_accuracy", "next-frame token accuracy"),
                 ("next_frame_psnr", "next-frame PSNR (dB)")],
}


def render_card(card: dict, commands: str) -> str:
    """The human half of the model card, written from reference.json so the two never disagree."""
    lines = [
        f"# Reference model `{card['name']}`",
        "",
        "Written by `scripts/package_reference.py` from `genie_robot/references/"
        f"{card['name']}/reference.json`; do not edit by hand.",
        "",
        f"Status: {'complete' if card['complete'] else 'in training: stages ' + ', '.join(card['stages'])}. "
        f"Packaged {card['packaged']['at']} at commit {card['packaged']['git_commit'][:12]} on "
        f"{card['packaged']['machine']}. Exact commands: `make reference` ({commands}).",
        "",
        "## Stages",
        "",
        "| stage | steps | training wall time | held-out metrics (val split of the training dataset) |",
        "| --- | --- | --- | --- |",
    ]
    for stage, info in card["stages"].items():
        ev = info.get("heldout_eval") or {}
        shown = "; ".join(f"{label} {ev[key]:.3f}" if isinstance(ev.get(key), float) and ev[key] % 1 else
                          f"{label} {ev[key]:g}" for key, label in STAGE_METRICS[stage] if key in ev)
        wall = f"{info['train_wall_s'] / 60:.0f} min" if info.get("train_wall_s") else "-"
        earlier, start = info.get("init_from_run"), info["data"].get("init_from")
        steps = f"{info['step']}"
        if earlier:
            steps += f" more, from {earlier['step']} steps (`train.init_from`, `make reference`)"
            if earlier.get("train_wall_s"):
                wall += f", after {earlier['train_wall_s'] / 60:.0f} min for those"
        elif start:
            steps += f" more, from `train.init_from={start}` (`make reference`)"
        if info["data"].get("lam_codes_frozen"):
            steps += ", decoder only: the codes frozen (`train.lam_codes_frozen=true`)"
        lines.append(f"| {stage} | {steps} | {wall} | {shown} ({ev.get('clips', 0):g} clips) |")
    lines += ["", "Training wall time: from the stage's first start to its last checkpoint, restarts and time "
              "shared with other jobs on the same cores included.", "", "## Data and recipe", ""]
    def described(sim: dict | None, path: str) -> str:
        return (f"the simulated dataset of `genie-robot sim` (seed {sim['seed']}, {sim['episodes']} episodes of "
                f"{sim['min_steps']}-{sim['max_steps']} steps)" if sim else f"`{path}`")

    for stage, info in card["stages"].items():
        d = info["data"]
        if d.get("tokens"):
            parts = [f"{src['clips']:,} clips of {described(src['sim'], src['path'])}, every {src['clip_hop']} "
                     f"steps" for src in d["tokens"]["sources"]]
            sim = ("clips tokenized once by the frozen tokenizer and LAM (`genie-robot tokenize-data`, "
                   f"`data.tokens`): {'; '.join(parts)}")
        else:
            sim = described(d["sim"], d["path"])
        lines.append(f"- {stage}: {sim}, the last {d['val_fraction']:.0%} of episodes held out as the val split; "
                     f"batch {d['batch_size']} clips, peak lr {d['recipe_lr']:g}, training seed {d['train_seed']}, "
                     f"`configs/model/{d['model_config']}.yaml`." + (f" {info['note']}" if info.get("note") else "")
                     + (" Weights stored as float16 (`--fp16`)." if info.get("weights_dtype") == "float16" else ""))
    lines += _eval_section(card)
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {rel} | {card['file_bytes'][rel]:,} | `{digest}` |" for rel, digest in card["files"].items()]
    lines += ["", f"Total {card['total_bytes']:,} bytes.", ""]
    return "\n".join(lines)


def _eval_section(card: dict) -> list[str]:
    """The held-out evaluations (`genie-robot eval` on episodes of a simulator seed never trained on):
    headline metrics, mean ± standard deviation over clips where the eval gives one."""
    evals = [(title, card[key]) for key, title in (("heldout_eval", "held-out evaluation"),
                                                   ("demo_eval", "make demo's evaluation")) if card.get(key)]
    if not evals:
        return []

    def cell(ev: dict, key: str) -> str:
        if not isinstance(ev.get(key), (int, float)):
            return "-"
        std = ev.get(f"{key}_std")
        if std is None and key.endswith("_gain_mean"):  # a paired gain has a standard error instead
            std = ev.get(key.removesuffix("_mean") + "_se")
        return f"{ev[key]:.4g}" + (f" ± {std:.2g}" if isinstance(std, float) else "")

    lines = ["", "## Held-out evaluation", ""]
    for title, ev in evals:
        plan = (f", planning: {ev['plan_episodes']} episode(s) of {ev['plan_budget']} candidates"
                + (f" at {ev['plan_maskgit_steps']} MaskGIT steps" if "plan_maskgit_steps" in ev else "")
                + (f", CEM lower on {ev['plan_cem_wins']}" if ev["plan_episodes"] > 1 else "")
                if ev.get("plan_episodes") else ", no planning")
        lines.append(f"- {title}: `{ev.get('data', '?')}`, {ev['clips']} clips of {ev['frames_per_clip']} frames, "
                     f"MaskGIT {ev['maskgit_steps']} steps at temperature {ev['temperature']}{plan}.")
    lines += ["", "| metric | " + " | ".join(t for t, _ in evals) + " |", "| --- |" + " --- |" * len(evals)]
    lines += [f"| {label} | " + " | ".join(cell(ev, key) for _, ev in evals) + " |"
              for key, label in HEADLINE_METRICS if any(key in ev for _, ev in evals)]
    return lines


def earlier_run(init_from: str | None) -> dict | None:
    """Steps and wall time of the run a stage started from (`train.init_from`), so that the card counts
    the whole of a stage trained in two runs (the LAM's codes, then its decoder around them). None when
    there was none, or when it is not a run directory here any more (then the card says only its path)."""
    if not init_from or not (Path(init_from) / "metrics.jsonl").is_file():
        return None
    ckpt = stage_checkpoint(Path(init_from))
    if ckpt is None:
        return None
    prov = stage_provenance(Path(init_from), ckpt)
    return {"step": prov["step"], "train_wall_s": prov["train_wall_s"]}


def token_sources(path: Path) -> dict:
    """What a stage trained from tokenized clips (`data.tokens`) was made of: each dataset's clips and the
    simulator settings beside it. The file itself is not shipped (`genie-robot tokenize-data` remakes it)."""
    from genie_robot.data.token_clips import TokenClips

    if not path.is_file():
        raise SystemExit(f"the stage trained from data.tokens={path}, which is not here to describe; make it with "
                         "`genie-robot tokenize-data` (the Makefile's command) first")
    meta = TokenClips(path).meta
    sources = []
    for src in meta["sources"]:
        sim_file = Path(src["path"]) / "genie_robot_sim.json"
        sources.append({**src, "sim": json.loads(sim_file.read_text()) if sim_file.is_file() else None})
    return {"file": str(path), "sources": sources, "val": meta["val"]}


def training_data(ckpt: Path) -> dict:
    """What a stage was trained on, from its resolved config: the dataset (with the simulator
    settings the sim writer recorded beside it, when it is a simulated one), the split and the batch."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ckpt / "config.yaml")
    sim_file = Path(cfg.data.path) / "genie_robot_sim.json"
    tokens = cfg.data.get("tokens")
    return {"path": cfg.data.path, "sim": json.loads(sim_file.read_text()) if sim_file.is_file() else None,
            "tokens": token_sources(Path(tokens)) if tokens else None,
            "init_from": cfg.train.get("init_from"), "lam_codes_frozen": bool(cfg.train.get("lam_codes_frozen", False)),
            "val_fraction": cfg.data.val_fraction, "batch_size": cfg.data.batch_size, "train_seed": cfg.train.seed,
            "model_config": cfg.model.name, "recipe_lr": OmegaConf.to_container(cfg.train.optim)[cfg.stage]["lr"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="training run directory (tokenizer/, lam/, dynamics/)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--stages", nargs="*", choices=STAGES, default=list(STAGES),
                    help="stages to (re)package from --run; none (`--stages` alone): keep the weights, record new "
                         "evaluations (e.g. after a planner change)")
    ap.add_argument("--eval", help="eval.json of `genie-robot eval` on held-out data, recorded in the card")
    ap.add_argument("--demo-eval", help="eval.json of make demo's shorter evaluation (same held-out data), so "
                    "that make demo can show its numbers against the card's")
    ap.add_argument("--dest", default=str(REFERENCES_DIR))
    ap.add_argument("--docs", help="also write the human model card (Markdown) here, e.g. docs/REFERENCE_sim-rt1.md")
    ap.add_argument("--fp16", nargs="*", default=[], choices=STAGES, metavar="STAGE",
                    help="store these stages' floating weights as float16 (loaded back into float32): what lets a "
                         "larger stage fit the repository's budget for shipped weights; evaluate the packaged model")
    ap.add_argument("--earlier", nargs="*", default=[], metavar="STAGE=DIR",
                    help="the run directory a stage started from (train.init_from) when that run was made "
                         "elsewhere (a lent GPU) and copied here: its steps and wall time join the card's")
    ap.add_argument("--note", nargs="*", default=[], metavar="STAGE=TEXT", help="one sentence on how a stage was "
                    "trained, for the card (e.g. the machine, when it was not this one)")
    ap.add_argument("--commands", default="Makefile", help="where the exact training commands are (`make reference`)")
    args = ap.parse_args()

    run, dest = Path(args.run), Path(args.dest) / args.name
    earlier = dict(x.split("=", 1) for x in args.earlier)
    notes = dict(x.split("=", 1) for x in args.note)
    tmp = dest.parent / f".tmp-{args.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if dest.is_dir():
        shutil.copytree(dest, tmp)
    else:
        tmp.mkdir(parents=True)
    old = json.loads((tmp / CARD).read_text()) if (tmp / CARD).is_file() else {}
    stages = dict(old.get("stages", {}))
    for stage in args.stages:
        ckpt = stage_checkpoint(run / stage)
        if ckpt is None:
            raise SystemExit(f"{run / stage} has no checkpoint to package")
        shutil.rmtree(tmp / stage, ignore_errors=True)
        (tmp / stage).mkdir()
        for name in STAGE_FILES:
            shutil.copy2(ckpt / name, tmp / stage / name)
        if stage in args.fp16:
            weights = load_file(ckpt / "model.safetensors")
            save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
                      tmp / stage / "model.safetensors")
        trainer = json.loads((ckpt / "trainer.json").read_text())
        trainer.pop("param_groups", None)  # optimizer hyper-parameters: not part of a reference
        (tmp / stage / "trainer.json").write_text(json.dumps(trainer, indent=2))
        stages[stage] = {"from": str(ckpt), **stage_provenance(run / stage, ckpt), "data": training_data(ckpt)}
        stages[stage]["init_from_run"] = earlier_run(earlier.get(stage) or stages[stage]["data"]["init_from"])
        if stage in args.fp16:
            stages[stage]["weights_dtype"] = "float16"
        if stage in notes:
            stages[stage]["note"] = notes[stage]
    if (run / "adapter.json").is_file():
        shutil.copy2(run / "adapter.json", tmp / "adapter.json")
    files = {p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*"))
             if p.is_file() and p.name != CARD}
    file_bytes = {f: (tmp / f).stat().st_size for f in files}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    card = {
        "name": args.name,
        "format_version": 1,
        "complete": all(s in stages for s in STAGES),
        "stages": {s: stages[s] for s in STAGES if s in stages},
        "files": files,
        "total_bytes": sum(file_bytes.values()),
        "file_bytes": file_bytes,
        "heldout_eval": json.loads(Path(args.eval).read_text()) if args.eval else old.get("heldout_eval"),
        "demo_eval": json.loads(Path(args.demo_eval).read_text()) if args.demo_eval else old.get("demo_eval"),
        "packaged": {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": commit,
                     "machine": f"{platform.machine()} {os.cpu_count()} cores"},
    }
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
    if args.docs:
        Path(args.docs).write_text(render_card(card, args.commands))
    if dest.is_dir():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    print(json.dumps({"reference": str(dest), "complete": card["complete"], "total_bytes": card["total_bytes"],
                      "files": files}))


if __name__ == "__main__":
    main()
