#!/usr/bin/env python3
"""Depth-quality cost of reduced precision: AbsRel against ground truth on the synthetic held-out
drive (seed + 1000, never trained on) for float32 torch, ONNX Runtime fp32 and OpenVINO fp32 /
bf16 / int8 (NNCF, calibrated on --calib-bag), with a trained checkpoint. Also each variant's
accuracy-guard metrics against float32 torch on the same frames.

    python bench/precision_quality.py --checkpoint CKPT --calib-bag TRAIN_BAG [--frames 100]

Metrics: per frame, valid GT in (1e-3, 80) m; median-scaled AbsRel (the network's own scale
removed) and metric AbsRel (no rescaling); mean over frames. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import cpu_model as _cpu  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', required=True)
    p.add_argument('--calib-bag', required=True, help='training bag (int8 calibration frames)')
    p.add_argument('--frames', type=int, default=100, help='held-out frames (default 100)')
    p.add_argument('--camera', default='384x128', help='held-out render size (demo: 384x128)')
    p.add_argument('--seed', type=int, default=1000, help='held-out world seed (demo: 1000)')
    p.add_argument('--scene', default='street')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch
    from depth_ego_ros.cli.export import calibration_frames
    from depth_ego_ros.core import checkpoints as ckpt
    from depth_ego_ros.core.backends import accuracy_metrics
    from depth_ego_ros.core.estimator import (Estimator, EstimatorConfig, build_networks,
                                              export_estimator_models)
    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    from depth_ego_ros.evaluation.metrics import DepthEvalConfig, depth_metrics

    opts, _ = ckpt.network_options(args.checkpoint, None, None, None, None, None)
    w, h = opts['width'], opts['height']
    cw, ch = (int(v) for v in args.camera.split('x'))
    world = SyntheticWorld(SynthConfig(frames=args.frames, width=cw, height=ch, seed=args.seed,
                                       scene=args.scene, supersample=2))
    frames = [world.frame(i) for i in range(args.frames)]
    tmp = Path(tempfile.mkdtemp(prefix='precision_quality_'))
    calib = calibration_frames(args.calib_bag, w, h, 64)
    export_estimator_models(tmp / 'ov', 'openvino', checkpoint=args.checkpoint, width=w,
                            height=h, int8=True, calib_frames=calib, num_threads=args.threads)
    base = dict(width=w, height=h, device='cpu', num_threads=args.threads, cache_dir=str(tmp))
    variants = {
        'torch fp32 (eager)': (dict(backend='torch', optimize=False), args.checkpoint),
        'onnxruntime fp32': (dict(backend='onnxruntime'), args.checkpoint),
        'openvino fp32': (dict(backend='openvino', precision='fp32'), args.checkpoint),
        'openvino bf16': (dict(backend='openvino', precision='bf16'), args.checkpoint),
        'openvino int8': (dict(exported_model_dir=str(tmp / 'ov'), backend='openvino'), None),
    }
    ref_d, ref_p, _ = build_networks(opts['model'] or 'resnet18', args.checkpoint)
    check = torch.stack([torch.from_numpy(f.rgb).permute(2, 0, 1).float() / 255 for f in
                         frames[:6]])
    check = torch.nn.functional.interpolate(check, size=(h, w), mode='bilinear',
                                            antialias=True, align_corners=False)
    print(f'# depth quality on the held-out drive ({args.scene}, seed {args.seed}, {args.frames} '
          f'frames {cw}x{ch}), checkpoint {args.checkpoint} ({w}x{h}); int8 calibrated on 64 '
          f'frames of {args.calib_bag}; CPU: {_cpu()}, load {os.getloadavg()[0]:.1f}\n')
    print('| variant | runs as | AbsRel median-scaled | metric AbsRel | d1 | guard: disp rel '
          '| depth AbsRel vs fp32 torch | pose t rel | pose rot deg |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, (kw, ck) in variants.items():
        est = Estimator(EstimatorConfig(**base, **kw), ck)
        med, met, d1 = [], [], []
        for f in frames:
            pred = est.depth_only(f.rgb, f.K)
            m = depth_metrics(f.depth, pred, DepthEvalConfig(max_depth=80.0))
            med.append(m.abs_rel)
            d1.append(m.a1)
            met.append(depth_metrics(f.depth, pred, DepthEvalConfig(
                max_depth=80.0, median_scaling=False)).abs_rel)
        acc = accuracy_metrics(est.runner, ref_d, ref_p, check)
        print(f'| {name} | {est.backend_info["backend"]} {est.config.precision} | '
              f'{np.mean(med):.4f} | {np.mean(met):.4f} | {np.mean(d1):.4f} | '
              f'{acc["disparity_rel"]:.2g} | {acc["depth_absrel"]:.2g} | '
              f'{acc.get("pose_translation", float("nan")):.2g} | '
              f'{acc.get("pose_rotation_deg", float("nan")):.2g} |', flush=True)



if __name__ == '__main__':
    sys.exit(main())
