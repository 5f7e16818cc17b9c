#!/usr/bin/env python3
"""depth_ego_node end to end through real DDS: publisher process -> node process -> listener process.

A 640x480 rgb8 camera feeds the node (640x192 network input, every output subscribed: depth,
depth/colored, points, odom -> depth + pose networks run), and the bare ``Estimator.infer`` on the
same frames is timed in this process in the same run (before and after the node runs, the node
stopped meanwhile, so they never compete). Reported per DDS transport (Fast DDS defaults, and the
shipped shared-memory profile config/fastdds_shm.xml):

* latency: camera stamp -> arrival at the listener of depth and of the last output of that frame,
  frames sent slowly (no queueing), vs the bare estimator time -> node overhead ratio;
* throughput: a 30 Hz camera for a while: output rate, frames dropped by the node, latency.

    python bench/bench_node.py                      # defaults: 640x192 net, 640x480 camera, CPU
    python bench/bench_node.py --device cuda --threads 0 --frames 50
    python bench/bench_node.py --transports shm --throughput-seconds 0
    python bench/bench_node.py --cameras 1,4,8 --camera-size 160x120 --net-size 128x64   # CPU

--cameras N1,N2,...: one node process serving N cameras (parameter ``cameras``), each camera at
--rate Hz from one publisher process, the listener subscribed to every <cam>/depth: end-to-end
frames/s through DDS (depth outputs arriving at the listener per second, all cameras together),
per camera Hz, frames the node dropped, stamp -> arrival latency and the mean batch size.

Random weights (latency does not depend on their values). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from depth_ego_ros.ros.testing import (NodeProcess, generated_frame, isolated_ros_env,  # noqa: E402
                                       python_path_env)

OUTPUTS = ['depth:Image', 'depth/colored:Image', 'points:PointCloud2', 'odom:Odometry']
SHM_PROFILE = REPO / 'config' / 'fastdds_shm.xml'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--net', '--net-size', dest='net', default='640x192',
                   help='network input WxH (default 640x192)')
    p.add_argument('--camera', '--camera-size', dest='camera', default='640x480',
                   help='camera image WxH (default 640x480)')
    p.add_argument('--cameras', default='',
                   help='multi-camera mode: comma-separated camera counts, e.g. 1,4,8 (each camera '
                        'at --rate Hz for --throughput-seconds) instead of the latency/transport run')
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto (default cpu)')
    p.add_argument('--precision', default='fp32', choices=['fp32', 'fp16', 'bf16', 'int8', 'auto'],
                   help='auto: backend auto/openvino pick the fastest passing the accuracy guard')
    p.add_argument('--exported-model', default='',
                   help='a `depth-ego export` directory for the node and the bare run alike')
    p.add_argument('--backend', default='auto',
                   help='estimator backend for the node and the bare run alike (default auto)')
    p.add_argument('--threads', type=int, default=1,
                   help='CPU threads of the networks, node and bare alike (0 = library default)')
    p.add_argument('--frames', type=int, default=20, help='frames for the latency phase')
    p.add_argument('--throughput-seconds', type=float, default=8.0,
                   help='length of the 30 Hz phase (0 = skip)')
    p.add_argument('--rate', type=float, default=30.0, help='camera rate of the throughput phase')
    p.add_argument('--transports', default='default,shm', help='default,shm (Fast DDS profiles)')
    p.add_argument('--qos', default='reliable', choices=['reliable', 'sensor_data'],
                   help='camera QoS (default transport + sensor_data loses 640x480 frames)')
    return p.parse_args(argv)


def wxh(text):
    w, h = text.lower().split('x')
    return int(w), int(h)


def bare_estimator_ms(args, frames, K, runs):
    """Median/mean ms of Estimator.infer (depth + pose) over `runs` frames after a warm-up."""
    import torch
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    w, h = wxh(args.net)
    if args.threads:
        torch.set_num_threads(args.threads)
    est = Estimator(EstimatorConfig(width=w, height=h, device=args.device, precision=args.precision,
                                    backend=args.backend, num_threads=args.threads,
                                    exported_model_dir=args.exported_model or None))
    info = getattr(est, 'backend_info', {})
    args.backend_used = f'{info.get("backend", args.backend)} {est.config.precision}'
    for i in range(3):
        est.infer(frames[i % len(frames)], K)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        est.infer(frames[i % len(frames)], K, stamp=0.1 * i)
        times.append((time.perf_counter() - t0) * 1e3)
    del est
    return np.asarray(times)


def run_json(cmd, env, timeout):
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f'{cmd[3:5]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}')
    return json.loads(res.stdout.strip().splitlines()[-1])


def phase(env, args, count, rate, listen_seconds, topics=OUTPUTS, wait_match=30.0):
    """Listener up, then the publisher: returns (publisher summary, listener result)."""
    cw, ch = wxh(args.camera)
    listener = subprocess.Popen(
        [sys.executable, '-m', 'depth_ego_ros.ros.testing', 'listen', '--duration', str(listen_seconds),
         '--wait-match', str(wait_match), '--topics', *topics],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = listener.stdout.readline()            # {"listening": ...} once matched
    if 'listening' not in first:
        listener.kill()
        raise RuntimeError('listener did not start: ' + first + listener.stderr.read())
    pub = run_json([sys.executable, '-m', 'depth_ego_ros.ros.testing', 'publish', '--count', str(count),
                    '--rate', str(rate), '--width', str(cw), '--height', str(ch), '--qos', args.qos,
                    '--depth', '1', '--linger', '0.5'], env, timeout=listen_seconds + 120)
    out, err = listener.communicate(timeout=listen_seconds + 60)
    return pub, json.loads(out.strip().splitlines()[-1])


def latencies(pub, lis):
    """ms from stamp to depth arrival and to the last output's arrival, for frames with all outputs."""
    per_topic = {t: dict(v) for t, v in lis['arrivals'].items()}
    to_depth, to_all = [], []
    for stamp in pub['stamps']:
        arrivals = [per_topic[t].get(stamp) for t in per_topic]
        if arrivals[0] is not None:
            to_depth.append((arrivals[0] - stamp) / 1e6)
        if all(a is not None for a in arrivals):
            to_all.append((max(arrivals) - stamp) / 1e6)
    return np.asarray(to_depth), np.asarray(to_all)


def fmt(a):
    return f'{np.mean(a):.1f} / {np.median(a):.1f} / {np.max(a):.1f}' if len(a) else 'n/a'


def multi_camera(args) -> int:
    """End-to-end frames/s through DDS for 1, 4, 8 ... cameras served by one node process."""
    cw, ch = wxh(args.camera)
    nw, nh = wxh(args.net)
    counts = [int(c) for c in args.cameras.split(',') if c.strip()]
    seconds = args.throughput_seconds if args.throughput_seconds > 0 else 8.0
    K = np.array([[0.9 * cw, 0, (cw - 1) / 2], [0, 0.9 * cw, (ch - 1) / 2], [0, 0, 1.0]])
    print(f'# depth_ego_node, N cameras in one node process: {cw}x{ch} rgb8 cameras at '
          f'{args.rate:g} Hz each -> {nw}x{nh} network (resnet18, {args.device}, backend '
          f'{args.backend}, {args.precision}, threads={args.threads or "default"}), depth + pose '
          f'networks batched, depth subscribed on every camera; {seconds:g} s per row; '
          f'{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, '
          f'{time.strftime("%Y-%m-%d %H:%M")}\n')
    tmp = Path(tempfile.mkdtemp(prefix='bench_node_multi_'))
    rows = []
    for n in counts:
        names = [f'cam{i}' for i in range(n)]
        domain = 201 + (os.getpid() + n) % 30
        env = python_path_env({**os.environ, **isolated_ros_env(domain, tmp / str(n))}, REPO)
        env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
        params = {'cameras': names, 'width': nw, 'height': nh, 'device': args.device,
                  'precision': args.precision, 'backend': args.backend,
                  'num_threads': args.threads, 'qos.input': args.qos, 'diagnostics.period': 0.5,
                  'camera_info.fallback_k': [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]),
                                             float(K[1, 2])]}
        node = NodeProcess('depth_ego_ros.ros.perception_node', params, env)
        try:
            if not node.wait_for_log('ready:', 120):
                raise RuntimeError('node did not start:\n' + node.log_text())
            listener = subprocess.Popen(
                [sys.executable, '-m', 'depth_ego_ros.ros.testing', 'listen', '--duration',
                 str(seconds + 6.0), '--wait-match', '30', '--topics',
                 *[f'{c}/depth:Image' for c in names]],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = listener.stdout.readline()
            if 'listening' not in first:
                listener.kill()
                raise RuntimeError('listener did not start: ' + first + listener.stderr.read())
            warm = int(args.rate)                        # first second: warm-up, not counted
            pub = run_json([sys.executable, '-m', 'depth_ego_ros.ros.testing', 'publish',
                            '--topic', *[f'{c}/image' for c in names],
                            '--count', str(int(args.rate * seconds) + warm), '--rate', str(args.rate),
                            '--width', str(cw), '--height', str(ch), '--qos', args.qos,
                            '--depth', '1', '--linger', '0.5'], env, timeout=seconds + 120)
            out, _ = listener.communicate(timeout=seconds + 60)
            lis = json.loads(out.strip().splitlines()[-1])
            t_start = pub['stamps'][min(warm, len(pub['stamps']) - 1)]
            t_end = pub['stamps'][-1]
            arr = [(s, a) for c in names for s, a in lis['arrivals'][f'{c}/depth'] if s >= t_start]
            window = (t_end - t_start) / 1e9
            lat = np.asarray([(a - s) / 1e6 for s, a in arr])
            diag = lis['diagnostics']
            rows.append({'n': n, 'offered': n * args.rate, 'fps': len(arr) / window if window else 0.0,
                         'per_cam': len(arr) / window / n if window else 0.0, 'lat': lat,
                         'sent': pub['sent'] * n,
                         'batch': diag.get('batch_size_mean', float('nan')),
                         'batch_ms': diag.get('batch_ms_p50', float('nan')),
                         'backend': diag.get('backend', '?')})
        finally:
            node.stop()
    print('| cameras | offered frames/s | end-to-end frames/s (all cameras) | per camera Hz '
          '| stamp->depth arrival ms (mean/p50/max) | mean batch size | batch network ms p50 |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['n']} | {r['offered']:.0f} | {r['fps']:.1f} | {r['per_cam']:.1f} | {fmt(r['lat'])} "
              f"| {r['batch']:.2f} | {r['batch_ms']:.1f} |")
    print(f"\nnode backend (resolved): {', '.join(sorted({str(r['backend']) for r in rows}))}")
    print('\nframes/s = depth images arriving at the listener process per second over the '
          'measured window (after 1 s warm-up), all cameras together; frames the node could not '
          'serve were dropped in its latest-frame slots (newest wins). Batch figures: the node\'s '
          'own diagnostics (last camera status).')
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.cameras:
        return multi_camera(args)
    cw, ch = wxh(args.camera)
    nw, nh = wxh(args.net)
    frames = [generated_frame(cw, ch, i) for i in range(8)]
    K = np.array([[0.9 * cw, 0, (cw - 1) / 2], [0, 0.9 * cw, (ch - 1) / 2], [0, 0, 1.0]])
    bare_before = bare_estimator_ms(args, frames, K, max(10, args.frames))
    print(f'# depth_ego_node end to end: {cw}x{ch} rgb8 camera -> {nw}x{nh} network '
          f'(resnet18, {args.device}, {args.backend} = {args.backend_used}, {args.precision}, '
          f'threads={args.threads or "default"}), {platform.node()}, {os.cpu_count()} CPUs, '
          f'{time.strftime("%Y-%m-%d %H:%M")}\n')
    est_ms = float(np.median(bare_before))
    rows = []
    transport_ms = {}
    tmp = Path(tempfile.mkdtemp(prefix='bench_node_'))
    for transport in [t for t in args.transports.split(',') if t]:
        domain = 201 + (os.getpid() + len(rows)) % 30          # outside the tests' 1..200
        env = python_path_env({**os.environ, **isolated_ros_env(domain, tmp / transport)}, REPO)
        env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
        if transport == 'shm':
            env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(SHM_PROFILE)
        # the camera image alone through DDS (no node): what the transport costs
        pub0, lis0 = phase(env, args, 60, args.rate, 60 / args.rate + 4.0, topics=['image:Image'],
                           wait_match=0.0)
        got = dict(lis0['arrivals']['image'])
        transport_ms[transport] = np.asarray(
            [(got[s] - s) / 1e6 for s in pub0['stamps'][5:] if s in got])
        params = {'width': nw, 'height': nh, 'device': args.device, 'precision': args.precision,
                  'backend': args.backend, 'exported_model': args.exported_model,
                  'num_threads': args.threads, 'qos.input': args.qos,
                  'camera_info.fallback_k': [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]}
        node = NodeProcess('depth_ego_ros.ros.perception_node', params, env)
        try:
            if not node.wait_for_log('ready:', 120):
                raise RuntimeError('node did not start:\n' + node.log_text())
            # latency: one frame at a time (period = 3x the estimator time: no queueing)
            period = max(0.05, 3.0 * est_ms / 1e3)
            n = args.frames + 2
            pub, lis = phase(env, args, n, 1.0 / period, n * period + 5.0)
            d, a = latencies(pub, lis)
            d, a = d[2:], a[2:]                                # first frames: warm-up
            net_ms = lis['diagnostics'].get('network_ms_p50', float('nan'))
            row = {'transport': transport, 'depth': d, 'all': a, 'node_net_ms': net_ms,
                   'node_lat_ms': lis['diagnostics'].get('latency_ms_p50', float('nan')),
                   'outputs_ms': lis['diagnostics'].get('outputs_ms_p50', float('nan'))}
            if args.throughput_seconds > 0:
                count = int(args.rate * args.throughput_seconds)
                before = lis['diagnostics']
                pub2, lis2 = phase(env, args, count, args.rate, args.throughput_seconds + 5.0)
                d2, a2 = latencies(pub2, lis2)
                arr = sorted(t for _, t in lis2['arrivals']['depth'])
                out_hz = (len(arr) - 1) / ((arr[-1] - arr[0]) / 1e9) if len(arr) > 1 else 0.0
                hz = {}
                for topic in ('depth', 'points', 'odom'):
                    ts = sorted(t for _, t in lis2['arrivals'].get(topic, []))
                    hz[topic] = (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9) if len(ts) > 1 else 0.0
                # backlog: does the latency grow over the run? (first vs last third, p50)
                k = len(a2) // 3
                growth = float(np.median(a2[-k:]) - np.median(a2[:k])) if k else float('nan')
                after = lis2['diagnostics']
                row.update(hz=hz, growth=growth, node_net_ms_load=after.get('network_ms_p50',
                                                                             float('nan')),
                           decode_ms=after.get('decode_ms_p50', float('nan')),
                           outputs_ms_load=after.get('outputs_ms_p50', float('nan')))
                row.update(out_hz=out_hz, sent=pub2['sent'], in_hz=pub2['sent'] / pub2['seconds'],
                           dropped=after.get('frames_dropped', 0) - before.get('frames_dropped', 0),
                           received=after.get('frames_received', 0) - before.get('frames_received', 0),
                           load_all=a2)
            rows.append(row)
        finally:
            node.stop()
    bare_after = bare_estimator_ms(args, frames, K, max(10, args.frames))
    est_all = np.concatenate([bare_before, bare_after])
    est_ms = float(np.median(est_all))

    print(f'bare Estimator.infer (depth + pose, same frames, run alone): median '
          f'{est_ms:.1f} ms (before the node runs {np.median(bare_before):.1f}, after '
          f'{np.median(bare_after):.1f})\n')
    print(f'{cw}x{ch} rgb8 image alone, publisher process -> listener process, {args.rate:.0f} Hz '
          '(ms, mean / p50 / max):\n')
    print('| transport | latency ms | frames arrived |')
    print('|---|---|---|')
    for name, lat in transport_ms.items():
        print(f'| {name} | {fmt(lat)} | {len(lat)} / 55 |')
    print()
    print('| transport | image->depth ms (mean/p50/max) | image->all outputs ms (mean/p50/max) '
          '| in node: estimator / outputs / receive->publish ms (p50) '
          '| overhead vs bare: (p50 all - bare) / bare | overhead in node: (p50 all - estimator in node) / estimator in node |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        p50 = np.median(r['all']) if len(r['all']) else float('nan')
        over = (p50 - est_ms) / est_ms
        over_in = (p50 - r['node_net_ms']) / r['node_net_ms']
        print(f"| {r['transport']} | {fmt(r['depth'])} | {fmt(r['all'])} | {r['node_net_ms']:.1f} / "
              f"{r['outputs_ms']:.1f} / {r['node_lat_ms']:.1f} | {100 * over:+.1f} % | {100 * over_in:+.1f} % |")
    if any('out_hz' in r for r in rows):
        print(f'\n{args.rate:.0f} Hz camera for {args.throughput_seconds:g} s:\n')
        print('| transport | camera Hz sent | frames received by node | Hz out depth / points / '
              'odom | dropped by node | latency growth first->last third ms (backlog) '
              '| image->all outputs ms (mean/p50/max) | p95 ms | node: network / decode / '
              'outputs ms p50 | node overhead / network |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        for r in rows:
            if 'out_hz' in r:
                hz = r['hz']
                p95 = np.percentile(r['load_all'], 95) if len(r['load_all']) else float('nan')
                net = r['node_net_ms_load']
                ratio = (r['decode_ms'] + r['outputs_ms_load']) / net if net else float('nan')
                print(f"| {r['transport']} | {r['in_hz']:.1f} | {r['received']} | "
                      f"{hz['depth']:.1f} / {hz['points']:.1f} / {hz['odom']:.1f} "
                      f"| {r['dropped']} | {r['growth']:+.1f} | {fmt(r['load_all'])} | {p95:.1f} "
                      f"| {net:.1f} / {r['decode_ms']:.1f} / {r['outputs_ms_load']:.1f} "
                      f"| {ratio:.2f} |")
    print('\noverhead = what the node adds to the estimator for one frame: DDS transport of the '
          'image in and 4 outputs out, decode, colour map, point cloud, messages. "vs bare" compares '
          'with Estimator.infer timed in this process; "in node" with the estimator time the node '
          'measures itself in the same frames (robust to load from other processes).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
