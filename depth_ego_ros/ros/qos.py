"""QoS profiles by name, so that parameters and launch arguments can choose them.

``profile('sensor_data', depth)`` -- best effort, volatile, keep last (camera drivers' default);
``'reliable'`` -- reliable, volatile, keep last; ``'best_effort'`` -- same as sensor_data;
``'system_default'`` -- the RMW's defaults (reliable, volatile with Fast DDS).

A reliable publisher matches both reliable and best-effort subscribers, a best-effort publisher
only best-effort ones: outputs default to 'reliable' so every consumer can listen; inputs default
to 'sensor_data' so every camera can feed the node.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

QOS_NAMES = ('sensor_data', 'reliable', 'best_effort', 'system_default')


def profile(name: str, depth: int = 1) -> QoSProfile:
    """QoS profile by name (see module docstring); depth = keep-last history depth."""
    if depth < 1:
        raise ValueError(f'QoS depth must be >= 1, got {depth}')
    if name in ('sensor_data', 'best_effort'):
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
    if name == 'reliable':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    if name == 'system_default':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
                          durability=DurabilityPolicy.SYSTEM_DEFAULT)
    raise ValueError(f"unknown QoS profile {name!r} (choose one of {', '.join(QOS_NAMES)})")


def tf_profile() -> QoSProfile:
    """/tf: reliable, volatile, keep last 100 (as tf2_ros' TransformBroadcaster)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def tf_static_profile() -> QoSProfile:
    """/tf_static: reliable, transient local, keep last 1 (as tf2_ros' StaticTransformBroadcaster):
    late subscribers still receive the static transforms."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
