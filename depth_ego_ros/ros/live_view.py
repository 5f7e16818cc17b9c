"""`depth-ego view` / `depth_ego_view`: the perception node's outputs, live, in Foxglove or
Lichtblick, without a ROS distro. A Foxglove SDK WebSocket server (``ws://127.0.0.1:8765`` by
default) advertises one channel per stream, ROS 2 CDR-encoded with the ``ros2msg`` schemas the
bags use, so the apps decode them like any ROS 2 topic:

  camera    <image> (Image) or <image>/compressed (CompressedImage)
  depth     depth                    Image 32FC1
  colored   depth/colored            Image rgb8
  points    points                   PointCloud2
  odom      odom                     Odometry
  path      path                     nav_msgs/Path of the odometry (made here)
  tf        /tf, /tf_static          TFMessage

A stream is subscribed over DDS only while a client subscribes to its channel (the path needs
the odometry), so with nobody connected this process has no DDS subscription at all and the
perception node, which computes only outputs somebody listens to, works as if it did not
exist. Messages are forwarded as received (CDR bytes, not deserialised); ``--max-rate`` caps the
big streams, ``--image-stride``/``--cloud-stride`` thin images and clouds (these two
deserialise). QoS of each subscription follows its publishers (best effort when any publisher
is best effort, else reliable; /tf_static transient local).

Bound to 127.0.0.1 by default; ``--host 0.0.0.0`` serves the network, without authentication:
a warning says so.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
import time

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from depth_ego_ros.live.path import PathAccumulator, RateLimiter
from depth_ego_ros.ros import compat
from depth_ego_ros.ros import qos as qos_mod
from depth_ego_ros.ros.node_main import run_node

NODE_NAME = 'depth_ego_view'
# key -> (default topic, ROS type name, rate-limited by --max-rate)
STREAMS = {
    'camera': ('image', 'sensor_msgs/msg/Image', True),
    'depth': ('depth', 'sensor_msgs/msg/Image', True),
    'colored': ('depth/colored', 'sensor_msgs/msg/Image', True),
    'points': ('points', 'sensor_msgs/msg/PointCloud2', True),
    'odom': ('odom', 'nav_msgs/msg/Odometry', False),
    'tf': ('/tf', 'tf2_msgs/msg/TFMessage', False),
    'tf_static': ('/tf_static', 'tf2_msgs/msg/TFMessage', False),
}
PATH_TYPE = 'nav_msgs/msg/Path'


def build_parser(prog='depth-ego view'):
    p = argparse.ArgumentParser(prog=prog, description=(
        'Serve the perception node\'s camera, depth, coloured depth, point cloud, odometry as a '
        'path and TF to Foxglove / Lichtblick over a WebSocket (Foxglove SDK). Open '
        'ws://HOST:PORT in the app and import config/foxglove_layout.json. Topic names are '
        'relative to the namespace (--ros-args -r __ns:=/camera); remap with --ros-args -r.'))
    p.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1: this '
                   'machine only; 0.0.0.0 serves the network, without authentication)')
    p.add_argument('--port', type=int, default=8765, help='WebSocket port (default 8765; 0 = any)')
    p.add_argument('--image-topic', default='image', help='camera topic (default image)')
    p.add_argument('--compressed', action='store_true',
                   help='the camera topic is sensor_msgs/CompressedImage (<image-topic>/compressed)')
    p.add_argument('--path-topic', default='path', help='channel name of the trajectory (default path)')
    p.add_argument('--max-rate', type=float, default=10.0, help='Hz cap of camera, depth, '
                   'coloured depth and points per channel (default 10; 0 = every message)')
    p.add_argument('--image-stride', type=int, default=1, help='send every n-th pixel of row '
                   'and column of the images (default 1 = full resolution)')
    p.add_argument('--cloud-stride', type=int, default=1, help='send every n-th point (default 1)')
    p.add_argument('--path-rate', type=float, default=2.0, help='Hz of path updates (default 2)')
    p.add_argument('--path-max', type=int, default=10000, help='poses kept in the path')
    p.add_argument('--path-min-step', type=float, default=0.01,
                   help='metres between two kept path poses (default 0.01)')
    p.add_argument('--fixed-frame', default='odom',
                   help='fixed frame of the layout\'s 3-D panel (default odom)')
    p.add_argument('--write-layout', metavar='FILE', default='', help='write the Foxglove layout '
                   'for this view\'s topic names (namespace, remaps) to FILE and go on serving')
    p.add_argument('--path-always', action='store_true', help='follow the odometry from the '
                   'start (the path then has the whole drive; the node then computes odometry '
                   'even with nobody watching)')
    return p


def _is_loopback(host: str) -> bool:
    if host in ('localhost', ''):
        return host == 'localhost'
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stamp(ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def message_class(type_name: str):
    import importlib
    pkg, _, name = type_name.split('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


class _Listener:
    """Foxglove server callbacks (called from the server's thread): count subscribers per
    channel and wake the executor, which creates / destroys the DDS subscriptions."""

    def __init__(self, view):
        self._view = view

    def on_subscribe(self, client, channel):
        self._view.client_subscribed(channel.id, +1)

    def on_unsubscribe(self, client, channel):
        self._view.client_subscribed(channel.id, -1)


class LiveView(Node):
    """See the module docstring. ``args``: the parsed options (``build_parser``)."""

    def __init__(self, args=None, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        import foxglove
        from foxglove import Channel, Schema

        from depth_ego_ros.data.bag_types import TypeCatalog
        self.args = args = args or build_parser().parse_args([])
        if args.image_stride < 1 or args.cloud_stride < 1 or args.path_max < 2:
            raise ValueError('--image-stride and --cloud-stride must be >= 1, --path-max >= 2')
        catalog = TypeCatalog()
        self._fox = foxglove.Context()
        self._lock = threading.Lock()
        self._watchers: dict[str, int] = {}          # stream key -> subscribed clients
        self.streams: dict[str, dict] = {}
        camera = args.image_topic + ('/compressed' if args.compressed else '')
        for key, (topic, type_name, limited) in STREAMS.items():
            if key == 'camera':
                topic = camera
                type_name = 'sensor_msgs/msg/CompressedImage' if args.compressed else type_name
            if key.startswith('tf') and compat.TFMessage is None:
                self.get_logger().warning('tf2_msgs is not installed: no TF channels')
                continue
            self._add_stream(key, topic, type_name, limited, catalog, Channel, Schema)
        self._add_stream('path', args.path_topic, PATH_TYPE, False, catalog, Channel, Schema)
        self._by_channel = {s['channel'].id(): k for k, s in self.streams.items()}
        self.path = PathAccumulator(min_step=args.path_min_step, max_poses=args.path_max)
        self._path_limit = RateLimiter(args.path_rate)
        self._path_dirty = False
        self._tf_static_cache: bytes | None = None
        self._Path, self._PoseStamped = message_class(PATH_TYPE), message_class(
            'geometry_msgs/msg/PoseStamped')
        self.counts = {k: 0 for k in self.streams}
        self._wake = self.create_guard_condition(self._reconcile)
        self.create_timer(1.0, self._recheck_qos)
        self.create_timer(max(0.05, 1.0 / args.path_rate) if args.path_rate > 0 else 0.5,
                          self._publish_path)
        if args.write_layout:
            from depth_ego_ros.live.layout import layout_json
            with open(args.write_layout, 'w') as f:
                f.write(layout_json({k: s['topic'] for k, s in self.streams.items()},
                                    args.fixed_frame))
            self.get_logger().info(f'layout written to {args.write_layout}')
        if not _is_loopback(args.host):
            self.get_logger().warning(
                f'live view bound to {args.host}:{args.port}: anyone who can reach this address '
                'sees the camera and the outputs (no authentication, no encryption); use the '
                'default 127.0.0.1 and an SSH tunnel unless this network is trusted')
        self.server = foxglove.start_server(
            name=f'depth_ego_ros live view ({self.get_namespace()})', host=args.host,
            port=args.port, server_listener=_Listener(self), context=self._fox)
        self.port = self.server.port
        if args.path_always:
            self._watchers['path'] = 1
            self._reconcile()
        self.get_logger().info(
            f'live view on ws://{args.host}:{self.port} (Foxglove / Lichtblick: open a '
            f'"Foxglove WebSocket" connection, then import '
            f'{args.write_layout or "config/foxglove_layout.json"}); '
            f'channels: {", ".join(s["topic"] for s in self.streams.values())}')

    def _add_stream(self, key, topic, type_name, limited, catalog, Channel, Schema):
        resolved = self.resolve_topic_name(topic)
        td = catalog.definition(type_name)
        channel = Channel(resolved, message_encoding='cdr', context=self._fox,
                          schema=Schema(name=type_name, encoding='ros2msg',
                                        data=td.msgdef.encode()))
        self.streams[key] = {'topic': resolved, 'type': type_name, 'channel': channel,
                             'limit': RateLimiter(self.args.max_rate if limited else 0.0),
                             'sub': None, 'qos_known': False}

    # -- which DDS subscriptions exist ------------------------------------------------------
    def client_subscribed(self, channel_id: int, delta: int):
        key = self._by_channel.get(channel_id)
        if key is None:
            return
        with self._lock:
            self._watchers[key] = max(0, self._watchers.get(key, 0) + delta)
            new_tf_static = key == 'tf_static' and delta > 0
        if new_tf_static and self._tf_static_cache is not None:
            self.streams['tf_static']['channel'].log(self._tf_static_cache)   # latched
        self._wake.trigger()

    def _wanted(self) -> set:
        with self._lock:
            w = {k for k, n in self._watchers.items() if n > 0}
        if 'path' in w:
            w.add('odom_for_path')
        return w

    def _reconcile(self):
        """Create the subscriptions somebody watches, destroy the others (executor thread)."""
        wanted = self._wanted()
        for key, s in self.streams.items():
            if key == 'path':
                continue
            want = key in wanted or (key == 'odom' and 'odom_for_path' in wanted)
            if want and s['sub'] is None:
                self._subscribe(key, s)
            elif not want and s['sub'] is not None:
                self.destroy_subscription(s['sub'])
                s['sub'] = None

    def _qos_for(self, s) -> tuple:
        infos = self.get_publishers_info_by_topic(s['topic'])
        if s['type'] == 'tf2_msgs/msg/TFMessage' and s['topic'].endswith('tf_static'):
            return qos_mod.tf_static_profile(), True
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        # no publisher yet: best effort matches whatever comes; revisited once one appears
        reliability = (ReliabilityPolicy.BEST_EFFORT if best_effort or not infos
                       else ReliabilityPolicy.RELIABLE)
        return QoSProfile(depth=5, reliability=reliability,
                          durability=DurabilityPolicy.VOLATILE), bool(infos)

    def _subscribe(self, key, s):
        profile, known = self._qos_for(s)
        s['qos_known'] = known
        s['sub'] = self.create_subscription(message_class(s['type']), s['topic'],
                                            lambda data, k=key: self._on_message(k, data),
                                            profile, raw=True)

    def _recheck_qos(self):
        """A subscription made before any publisher existed: remake it with the publishers'
        QoS once they appear (a reliable one then gets reliable delivery)."""
        for key, s in self.streams.items():
            if s['sub'] is not None and not s['qos_known'] and \
                    self.get_publishers_info_by_topic(s['topic']):
                self.destroy_subscription(s['sub'])
                self._subscribe(key, s)

    # -- forwarding ------------------------------------------------------------------------------
    def _on_message(self, key: str, data: bytes):
        s = self.streams[key]
        if key == 'odom' and 'odom_for_path' in self._wanted():
            self._add_to_path(data)
        if key == 'tf_static':
            self._tf_static_cache = data
        if not s['channel'].has_sinks() or not s['limit'].ready(time.monotonic()):
            return
        if key in ('camera', 'depth', 'colored') and self.args.image_stride > 1 \
                and s['type'] == 'sensor_msgs/msg/Image':
            data = self._thin_image(data)
        elif key == 'points' and self.args.cloud_stride > 1:
            data = self._thin_cloud(data)
        s['channel'].log(data)
        self.counts[key] += 1

    def _thin_image(self, data: bytes) -> bytes:
        from depth_ego_ros.ros import conversions as conv
        msg = deserialize_message(data, message_class('sensor_msgs/msg/Image'))
        n = self.args.image_stride
        arr = conv.image_to_numpy(msg)[::n, ::n]
        return serialize_message(conv.numpy_to_image(arr, msg.encoding, msg.header))

    def _thin_cloud(self, data: bytes) -> bytes:
        import numpy as np
        msg = deserialize_message(data, message_class('sensor_msgs/msg/PointCloud2'))
        n, step = self.args.cloud_stride, msg.point_step
        points = np.frombuffer(bytes(msg.data), np.uint8).reshape(-1, step)[::n]
        msg.data = points.tobytes()
        msg.height, msg.width, msg.row_step = 1, len(points), len(points) * step
        return serialize_message(msg)

    def _add_to_path(self, data: bytes):
        odom = deserialize_message(data, message_class('nav_msgs/msg/Odometry'))
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        stamp = odom.header.stamp.sec * 1_000_000_000 + odom.header.stamp.nanosec
        with self._lock:
            if self.path.add(stamp, odom.header.frame_id, (p.x, p.y, p.z), (q.x, q.y, q.z, q.w)):
                self._path_dirty = True

    def path_message(self):
        """The accumulated trajectory as nav_msgs/Path."""
        from geometry_msgs.msg import Point, Pose, Quaternion
        from std_msgs.msg import Header

        with self._lock:
            poses, frame = list(self.path.poses), self.path.frame_id
        msg = self._Path(header=Header(frame_id=frame))
        if poses:
            msg.header.stamp = _stamp(poses[-1][0])
        msg.poses = [self._PoseStamped(
            header=Header(stamp=_stamp(t), frame_id=frame),
            pose=Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw)))
            for t, (x, y, z), (qx, qy, qz, qw) in poses]
        return msg

    def _publish_path(self):
        s = self.streams['path']
        if not self._path_dirty or not s['channel'].has_sinks():
            return
        self._path_dirty = False
        s['channel'].log(serialize_message(self.path_message()))
        self.counts['path'] += 1

    def close(self):
        try:
            self.server.stop()
        except Exception:
            pass


def main(argv=None) -> int:
    """``depth_ego_view [options] [--ros-args ...]`` (also ``depth-ego view``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = []
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        argv, ros_args = argv[:i], argv[i:]
    args = build_parser('depth_ego_view').parse_args(argv)
    return run_node(lambda: LiveView(args), NODE_NAME, [sys.argv[0], *ros_args])


if __name__ == '__main__':
    sys.exit(main())
