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
    except Exception:
        # SIGINT/SIGTERM shut the context down from rclpy's signal handler; when that lands while
        # the executor is building its wait set, rclpy raises RCLError('the given context is not
        # valid') instead of ExternalShutdownException. That is a normal stop, not a crash: the
        # node still closes (the recorder finalises its bag) and the exit code stays 0.
        if node.context.ok():
            raise
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
