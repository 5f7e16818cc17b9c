"""Replay a rosbag2 bag on its topics without a ROS distro (`depth-ego play`).

Messages are published as the recorded CDR bytes (rclpy serialized publishing: no decode, no
re-encode) at the recorded timing divided by ``rate``, each topic with the QoS its publishers
offered when it was recorded (so /tf_static stays transient local). On a distro, ``ros2 bag play``
does the same and more.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node

from ..data.bags import UnknownTypeError, open_reader
from .recorder_graph import from_bag_qos, import_message_class


@dataclass
class PlayOptions:
    rate: float = 1.0                 # 2.0 = twice as fast
    loop: bool = False
    start_offset: float = 0.0         # seconds skipped from the bag start
    topics: tuple = ()                # only these (empty = all)
    delay: float = 0.0                # seconds to wait before the first message
    wait_for_subscribers: int = 0     # wait until each topic has this many subscribers
    wait_timeout: float = 10.0        # ... at most this long (then play anyway)
    clock: float = 0.0                # publish /clock at this rate (Hz); 0 = no
    max_loops: int = 0                # with loop: stop after this many passes (0 = forever)

    def validate(self):
        if not self.rate > 0:
            raise ValueError(f'rate must be > 0, got {self.rate}')
        if self.start_offset < 0 or self.delay < 0 or self.clock < 0:
            raise ValueError('start_offset, delay and clock must be >= 0')
        return self


class BagPlayer:
    """Publishes one bag. ``play()`` returns {topic: messages published}."""

    def __init__(self, node: Node, bag, options: PlayOptions, log=print):
        self.node = node
        self.bag = bag
        self.opt = options.validate()
        self.log = log
        self.published = Counter()
        self._reader = open_reader(bag)
        self.publishers = {}
        wanted = set(self.opt.topics)
        known = {c.topic for c in self._reader.connections}
        if missing := wanted - known:
            self.log(f'warning: not in the bag: {", ".join(sorted(missing))}')
        self.connections = [c for c in self._reader.connections
                            if not wanted or c.topic in wanted]
        for conn in self.connections:
            if conn.topic in self.publishers:
                continue
            try:
                cls = import_message_class(conn.msgtype)
            except UnknownTypeError as exc:
                self.log(f'warning: {conn.topic} not played: {exc}')
                self.publishers[conn.topic] = None
                continue
            offered = list(conn.ext.offered_qos_profiles)
            self.publishers[conn.topic] = node.create_publisher(
                cls, conn.topic, from_bag_qos(offered[0] if offered else None, depth=100))
        self.connections = [c for c in self.connections if self.publishers.get(c.topic)]
        self._clock_pub = None
        if self.opt.clock > 0:
            from rosgraph_msgs.msg import Clock
            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, '/clock', 10)

    def close(self):
        self._reader.close()

    def wait_for_subscribers(self):
        need = self.opt.wait_for_subscribers
        if need <= 0:
            return True
        deadline = time.monotonic() + self.opt.wait_timeout
        pubs = [p for p in self.publishers.values() if p is not None]
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() >= need for p in pubs):
                return True
            time.sleep(0.02)
        self.log('warning: not every topic has a subscriber; playing anyway')
        return False

    def _publish_clock(self, bag_ns):
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 10 ** 9)
        self._clock_pub.publish(msg)

    def _sleep_until(self, wall_target, bag_at):
        """Sleep until ``wall_target`` (monotonic); /clock ticks meanwhile when enabled."""
        while True:
            left = wall_target - time.monotonic()
            if left <= 0:
                return
            if self._clock_pub is not None:
                step = min(left, 1.0 / self.opt.clock)
                time.sleep(step)
                self._publish_clock(bag_at(time.monotonic()))
            else:
                time.sleep(min(left, 0.5))

    def play(self):
        if not self.connections:
            self.log('nothing to play')
            return dict(self.published)
        self.wait_for_subscribers()
        if self.opt.delay:
            time.sleep(self.opt.delay)
        start = self._reader.start_time + int(self.opt.start_offset * 1e9)
        passes = 0
        while True:
            wall0, bag0 = time.monotonic(), None
            for conn, stamp, data in self._reader.messages(connections=self.connections,
                                                           start=start):
                if bag0 is None:
                    bag0 = stamp

                def bag_at(now, _w=wall0, _b=bag0):
                    return _b + (now - _w) * self.opt.rate * 1e9

                self._sleep_until(wall0 + (stamp - bag0) / 1e9 / self.opt.rate, bag_at)
                if self._clock_pub is not None:
                    self._publish_clock(stamp)
                self.publishers[conn.topic].publish(bytes(data))
                self.published[conn.topic] += 1
            passes += 1
            if not self.opt.loop or (self.opt.max_loops and passes >= self.opt.max_loops):
                break
        self._wait_delivered()
        return dict(self.published)

    def _wait_delivered(self, timeout=3.0):
        """Let reliable subscribers acknowledge the last messages before the node goes away."""
        deadline = time.monotonic() + timeout
        for pub in self.publishers.values():
            if pub is not None and hasattr(pub, 'wait_for_all_acked'):
                left = max(0.0, deadline - time.monotonic())
                pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))


def play_bag(bag, options: PlayOptions, log=print) -> dict:
    """Create a node, play ``bag`` once (or looped), return {topic: count}."""
    own_context = not rclpy.ok()
    if own_context:
        rclpy.init()
    node = rclpy.create_node('depth_ego_player')
    player = None
    try:
        player = BagPlayer(node, bag, options, log=log)
        return player.play()
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        if own_context:
            rclpy.try_shutdown()
