#!/usr/bin/env python3
"""Estimator latency: depth and pose networks per backend, resolution and device.

For each device present (CPU, and CUDA when available), each network resolution and each backend
(eager torch, torch channels_last, ONNX Runtime) it builds an Estimator (random weights: latency
does not depend on their values), warms it up, then times ``Estimator.infer`` on a frame of the
network's size and reports, from the Estimator's own per-stage timings, the median and p90 of the
depth stage (depth network + disparity->depth), the pose stage (pose network on the stacked pair)
and the whole call, plus the ratio of each median to eager torch on the same device/resolution
(< 1 = faster than eager). The backends of one device/resolution are timed interleaved (run 1 of
each, run 2 of each, ...) so that load from other processes affects them alike. Prints a
Markdown table.

    python bench/bench_estimator.py                      # 20 runs, 640x192 and 1024x320
    python bench/bench_estimator.py --runs 5 --warmup 1 --resolutions 640x192 --backends eager,onnxruntime
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from depth_ego_ros.core.cameras import default_intrinsics  # noqa: E402
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig  # noqa: E402

BACKENDS = {   # 'eager' = the networks exactly as built (the Estimator's torch defaults now
    # fold BatchNorm and use channels_last: see bench/bench_inference.py for those variants)
    'eager': dict(backend='torch', optimize=False, channels_last=False),
    'channels_last': dict(backend='torch', optimize=False, channels_last=True),
    'onnxruntime': dict(backend='onnxruntime'),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', type=int, default=20, help='timed runs per configuration (default 20)')
    p.add_argument('--warmup', type=int, default=3, help='untimed runs first (default 3)')
    p.add_argument('--resolutions', default='640x192,1024x320', help='WxH list (default 640x192,1024x320)')
    p.add_argument('--backends', default=','.join(BACKENDS), help=f'subset of {",".join(BACKENDS)}')
    p.add_argument('--devices', default=None, help='cpu,cuda (default: cpu + cuda when available)')
    p.add_argument('--precision', default='fp32', choices=['fp32', 'fp16'],
                   help='fp16 applies to CUDA torch backends only')
    p.add_argument('--model', default='resnet18', choices=['resnet18', 'resnet50'])
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0 = library default)')
    p.add_argument('--cache-dir', default=None, help='ONNX export cache (default: a temp dir)')
    return p.parse_args(argv)


def stats(values):
    a = np.asarray(values)
    return float(np.median(a)), float(np.percentile(a, 90))


def make_estimator(device, wh, backend, args, cache_dir):
    w, h = wh
    cfg = EstimatorConfig(model=args.model, width=w, height=h, device=device,
                          precision=args.precision if device != 'cpu' else 'fp32',
                          num_threads=args.threads, cache_dir=cache_dir, **BACKENDS[backend])
    return Estimator(cfg)


def bench_group(device, wh, backends, args, cache_dir):
    """Time all backends of one device/resolution, interleaved run by run, so that load changes
    on a shared machine hit every backend alike and the ratios stay meaningful."""
    w, h = wh
    rng = np.random.default_rng(0)
    frames = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(2)]
    K = default_intrinsics(w, h)
    ests, results = {}, {}
    for b in backends:
        try:
            ests[b] = make_estimator(device, wh, b, args, cache_dir)
            for i in range(max(args.warmup, 1) + 1):    # >= 1 pose run before timing
                ests[b].infer(frames[i % 2], K)
        except Exception as exc:  # one failing backend must not hide the others
            results[b] = exc
    samples = {b: {'depth': [], 'pose': [], 'total': []} for b in ests}
    for i in range(args.runs):
        for b, est in ests.items():
            t = est.infer(frames[i % 2], K).timings
            for k in samples[b]:
                samples[b][k].append(t[k])
    for b in ests:
        results[b] = {k: stats(v) for k, v in samples[b].items()}
    return results


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)          # silence the random-weights warning
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = args.devices.split(',') if args.devices else (
        ['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    resolutions = [tuple(int(v) for v in r.lower().split('x')) for r in args.resolutions.split(',')]
    backends = [b for b in args.backends.split(',') if b]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        sys.exit(f'unknown backend(s) {unknown}; choose from {list(BACKENDS)}')
    tmp = None
    cache_dir = args.cache_dir
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix='depth_ego_bench_')
        cache_dir = tmp.name

    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    print(f'# Estimator latency, {datetime.date.today().isoformat()}, {args.model}, '
          f'{args.runs} runs after {args.warmup} warm-up')
    print(f'# CPU: {cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}; '
          f'torch {torch.__version__}' + (f'; GPU: {torch.cuda.get_device_name(0)}'
                                          if torch.cuda.is_available() else '; no GPU'))
    try:
        import onnxruntime
        print(f'# onnxruntime {onnxruntime.__version__}')
    except ImportError:
        backends = [b for b in backends if b != 'onnxruntime']
        print('# onnxruntime not installed: backend skipped')
    print()
    print('| device | resolution | backend | depth median ms | depth p90 ms | pose median ms '
          '| pose p90 ms | total median ms | depth / eager | pose / eager | total / eager |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    for device in devices:
        prec = args.precision if device != 'cpu' else 'fp32'
        for wh in resolutions:
            results = bench_group(device, wh, backends, args, cache_dir)
            eager = results.get('eager')
            eager = eager if isinstance(eager, dict) else None
            for backend in backends:
                r = results[backend]
                if not isinstance(r, dict):
                    print(f'| {device} {prec} | {wh[0]}x{wh[1]} | {backend} | failed: {r} |||||||')
                    continue
                ratio = (lambda k: f'{r[k][0] / eager[k][0]:.2f}') if eager else (lambda k: '-')
                print(f'| {device} {prec} | {wh[0]}x{wh[1]} | {backend} | {r["depth"][0]:.1f} | '
                      f'{r["depth"][1]:.1f} | {r["pose"][0]:.1f} | {r["pose"][1]:.1f} | '
                      f'{r["total"][0]:.1f} | {ratio("depth")} | {ratio("pose")} | {ratio("total")} |',
                      flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
