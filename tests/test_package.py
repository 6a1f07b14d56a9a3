"""The repository root is an ament_python ROS 2 package and genie_robot_interfaces its interface package:
colcon builds and installs both from one base path (ros_packages/, two links)."""

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


def test_colcon_builds_both_packages_from_one_base_path(tmp_path):
    """A ROS user clones the repository into a workspace and runs one `colcon build --base-paths`:
    colcon does not look inside a package for another one, so ros_packages/ links both packages."""
    src = tmp_path / "ws" / "src" / "genie_robot"
    # symlinks=True: ros_packages/genie_robot links the root itself (followed, it would copy forever).
    shutil.copytree(REPO, src, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "*.egg-info", "build", "__pycache__",
                                                  ".pytest_cache", ".ruff_cache"))
    env = {**os.environ, "AMENT_PREFIX_PATH": sys.prefix, "CMAKE_PREFIX_PATH": sys.prefix,
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    r = subprocess.run([str(VENV_BIN / "colcon"), "--log-base", str(tmp_path / "log"), "build",
                        "--base-paths", "src/genie_robot/ros_packages", "--cmake-args", "-DBUILD_TESTING=OFF",
                        f"-DPython3_EXECUTABLE={sys.executable}"], cwd=tmp_path / "ws", env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for package in ("genie_robot_interfaces", "genie_robot"):
        assert f"Finished <<< {package} [" in r.stdout, r.stdout[-3000:]
    interfaces = tmp_path / "ws" / "install" / "genie_robot_interfaces"
    assert (interfaces / "share/ament_index/resource_index/packages/genie_robot_interfaces").is_file()
    for name in ("Rollout.srv", "InferActions.srv"):
        assert (interfaces / "share/genie_robot_interfaces/srv" / name).is_file()
    for name in ("Plan.action", "RolloutAction.action"):
        assert (interfaces / "share/genie_robot_interfaces/action" / name).is_file()
    assert next(interfaces.glob("lib/python3*/site-packages/genie_robot_interfaces/srv/_rollout.py")).is_file()
    # The built type support loads from the install space (not the copy make setup put in the venv).
    check = ("import genie_robot_interfaces as m; from genie_robot_interfaces.srv import Rollout; "
             "from genie_robot_interfaces.action import RolloutAction; print(m.__file__, Rollout.Request().horizon)")
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(next(interfaces.glob("lib/python3*/site-packages"))),
                            "LD_LIBRARY_PATH": f"{interfaces / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"})
    assert r.returncode == 0, r.stderr
    module_file, horizon = r.stdout.split()
    assert module_file.startswith(str(interfaces / "lib")) and horizon == "0", r.stdout
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
