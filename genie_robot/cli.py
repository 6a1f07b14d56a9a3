"""`genie-robot <command> [hydra overrides]`: the one entry point.

Commands:
  sim            write the simulated RT-1 dataset (sim.*)
  train          train one stage: stage=tokenizer|lam|dynamics model=<size> train=<recipe>
  eval           ckpt=<run dir> data=<dataset>: Genie's metrics + pictures on validation clips (eval.*)
  fit-adapter    ckpt=<run dir> [data=...] [adapter.*]: latent -> RT-1 action adapter, saved beside the model
  imagine        prompt=<image> actions=0,3,3,5 [ckpt=<run dir>]: a GIF of the imagined future
  export         ckpt=<run dir> out=<dir> [precision=fp32|fp16] [opset=18]: ONNX graphs + manifest
  export-verify  ckpt=<run dir> out=<dir>: the export against the torch model (graphs, imagine, plan)
  data-info      print one JSON object describing data.path
  contact-sheet  PNG of frames from several episodes of data.path (sheet.*)
  bench data|sim|rollout  throughput; the last line printed is one JSON object
                 (bench rollout bench.rollout.engine=torch|onnx)
"""

from __future__ import annotations

import json
import sys

from genie_robot.config import load_config, typed

COMMANDS = ("sim", "train", "eval", "fit-adapter", "imagine", "export", "export-verify", "data-info",
            "contact-sheet", "bench")
BENCH_TARGETS = ("data", "sim", "rollout")


def _usage(msg: str) -> int:
    print(f"genie-robot: {msg}\n\n{__doc__}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _usage(f"unknown command '{command}' (commands: {', '.join(COMMANDS)})")
    target = None
    if command == "bench":
        if not rest or rest[0] not in BENCH_TARGETS:
            return _usage(f"bench needs a target: {', '.join(BENCH_TARGETS)}")
        target, rest = rest[0], rest[1:]
    rest = [a for a in rest if a != "--json"]  # JSON is always the last line of bench output
    # `actions=0,3,3,5` would be a Hydra sweep; quote it into one string.
    rest = [f"actions='{a[8:]}'" if a.startswith("actions=") and "'" not in a else a for a in rest]

    import logging

    # Our own progress lines (e.g. which onnxruntime provider is active), not other libraries'.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.getLogger("genie_robot").addHandler(handler)
    logging.getLogger("genie_robot").setLevel(logging.INFO)

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from genie_robot.data.layout import DatasetError
    from genie_robot.data.reader import DataConfig
    from genie_robot.sim.writer import SimConfig

    try:
        cfg = load_config(rest)
        if command == "sim":
            from genie_robot.sim.writer import write_sim_dataset

            path = write_sim_dataset(typed(cfg.sim, SimConfig))
            print(f"wrote simulated RT-1 dataset: {path}")
        elif command == "train":
            from genie_robot.training.trainer import Trainer

            result = Trainer(cfg).fit()
            print(json.dumps({"stage": cfg.stage, **result}))
        elif command in ("eval", "fit-adapter"):
            from genie_robot.inference.world_model import WorldModel

            engine = WorldModel.load(cfg.ckpt)
            data = engine.match_data(typed(cfg.data, DataConfig))
            if command == "eval":
                from genie_robot.evaluation.report import EvalConfig, evaluate

                print(json.dumps(evaluate(engine, data, typed(cfg.eval, EvalConfig))))
            else:
                from genie_robot.planning.fit_adapter import AdapterConfig, fit_adapter

                print(json.dumps(fit_adapter(engine, data, typed(cfg.adapter, AdapterConfig))))
        elif command == "imagine":
            from genie_robot.inference.prompt import imagine_from_image

            print(f"wrote {imagine_from_image(cfg)}")
        elif command == "export":
            from genie_robot_export.exporter import export

            print(f"wrote {export(cfg.ckpt, cfg.out, cfg.precision, cfg.opset)}")
        elif command == "export-verify":
            from genie_robot_export.verify import verify

            report = verify(cfg.ckpt, cfg.out)
            print(json.dumps(report))
            if not report["ok"]:
                print(f"genie-robot export-verify: the export in {cfg.out} does NOT match {cfg.ckpt}", file=sys.stderr)
                return 1
        elif command == "data-info":
            from genie_robot.data.info import describe

            data = typed(cfg.data, DataConfig)
            print(json.dumps(describe(data.path, data.image_key, clip_span=data.span)))
        elif command == "contact-sheet":
            from genie_robot.evaluation.contact_sheet import contact_sheet

            data = typed(cfg.data, DataConfig)
            out = contact_sheet(data.path, cfg.sheet.out, cfg.sheet.episodes, cfg.sheet.frames, data.image_key)
            print(f"wrote contact sheet: {out}")
        elif target == "rollout":
            from genie_robot.bench import bench_rollout
            from genie_robot.models import ModelConfig

            r = cfg.bench.rollout
            print(json.dumps(bench_rollout(typed(cfg.model, ModelConfig), list(r.batches), r.context_frames, r.horizon,
                                           r.steps, r.temperature, r.repeats, r.ckpt, r.engine, r.uncached,
                                           list(cfg.runtime.providers), cfg.runtime.threads)))
        elif target == "data":
            from genie_robot.bench import bench_data

            result = bench_data(typed(cfg.data, DataConfig), cfg.bench.warmup_batches, cfg.bench.batches)
            print(json.dumps(result))
        else:
            from genie_robot.bench import bench_sim

            print(json.dumps(bench_sim(typed(cfg.sim, SimConfig), cfg.bench.sim_episodes)))
    except (DatasetError, HydraException, OmegaConfBaseException, ValueError, OSError, RuntimeError) as e:
        print(f"genie-robot {command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
