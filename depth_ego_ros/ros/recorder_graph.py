"""Graph look-ups for recording and replaying: message classes by name, publishers' types, hashes
and QoS, and the QoS to subscribe / publish with (rosbag2's adaptive rules).
"""
from __future__ import annotations

import importlib
import re

from rclpy.duration import Duration
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile,
                       ReliabilityPolicy)
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)

from ..data.bag_types import UnknownTypeError

_INFINITE_NS = 2 ** 63 - 1
_RMW_INFINITE = QosTime(9223372036, 854775807)   # how rosbag2 writes an infinite duration


def import_message_class(msgtype: str):
    """The Python class of ``pkg/msg/Type`` (raises UnknownTypeError saying what is missing)."""
    m = re.fullmatch(r'([A-Za-z]\w*)/msg/([A-Za-z]\w*)', msgtype or '')
    if not m:
        raise UnknownTypeError(f'{msgtype!r} is not a message type name (expected pkg/msg/Type)')
    pkg, name = m.groups()
    try:
        module = importlib.import_module(f'{pkg}.msg')
    except ImportError as exc:
        raise UnknownTypeError(f'message package {pkg!r} is not installed ({exc})') from exc
    cls = getattr(module, name, None)
    if cls is None:
        raise UnknownTypeError(f'package {pkg!r} has no message {name!r}')
    return cls


def publishers(node, topic: str):
    """(types: set[str], hash: str | None, qos: list[QoSProfile]) of the topic's publishers."""
    infos = node.get_publishers_info_by_topic(topic)
    types = {i.topic_type for i in infos}
    hashes = {str(h) for i in infos if (h := getattr(i, 'topic_type_hash', None)) is not None
              and str(h).startswith('RIHS01_')}
    return types, (hashes.pop() if len(hashes) == 1 else None), [i.qos_profile for i in infos]


def _qos_time(d: Duration) -> QosTime:
    ns = d.nanoseconds
    if ns >= _INFINITE_NS or ns < 0:
        return _RMW_INFINITE
    return QosTime(ns // 10 ** 9, ns % 10 ** 9)


def to_bag_qos(profile: QoSProfile) -> Qos:
    """rclpy QoSProfile -> rosbags Qos (what metadata.yaml stores as offered_qos_profiles)."""
    def enum(cls, value):
        try:
            return cls(int(value))
        except ValueError:
            return cls.UNKNOWN
    return Qos(
        enum(QosHistory, profile.history), int(profile.depth),
        enum(QosReliability, profile.reliability), enum(QosDurability, profile.durability),
        _qos_time(profile.deadline), _qos_time(profile.lifespan),
        enum(QosLiveliness, profile.liveliness), _qos_time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions))


def from_bag_qos(qos: Qos | None, depth: int = 10) -> QoSProfile:
    """QoS to publish a recorded topic with (from its first offered profile; reliable default)."""
    if qos is None:
        return QoSProfile(depth=depth)
    reliability = (ReliabilityPolicy.BEST_EFFORT if qos.reliability == QosReliability.BEST_EFFORT
                   else ReliabilityPolicy.RELIABLE)
    durability = (DurabilityPolicy.TRANSIENT_LOCAL
                  if qos.durability == QosDurability.TRANSIENT_LOCAL
                  else DurabilityPolicy.VOLATILE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(depth, 1),
                      reliability=reliability, durability=durability,
                      liveliness=LivelinessPolicy.AUTOMATIC)


def subscription_qos(offered: list, depth: int, reliability: str = 'auto',
                     default_reliable: bool = False, default_latched: bool = False) -> QoSProfile:
    """The QoS to record a topic with, adapted to its publishers like rosbag2 does.

    Reliable only when every publisher is reliable (a reliable reader does not match a
    best-effort writer); transient local only when every publisher is (so latched data such as
    /tf_static arrives late too). Without publishers the defaults apply. ``reliability``
    'reliable'/'best_effort' overrides.
    """
    if offered:
        reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
        latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    else:
        reliable, latched = default_reliable, default_latched
    if reliability == 'reliable':
        reliable = True
    elif reliability == 'best_effort':
        reliable = False
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched and reliable
                    else DurabilityPolicy.VOLATILE))
