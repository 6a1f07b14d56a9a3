"""The launch file, parsed (launch and launch_ros are not on PyPI, so it cannot be run here): its arguments
are the documented ones, every LaunchConfiguration it reads is declared, and every parameter it sets is one
the node declares."""

from __future__ import annotations

import ast
from pathlib import Path

from genie_robot_ros.world_model_node import PARAMETERS

LAUNCH = Path(__file__).resolve().parents[2] / "ros_nodes/launch/world_model.launch.py"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_launch_arguments_are_declared_documented_and_reach_the_node():
    tree = ast.parse(LAUNCH.read_text())
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        kw = {k.arg: k.value for k in call.keywords}
        assert "description" in kw, ast.unparse(call)
        declared[call.args[0].value] = ast.literal_eval(kw["default_value"]) if "default_value" in kw and \
            isinstance(kw["default_value"], ast.Constant) else kw.get("default_value")
    assert set(declared) == {"model_dir", "image", "camera_transport", "namespace", "params_file", "log_level",
                             "use_sim_time", "autostart"}
    assert "model_dir" in declared and declared["model_dir"] is None  # required: no default
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used == set(declared), used ^ set(declared)
    (node,) = _calls(tree, "Node")
    kw = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(kw["executable"]) == "world_model_node" and ast.literal_eval(kw["package"]) == "genie_robot"
    overrides = next(d for d in ast.walk(kw["parameters"]) if isinstance(d, ast.Dict))
    names = {k.value for k in overrides.keys}
    assert names <= set(PARAMETERS) | {"use_sim_time"}, names - set(PARAMETERS)
    assert "--log-level" in ast.unparse(kw["arguments"]) and "namespace" in ast.unparse(kw["namespace"])
