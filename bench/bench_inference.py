#!/usr/bin/env python3
"""Inference speed of the depth + pose networks per backend/precision, and multi-camera
throughput, on every device present - in one run, so the ratios are comparable.

1. Bare network time (no pre/post-processing): one depth call on a [1,3,H,W] frame plus one
   pose call on a [1,6,H,W] pair, through each backend's runner as the Estimator builds it
   (random weights: speed does not depend on their values). Variants are timed interleaved
   (run 1 of each, run 2 of each, ...) so that load from other processes hits them alike.
   Reported: median and p90 ms, ratio to eager torch fp32 and to ONNX Runtime on the same device.
   CPU: eager (networks as built), torch (BatchNorm folded + vectorised ELU), torch
   channels_last, torch bf16, torchscript, onnxruntime, OpenVINO fp32 / bf16 / int8 (NNCF,
   calibrated on --calib-bag frames, else on fixed synthetic frames), and 'auto' with precision
   auto (what the Estimator picks on this machine) [, compile with --compile]. Each CPU variant's
   accuracy against float32 eager torch (the accuracy guard's metrics: disparity relative error,
   depth AbsRel between the two, pose translation / rotation error) on fixed frames.
   CUDA: eager fp32, torch fp16/bf16 channels_last, + CUDA graphs, torchscript fp16,
   onnxruntime (when onnxruntime-gpu is installed) [, compile] [, tensorrt with --tensorrt].
2. Multi-camera: ``Estimator.infer_batch`` with 1, 4 and 8 cameras (camera-size uint8 frames:
   upload, colour conversion, resize, one depth call, one pose call, depth back at camera size,
   one device->host copy per output) with the device's default backend ('auto'); frames/s =
   cameras / batch latency.
3. The goals of issue 8 that this script can check (CPU default backend <= 1.0x ONNX Runtime;
   H100 fp16 640x192 >= 240 frames/s with 8 cameras). The node end-to-end figures through DDS
   come from bench/bench_node.py.

    python bench/bench_inference.py                     # 640x192, 10 runs, cameras 1,4,8
    python bench/bench_inference.py --runs 5 --warmup 1 --cameras 1,4 --threads 2
    python bench/bench_inference.py --compile --tensorrt  # also torch.compile / TensorRT rows
    python bench/bench_inference.py --checkpoint CKPT --calib-bag BAG --cameras 1   # trained
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from depth_ego_ros.core.cameras import default_intrinsics  # noqa: E402
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig  # noqa: E402
from depth_ego_ros.core import export as export_mod  # noqa: E402
from depth_ego_ros.core.backends import onnxruntime_available  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=192)
    p.add_argument('--model', default='resnet18', choices=['resnet18', 'resnet50'])
    p.add_argument('--runs', type=int, default=10, help='timed runs per variant (default 10)')
    p.add_argument('--warmup', type=int, default=2, help='untimed runs first (default 2)')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0 = library default)')
    p.add_argument('--devices', default=None, help='cpu,cuda (default: cpu + cuda when present)')
    p.add_argument('--cameras', default='1,4,8', help='camera counts for infer_batch (default 1,4,8)')
    p.add_argument('--camera-size', default='640x480', help='WxH of the camera frames (default 640x480)')
    p.add_argument('--compile', action='store_true', help='add torch.compile rows (slow to start)')
    p.add_argument('--tensorrt', action='store_true', help='add TensorRT rows (CUDA; builds engines)')
    p.add_argument('--skip', default='', help='comma list of variant names to leave out')
    p.add_argument('--checkpoint', default=None, help='weights (default: random, seeded)')
    p.add_argument('--calib-bag', default=None, help='int8 calibration (and accuracy) frames')
    return p.parse_args(argv)


def variants(device: str, args, tmp: str):
    """name -> EstimatorConfig kwargs (None = skipped, with the reason as a str)."""
    ort = onnxruntime_available()
    if device == 'cpu':
        v = {
            'eager fp32': dict(backend='torch', optimize=False, channels_last=False),
            'torch fp32': dict(backend='torch', channels_last=False),
            'torch fp32 channels_last': dict(backend='torch', channels_last=True),
            'torch bf16': dict(backend='torch', precision='bf16', channels_last=False),
            'torchscript fp32': dict(backend='torchscript'),
            'onnxruntime fp32': dict(backend='onnxruntime') if ort else 'onnxruntime not installed',
        }
        from depth_ego_ros.core.backends import openvino_unavailable_reason
        ov = openvino_unavailable_reason()
        v['openvino fp32'] = dict(backend='openvino') if not ov else ov
        v['openvino bf16'] = dict(backend='openvino', precision='bf16') if not ov else ov
        v['openvino int8'] = 'openvino-int8' if not ov else ov
        v['auto (precision auto)'] = dict(precision='auto')
        if args.compile:
            v['torch.compile fp32'] = dict(backend='torch', compile=True, channels_last=False)
        return v
    return _cuda_variants(args, tmp)


def _cuda_variants(args, tmp: str):
    ort_cuda = False
    if onnxruntime_available():
        import onnxruntime
        ort_cuda = 'CUDAExecutionProvider' in onnxruntime.get_available_providers()
    v = {
        'eager fp32': dict(backend='torch', optimize=False, channels_last=False),
        'torch fp16 channels_last': dict(backend='torch', precision='fp16', channels_last=True),
        'torch bf16 channels_last': dict(backend='torch', precision='bf16', channels_last=True),
        'torch fp16 cl + CUDA graphs': dict(backend='torch', precision='fp16', channels_last=True,
                                            cuda_graphs=True),
        'torchscript fp16': dict(backend='torchscript', precision='fp16'),
        'onnxruntime fp32': dict(backend='onnxruntime') if ort_cuda
        else 'onnxruntime-gpu not installed (no CUDAExecutionProvider)',
    }
    if args.compile:
        v['torch.compile fp16 cl'] = dict(backend='torch', precision='fp16', channels_last=True,
                                          compile=True)
    if args.tensorrt:
        reason = export_mod.tensorrt_unavailable_reason('cuda')
        v['tensorrt fp16'] = reason or 'tensorrt'
    return v


def _frames(args):
    if args.calib_bag:
        from depth_ego_ros.cli.export import calibration_frames
        return calibration_frames(args.calib_bag, args.width, args.height, 32)
    from depth_ego_ros.core.backends import guard_frames
    return guard_frames(args.height, args.width, 8)


def build(device, name, kw, args, tmp):
    if kw == 'openvino-int8':        # NNCF int8 export once, then load it
        from depth_ego_ros.core.estimator import export_estimator_models
        out = Path(tmp) / 'ov_int8'
        if not (out / export_mod.MANIFEST).exists():
            export_estimator_models(out, 'openvino', model=args.model, checkpoint=args.checkpoint,
                                    width=args.width, height=args.height, int8=True,
                                    calib_frames=_frames(args), num_threads=args.threads)
        kw = dict(exported_model_dir=str(out), backend='openvino')
    if kw == 'tensorrt':             # export engines once, then load them
        from depth_ego_ros.core.models import build_networks
        out = Path(tmp) / 'trt'
        if not (out / export_mod.MANIFEST).exists():
            d, p, _ = build_networks(args.model)
            export_mod.export_models(d, p, out, 'tensorrt', args.width, args.height,
                                     model=args.model, fp16=True, max_batch=8, device=device)
        kw = dict(exported_model_dir=str(out))
    cfg = EstimatorConfig(model=args.model, width=args.width, height=args.height, device=device,
                          num_threads=args.threads, cache_dir=tmp, **kw)
    return Estimator(cfg, args.checkpoint)


_DEFAULT_THREADS = torch.get_num_threads()


def set_threads(backend, device, args):
    """torch threads as an Estimator of this backend alone would leave them (ORT on the CPU
    sets torch to 1 thread; other variants built after it must get theirs back)."""
    if backend in ('onnxruntime', 'openvino') and device == 'cpu':
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(args.threads or _DEFAULT_THREADS)


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def stats(values):
    a = np.asarray(values) * 1e3
    return float(np.median(a)), float(np.percentile(a, 90))


def bench_bare(device, args, tmp):
    vs = variants(device, args, tmp)
    skip = {s.strip() for s in args.skip.split(',') if s.strip()}
    runners, results = {}, {}
    h, w = args.height, args.width
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, h, w, generator=gen).to(device)
    pair = torch.rand(1, 6, h, w, generator=gen).to(device)
    for name, kw in vs.items():
        if name in skip:
            continue
        if isinstance(kw, str) and kw not in ('tensorrt', 'openvino-int8'):
            results[name] = f'skipped: {kw}'
            continue
        try:
            est = build(device, name, kw, args, tmp)
            r = est.runner
            # the bare runs keep torch at its default threads for every variant (ORT's runner
            # runs no torch ops; toggling the OpenMP thread count between runs slowed torch
            # down badly here); the Estimator's own setting applies in the camera section
            torch.set_num_threads(args.threads or _DEFAULT_THREADS)
            with torch.inference_mode():
                for _ in range(max(1, args.warmup)):
                    r.depth(x)
                    r.pose(pair)
                sync(device)
            runners[name] = (r, est.backend_info)
        except Exception as exc:  # one failing variant must not hide the others
            results[name] = f'failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}'
    samples = {n: [] for n in runners}
    with torch.inference_mode():
        for _ in range(args.runs):
            for n, (r, _) in runners.items():
                sync(device)
                t0 = time.perf_counter()
                r.depth(x)
                r.pose(pair)
                sync(device)
                samples[n].append(time.perf_counter() - t0)
    for n in runners:
        results[n] = stats(samples[n])
    infos = {n: info for n, (_, info) in runners.items()}
    if device == 'cpu':                  # accuracy of each variant vs float32 eager torch
        from depth_ego_ros.core.backends import accuracy_metrics
        from depth_ego_ros.core.estimator import build_networks
        ref_d, ref_p, _ = build_networks(args.model, args.checkpoint)
        frames = _frames(args)[-5:]
        for n, (r, info) in runners.items():
            try:
                info['accuracy'] = accuracy_metrics(r, ref_d, ref_p, frames)
            except Exception as exc:
                info['accuracy'] = {'error': str(exc)[:80]}
    return results, infos


def bench_cameras(device, args, tmp, counts):
    """infer_batch with n cameras, interleaved run by run with the bare runner calls at the same
    batch size (depth [n,3,h,w] + pose [n,6,h,w]), so that the Estimator/bare ratio is not
    distorted by load changes between the two."""
    cw, ch = (int(v) for v in args.camera_size.lower().split('x'))
    kw = {}
    if device.startswith('cuda'):
        kw = dict(precision='fp16', channels_last=True)
    est = Estimator(EstimatorConfig(model=args.model, width=args.width, height=args.height,
                                    device=device, num_threads=args.threads, cache_dir=tmp, **kw),
                    args.checkpoint)
    set_threads(est.runner.name, device, args)
    rng = np.random.default_rng(0)
    K = default_intrinsics(cw, ch)
    base = (rng.random((ch // 8 + 2, cw // 8 + 4, 3)) * 255).astype(np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), np.uint8))
    frames = [np.ascontiguousarray(big[:ch, 2 * i:2 * i + cw]) for i in range(4)]
    h, w = args.height, args.width
    rows = []
    for n in counts:
        est.reset()
        x = torch.rand(n, 3, h, w).to(device)
        pair = torch.rand(n, 6, h, w).to(device)

        def batch(k):
            return [(frames[(k + c) % len(frames)], K, 0.1 * k, None, f'cam{c}') for c in range(n)]

        def bare():
            est.runner.depth(x)
            est.runner.pose(pair)
            sync(device)
        with torch.inference_mode():
            for k in range(max(2, args.warmup + 1)):     # >= 1 call with poses before timing
                est.infer_batch(batch(k))
                bare()
        times, bare_times = [], []
        for k in range(args.runs):
            t0 = time.perf_counter()
            outs = est.infer_batch(batch(k))
            times.append(time.perf_counter() - t0)
            assert len(outs) == n and all(o.relative_pose is not None for o in outs)
            with torch.inference_mode():
                sync(device)
                t0 = time.perf_counter()
                bare()
                bare_times.append(time.perf_counter() - t0)
        med, p90 = stats(times)
        bmed, _ = stats(bare_times)
        rows.append((n, med, p90, n / (med / 1e3), bmed))
    return est.backend_info, rows


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    gpu = f'GPU: {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else 'no GPU'
    line = (f'# CPU: {cpu}, {os.cpu_count()} cores visible, torch threads {_DEFAULT_THREADS} '
            f'(Estimator with ONNX Runtime: 1); '
            f'{gpu}; torch {torch.__version__}')
    if onnxruntime_available():
        import onnxruntime
        line += f'; onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}'
    try:
        load = ', '.join(f'{v:.1f}' for v in os.getloadavg())
    except OSError:
        load = '?'
    line += (f'\n# OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "(unset)")}; '
             f'load average at start {load}')
    return line


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)          # silence the random-weights warning
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = args.devices.split(',') if args.devices else (
        ['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    counts = [int(c) for c in args.cameras.split(',') if c]
    print(f'# Inference benchmark, {datetime.date.today().isoformat()}, {args.model} '
          f'{args.width}x{args.height}, {args.runs} runs after {args.warmup} warm-up')
    print(machine_line())
    if 'cuda' not in devices:
        print('# CUDA: not present on this machine -> every GPU figure is UNMEASURED here')
    goals = []
    with tempfile.TemporaryDirectory(prefix='depth_ego_bench_') as tmp:
        for device in devices:
            print(f'\n## {device}: bare network time (depth [1,3,H,W] + pose [1,6,H,W])\n')
            results, infos = bench_bare(device, args, tmp)
            eager = results.get('eager fp32')
            ort = results.get('onnxruntime fp32')
            eager = eager if isinstance(eager, tuple) else None
            ort = ort if isinstance(ort, tuple) else None
            print('| variant | runs as | median ms | p90 ms | / eager | / onnxruntime '
                  '| disp rel err | depth AbsRel | pose t rel | pose rot deg |')
            print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
            for name, r in results.items():
                if not isinstance(r, tuple):
                    print(f'| {name} | {r} | | | | | | | | |')
                    continue
                info = infos[name]
                runs_as = f'{info["backend"]} {info.get("precision", "")}' + (
                    f' {info["providers"][0]}' if 'providers' in info else '')
                re = f'{r[0] / eager[0]:.2f}' if eager else '-'
                ro = f'{r[0] / ort[0]:.2f}' if ort else '-'
                acc = info.get('accuracy') or {}
                cols = ' | '.join(f'{acc[k]:.2g}' if isinstance(acc.get(k), float) else '-'
                                  for k in ('disparity_rel', 'depth_absrel', 'pose_translation',
                                            'pose_rotation_deg'))
                print(f'| {name} | {runs_as} | {r[0]:.1f} | {r[1]:.1f} | {re} | {ro} | {cols} |',
                      flush=True)
            if device == 'cpu' and ort:
                default = 'auto (precision auto)' if isinstance(
                    results.get('auto (precision auto)'), tuple) else 'onnxruntime fp32'
                ratio = results[default][0] / ort[0]
                goals.append(f'CPU {default} / ONNX Runtime = {ratio:.2f} (issue 8 goal <= 1.0: '
                             f'{"met" if ratio <= 1.0 else "NOT met"})')
                fastest = min((r[0], n) for n, r in results.items() if isinstance(r, tuple))
                goals.append(f'fastest CPU variant measured: {fastest[1]} ({fastest[0]:.1f} ms)')
                ov = [(results[n][0] / ort[0], n) for n in ('openvino bf16', 'openvino int8')
                      if isinstance(results.get(n), tuple)]
                if ov:
                    best = min(ov)
                    goals.append(f'OpenVINO bf16/int8 best / ONNX Runtime = {best[0]:.2f} '
                                 f'({best[1]}; issue 16 goal <= 0.25 on an AMX Xeon: '
                                 f'{"met" if best[0] <= 0.25 else "NOT met"} on this CPU)')
                auto = infos.get('auto (precision auto)')
                if auto:
                    goals.append(f'backend auto (precision auto) picked {auto["backend"]} '
                                 f'{auto.get("precision")}: {auto.get("reason")}')

            print(f'\n## {device}: Estimator.infer_batch, {args.camera_size} uint8 frames -> '
                  f'depth at camera size + poses\n')
            info, rows = bench_cameras(device, args, tmp, counts)
            print(f'backend: {info["backend"]} {info.get("precision")} '
                  f'{info.get("providers", "")} ({info.get("reason")})\n')
            print('| cameras | batch median ms | batch p90 ms | frames/s | ms per frame '
                  '| bare network, same batch, ms | Estimator / bare |')
            print('|---:|---:|---:|---:|---:|---:|---:|')
            for n, med, p90, fps, bmed in rows:
                print(f'| {n} | {med:.1f} | {p90:.1f} | {fps:.1f} | {med / n:.1f} | {bmed:.1f} '
                      f'| {med / bmed:.2f} |', flush=True)
            if device.startswith('cuda'):
                eight = [r for r in rows if r[0] == 8]
                if eight:
                    fps = eight[0][3]
                    goals.append(f'{torch.cuda.get_device_name(0)} 8 cameras {args.width}x{args.height} '
                                 f'fp16: {fps:.0f} frames/s (goal >= 240 on an H100: '
                                 f'{"met" if fps >= 240 else "NOT met"})')
    if 'cuda' not in devices:
        goals.append('H100 fp16 >= 240 frames/s with 8 cameras: UNMEASURED (no GPU here)')
    goals.append('node end-to-end <= 1.10x bare network: see bench/bench_node.py')
    print('\n## goals (issue 8)\n')
    for g in goals:
        print(f'- {g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
