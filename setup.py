"""genie-robot: pip-installable Python package and ament_python ROS 2 package in one tree.

The metadata, dependencies and console scripts are in pyproject.toml [project]; this file holds
what setuptools cannot read from there: the package map (export/ and ros_nodes/ install under
other names) and the data files an ament_python package installs.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "genie_robot"
configs = [
    (f"share/{PACKAGE}/{p.parent.as_posix()}", [p.as_posix()])
    for p in sorted(Path("configs").rglob("*.yaml"))
]

setup(
    # export/ (ONNX export and verification) installs as genie_robot_export, not a bare `export`.
    # ros_nodes/ (rclpy nodes) installs as genie_robot_ros.
    packages=[*find_packages(include=[PACKAGE, f"{PACKAGE}.*"]), "genie_robot_export", "genie_robot_ros"],
    package_dir={"genie_robot_export": "export", "genie_robot_ros": "ros_nodes"},
    # The shipped reference models (weights, configs, reference.json cards): WorldModel.load("sim-rt1").
    # The play page (genie-robot play): its HTML, script and style.
    package_data={PACKAGE: ["references/*/*.json", "references/*/*/*", "play/static/*", "models/*.cpp"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", ["ros_nodes/launch/world_model.launch.py"]),
        *configs,
    ],
    zip_safe=False,
)
