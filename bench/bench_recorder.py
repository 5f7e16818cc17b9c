#!/usr/bin/env python3
"""Recorder throughput: camera streams recorded by recorder_node on this machine.

For each case (default: 1280x720 rgb8 at 30 Hz = 83 MB/s, 640x480 rgb8 at 60 Hz = 55 MB/s) a
publisher process sends pre-serialized frames (raw CDR publishing: the publisher costs little)
for --seconds, a recorder_node process records them into a temporary directory, and the bench
prints: frames published / received by the recorder / written to the bag / dropped (by reason),
the recorder's CPU use (user+sys, % of one core), its peak resident memory, its peak queue, and
the write throughput (bag bytes / recording time). Nothing is asserted: figures are printed.

    python bench/bench_recorder.py                       # both cases, 10 s each
    python bench/bench_recorder.py --cases 1280x720@30 --seconds 20 --shm --qos best_effort

--shm uses config/fastdds_shm.xml (32 MiB shared-memory segments) in both processes: without
it, frames above 512 KiB travel as UDP fragments over loopback.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PUBLISHER = textwrap.dedent('''
    import sys, time, struct
    import numpy as np, rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    w, h, rate, seconds, qos = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    rclpy.init()
    node = rclpy.create_node('bench_camera')
    profile = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if qos == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, '/bench/image_raw', profile)
    rng = np.random.default_rng(0)
    frames = []
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(8):   # 8 distinct frames, serialized once: smooth shading + texture + noise
        img = 128 + 50 * np.sin(x / 37 + k) * np.cos(y / 23) + 30 * np.sin((x + 2 * y) / 5)
        img = np.stack([img, img * 0.8 + 20, img * 0.6 + 40], -1)
        img = img + rng.normal(0, 3, img.shape)
        m = Image(height=h, width=w, encoding='rgb8', step=3 * w)
        m.header.frame_id = 'camera'
        m.data = np.clip(img, 0, 255).astype(np.uint8).tobytes()
        frames.append(bytearray(serialize_message(m)))
    t0 = time.time()
    while pub.get_subscription_count() < 1 and time.time() - t0 < 30:
        time.sleep(0.05)
    time.sleep(0.5)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        target = start + n / rate
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        buf = frames[n % len(frames)]
        sec, nsec = divmod(time.time_ns(), 10**9)
        struct.pack_into('<iI', buf, 4, sec, nsec)    # header.stamp
        pub.publish(bytes(buf))
        n += 1
    print(json.dumps({'published': n, 'seconds': time.monotonic() - start}), flush=True)
    time.sleep(1.0)
    rclpy.shutdown()
''').replace('import sys, time, struct', 'import sys, time, struct, json')


def proc_stats(pid):
    """(cpu seconds user+sys, resident KiB, peak resident KiB) of a process."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    ticks = os.sysconf('SC_CLK_TCK')
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = hwm = 0
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
            elif line.startswith('VmHWM:'):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


def recorder_status(node, timeout=10.0):
    import rclpy
    from std_srvs.srv import Trigger
    client = node.create_client(Trigger, '/recorder/status')
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        return json.loads(future.result().message) if future.done() else None
    finally:
        node.destroy_client(client)


def run_case(w, h, rate, seconds, qos, env, extra_params):
    import rclpy
    out = Path(tempfile.mkdtemp(prefix='bench_rec_', dir=os.environ.get('BENCH_DIR')))
    try:
        args = [sys.executable, '-m', 'depth_ego_ros.ros.recorder_node', '--ros-args',
                '-p', 'camera_topic:=/bench/image_raw', '-p', "camera_info_topic:=''",
                '-p', 'record_tf:=false', '-p', f'output_dir:={out}', '-p', 'bag_name:=bench',
                '-p', 'min_free_space:=0']
        for p in extra_params:
            args += ['-p', p]
        rec = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        pub = subprocess.Popen([sys.executable, '-c', PUBLISHER, str(w), str(h), str(rate),
                                str(seconds), qos], env=env, stdout=subprocess.PIPE, text=True)
        cpu0, _, _ = proc_stats(rec.pid)
        t_start = time.monotonic()
        peak_rss = 0
        while pub.poll() is None:
            try:
                _, rss, hwm = proc_stats(rec.pid)
                peak_rss = max(peak_rss, hwm)
            except OSError:
                break
            time.sleep(0.2)
        published = json.loads(pub.stdout.read().strip().splitlines()[-1])
        rclpy.init()
        node = rclpy.create_node('bench_observer')
        status = None
        for _ in range(50):           # wait for the queue to drain
            status = recorder_status(node)
            if status:
                t = status['topics']['/bench/image_raw']
                if t['received'] == t['written'] + sum(t['dropped'].values()):
                    break
            time.sleep(0.2)
        node.destroy_node()
        rclpy.shutdown()
        cpu1, _, hwm = proc_stats(rec.pid)
        busy = time.monotonic() - t_start
        rec.send_signal(signal.SIGINT)
        rec.wait(120)
        bag = out / 'bench'
        nbytes = sum(f.stat().st_size for f in bag.glob('*.mcap'))
        t = status['topics']['/bench/image_raw'] if status else {}
        return {
            'case': f'{w}x{h}@{rate:g}',
            'MB/s offered': w * h * 3 * rate / 1e6,
            'published': published['published'],
            'received': t.get('received'),
            'written': t.get('written'),
            'dropped': t.get('dropped'),
            'queue peak': status['queue']['peak_messages'] if status else None,
            'cpu %': 100 * (cpu1 - cpu0) / busy,
            'peak RSS MiB': max(peak_rss, hwm) / 1024,
            'write MB/s': nbytes / 1e6 / published['seconds'],
            'bag MB': nbytes / 1e6,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cases', nargs='+', default=['1280x720@30', '640x480@60'],
                    help='WxH@HZ cases (default: 1280x720@30 640x480@60)')
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--qos', choices=['reliable', 'best_effort'], default='reliable')
    ap.add_argument('--shm', action='store_true', help='use config/fastdds_shm.xml')
    ap.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                    help='extra recorder parameter, e.g. compression:=zstd')
    args = ap.parse_args()
    env = dict(os.environ, ROS_DOMAIN_ID=os.environ.get('ROS_DOMAIN_ID', '173'),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    if args.shm:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(REPO / 'config' / 'fastdds_shm.xml')
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    if args.shm:
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = env['FASTDDS_DEFAULT_PROFILES_FILE']
    print(f'# recorder bench: {platform.node()}, {os.cpu_count()} cores, '
          f'{args.seconds:g} s per case, qos {args.qos}, shm {args.shm}, params {args.param}')
    rows = []
    for case in args.cases:
        size, rate = case.split('@')
        w, h = (int(v) for v in size.split('x'))
        rows.append(run_case(w, h, float(rate), args.seconds, args.qos, env, args.param))
    cols = list(rows[0])
    print('| ' + ' | '.join(cols) + ' |')
    print('|' + '---|' * len(cols))
    for r in rows:
        print('| ' + ' | '.join(f'{v:.1f}' if isinstance(v, float) else str(v)
                                for v in r.values()) + ' |')


if __name__ == '__main__':
    main()
