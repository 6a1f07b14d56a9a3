"""genie-robot: pip-installable Python package and ament_python ROS 2 package in one tree."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "genie_robot"
ROOT = Path(__file__).parent
configs = [
    (f"share/{PACKAGE}/{p.parent.as_posix()}", [p.as_posix()])
    for p in sorted(Path("configs").rglob("*.yaml"))
]

setup(
    name="genie-robot",
    version="0.1.0",
    description="Open Genie world model for robots: tokenizer, latent action model, MaskGIT dynamics",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # export/ (ONNX export and verification) installs as genie_robot_export, not a bare `export`.
    # ros_nodes/ (rclpy nodes) installs as genie_robot_ros.
    packages=[*find_packages(include=[PACKAGE, f"{PACKAGE}.*"]), "genie_robot_export", "genie_robot_ros"],
    package_dir={"genie_robot_export": "export", "genie_robot_ros": "ros_nodes"},
    # The shipped reference models (weights, configs, reference.json cards): WorldModel.load("sim-rt1").
    package_data={PACKAGE: ["references/*/*.json", "references/*/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", ["ros_nodes/launch/world_model.launch.py"]),
        *configs,
    ],
    install_requires=[],  # pinned in requirements.txt; `make setup` installs them
    extras_require={"gpu": ["onnxruntime-gpu"]},
    entry_points={"console_scripts": ["genie-robot = genie_robot.cli:main",
                                      "world_model_node = genie_robot_ros.world_model_node:main"]},
    zip_safe=False,
)
