"""Shared fixtures: two small datasets on disk in the real TFDS format, and a trained tiny run.

- `spec_dataset`: written by TFDS's own builder machinery from a feature spec typed in
  here from docs/RT1_FORMAT.md (not from genie_robot's), with content that encodes (episode,
  step) so clip windowing can be checked exactly from frames and actions.
- `sim_dataset`: written by `genie-robot`'s simulator writer.
- `launch_play` / `api`: `genie-robot play` as a server process, and one request to its HTTP API.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("MENAGERIE_ROOT") and (REPO.parent / "shared/menagerie/google_robot").is_dir():
    os.environ["MENAGERIE_ROOT"] = str(REPO.parent / "shared/menagerie")

# Episode lengths of the spec dataset: some shorter than the clips the tests cut.
SPEC_LENGTHS = [3, 10, 16, 17, 20, 33, 40, 5, 25, 16, 31, 12]


def spec_features():
    """The RT-1 spec (docs/RT1_FORMAT.md), transcribed field by field."""
    import tensorflow_datasets as tfds

    f32 = np.float32
    T = tfds.features.Tensor
    return tfds.features.FeaturesDict({
        "aspects": {k: T(shape=(), dtype=np.bool_) for k in
                    ["already_success", "feasible", "has_aspects", "success", "undesirable"]},
        "attributes": {
            **{k: T(shape=(), dtype=np.int64) for k in
               ["collection_mode", "data_type", "env", "location", "objects_family", "task_family"]},
            **{k + "_name": T(shape=(), dtype=np.object_) for k in
               ["collection_mode", "data_type", "env", "location", "objects_family", "task_family"]},
        },
        "steps": tfds.features.Dataset({
            "action": {
                "world_vector": T(shape=(3,), dtype=f32),
                "rotation_delta": T(shape=(3,), dtype=f32),
                "gripper_closedness_action": T(shape=(1,), dtype=f32),
                "base_displacement_vector": T(shape=(2,), dtype=f32),
                "base_displacement_vertical_rotation": T(shape=(1,), dtype=f32),
                "terminate_episode": T(shape=(3,), dtype=np.int32),
            },
            "is_first": T(shape=(), dtype=np.bool_),
            "is_last": T(shape=(), dtype=np.bool_),
            "is_terminal": T(shape=(), dtype=np.bool_),
            "reward": tfds.features.Scalar(dtype=f32),
            "observation": {
                "image": tfds.features.Image(shape=(256, 320, 3), encoding_format="jpeg"),
                "natural_language_instruction": T(shape=(), dtype=np.object_),
                "natural_language_embedding": T(shape=(512,), dtype=f32),
                "base_pose_tool_reached": T(shape=(7,), dtype=f32),
                "gripper_closed": T(shape=(1,), dtype=f32),
                "gripper_closedness_commanded": T(shape=(1,), dtype=f32),
                "height_to_bottom": T(shape=(1,), dtype=f32),
                "orientation_box": T(shape=(2, 3), dtype=f32),
                "orientation_start": T(shape=(4,), dtype=f32),
                "robot_orientation_positions_box": T(shape=(3, 3), dtype=f32),
                "rotation_delta_to_go": T(shape=(3,), dtype=f32),
                "src_rotation": T(shape=(4,), dtype=f32),
                "vector_to_go": T(shape=(3,), dtype=f32),
                "workspace_bounds": T(shape=(3, 3), dtype=f32),
            },
        }),
    })


def pixel_value(episode: int, step: int) -> int:
    """The grey level of frame `step` of episode `episode` in the spec dataset."""
    return (40 + 37 * episode + 5 * step) % 200 + 20


def spec_episode(ep: int, length: int) -> dict:
    zeros = np.zeros
    steps = []
    for t in range(length):
        steps.append({
            "action": {
                # (episode, step, 1): sums over a stride reveal exactly which steps a clip used.
                "world_vector": np.array([ep, t, 1], np.float32),
                "rotation_delta": np.array([t, -t, 0], np.float32),
                "gripper_closedness_action": np.array([t], np.float32),
                "base_displacement_vector": zeros(2, np.float32),
                "base_displacement_vertical_rotation": zeros(1, np.float32),
                "terminate_episode": np.array([int(t == length - 1), int(t < length - 1), 0], np.int32),
            },
            "is_first": t == 0, "is_last": t == length - 1, "is_terminal": t == length - 1,
            "reward": np.float32(0.0),
            "observation": {
                "image": np.full((256, 320, 3), pixel_value(ep, t), np.uint8),
                "natural_language_instruction": f"episode {ep}",
                "natural_language_embedding": zeros(512, np.float32),
                "base_pose_tool_reached": zeros(7, np.float32),
                "gripper_closed": zeros(1, np.float32),
                "gripper_closedness_commanded": zeros(1, np.float32),
                "height_to_bottom": zeros(1, np.float32),
                "orientation_box": zeros((2, 3), np.float32),
                "orientation_start": zeros(4, np.float32),
                "robot_orientation_positions_box": zeros((3, 3), np.float32),
                "rotation_delta_to_go": zeros(3, np.float32),
                "src_rotation": zeros(4, np.float32),
                "vector_to_go": zeros(3, np.float32),
                "workspace_bounds": zeros((3, 3), np.float32),
            },
        })
    return {
        "steps": steps,
        "aspects": {k: False for k in ["already_success", "feasible", "has_aspects", "success", "undesirable"]},
        "attributes": {
            **{k: ep for k in ["collection_mode", "data_type", "env", "location", "objects_family", "task_family"]},
            **{k + "_name": "x" for k in
               ["collection_mode", "data_type", "env", "location", "objects_family", "task_family"]},
        },
    }


@pytest.fixture(scope="session")
def spec_dataset(tmp_path_factory) -> Path:
    """A `fractal20220817_data` 0.1.0 directory written by TFDS, not by genie_robot."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("spec")

    class Fractal20220817Data(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "fractal20220817_data"
        VERSION = tfds.core.Version("0.1.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=spec_features())

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for ep, n in enumerate(SPEC_LENGTHS):
                yield ep, spec_episode(ep, n)

    tfds.disable_progress_bar()
    Fractal20220817Data(data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=3))
    return data_dir / "fractal20220817_data" / "0.1.0"


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    from genie_robot.sim.writer import SimConfig, write_sim_dataset

    out = tmp_path_factory.mktemp("sim")
    return write_sim_dataset(
        SimConfig(out=str(out), episodes=4, min_steps=6, max_steps=9, workers=2, num_shards=2), progress=False)


@pytest.fixture(scope="session")
def heldout_sim(tmp_path_factory) -> Path:
    """Three full-length simulated episodes with make demo's held-out seed (the reference never trained on it)."""
    from genie_robot.sim.writer import SimConfig, write_sim_dataset

    out = tmp_path_factory.mktemp("heldout")
    return write_sim_dataset(SimConfig(out=str(out), episodes=3, seed=1001, workers=2, num_shards=1), progress=False)


@pytest.fixture(scope="session")
def reference_export(tmp_path_factory) -> Path:
    """The shipped reference sim-rt1 exported to ONNX (the demo-size model a robot runs)."""
    from genie_robot_export.exporter import export

    out = tmp_path_factory.mktemp("reference") / "sim-rt1"
    export("sim-rt1", out, progress=lambda _: None)
    return out


@pytest.fixture()
def ros_env(tmp_path):
    """A private DDS domain: an id in 1..100 that no other process holds (ids > 101 map to ports in
    Linux's ephemeral range, where discovery can fail at random), on localhost only."""
    from domain_coordinator import domain_id

    with domain_id() as domain:
        yield {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain),
               "ROS_LOG_DIR": str(tmp_path / "log")}


def make_cfg(data: Path, out: Path, *overrides: str):
    """The tiny model's training config over a test dataset."""
    from genie_robot.config import load_config

    return load_config([
        "model=tiny", "train=tiny", f"data.path={data}", f"output_dir={out}", "data.batch_size=2",
        "data.clip_hop=1", "data.val_fraction=0.25", *overrides,
    ])


@pytest.fixture(scope="session")
def trained(sim_dataset, tmp_path_factory) -> Path:
    """Tiny tokenizer and LAM trained for 30 steps each; dynamics on top of them (train/tiny/<stage>)."""
    from genie_robot.training.trainer import Trainer

    out = tmp_path_factory.mktemp("train")
    ckpt = out / "train" / "tiny"
    for stage in ("tokenizer", "lam"):
        Trainer(make_cfg(sim_dataset, out, f"stage={stage}", "train.steps=30", "train.ckpt_every=30",
                         "train.eval_every=30")).fit()
    # A stage's run directory stands for its latest checkpoint.
    Trainer(make_cfg(sim_dataset, out, "stage=dynamics", "train.steps=30", "train.ckpt_every=30",
                     "train.eval_every=30", f"train.tokenizer_ckpt={ckpt}/tokenizer",
                     f"train.lam_ckpt={ckpt}/lam")).fit()
    return out


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, its export) made through the CLI."""
    from genie_robot.cli import main

    out = tmp_path_factory.mktemp("export") / "tiny"
    assert main(["export", f"ckpt={trained}/train/tiny", f"out={out}"]) == 0
    return trained / "train/tiny", out


@pytest.fixture(scope="session")
def adapted(trained, sim_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(the tiny run with a fitted latent-to-robot adapter, its export): what MPC needs to act."""
    import shutil

    from genie_robot.cli import main

    base = tmp_path_factory.mktemp("adapted")
    run = base / "tiny"
    shutil.copytree(trained / "train/tiny", run)
    assert main(["fit-adapter", "model=tiny", f"ckpt={run}", f"data.path={sim_dataset}",
                 "data.val_fraction=0.25"]) == 0
    assert main(["export", f"ckpt={run}", f"out={base / 'export'}"]) == 0
    return run, base / "export"


# --- `genie-robot play` as a server process, and its HTTP API (tests/play) -----------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of one request to the play server."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


@pytest.fixture(scope="session")
def api():
    return call


@pytest.fixture(scope="session")
def launch_play(tmp_path_factory):
    """launch(overrides, env=None) -> (port, read_log): `genie-robot play` with those overrides, up and answering;
    every server started is stopped at the end and must stop cleanly."""
    procs = []

    def launch(overrides: list[str], env: dict | None = None) -> tuple[int, callable]:
        log_path = tmp_path_factory.mktemp("play_server") / "server.log"
        log = open(log_path, "w")
        port = free_port()
        exe = Path(sys.executable).parent / "genie-robot"
        proc = subprocess.Popen([str(exe), "play", f"play.port={port}", *overrides], stdout=log,
                                stderr=subprocess.STDOUT, text=True, env=env)
        procs.append((proc, log))
        deadline = time.monotonic() + 180
        while True:
            try:
                if call(port, "GET", "/api/info")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"genie-robot play did not come up:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)

        def read_log() -> str:
            log.flush()
            return log_path.read_text()

        return port, read_log

    yield launch
    for proc, log in procs:
        proc.terminate()
        code = proc.wait(timeout=30)
        log.close()
        assert code in (0, -15), f"genie-robot play exited with {code}"
