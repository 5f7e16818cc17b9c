"""Helpers to exercise nodes through real DDS from tests and benchmarks (never mocks):

* :class:`NodeProcess` -- a node started as its own process (``python -m <module> --ros-args``),
  its log lines captured, its memory readable, stopped with SIGINT.
* :class:`Probe` -- an rclpy node in its own Context with a background executor: publishers for
  inputs, subscribers collecting outputs, ``wait_until`` for conditions (no fixed sleeps).
* :func:`diagnostic_values` -- the key/values of a node's DiagnosticStatus as a dict.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


def ros_arg(value) -> str:
    """A Python value as a ``-p name:=value`` YAML literal."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(ros_arg(v) for v in value) + ']'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is truthy (returns True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class NodeProcess:
    """A ROS node as a separate process. ``params``: {name: value}; ``remaps``: {from: to};
    ``params_file``: a ROS parameters YAML loaded before ``params``."""

    def __init__(self, module: str, params: dict | None = None, env: dict | None = None,
                 remaps: dict | None = None, node_args=(), params_file: str | None = None):
        cmd = [sys.executable, '-m', module, *node_args, '--ros-args']
        if params_file:
            cmd += ['--params-file', str(params_file)]     # before -p: the -p values win
        for name, value in (params or {}).items():
            cmd += ['-p', f'{name}:={ros_arg(value)}']
        for src, dst in (remaps or {}).items():
            cmd += ['-r', f'{src}:={dst}']
        self.cmd = cmd
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip('\n'))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, start: int = 0) -> list[str]:
        with self._lock:
            return list(self.lines[start:])

    def log_text(self, start: int = 0) -> str:
        return '\n'.join(self.log(start))

    def mark(self) -> int:
        """Index of the next log line (to search only what comes after)."""
        with self._lock:
            return len(self.lines)

    def wait_for_log(self, text: str, timeout: float, start: int = 0) -> str | None:
        found = []

        def check():
            for line in self.log(start):
                if text in line:
                    found.append(line)
                    return True
            return not self.alive()
        wait_until(check, timeout, 0.05)
        return found[0] if found else None

    def rss_mb(self) -> float:
        """Resident memory of the process in MiB (Linux /proc)."""
        with open(f'/proc/{self.pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
        return float('nan')

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        return self.proc.returncode


class Probe:
    """An rclpy node in its own Context (domain from the environment, or ``domain_id``) spinning
    in a background thread. Collected messages: ``probe.msgs[key]`` (lists, append-only)."""

    def __init__(self, name: str = 'probe', domain_id: int | None = None):
        self.context = Context()
        kwargs = {'domain_id': domain_id} if domain_id is not None else {}
        rclpy.init(context=self.context, **kwargs)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.msgs = collections.defaultdict(list)
        self.received_at = collections.defaultdict(list)
        self._subs = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # context shut down
            pass

    def subscribe(self, key: str, msg_type, topic: str, qos, keep: bool = True):
        def callback(msg, key=key):
            self.received_at[key].append(time.monotonic())
            if keep:
                self.msgs[key].append(msg)
        self._subs[key] = self.node.create_subscription(msg_type, topic, callback, qos)
        return self._subs[key]

    def unsubscribe(self, key: str):
        sub = self._subs.pop(key, None)
        if sub is not None:
            self.node.destroy_subscription(sub)

    def publisher(self, msg_type, topic: str, qos):
        return self.node.create_publisher(msg_type, topic, qos)

    def now(self):
        return self.node.get_clock().now().to_msg()

    @staticmethod
    def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
        return wait_until(predicate, timeout, interval)

    def wait_matched(self, entities, timeout: float) -> bool:
        """Wait until every publisher has a subscriber and every subscription a publisher."""
        def matched():
            for e in entities:
                count = (e.get_subscription_count() if hasattr(e, 'get_subscription_count')
                         else e.get_publisher_count())
                if count < 1:
                    return False
            return True
        return wait_until(matched, timeout, 0.05)

    def close(self):
        try:
            self.executor.shutdown(timeout_sec=2.0)
        except Exception:
            pass
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(2)


def diagnostic_values(status) -> dict:
    """DiagnosticStatus -> {key: value} with numbers parsed (int, else float, else str)."""
    out = {}
    for kv in status.values:
        value = kv.value
        for cast in (int, float):
            try:
                value = cast(kv.value)
                break
            except ValueError:
                continue
        out[kv.key] = value
    return out


def isolated_ros_env(domain_id: int, log_dir: str) -> dict:
    """Environment values for an isolated ROS graph (same keys as test/conftest.py's ros_env)."""
    return {
        'ROS_DOMAIN_ID': str(domain_id),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'ROS_LOG_DIR': str(log_dir),
        'RCUTILS_LOGGING_BUFFERED_STREAM': '0',
        'PYTHONUNBUFFERED': '1',
    }


def python_path_env(env: dict, repo: str) -> dict:
    env = dict(env)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(repo), env.get('PYTHONPATH', '')]))
    return env


# ----------------------------------------------------------------------------------------------
# generated frames and the publisher / listener processes used by tests and bench/bench_node.py
# ----------------------------------------------------------------------------------------------
def generated_frame(width: int, height: int, index: int = 0):
    """A textured RGB test scene (uint8 HxWx3) that pans by 2 px per index: colour gradients +
    a checkerboard, so that every pixel differs from its neighbours and colours are traceable."""
    import numpy as np
    v, u = np.mgrid[0:height, 0:width]
    u = u + 2 * index
    checker = ((u // 8 + v // 8) % 2).astype(np.float32)
    r = 40 + 150 * (u % width) / max(width - 1, 1) + 60 * checker
    g = 40 + 150 * v / max(height - 1, 1) + 30 * checker
    b = 128 + 100 * np.sin(u / 9.0) * np.cos(v / 7.0)
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def _publish_main(args) -> int:
    import json

    from sensor_msgs.msg import CompressedImage, Image

    from depth_ego_ros.ros import conversions as conv
    from depth_ego_ros.ros import qos as qos_mod
    rclpy.init()
    node = Node('frame_publisher')
    compressed = args.encoding in ('jpeg', 'png')
    topics = args.topic if isinstance(args.topic, list) else [args.topic]
    pubs = [node.create_publisher(CompressedImage if compressed else Image, t,
                                  qos_mod.profile(args.qos, max(1, args.depth))) for t in topics]
    if not wait_until(lambda: all(p.get_subscription_count() >= args.subscribers for p in pubs),
                      args.wait_match):
        print(json.dumps({'error': f'no subscriber on {topics}'}), flush=True)
        return 2
    time.sleep(args.settle)
    frames = [generated_frame(args.width, args.height, i) for i in range(min(args.count, 8))]
    msgs = [conv.rgb8_to_compressed(f, args.encoding) if compressed else conv.rgb8_to_image(f, args.encoding)
            for f in frames]
    stamps = []
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic()
    for i in range(args.count):
        msg = msgs[i % len(msgs)]
        msg.header.frame_id = args.frame_id
        for pub in pubs:             # every camera topic: the same frame, its own stamp
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
        stamps.append(conv.stamp_to_ns(msg.header.stamp))
        if period:
            delay = start + (i + 1) * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    elapsed = time.monotonic() - start
    time.sleep(args.linger)          # keep the writer alive while reliable samples drain
    print(json.dumps({'sent': len(stamps), 'seconds': elapsed, 'first_stamp': stamps[0],
                      'last_stamp': stamps[-1], 'stamps': stamps}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


LISTEN_TYPES = {
    'Image': ('sensor_msgs.msg', 'Image'), 'CameraInfo': ('sensor_msgs.msg', 'CameraInfo'),
    'PointCloud2': ('sensor_msgs.msg', 'PointCloud2'), 'Odometry': ('nav_msgs.msg', 'Odometry'),
}


def _listen_main(args) -> int:
    """Subscribe to topics for a while; print per topic the (header stamp ns, arrival ns) pairs
    and the last diagnostics key/values of the perception node, as one JSON line."""
    import importlib
    import json

    from diagnostic_msgs.msg import DiagnosticArray

    from depth_ego_ros.ros import conversions as conv
    from depth_ego_ros.ros import qos as qos_mod
    rclpy.init()
    node = Node('frame_listener')
    arrivals = {}
    subs = []
    for spec in args.topics:
        topic, _, type_name = spec.partition(':')
        module, cls = LISTEN_TYPES[type_name or 'Image']
        msg_type = getattr(importlib.import_module(module), cls)
        arrivals[topic] = []
        subs.append(node.create_subscription(
            msg_type, topic, lambda m, t=topic: arrivals[t].append(
                (conv.stamp_to_ns(m.header.stamp), time.time_ns())), qos_mod.profile(args.qos, 10)))
    diag = {}

    def on_diag(msg):
        for status in msg.status:
            if 'perception' in status.name:
                diag.clear()
                diag.update(diagnostic_values(status))
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    deadline = time.monotonic() + args.wait_match
    while time.monotonic() < deadline and not all(s.get_publisher_count() > 0 for s in subs):
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({'listening': list(arrivals)}), flush=True)
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({'arrivals': arrivals, 'diagnostics': diag}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog='python -m depth_ego_ros.ros.testing',
                                     description='frame publisher / listener processes for tests and benches')
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('publish', help='publish generated frames, print their stamps as JSON')
    p.add_argument('--topic', nargs='+', default='image',
                   help='image topic(s); several = several cameras fed in the same loop')
    p.add_argument('--count', type=int, default=10)
    p.add_argument('--rate', type=float, default=0.0, help='Hz; 0 = as fast as possible')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--encoding', default='rgb8', help='rgb8, bgr8, ..., or jpeg/png (compressed)')
    p.add_argument('--frame-id', default='camera_optical_frame')
    p.add_argument('--qos', default='reliable')
    p.add_argument('--depth', type=int, default=10)
    p.add_argument('--wait-match', type=float, default=30.0)
    p.add_argument('--subscribers', type=int, default=1,
                   help='wait until every image topic has this many subscribers')
    p.add_argument('--settle', type=float, default=0.5, help='seconds between matching and publishing')
    p.add_argument('--linger', type=float, default=1.0)
    p.set_defaults(func=_publish_main)
    q = sub.add_parser('listen', help='print arrival times of topics (+ diagnostics) as JSON')
    q.add_argument('--topics', nargs='+', default=['depth:Image'],
                   help=f"topic:Type with Type one of {', '.join(LISTEN_TYPES)}")
    q.add_argument('--wait-match', type=float, default=30.0)
    q.add_argument('--duration', type=float, default=10.0)
    q.add_argument('--qos', default='reliable')
    q.set_defaults(func=_listen_main)
    args = parser.parse_args([a for a in (argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
