#!/usr/bin/env python3
"""Does the live view slow the perception node down? Latency of the node (camera stamp ->
arrival at a listener process) in three set-ups, on the same node process, alternated over
--repeats rounds so that the machine's load drifts over all of them alike:

  off        no view process
  idle       `depth_ego_view` running, nobody connected (it then holds no DDS subscription)
  watching   the view with one Foxglove WebSocket client subscribed to every channel (camera,
             depth, coloured depth, points, odometry, path, TF), draining what arrives

The listener subscribes to depth, depth/colored, points and odom in every set-up, so the node
computes the same outputs each time and the difference is the view's own cost (a second DDS
reader per topic, the view process's CPU, the WebSocket). Frames are sent slowly (--rate) so
that latency is processing, not queueing. Prints a Markdown table: median latency to depth and
to the last output per round, their median and spread over rounds, and the ratio to `off`.

    python bench/bench_live_view.py                         # 320x240 camera, 320x96 net, 1 thread
    python bench/bench_live_view.py --camera 640x480 --net 640x192 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'bench'))
import json  # noqa: E402
import subprocess  # noqa: E402

from bench_node import OUTPUTS, latencies, run_json, wxh  # noqa: E402

from depth_ego_ros.live.client import FoxgloveClient  # noqa: E402
from depth_ego_ros.ros.testing import NodeProcess, isolated_ros_env, python_path_env  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--camera', default='320x240')
    p.add_argument('--net', default='320x96')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--frames', type=int, default=30, help='frames per round and set-up')
    p.add_argument('--rate', type=float, default=4.0, help='camera Hz (slow: no queueing)')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--qos', default='reliable')
    return p.parse_args(argv)


def phase(env, args, count, rate, listen_seconds, topics, subscribers=1):
    """bench_node.phase, with the publisher waiting for ``subscribers`` readers of the camera
    (the node, and the view when a client watches the camera): otherwise it could start when
    only the view matched and the node would miss the first frames."""
    cw, ch = wxh(args.camera)
    listener = subprocess.Popen(
        [sys.executable, '-m', 'depth_ego_ros.ros.testing', 'listen', '--duration',
         str(listen_seconds), '--wait-match', '30', '--topics', *topics],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = listener.stdout.readline()
    if 'listening' not in first:
        listener.kill()
        raise RuntimeError('listener did not start: ' + first + listener.stderr.read())
    pub = run_json([sys.executable, '-m', 'depth_ego_ros.ros.testing', 'publish', '--count',
                    str(count), '--rate', str(rate), '--width', str(cw), '--height', str(ch),
                    '--qos', args.qos, '--depth', '1', '--linger', '0.5',
                    '--subscribers', str(subscribers)], env, timeout=listen_seconds + 120)
    out, _ = listener.communicate(timeout=listen_seconds + 60)
    return pub, json.loads(out.strip().splitlines()[-1])


class WatchingClient:
    """A Foxglove client in a thread: subscribes to every channel, drains messages."""

    def __init__(self, port: int):
        self.count = 0
        self.topics = set()
        self._stop = threading.Event()
        self.client = FoxgloveClient(f'ws://127.0.0.1:{port}')
        self.client.wait_channels(['/depth', '/points', '/path'], 30)
        self.client.subscribe(list(self.client.topics()))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for m in self.client.messages(timeout=0.5):
                self.count += 1
                self.topics.add(m.topic)
                if self._stop.is_set():
                    break

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    cw, ch = wxh(args.camera)
    nw, nh = wxh(args.net)
    tmp = Path(tempfile.mkdtemp(prefix='bench_live_view_'))
    env = python_path_env({**os.environ, **isolated_ros_env(1 + os.getpid() % 200, tmp)}, REPO)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    f = 0.9 * cw
    node = NodeProcess('depth_ego_ros.ros.perception_node', {
        'width': nw, 'height': nh, 'num_threads': args.threads, 'device': 'cpu',
        'qos.input': args.qos, 'camera_info.fallback_k': [f, f, (cw - 1) / 2, (ch - 1) / 2]}, env)
    load0 = os.getloadavg()[0]
    results = {'off': [], 'idle': [], 'watching': []}
    messages = []
    dropped = {'off': 0, 'idle': 0, 'watching': 0}
    received = {'off': 0, 'idle': 0, 'watching': 0}
    last_drop, last_recv = [0], [0]
    try:
        if not node.wait_for_log('ready:', 180):
            raise RuntimeError('node did not start:\n' + node.log_text())
        phase(env, args, 6, args.rate, 6 / args.rate + 4, OUTPUTS)      # warm-up
        for r in range(args.repeats):
            for setup in ('off', 'idle', 'watching'):
                view = client = None
                try:
                    if setup != 'off':
                        view = NodeProcess('depth_ego_ros.ros.live_view', env=env,
                                           node_args=['--port', '0', '--max-rate', '0'])
                        line = view.wait_for_log('live view on ws://', 60)
                        if not line:
                            raise RuntimeError('view did not start:\n' + view.log_text())
                        if setup == 'watching':
                            client = WatchingClient(int(re.search(r':(\d+) ', line).group(1)))
                    pub, lis = phase(env, args, args.frames, args.rate,
                                     args.frames / args.rate + 4, OUTPUTS,
                                     subscribers=2 if setup == 'watching' else 1)
                    to_depth, to_all = latencies(pub, lis)
                    d = int(lis['diagnostics'].get('frames_dropped', 0))   # cumulative
                    dropped[setup] += d - last_drop[0]
                    last_drop[0] = d
                    n = int(lis['diagnostics'].get('frames_received', 0))
                    received[setup] += n - last_recv[0]
                    last_recv[0] = n
                    results[setup].append((np.median(to_depth), np.median(to_all),
                                           len(to_depth), pub['sent']))
                    if client is not None:
                        messages.append((client.count, len(client.topics)))
                finally:
                    if client is not None:
                        client.close()
                    if view is not None:
                        view.stop()
            print(f'round {r + 1}/{args.repeats}: ' + ', '.join(
                f'{s} {v[-1][0]:.1f} ms ({v[-1][2]}/{v[-1][3]} frames)' for s, v in results.items()),
                file=sys.stderr, flush=True)
    finally:
        node.stop()

    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                if line.startswith('model name')), platform.processor())
    print(f'# live view vs node latency: {cw}x{ch} rgb8 camera at {args.rate:g} Hz -> {nw}x{nh} '
          f'net (resnet18, CPU, {args.threads} thread), listener on depth, depth/colored, points, '
          f'odom; {args.frames} frames per round, {args.repeats} rounds alternating; {cpu}, '
          f'{os.cpu_count()} CPUs, load {load0:.1f} -> {os.getloadavg()[0]:.1f} (shared machine), '
          f'{time.strftime("%Y-%m-%d %H:%M")}\n')
    base = np.median([v[0] for v in results['off']])
    base_all = np.median([v[1] for v in results['off']])
    print('| set-up | stamp -> depth ms, median of rounds (min-max) | stamp -> last output ms '
          '(min-max) | ratio to off (depth / last) | frames with depth | received by the node | dropped by the node |')
    print('|---|---|---|---|---|---|---|')
    for setup, rows in results.items():
        d = [v[0] for v in rows]
        a = [v[1] for v in rows]
        got = sum(v[2] for v in rows)
        sent = sum(v[3] for v in rows)
        print(f'| {setup} | {np.median(d):.1f} ({min(d):.1f}-{max(d):.1f}) | {np.median(a):.1f} '
              f'({min(a):.1f}-{max(a):.1f}) | {np.median(d) / base:.2f} / {np.median(a) / base_all:.2f} '
              f'| {got}/{sent} | {received[setup]} | {dropped[setup]} |')
    if messages:
        print(f'\nthe client received {int(np.median([m[0] for m in messages]))} messages per round '
              f'on {messages[0][1]} channels')
    return 0


if __name__ == '__main__':
    sys.exit(main())
