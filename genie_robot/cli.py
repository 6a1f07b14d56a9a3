"""`genie-robot <verb> [hydra overrides]`: the one entry point.

`genie-robot --help` lists the verbs; `genie-robot <verb> --help` prints what that verb does and
the config sections it reads, with their current values (after any overrides on the same line);
`genie-robot <verb> [overrides] --cfg` prints the whole resolved config and runs nothing.
Each verb is one function below, found through the `VERBS` table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genie_robot.config import load_config, typed

BENCH_TARGETS = ("data", "sim", "rollout", "control", "agent")


def _data(cfg: DictConfig):
    from genie_robot.data.reader import DataConfig

    return typed(cfg.data, DataConfig)


def _engine_and_data(cfg: DictConfig):
    from genie_robot.inference.world_model import WorldModel

    engine = WorldModel.load(cfg.ckpt)
    return engine, engine.match_data(_data(cfg))


def sim(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.sim.writer import SimConfig, write_sim_dataset

    print(f"wrote simulated RT-1 dataset: {write_sim_dataset(typed(cfg.sim, SimConfig))}")
    return 0


def _listed(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if OmegaConf.is_list(value) or isinstance(value, list) else [str(value)]


def data_from_bag(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.data.bag import BagConfig, convert_bags

    path, summary = convert_bags(BagConfig(
        bag=_listed(cfg.bag), image_topic=cfg.image_topic, action_topic=cfg.action_topic, out=cfg.out,
        **OmegaConf.to_container(cfg.convert, resolve=True)))
    print(json.dumps(summary))
    keys = "" if summary["action_keys"] else " data.action_keys=[]"
    print(f"wrote {path}: train on it with data.path={path}{keys}")
    return 0


def data_from_lerobot(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.data.lerobot import LeRobotConfig, convert_lerobot

    path, summary = convert_lerobot(LeRobotConfig(root=cfg.lerobot, camera=cfg.camera, out=cfg.out,
                                                  **OmegaConf.to_container(cfg.convert, resolve=True)))
    print(json.dumps(summary))
    keys = f"data.action_keys=[{','.join(summary['action_keys'])}]"
    print(f"wrote {path}: train on it with data.path={path} {keys}")
    return 0


def sim_to_bag(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.sim.record import RecordConfig, record_sim_bag
    from genie_robot.sim.writer import SimConfig

    path, summary = record_sim_bag(typed(cfg.sim, SimConfig), RecordConfig(bag=cfg.bag, **OmegaConf.to_container(
        cfg.record, resolve=True)))
    print(json.dumps(summary))
    print(f"wrote {path}")
    return 0


def train(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.training.trainer import Trainer

    print(json.dumps({"stage": cfg.stage, **Trainer(cfg).fit()}))
    return 0


def tokenize_data(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.training.tokens import tokenize_data as run

    print(json.dumps(run(cfg)))
    return 0


def evaluate(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.evaluation.report import EvalConfig
    from genie_robot.evaluation.report import evaluate as run

    engine, data = _engine_and_data(cfg)
    print(json.dumps(run(engine, data, typed(cfg.eval, EvalConfig))))
    return 0


def fit_adapter(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.inference.fit_adapter import AdapterConfig
    from genie_robot.inference.fit_adapter import fit_adapter as run

    engine, data = _engine_and_data(cfg)
    print(json.dumps(run(engine, data, typed(cfg.adapter, AdapterConfig))))
    return 0


def imagine(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.inference.prompt import imagine_from_image

    print(f"wrote {imagine_from_image(cfg)}")
    return 0


def control(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.control.run import ControlConfig
    from genie_robot.control.run import control as run
    from genie_robot.inference.world_model import WorldModel

    summary = run(WorldModel.load(cfg.ckpt), typed(cfg.control, ControlConfig))
    print(json.dumps(summary))
    return 0 if summary["reason"] not in ("failed", "cancelled") else 1


def export(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot_export.exporter import export as run

    print(f"wrote {run(cfg.ckpt, cfg.out, cfg.precision, cfg.opset)}")
    return 0


def export_verify(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot_export.verify import verify

    report = verify(cfg.ckpt, cfg.out)
    print(json.dumps(report))
    if not report["ok"]:
        print(f"genie-robot export-verify: the export in {cfg.out} does NOT match {cfg.ckpt}", file=sys.stderr)
        return 1
    return 0


def data_info(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.data.info import describe

    data = _data(cfg)
    print(json.dumps(describe(data.path, data.image_key, clip_span=data.span)))
    return 0


def contact_sheet(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.evaluation.contact_sheet import contact_sheet as run

    data = _data(cfg)
    print(f"wrote contact sheet: {run(data.path, cfg.sheet.out, cfg.sheet.episodes, cfg.sheet.frames, data.image_key)}")
    return 0


def bench(cfg: DictConfig, target: str | None) -> int:
    from genie_robot import bench as b

    if target == "rollout":
        from genie_robot.models import ModelConfig

        r = cfg.bench.rollout
        result = b.bench_rollout(typed(cfg.model, ModelConfig), list(r.batches), r.context_frames, r.horizon,
                                 r.steps, r.temperature, r.repeats, r.ckpt, r.engine, r.uncached,
                                 list(cfg.runtime.providers), cfg.runtime.threads, r.compile)
    elif target == "data":
        result = b.bench_data(_data(cfg), cfg.bench.warmup_batches, cfg.bench.batches)
    elif target == "control":
        from genie_robot.control.bench import ControlBenchConfig, bench_control
        from genie_robot.inference.world_model import WorldModel

        c = OmegaConf.to_container(cfg.bench.control, resolve=True)
        engine = WorldModel.load(c.pop("ckpt"))
        result = {**bench_control(engine, typed(OmegaConf.create(c), ControlBenchConfig)), **b._machine()}
    elif target == "agent":
        from genie_robot.control.agent import AgentConfig, bench_agent
        from genie_robot.control.bench import ControlBenchConfig
        from genie_robot.inference.world_model import WorldModel

        a = OmegaConf.to_container(cfg.bench.agent, resolve=True)
        engine = WorldModel.load(a.pop("ckpt"))
        tasks = OmegaConf.to_container(cfg.bench.control, resolve=True)  # the same held-out tasks
        tasks.pop("ckpt")
        result = {**bench_agent(engine, typed(OmegaConf.create(a), AgentConfig),
                                typed(OmegaConf.create(tasks), ControlBenchConfig)), **b._machine()}
    else:
        from genie_robot.sim.writer import SimConfig

        result = b.bench_sim(typed(cfg.sim, SimConfig), cfg.bench.sim_episodes)
    print(json.dumps(result))  # the last line printed is one JSON object
    return 0


def play(cfg: DictConfig, _target: str | None) -> int:
    from genie_robot.play.app import PlayConfig
    from genie_robot.play.app import serve as run

    return run(typed(cfg.play, PlayConfig), _listed(cfg.ckpt), list(cfg.runtime.providers), cfg.runtime.threads)


def serve(cfg: DictConfig, _target: str | None) -> int:
    """Replaces this process with world_model_node (its signals, logs and exit code are the node's)."""
    import os

    from genie_robot.config import config_dir

    s = cfg.serve
    model_dir = Path(s.model_dir).resolve()
    if not (model_dir / "manifest.json").is_file():
        raise ValueError(f"serve.model_dir={model_dir} is not an export (no manifest.json): make one with "
                         f"`genie-robot export ckpt=<run dir or reference> out={model_dir}`")
    exe = Path(sys.executable).parent / "world_model_node"
    if not exe.is_file():
        raise RuntimeError(f"{exe} is missing: install genie-robot with its ROS node (`make setup`)")
    params_file = s.params_file or str(Path(config_dir()) / "ros" / "world_model.yaml")
    args = [str(exe), "--ros-args", "--params-file", params_file, "-p", f"model_dir:={model_dir}",
            "-p", f"autostart:={str(bool(s.autostart)).lower()}"]
    for name, value in (OmegaConf.to_container(s.params) if s.params else {}).items():
        args += ["-p", f"{name}:={json.dumps(value) if not isinstance(value, str) else value}"]
    if s.namespace:
        args += ["-r", f"__ns:=/{s.namespace.lstrip('/')}"]
    print("genie-robot serve: " + " ".join(args), file=sys.stderr, flush=True)
    os.execv(str(exe), args)
    return 0  # not reached


@dataclass(frozen=True)
class Verb:
    run: Callable[[DictConfig, str | None], int]
    summary: str  # one line for `genie-robot --help`
    usage: str  # the overrides it is usually given
    sections: tuple[str, ...]  # the config it reads, printed by `genie-robot <verb> --help`
    required: tuple[str, ...] = ()  # keys that must be on the command line (their config default means another verb's)
    defaults: tuple[str, ...] = ()  # overrides this verb starts from (the command line's come after)


VERBS: dict[str, Verb] = {
    "sim": Verb(sim, "write the simulated RT-1 dataset (MuJoCo Google Robot)", "[sim.episodes=N] [sim.seed=S]",
                ("sim",)),
    "sim-to-bag": Verb(sim_to_bag, "record simulated episodes into a ROS 2 bag (camera + command topics)",
                       "bag=<dir> [sim.episodes=N] [sim.scene=workshop] [record.storage=mcap|sqlite3]",
                       ("bag", "sim", "record"), ("bag",)),
    "data-from-bag": Verb(data_from_bag, "ROS 2 bags (MCAP or sqlite3) -> an RLDS dataset to train on",
                          "bag=<dir> image_topic=<topic> [action_topic=<topic>] out=<dir>",
                          ("bag", "image_topic", "action_topic", "out", "convert"), ("bag", "image_topic", "out")),
    "data-from-lerobot": Verb(data_from_lerobot, "a local LeRobot dataset (v2.x or v3.0) -> an RLDS dataset",
                              "lerobot=<dir> [camera=<key>] out=<dir>", ("lerobot", "camera", "out", "convert"),
                              ("lerobot", "out")),
    "train": Verb(train, "train one stage of a model", "stage=tokenizer|lam|dynamics model=<size> train=<recipe>",
                  ("stage", "model", "train", "data")),
    "tokenize-data": Verb(tokenize_data, "the dynamics stage's clips tokenized once by the frozen tokenizer and LAM "
                          "(train it with data.tokens=<file>, on any torch machine)",
                          "model=<size> train.tokenizer_ckpt=<ckpt> train.lam_ckpt=<ckpt> tokens.out=<file.npz> "
                          "[tokens.extra=[<data.path>,...]] [data.clip_hop=1]", ("model", "train", "data", "tokens")),
    "eval": Verb(evaluate, "Genie's metrics and pictures on held-out clips", "ckpt=<run dir or reference> [data...]",
                 ("ckpt", "data", "eval")),
    "fit-adapter": Verb(fit_adapter, "fit the latent -> RT-1 action adapter, saved beside the model",
                        "ckpt=<run dir> [adapter.method=mean|ridge]", ("ckpt", "data", "adapter")),
    "imagine": Verb(imagine, "one image in, a GIF of the imagined future out",
                    "prompt=<image> actions=0,3,3,5 [ckpt=<run dir>]", ("ckpt", "prompt", "actions", "imagine")),
    "control": Verb(control, "drive the simulated robot to a goal image by planning in the world model (MPC)",
                    "[ckpt=<run dir or reference>] [control.seed=S control.episode=E] [control.goal=<image>]",
                    ("ckpt", "control"), defaults=("ckpt=sim-rt1",)),
    "export": Verb(export, "ONNX graphs + manifest for the onnxruntime engine",
                   "ckpt=<run dir> out=<dir> [precision=fp32|fp16] [opset=18]", ("ckpt", "out", "precision", "opset")),
    "export-verify": Verb(export_verify, "check an export against the torch model (graphs, imagine, plan)",
                          "ckpt=<run dir> out=<dir>", ("ckpt", "out")),
    "data-info": Verb(data_info, "one JSON object describing the dataset at data.path", "[data.path=<dir>]",
                      ("data",)),
    "contact-sheet": Verb(contact_sheet, "a PNG of frames from several episodes of data.path", "[sheet.*]",
                          ("data", "sheet")),
    "play": Verb(play, "play the world model in a browser: a start image, keys 1-8, a GIF of what you played",
                 "[ckpt=<export, run dir or reference>] [play.port=8765] [play.camera_topic=<topic>]",
                 ("ckpt", "play", "runtime"), defaults=("ckpt=sim-rt1",)),
    "serve": Verb(serve, "run world_model_node here (no ros2 launch needed): the ROS 2 world model service",
                  "out=<export dir> [serve.params={frame_rate: 5.0}] [serve.namespace=robot1]", ("serve",)),
    "bench": Verb(bench, "throughput of the loader, the simulator or imagination; closed-loop goal reaching (JSON)",
                  "data|sim|rollout|control|agent [bench.rollout.engine=torch|onnx]",
                  ("bench", "data", "sim", "runtime")),
}


def _overview() -> str:
    width = max(map(len, VERBS))
    lines = [f"  {name:<{width}}  {verb.summary}" for name, verb in VERBS.items()]
    return ("usage: genie-robot <verb> [hydra overrides] [--help | --cfg]\n\nverbs:\n" + "\n".join(lines)
            + "\n\n`genie-robot <verb> --help`: the verb's config with its current values; "
              "`--cfg`: the whole resolved config.")


def _verb_help(name: str, cfg: DictConfig) -> str:
    verb = VERBS[name]
    parts = [f"genie-robot {name} {verb.usage}\n  {verb.summary}\n\nconfig it reads (current values):"]
    for key in verb.sections:
        value = cfg[key]
        if isinstance(value, DictConfig):
            body = OmegaConf.to_yaml(value, resolve=True).rstrip().replace("\n", "\n  ")
            parts.append(f"{key}:\n  {body}")
        else:
            parts.append(f"{key}: {value}")
    return "\n".join(parts)


def _usage(msg: str) -> int:
    print(f"genie-robot: {msg}\n\n{_overview()}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in VERBS:
        return _usage(f"unknown verb '{name}' (verbs: {', '.join(VERBS)})")
    want_help = any(a in ("-h", "--help") for a in rest)
    want_cfg = "--cfg" in rest
    rest = [a for a in rest if a not in ("-h", "--help", "--cfg", "--json")]  # bench: JSON is always the last line
    target = None
    if name == "bench":
        if rest and rest[0] in BENCH_TARGETS:
            target, rest = rest[0], rest[1:]
        elif not want_help:
            return _usage(f"bench needs a target: {', '.join(BENCH_TARGETS)}")
    missing = [k for k in VERBS[name].required if not any(a.split("=", 1)[0].lstrip("+") == k for a in rest)]
    if missing and not want_help:
        return _usage(f"{name} needs {', '.join(f'{k}=...' for k in missing)} ({VERBS[name].usage})")
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

    try:
        cfg = load_config([*VERBS[name].defaults, *rest])
        if want_help:
            print(_verb_help(name, cfg))
            return 0
        if want_cfg:
            print(OmegaConf.to_yaml(cfg, resolve=True))
            return 0
        return VERBS[name].run(cfg, target)
    except (DatasetError, HydraException, OmegaConfBaseException, ValueError, OSError, RuntimeError) as e:
        print(f"genie-robot {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
