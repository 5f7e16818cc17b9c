"""The recorder's topics: one slot per recorded topic (camera, camera_info, odometry, TF,
extra topics), subscribed once a publisher appears, with the type and QoS its publishers offer
(as rosbag2 does), and the type's definition and hash declared to the bag writer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import rclpy.subscription

from ..data.bag_types import UnknownTypeError
from .recorder_graph import import_message_class, publishers, subscription_qos, to_bag_qos

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
TF = 'tf2_msgs/msg/TFMessage'
ODOM_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/TwistStamped',
              'geometry_msgs/msg/TwistWithCovarianceStamped', 'geometry_msgs/msg/Twist')


@dataclass
class TopicSlot:
    role: str                  # camera | camera_info | odom | tf | tf_static | extra
    name: str                  # fully qualified topic name
    msgtype: str = ''          # '' until learnt from the graph
    fixed: bool = False        # type given by parameter
    state: str = 'pending'     # pending | subscribed | failed
    error: str = ''
    sub: object = None
    received: int = 0
    bad_input: int = 0         # messages the filter could not analyse (recorded anyway)
    dropped: Counter = field(default_factory=Counter)
    waiting_logged: bool = False


def parse_extra(entry: str):
    """(name, type) of an extra_topics entry 'name' or 'name:pkg/msg/Type' (type may be '')."""
    name, _, msgtype = entry.strip().partition(':')
    return name.strip(), msgtype.strip()


class RecorderTopics:
    """The slots of one recorder node. ``catalog``: its TypeCatalog; ``add_topic(spec, latch)``
    declares a topic to the bag writer; ``on_message(slot, raw, info)`` receives every message
    (serialized; ``info`` None before Jazzy); ``reliability``: the reliability parameter."""

    def __init__(self, node, catalog, add_topic, on_message, reliability: str):
        self._node = node
        self.catalog = catalog
        self._add_topic = add_topic
        self._on_message = on_message
        self._reliability = reliability
        self._has_info = hasattr(rclpy.subscription, 'MessageInfo')   # Jazzy and later
        self.slots = []

    def make_slots(self, p: dict, extra) -> list:
        """One TopicSlot per topic to record (a type given by parameter is checked now)."""
        slots = []

        def add(role, name, msgtype=''):
            resolved = self._resolve(name)
            if any(s.name == resolved for s in slots):
                self._node.get_logger().warning(f'{resolved} listed twice: recorded once')
                return
            slot = TopicSlot(role, resolved, msgtype, fixed=bool(msgtype))
            if msgtype:   # a type given by parameter is checked now: clear error at start-up
                try:
                    import_message_class(msgtype)
                    self.catalog.ensure(msgtype)
                except UnknownTypeError as exc:
                    slot.state, slot.error = 'failed', str(exc)
                    self._node.get_logger().error(f'cannot record {resolved}: {exc}')
            slots.append(slot)

        add('camera', p['camera_topic'], p['camera_type'])
        if p['camera_info_topic']:
            add('camera_info', p['camera_info_topic'], CAMERA_INFO)
        if p['odom_topic']:
            add('odom', p['odom_topic'])
        if p['record_tf']:
            add('tf', '/tf', TF)
            add('tf_static', '/tf_static', TF)
        for entry in extra:
            if entry.strip():
                name, msgtype = parse_extra(entry)
                add('extra', name, msgtype)
        self.slots = slots
        return slots

    def _resolve(self, name):
        """Fully qualified topic name (namespace and remappings applied)."""
        if hasattr(self._node, 'resolve_topic_name'):
            return self._node.resolve_topic_name(name)
        if name.startswith('/'):          # older rclpy: expansion only
            return name
        if name.startswith('~'):
            return self._node.get_fully_qualified_name() + name[1:]
        return f"{self._node.get_namespace().rstrip('/')}/{name}"

    def resolve(self):
        """Subscribe to the topics that have a publisher by now."""
        for slot in self.slots:
            if slot.state == 'pending':
                self._try_subscribe(slot)

    def _fail(self, slot, why):
        slot.state, slot.error = 'failed', why
        self._node.get_logger().error(f'cannot record {slot.name}: {why} (the other topics record)')

    def _try_subscribe(self, slot):
        types, type_hash, offered = publishers(self._node, slot.name)
        if not types:   # wait for a publisher: its QoS decides ours (as rosbag2 does)
            if not slot.waiting_logged:
                self._node.get_logger().info(f'waiting for a publisher on {slot.name}')
                slot.waiting_logged = True
            return
        if slot.fixed and slot.msgtype not in types:
            return self._fail(slot, f'published as {", ".join(sorted(types))}, '
                                    f'not {slot.msgtype}')
        if not slot.fixed:
            if len(types) > 1:
                return self._fail(slot, f'published with several types: {sorted(types)}')
            slot.msgtype = next(iter(types))
        allowed = {'camera': (IMAGE, COMPRESSED), 'odom': ODOM_TYPES}.get(slot.role)
        if allowed and slot.msgtype not in allowed:
            return self._fail(slot, f'type {slot.msgtype} is not usable as {slot.role} '
                                    f'(expected one of {", ".join(allowed)})')
        try:
            cls = import_message_class(slot.msgtype)
            spec, note = self.catalog.spec(slot.name, slot.msgtype, type_hash,
                                           [to_bag_qos(q) for q in offered])
        except (UnknownTypeError, ValueError) as exc:
            return self._fail(slot, str(exc))
        if note:
            self._node.get_logger().warning(note)
        latched = slot.role == 'tf_static'
        qos = subscription_qos(offered, depth=100 if slot.role in ('tf', 'tf_static') else 30,
                               reliability=self._reliability,
                               default_reliable=slot.role in ('tf', 'tf_static'),
                               default_latched=latched)
        self._add_topic(spec, latch={'camera_info': 'last', 'tf_static': 'all'}.get(slot.role))
        slot.sub = self._node.create_subscription(cls, slot.name, self._callback(slot), qos,
                                                  raw=True)
        slot.state = 'subscribed'
        self._node.get_logger().info(
            f'recording {slot.name} [{slot.msgtype}] '
            f'({qos.reliability.name.lower()}, {qos.durability.name.lower()})')

    def _callback(self, slot):
        if self._has_info:
            return lambda raw, info: self._on_message(slot, raw, info)
        return lambda raw: self._on_message(slot, raw, None)


__all__ = ['CAMERA_INFO', 'COMPRESSED', 'IMAGE', 'ODOM_TYPES', 'RecorderTopics', 'TF', 'TopicSlot',
           'parse_extra']
