"""Start a node, spin it until Ctrl-C or SIGTERM, and clean up: the `main` of sim_robot_node and control_node."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


def run_node(name: str, make_node: Callable[[], Node], make_executor: Callable[[], Executor],
             argv: list[str] | None = None, cleanup: Callable[[Node], None] = lambda node: None) -> int:
    """0 after a clean stop; 1 with one line on stderr when the node cannot start (a bad parameter)."""
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = make_node()
    except Exception as e:  # a parameter out of range or of the wrong type, a scene that does not exist
        print(f"{name}: cannot start: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    executor = make_executor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        cleanup(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
