"""The repository root is an ament_python ROS 2 package: colcon builds and installs it."""

from __future__ import annotations

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
