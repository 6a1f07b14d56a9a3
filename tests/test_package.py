"""The repository root is an ament_python ROS 2 package: colcon builds and installs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "genie_robot"
    assert root.find("export/build_type").text == "ament_python"
    assert {"rclpy", "sensor_msgs"} <= {e.text for e in root.findall("exec_depend")}
    assert (REPO / "resource" / "genie_robot").is_file()


def test_colcon_builds_and_installs_the_tree(tmp_path):
    src = tmp_path / "ws" / "src" / "genie_robot"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "*.egg-info", "build",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    env = {**os.environ, "AMENT_PREFIX_PATH": sys.prefix, "CMAKE_PREFIX_PATH": sys.prefix,
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    r = subprocess.run([str(VENV_BIN / "colcon"), "--log-base", str(tmp_path / "log"), "build",
                        "--base-paths", "src"], cwd=tmp_path / "ws", env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = tmp_path / "ws" / "install" / "genie_robot"
    assert (prefix / "share/ament_index/resource_index/packages/genie_robot").is_file()
    assert (prefix / "share/genie_robot/package.xml").is_file()
    script = prefix / "lib/genie_robot/genie-robot"  # where `ros2 run genie_robot ...` looks
    assert script.is_file()
    assert (prefix / "lib/genie_robot/world_model_node").is_file()  # `ros2 run genie_robot world_model_node`
    assert (prefix / "share/genie_robot/launch/world_model.launch.py").is_file()
    assert (prefix / "share/genie_robot/configs/ros/world_model.yaml").is_file()
    site = next(prefix.glob("lib/python3*/site-packages"))
    # The installed copy (not the source tree) finds its configs under share/.
    r = subprocess.run([sys.executable, "-c", "import genie_robot.config as c; print(c.config_dir())"],
                       env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == prefix / "share/genie_robot/configs"


RUNTIME_CHECK = """
import json, sys
import numpy as np
from genie_robot.runtime import OnnxWorldModel
import genie_robot
engine = OnnxWorldModel(sys.argv[1], providers=["CPUExecutionProvider"])
h, w = engine.cfg.resolution
context = np.random.default_rng(0).integers(0, 256, (2, 3, h, w), dtype=np.uint8)
out = engine.imagine(context, [[1, 2]], steps=4, seed=0)
heavy = sorted(m for m in ("torch", "tensorflow", "hydra", "omegaconf", "genie_robot.data.reader")
               if m in sys.modules)
print(json.dumps({"frames": list(out.frames.shape), "heavy": heavy, "from": genie_robot.__file__}))
"""


def test_runtime_extra_installs_from_the_wheel_and_runs_the_onnx_engine_without_torch(exported, tmp_path):
    """What a robot installs: the built wheel (not an editable checkout) with the runtime extra in a
    fresh venv, which then runs the onnxruntime engine on an export, importing no torch."""
    _, export_dir = exported
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("genie_robot-*.whl")
    venv = tmp_path / "robot"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"),
                        f"{wheel}[runtime]"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"genie-robot", "numpy", "onnxruntime", "pillow"} <= installed
    assert not installed & {"torch", "tensorflow", "tensorflow-cpu", "hydra-core"}, installed
    r = subprocess.run([str(py), "-c", RUNTIME_CHECK, str(export_dir)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["frames"][:2] == [1, 2] and result["heavy"] == []
    assert str(venv) in result["from"]  # the installed wheel, not the source tree
