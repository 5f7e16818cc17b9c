"""run_node: how the project's nodes start and stop (real rclpy contexts, no DDS traffic needed).

The last CI run failed because SIGINT landed while rclpy's executor was building its wait set:
rclpy then raises RCLError('the given context is not valid') instead of ExternalShutdownException.
That is a normal stop; these tests pin that it closes the node and returns 0, while a real error in
a live context still propagates."""
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (run `make env`)')
from rclpy.node import Node  # noqa: E402

from depth_ego_ros.ros import node_main  # noqa: E402


class _Probe(Node):
    closed = 0

    def __init__(self):
        super().__init__('run_node_probe')

    def close(self):
        type(self).closed += 1


def _spin_that_raises(context_down: bool):
    from rclpy._rclpy_pybind11 import RCLError

    def spin(node, *args, **kwargs):
        if context_down:
            node.context.try_shutdown()  # what the signal handler does
        raise RCLError('failed to initialize wait set: the given context is not valid')
    return spin


def test_shutdown_race_in_the_executor_is_a_clean_stop(ros_env, monkeypatch):
    _Probe.closed = 0
    monkeypatch.setattr(node_main.rclpy, 'spin', _spin_that_raises(context_down=True))
    assert node_main.run_node(_Probe, 'run_node_probe', args=[]) == 0
    assert _Probe.closed == 1
    assert not rclpy.ok()


def test_an_error_while_the_context_is_alive_is_not_swallowed(ros_env, monkeypatch):
    from rclpy._rclpy_pybind11 import RCLError
    _Probe.closed = 0
    monkeypatch.setattr(node_main.rclpy, 'spin', _spin_that_raises(context_down=False))
    with pytest.raises(RCLError):
        node_main.run_node(_Probe, 'run_node_probe', args=[])
    assert _Probe.closed == 1  # closed (bag finalised) even on a crash
    assert not rclpy.ok()


def test_a_node_that_cannot_start_returns_1(ros_env):
    def broken():
        raise ValueError('bad parameter')
    assert node_main.run_node(broken, 'run_node_probe', args=[]) == 1
    assert not rclpy.ok()
