"""The shared `main()` of the project's nodes: init, construct, spin, clean shutdown."""
from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException


def run_node(factory, name: str, args=None) -> int:
    """Construct ``factory()`` and spin it until SIGINT/SIGTERM/shutdown; always call its
    ``close()`` (which flushes/finalises) before destroying it. A node that cannot start (bad
    parameters, unreadable checkpoint) logs one clear fatal line and returns 1."""
    rclpy.init(args=args if args is not None else sys.argv)
    try:
        node = factory()
    except Exception as exc:
        rclpy.logging.get_logger(name).fatal(f'cannot start: {type(exc).__name__}: {exc}')
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
