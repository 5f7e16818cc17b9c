#!/usr/bin/env python3
"""Where the perception node's time goes per frame, without DDS: the same calls the node makes
(perception_pipeline / perception_outputs), timed one by one in this process, interleaved.

    decode            sensor_msgs/Image rgb8 -> numpy (image_conversions.image_to_numpy)
    estimator.*       Estimator.infer stages: preprocess (upload, colour, resize), depth net,
                      pose net, postprocess (depth at camera size, scale, host copies)
    depth cleanup     non-finite / <= 0 -> NaN, float32 (perception_pipeline.finish)
    depth msg         32FC1 Image message
    colorize          magma colour map of the inverse depth (colorize_disparity)
    colored msg       rgb8 Image message
    point cloud       Estimator.point_cloud(stride) + PointCloud2 message

    python bench/profile_node_work.py --backend openvino --precision bf16 --runs 20

Prints a Markdown table (median / p90 ms per step) and the node's own work (everything but the
two networks) as a ratio of the network time.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import cpu_model as _cpu  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--net', default='640x192')
    p.add_argument('--camera', default='640x480')
    p.add_argument('--backend', default='auto')
    p.add_argument('--precision', default='fp32')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--stride', type=int, default=4, help='points.stride (node default 4)')
    p.add_argument('--runs', type=int, default=20)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch
    from std_msgs.msg import Header
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig, colorize_disparity
    from depth_ego_ros.ros import conversions as conv
    from depth_ego_ros.ros.testing import generated_frame
    nw, nh = (int(v) for v in args.net.split('x'))
    cw, ch = (int(v) for v in args.camera.split('x'))
    est = Estimator(EstimatorConfig(width=nw, height=nh, device='cpu', backend=args.backend,
                                    precision=args.precision, num_threads=args.threads))
    torch.set_num_threads(1) if est.config.backend in ('onnxruntime', 'openvino') else None
    K = np.array([[0.9 * cw, 0, (cw - 1) / 2], [0, 0.9 * cw, (ch - 1) / 2], [0, 0, 1.0]])
    msgs = [conv.rgb8_to_image(generated_frame(cw, ch, i)) for i in range(4)]
    header = Header()
    steps = {}

    def add(name, t0):
        steps.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

    for i in range(args.runs + 2):
        t0 = time.perf_counter()
        image = conv.image_to_numpy(msgs[i % 4])
        add('decode', t0)
        out = est.infer(image, K, stamp=0.1 * i)
        for k in ('preprocess', 'depth', 'pose', 'postprocess'):
            steps.setdefault(f'estimator.{k}', []).append(out.timings[k])
        t0 = time.perf_counter()
        depth = np.where(np.isfinite(out.depth) & (out.depth > 0), out.depth,
                         np.nan).astype(np.float32)
        add('depth cleanup', t0)
        t0 = time.perf_counter()
        conv.numpy_to_image(depth, '32FC1', header)
        add('depth msg', t0)
        t0 = time.perf_counter()
        colored = colorize_disparity(depth, 95.0)
        add('colorize', t0)
        t0 = time.perf_counter()
        conv.numpy_to_image(colored, 'rgb8', header)
        add('colored msg', t0)
        t0 = time.perf_counter()
        conv.packed_to_cloud(est.point_cloud(stride=args.stride), header)
        add('point cloud', t0)
    print(f'# node work per frame, {cw}x{ch} rgb8 -> {nw}x{nh}, {est.runner.describe()}, '
          f'{args.runs} runs; CPU: {_cpu()}, load {os.getloadavg()[0]:.1f}\n')
    print('| step | median ms | p90 ms |')
    print('|---|---:|---:|')
    med = {}
    for name, v in steps.items():
        a = np.asarray(v[2:])
        med[name] = float(np.median(a))
        print(f'| {name} | {med[name]:.2f} | {np.percentile(a, 90):.2f} |')
    net = med['estimator.depth'] + med['estimator.pose']
    own = sum(v for k, v in med.items() if k not in ('estimator.depth', 'estimator.pose'))
    print(f'\nnetworks {net:.1f} ms, everything else {own:.1f} ms: node work / network = '
          f'{own / net:.2f}')



if __name__ == '__main__':
    sys.exit(main())
