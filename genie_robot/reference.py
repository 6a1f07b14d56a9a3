"""Shipped reference models, loadable by name: `WorldModel.load("sim-rt1")`, `ckpt=sim-rt1`.

A reference is a directory under `genie_robot/references/<name>/` laid out as a training run
(`tokenizer/`, `lam/`, `dynamics/`, each one checkpoint: `model.safetensors`, `config.yaml`,
`trainer.json`; optionally `adapter.json`) plus `reference.json`, the machine-readable half of
its model card: the sha256 of every file, the commands that made it, and its held-out metrics.
Resolving a name checks every listed file against its sha256 before anything is loaded, so a
corrupted or swapped weight file is refused with its name. Torch-free: the onnxruntime side
can resolve a name too.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

REFERENCES_DIR = Path(__file__).parent / "references"
CARD = "reference.json"
STAGE_FILES = ("model.safetensors", "config.yaml", "trainer.json")


# The held-out figures a reference is judged by (keys of `genie-robot eval`'s eval.json, with a label);
# the card shows them and `scripts/compare_card.py` checks a new evaluation against them.
HEADLINE_METRICS = (
    ("tokenizer_psnr", "tokenizer reconstruction PSNR (dB)"),
    ("lam_psnr_inferred", "LAM next frame, inferred action (dB)"),
    ("lam_psnr_random", "LAM next frame, random action (dB)"),
    ("lam_psnr_best_of_all_actions", "LAM next frame, best of all actions (dB)"),
    ("copy_previous_frame_psnr", "copying the previous frame (dB)"),
    ("dynamics_next_frame_token_accuracy_inferred", "dynamics next-frame token accuracy, inferred actions"),
    ("dynamics_next_frame_token_accuracy_random", "dynamics next-frame token accuracy, random actions"),
    ("psnr_t4_inferred_actions", "PSNR at t=4, inferred actions (dB)"),
    ("psnr_t4_random_actions", "PSNR at t=4, random actions (dB)"),
    ("psnr_t4_copy_first_frame", "PSNR at t=4, first frame repeated (dB)"),
    ("delta_psnr_t4", "ΔtPSNR at t=4 (dB)"),
    ("nmi_latent_vs_world_vector_clusters", "NMI latent actions vs world_vector clusters"),
    ("adapter_mse_world_vector", "adapter world_vector MSE"),
    ("adapter_baseline_mse_world_vector", "world_vector MSE predicting the mean"),
    ("plan_cem_cost_mean", "planning goal cost, CEM"),
    ("plan_random_cost_mean", "planning goal cost, random search"),
    ("plan_cem_gain_mean", "planning: random search minus CEM, paired (± SE)"),
)
# What makes two evaluations comparable at all.
EVAL_SETTINGS = ("clips", "frames_per_clip", "maskgit_steps", "temperature", "plan_episodes", "plan_budget",
                 "plan_maskgit_steps")


class ReferenceError(ValueError):
    """An unknown reference name, or a reference whose files do not match its card."""


def available() -> list[str]:
    """Names of the references shipped with this installation."""
    if not REFERENCES_DIR.is_dir():
        return []
    return sorted(p.name for p in REFERENCES_DIR.iterdir() if (p / CARD).is_file())


def is_reference_name(value: str | Path) -> bool:
    """True for a bare name (no path separator) that is not an existing path."""
    text = str(value)
    return "/" not in text and "\\" not in text and not Path(text).exists()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card(name: str) -> dict:
    """The reference's reference.json (unverified)."""
    root = REFERENCES_DIR / name
    if not (root / CARD).is_file():
        names = available()
        raise ReferenceError(
            f"no reference model named '{name}'; shipped references: {', '.join(names) if names else 'none'} "
            f"(or pass a training run directory)")
    try:
        return json.loads((root / CARD).read_text())
    except json.JSONDecodeError as e:
        raise ReferenceError(f"{root / CARD} is not valid JSON: {e}") from None


def name_of(directory: str | Path) -> str | None:
    """The reference name of a shipped reference's directory (what an eval report records), else None."""
    path = Path(directory).resolve()
    return path.name if path.parent == REFERENCES_DIR.resolve() and (path / CARD).is_file() else None


def card_temperature(root: Path) -> float | None:
    """The MaskGIT temperature a card's held-out figures were measured at, when `root` holds a card."""
    path = Path(root) / CARD
    if not path.is_file():
        return None
    try:
        value = (json.loads(path.read_text()).get("heldout_eval") or {}).get("temperature")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ReferenceError(f"{path}: cannot read heldout_eval.temperature: {e}") from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ReferenceError(f"{path}: heldout_eval.temperature must be a finite number > 0, got {value!r}")
    return float(value)


def resolve(name: str, complete: bool = True) -> Path:
    """The directory of reference `name`, after checking every file against the card's sha256.

    `complete`: a world model needs all three stages; a reference still in training ships the
    finished ones, for later stages to start from (pass False to reach those)."""
    root = REFERENCES_DIR / name
    info = card(name)
    if complete and not info.get("complete"):
        raise ReferenceError(
            f"reference '{name}' is still in training: it ships the stages {', '.join(info.get('stages', {}))}; "
            f"a finished stage starts a later one from {root}/<stage> (e.g. train.tokenizer_ckpt={root}/tokenizer)")
    files = info.get("files")
    if not isinstance(files, dict) or not files:
        raise ReferenceError(f"{root / CARD} lists no files (expected a 'files' mapping of path -> sha256)")
    for rel, expected in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            raise ReferenceError(f"reference '{name}' is incomplete: {rel} is missing (listed in {CARD})")
        actual = sha256(path)
        if actual != expected:
            raise ReferenceError(
                f"reference '{name}': {rel} does not match its card (sha256 {actual[:16]}..., the card says "
                f"{expected[:16]}...); refusing to load it. Reinstall the package or retrain with `make reference`")
    return root
