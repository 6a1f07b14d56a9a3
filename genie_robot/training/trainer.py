"""One training loop for all three Genie stages.

`genie-robot train stage=<tokenizer|lam|dynamics> model=<size> train=<recipe> data=<source>`.
AdamW with per-stage defaults, linear warmup then cosine decay, gradient clipping and
accumulation, bf16 autocast on CUDA (fp32 on CPU), optional torch.compile and activation
checkpointing, DDP or FSDP2 under torchrun, atomic checkpoints with exact resume,
TensorBoard scalars and images, a progress bar with ETA.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from tqdm import tqdm

from genie_robot import pictures, reference
from genie_robot.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    stage_checkpoint,
    unwrap,
)
from genie_robot.config import typed
from genie_robot.data.reader import ClipDataset, DataConfig
from genie_robot.data.token_clips import TokenClips
from genie_robot.models import ModelConfig
from genie_robot.training import parallel
from genie_robot.training.stages import make_stage

# bf16 autocast on a CPU runs its matmuls as oneDNN primitives, cached per shape (1,024 by default), and the
# dynamics scores only the masked tokens, whose count changes every step: each step added a primitive with its
# own buffers, about 150 MB a step at 8 clips of sim_rt1, until the kernel killed the run (24 GB at step 128).
# A small cache holds memory flat and the step as fast (docs/MODELS.md). Read by oneDNN when it creates its
# first primitive, so this must run before any; a value already set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def save_png(image_CHW: torch.Tensor, path: Path) -> None:
    """A [C, H, W] float image in [0, 1] as a PNG (pictures.save_png on its uint8 HWC form)."""
    pictures.save_png((image_CHW.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy(), path)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable output directory, ...)."""


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr: float = 3e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.9])
    weight_decay: float = 1e-4
    warmup_steps: int = 1000


@dataclass
class TrainConfig:
    steps: int = 1000
    grad_accum: int = 1
    clip_grad: float = 1.0
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    activation_checkpointing: bool = False
    parallel: str = "auto"  # auto (ddp under torchrun) | none | ddp | fsdp
    out_dir: str = "outputs/train"
    log_every: int = 10
    eval_every: int = 200
    ckpt_every: int = 500
    keep_last: int = 3
    resume: bool = False
    stop_at: int | None = None  # end this run early at this step, checkpointed (job time limits); resume later
    seed: int = 0
    num_workers: int = 0
    tokenizer_ckpt: str | None = None
    lam_ckpt: str | None = None
    # Weights (not optimizer state) of a trained checkpoint of the same stage to start from, e.g. a
    # shipped dynamics model fine-tuned with another recipe; ignored when resuming (the run's own
    # checkpoint has them). The model config must match.
    init_from: str | None = None
    # init_from (and tokenizer_ckpt/lam_ckpt) may name a shipped reference (`sim-rt1`): its stage of the same
    # name; a later stage then also takes the reference's tokenizer and LAM unless they are set.
    # With init_from: start from weights trained against other frozen checkpoints than this run's (a dynamics
    # fine-tuned onto a tokenizer or LAM that was itself fine-tuned); off, that is an error.
    init_from_other_lineage: bool = False
    # With init_from: layers this config adds to the checkpoint's model start fresh, their residual
    # outputs at zero (checkpoint.load_weights), instead of being an error.
    init_from_allow_new: bool = False
    # LAM stage: train only the decoder around the codes of init_from (LatentActionModel.freeze_codes),
    # so a dynamics model trained on those codes stays valid (docs/MODELS.md: "The LAM decoder retrained").
    lam_codes_frozen: bool = False
    # Tokenizer stage: train only the decoder around the codes of init_from (VideoTokenizer.freeze_codes): a new
    # scene drawn better with the same tokens, so the dynamics and LAM trained on them stay valid.
    tokenizer_codes_frozen: bool = False
    progress: bool = True
    optim: dict[str, OptimConfig] = field(default_factory=dict)  # per stage


def lr_at(step: int, opt: OptimConfig, total: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `total` steps."""
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    progress = min(1.0, (step - opt.warmup_steps) / max(1, total - opt.warmup_steps))
    return opt.min_lr + 0.5 * (opt.lr - opt.min_lr) * (1 + math.cos(math.pi * progress))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: norms, biases, embeddings of positions and codebooks stay undecayed."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "pos" not in name and "codebook" not in name else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.stage_name = str(cfg.stage)
        self.tcfg = typed(cfg.train, TrainConfig)
        self.mcfg = typed(cfg.model, ModelConfig)
        self.dcfg = typed(cfg.data, DataConfig)
        self.mcfg.validate()
        if list(self.dcfg.resolution) != list(self.mcfg.resolution) or self.dcfg.clip_frames != self.mcfg.frames:
            raise ValueError(
                f"data clips ({self.dcfg.clip_frames} frames at {self.dcfg.resolution}) do not match the model "
                f"({self.mcfg.frames} frames at {self.mcfg.resolution}); set data.clip_frames/data.resolution")
        self._resolve_references()
        if self.stage_name not in self.tcfg.optim:
            raise ValueError(f"train.optim has no settings for stage '{self.stage_name}'")
        self.opt_cfg = self.tcfg.optim[self.stage_name]

        self.rank, self.world, self.device = parallel.init_distributed()
        self.is_main = self.rank == 0
        torch.manual_seed(self.tcfg.seed)
        self.out = Path(self.tcfg.out_dir) / self.stage_name
        self._check_writable()
        precision = self.tcfg.precision
        self.bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")

        self.stage = make_stage(self.stage_name, self.mcfg, self.device, self.tcfg)
        self.token_clips = self._open_token_clips() if self.dcfg.tokens else None
        model = self.stage.model.to(self.device)
        if self.tcfg.activation_checkpointing:
            parallel.apply_activation_checkpointing(model)
        if self.tcfg.compile:
            parallel.apply_compile(model)
        mode = self.tcfg.parallel if self.tcfg.parallel != "auto" else ("ddp" if self.world > 1 else "none")
        if mode == "ddp":
            model = parallel.apply_ddp(model, self.device)
        elif mode == "fsdp":
            model = parallel.apply_fsdp(model, self.bf16)
        self.model = model
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, self.opt_cfg.weight_decay), lr=self.opt_cfg.lr, betas=tuple(self.opt_cfg.betas),
            fused=self.device.type == "cuda")
        self.step = 0
        self.data_pos = {"epoch": 0, "batch": 0}
        self.last_ckpt: Path | None = None
        if self.tcfg.resume:
            self._resume()
        elif self.tcfg.init_from:
            self._init_from(Path(self.tcfg.init_from))

    # --- setup ------------------------------------------------------------------------
    def _resolve_references(self) -> None:
        """Reference names in init_from / tokenizer_ckpt / lam_ckpt become their checked directories."""
        t = self.tcfg
        ref_root = None
        if t.init_from and reference.is_reference_name(t.init_from):
            ref_root = reference.resolve(t.init_from, complete=False)
            stage_dir = ref_root / self.stage_name
            if not stage_dir.is_dir():
                raise CheckpointError(f"train.init_from={t.init_from}: the reference ships no {self.stage_name} stage "
                                      f"(it has {sorted(p.name for p in ref_root.iterdir() if p.is_dir())})")
            self._check_reference_config(t.init_from, stage_dir)
            t.init_from = str(stage_dir)
        for key in ("tokenizer_ckpt", "lam_ckpt"):
            value = getattr(t, key)
            if value and reference.is_reference_name(value):
                setattr(t, key, str(reference.resolve(value, complete=False) / key.removesuffix("_ckpt")))
            elif value is None and ref_root is not None and (ref_root / key.removesuffix("_ckpt")).is_dir():
                # Tuned in this run (an earlier stage's checkpoints in out_dir), else the reference's, frozen.
                component = key.removesuffix("_ckpt")
                own = Path(t.out_dir) / component
                tuned = component != self.stage_name and stage_checkpoint(own) is not None
                setattr(t, key, str(own if tuned else ref_root / component))

    def _check_reference_config(self, name: str, stage_dir: Path) -> None:
        """Fine-tuning keeps the reference's architecture: name the model config it needs, not tensor shapes."""
        from omegaconf import OmegaConf

        saved = typed(OmegaConf.load(stage_dir / "config.yaml").model, ModelConfig)
        component = self.stage_name
        ours, theirs = getattr(self.mcfg, component), getattr(saved, component)
        diffs = [f"{component}.{f}" for f in vars(theirs) if getattr(ours, f) != getattr(theirs, f)]
        diffs += [f for f in ("resolution", "frames") if getattr(self.mcfg, f) != getattr(saved, f)]
        if diffs:
            raise CheckpointError(
                f"train.init_from={name}: the reference's {component} is a model={saved.name} model and this run's "
                f"config (model={self.mcfg.name}) differs in {diffs}; fine-tune it with model={saved.name}")

    def _check_writable(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise TrainingError(f"output directory {self.out} is not writable: {e.strerror or e}") from e

    def _resume(self) -> None:
        ckpt = latest_checkpoint(self.out / "checkpoints")
        if ckpt is None:
            raise CheckpointError(f"train.resume=true but {self.out / 'checkpoints'} holds no checkpoint")
        state = load_checkpoint(ckpt, self.model, self.optimizer)
        self._check_lineage(state, str(ckpt))
        self.step, self.data_pos, self.last_ckpt = state["step"], state["data_position"], ckpt
        if self.is_main:
            print(f"resumed {self.stage_name} from {ckpt} at step {self.step}")

    def _check_lineage(self, state: dict, source: str) -> None:
        """A checkpoint of this stage must have been trained against this run's frozen checkpoints."""
        if state.get("lineage", {}) not in (self.stage.lineage, {**self.stage.lineage, **self.stage.legacy_lineage}):
            raise CheckpointError(
                f"{source} was trained against other frozen checkpoints ({state.get('lineage')}) than this run "
                f"({self.stage.lineage}); point train.tokenizer_ckpt/lam_ckpt at the ones it used")

    def _init_from(self, path: Path) -> None:
        ckpt = stage_checkpoint(path) or path  # a stage's run directory: its latest checkpoint
        if not (ckpt / "model.safetensors").is_file():
            raise CheckpointError(f"train.init_from={path} is not a checkpoint (no model.safetensors in {ckpt})")
        state = json.loads((ckpt / "trainer.json").read_text()) if (ckpt / "trainer.json").is_file() else {}
        if not self.tcfg.init_from_other_lineage:
            try:
                self._check_lineage(state, f"train.init_from={path}")
            except CheckpointError as e:
                raise CheckpointError(
                    f"{e}, or fine-tune it onto these with train.init_from_other_lineage=true") from None
        new = load_weights(ckpt, self.model, allow_new=self.tcfg.init_from_allow_new)
        tokenizer = getattr(self.stage, "tokenizer", None)
        codes = getattr(unwrap(self.model), "codes", None)
        if self.tcfg.init_from_other_lineage and codes is not None and tokenizer is not None:
            unwrap(self.model).set_codes(tokenizer.vq.codebook)  # code_vector: score against this run's codes
        if self.is_main:
            print(f"{self.stage_name}: weights from {ckpt}" + (f"; {len(new)} new tensors start fresh" if new else ""))

    def _open_token_clips(self) -> TokenClips:
        """data.tokens: clips tokenized by this run's frozen tokenizer and LAM, for this model (checked)."""
        if self.stage_name != "dynamics":
            raise ValueError(f"data.tokens (tokenized clips) trains the dynamics stage only, not "
                             f"stage={self.stage_name}")
        if self.mcfg.dynamics.lam_teacher > 0:
            raise ValueError("model.dynamics.lam_teacher > 0 needs the clips' frames: train from data.path, not "
                             "data.tokens")
        if self.world > 1:
            raise ValueError("data.tokens trains on one process; run it without torchrun")
        clips = TokenClips(self.dcfg.tokens)
        m = self.mcfg
        grid = [m.resolution[0] // m.tokenizer.patch, m.resolution[1] // m.tokenizer.patch]
        clips.check(m.name, m.frames, list(m.resolution), grid, m.tokenizer.num_codes,
                    m.lam.num_actions, self.stage.lineage)
        return clips

    def _loader(self, split: str) -> torch.utils.data.DataLoader:
        ds = ClipDataset(self.dcfg, split, self.rank, self.world)
        kwargs = {"multiprocessing_context": "spawn"} if self.tcfg.num_workers > 0 else {}
        # A private generator: making an iterator draws a seed from it, never from the global RNG
        # that masking and VQ restarts use (or resumed runs would draw different masks).
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=self.tcfg.num_workers,
                                           generator=torch.Generator().manual_seed(self.tcfg.seed), **kwargs)

    def _batches(self) -> Iterator[torch.Tensor]:
        """Frames (or tokenized clips) from the saved data position onwards, epoch after epoch."""
        epoch, skip = self.data_pos["epoch"], self.data_pos["batch"]
        if self.token_clips is not None:
            while True:
                for i, batch in enumerate(self.token_clips.train_batches(self.dcfg.batch_size, self.dcfg.seed, epoch)):
                    if i >= skip:
                        self.data_pos = {"epoch": epoch, "batch": i + 1}
                        yield batch
                epoch, skip = epoch + 1, 0
        loader = self._loader("train")
        while True:
            loader.dataset.set_epoch(epoch)
            n = 0
            for i, batch in enumerate(loader):
                n += 1
                if i < skip:
                    continue
                self.data_pos = {"epoch": epoch, "batch": i + 1}
                yield batch["frames"]
            if n == 0:
                raise TrainingError(f"no training clips in {self.dcfg.path} for rank {self.rank} (episodes too short "
                                    f"for {self.dcfg.clip_frames} frames, or too few episodes for the split/shards)")
            epoch, skip = epoch + 1, 0

    # --- one optimizer step ---------------------------------------------------------
    def train_step(self, micro_batches: list[torch.Tensor]) -> dict[str, float]:
        """Forward/backward over the micro-batches, clip, step; returns averaged metrics."""
        lr = lr_at(self.step, self.opt_cfg, self.tcfg.steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        totals: dict[str, float] = {}
        n = len(micro_batches)
        for i, frames in enumerate(micro_batches):
            sync = i == n - 1 or not hasattr(self.model, "no_sync")
            with (contextlib.nullcontext() if sync else self.model.no_sync()):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss, metrics = self.stage.loss(self.model, frames)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"non-finite loss ({loss.item()}) at step {self.step} of stage {self.stage_name}; "
                        f"nothing was saved for this step; last good checkpoint: {self.last_ckpt or 'none yet'}")
                (loss / n).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + v / n
        grad_norm = parallel.clip_grad_norm(self.model, self.tcfg.clip_grad)
        if not torch.isfinite(grad_norm):
            raise TrainingError(f"non-finite gradient norm at step {self.step}; last good checkpoint: "
                                f"{self.last_ckpt or 'none yet'}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {**totals, "grad_norm": float(grad_norm), "lr": lr}

    # --- the loop ---------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to `train.steps`; returns the last evaluation's metrics."""
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out / "tb")) if self.is_main else None
        history = (self.out / "metrics.jsonl").open("a") if self.is_main else None
        val = next(iter(self._loader_val()))
        batches = self._batches()
        bar = tqdm(total=self.tcfg.steps, initial=self.step, desc=f"train {self.stage_name}",
                   disable=not (self.is_main and self.tcfg.progress), dynamic_ncols=True)
        evaluation: dict[str, float] = {}
        t0, tokens, step0 = time.perf_counter(), 0, self.step
        try:
            end = min(self.tcfg.steps, self.tcfg.stop_at or self.tcfg.steps)
            while self.step < end:
                micro = [next(batches) for _ in range(self.tcfg.grad_accum)]
                metrics = self.train_step(micro)
                clips = sum((m["tokens"] if isinstance(m, dict) else m).shape[0] for m in micro)
                tokens += clips * self.stage.tokens_per_clip * self.world
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.is_main and (self.step % self.tcfg.log_every == 0 or self.step == self.tcfg.steps):
                    elapsed = time.perf_counter() - t0
                    metrics["tokens_per_s"] = tokens / elapsed
                    metrics["seconds_per_step"] = elapsed / (self.step - step0)  # evaluations and saves included
                    metrics["peak_memory_gb"] = self._peak_memory_gb()
                    self._log(writer, history, "train", metrics)
                    t0, tokens, step0 = time.perf_counter(), 0, self.step
                if self.step % self.tcfg.eval_every == 0 or self.step == end:
                    evaluation = self.evaluate(val, writer, history)
                if self.step % self.tcfg.ckpt_every == 0 or self.step == end:
                    self.save()
            if self.step == self.tcfg.steps:
                evaluation = self.evaluate_split()
        finally:
            bar.close()
            if writer:
                writer.close()
            if history:
                history.close()
        return evaluation

    def _loader_val(self) -> Iterable[dict]:
        if self.token_clips is not None:
            return list(self.token_clips.val_batches(self.dcfg.batch_size))
        val_cfg = replace(self.dcfg, shuffle=False, repeat=False, drop_remainder=False)
        ds = ClipDataset(val_cfg, "val" if self.dcfg.val_fraction > 0 else "train")
        return torch.utils.data.DataLoader(ds, batch_size=None, generator=torch.Generator().manual_seed(0))

    def evaluate(self, batch: dict, writer=None, history=None) -> dict[str, float]:
        """Metrics and pictures on the fixed validation batch (TensorBoard and samples/*.png)."""
        unwrap(self.model).eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            metrics, images, ids = self.stage.evaluate(self.model, batch["frames"])
        metrics.update(self.stage.probe(ids, batch["actions"]))
        if self.is_main:
            self._log(writer, history, "val", metrics)
            for name, img in images.items():
                grid = torch.cat(list(img.float().clamp(0, 1)), dim=-2)  # [T, C, H, W'] -> frames stacked
                if writer:
                    writer.add_image(f"val/{name}", grid, self.step)
                save_png(grid, self.out / "samples" / f"{name}_step{self.step:07d}.png")
        return metrics

    def evaluate_split(self) -> dict[str, float]:
        """Metrics over every held-out clip; written to <out>/eval.json. `*_used` count distinct codes."""
        unwrap(self.model).eval()
        sums: dict[str, float] = {}
        ids, actions, n = [], [], 0
        for batch in self._loader_val():
            frames = batch["frames"]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                metrics, _, used = self.stage.evaluate(self.model, frames)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * frames.shape[0]
            ids.append(used.cpu())
            actions.append(batch["actions"])
            n += frames.shape[0]
        result = {k: v / max(n, 1) for k, v in sums.items() if not k.endswith("_used")}
        used_key = "codes_used" if self.stage_name == "tokenizer" else "actions_used"
        ids = torch.cat(ids)
        result[used_key] = float(ids.unique().numel())
        result.update(self.stage.probe(ids, {k: torch.cat([a[k] for a in actions]) for k in actions[0]}))
        result.update(clips=float(n), step=float(self.step))
        if self.is_main:
            (self.out / "eval.json").write_text(json.dumps(result, indent=2))
        return result

    def save(self) -> Path | None:
        state = {"step": self.step, "stage": self.stage_name, "data_position": self.data_pos,
                 "lineage": self.stage.lineage}
        path = save_checkpoint(self.out / "checkpoints", self.step, self.model, self.optimizer, state, self.cfg,
                               self.tcfg.keep_last)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        self.last_ckpt = path or self.out / "checkpoints" / f"step_{self.step:07d}"
        return path

    def _log(self, writer, history, split: str, metrics: dict[str, float]) -> None:
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(f"{split}/{k}", v, self.step)
        if history:
            history.write(json.dumps({"split": split, "step": self.step, **metrics}) + "\n")
            history.flush()

    def _peak_memory_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
