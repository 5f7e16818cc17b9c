#!/usr/bin/env python3
"""Parameter count and latency of the methods' networks (PackNet01 at several widths,
PoseExpNet, the intrinsics head) beside the ResNet-18 monodepth2 baseline.

Random weights (latency does not depend on their values), eval mode, no_grad, batch 1, fp32.
Runs are interleaved across networks (run 1 of each, run 2 of each, ...) so that load from other
processes affects them alike. Prints a Markdown table with the median and p90 latency.

    python bench/bench_methods.py                         # CPU, 640x192, 5 runs
    python bench/bench_methods.py --device cuda --runs 20 --threads 0
    python bench/bench_methods.py --nets packnet0.25,resnet18 --resolution 320x96
    python bench/bench_methods.py --backend ort   # the depth networks through ONNX Runtime (CPU)

Run the two backends in separate processes: an ONNX Runtime pool and torch's OpenMP pool in one
process on 2 cores slow each other down.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from depth_ego_ros.core.networks.depth_decoder import DepthDecoder  # noqa: E402
from depth_ego_ros.core.networks.intrinsics_head import IntrinsicsHead  # noqa: E402
from depth_ego_ros.core.networks.packnet import PackNet01  # noqa: E402
from depth_ego_ros.core.networks.posexp_net import PoseExpNet  # noqa: E402
from depth_ego_ros.core.networks.resnet_encoder import ResnetEncoder  # noqa: E402


class _ResnetDepth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = ResnetEncoder(18)
        self.decoder = DepthDecoder(self.encoder.num_ch_enc)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build(name: str):
    """name -> (module, call(x) running it, description)."""
    if name == 'resnet18':
        net = _ResnetDepth()
        return net, lambda x: net(x), 'ResNet-18 depth (monodepth2), image -> 4 disparities'
    if name.startswith('packnet'):
        w = float(name[len('packnet'):] or 1.0)
        net = PackNet01(width=w)
        return net, lambda x: net(x), f'PackNet01 width {w:g}, image -> 4 inverse depths'
    if name == 'posexp':
        net = PoseExpNet(num_sources=2)
        return net, lambda x: net(x, [x, x]), 'PoseExpNet, 3 frames -> 2 poses + 4 mask scales'
    if name == 'posexp_noexp':
        net = PoseExpNet(num_sources=2, output_exp=False)
        return net, lambda x: net(x, [x, x]), 'PoseExpNet pose only (no masks)'
    if name == 'intrinsics':
        net = IntrinsicsHead(512)
        feat = torch.randn(1, 512, 6, 20)
        return net, lambda x: net(feat.to(x.device), x.shape[-1], x.shape[-2]), \
            'IntrinsicsHead on a ResNet-18 bottleneck'
    raise SystemExit(f'unknown net {name!r}')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nets', default='resnet18,packnet1.0,packnet0.5,packnet0.25,posexp,intrinsics')
    ap.add_argument('--resolution', default='640x192', help='WxH (multiples of 32)')
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=2, help='torch CPU threads (0 = default)')
    ap.add_argument('--backend', choices=('torch', 'ort'), default='torch',
                    help='torch eager, or ONNX Runtime on the CPU for the depth networks exported '
                         'with the project exporter (the Estimator\'s backend "auto" on CPU)')
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    W, H = (int(v) for v in args.resolution.lower().split('x'))
    dev = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(1, 3, H, W, device=dev)
    nets = {}
    for name in args.nets.split(','):
        net, call, desc = build(name.strip())
        net.to(dev).eval()
        nets[name] = (call, desc, sum(p.numel() for p in net.parameters()))
    if args.backend == 'ort':
        import tempfile
        import onnxruntime as ort
        from depth_ego_ros.core.export import export_onnx

        class Finest(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, image):
                return self.net(image)[0]
        tmp = tempfile.mkdtemp(prefix='bench_methods_')
        for name in [n for n in nets if n == 'resnet18' or n.startswith('packnet')]:
            module = build(name)[0].eval()
            path = export_onnx(Finest(module), x.cpu(), Path(tmp) / f'{name}.onnx', 'image', ['disp'])
            so = ort.SessionOptions()
            so.intra_op_num_threads = max(args.threads, 0)
            so.add_session_config_entry('session.intra_op.allow_spinning', '0')
            sess = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
            feed = {'image': x.cpu().numpy()}
            nets[name] = (lambda _x, s=sess, f=feed: s.run(None, f),
                          nets[name][1] + ' [ONNX Runtime CPU]', nets[name][2])
        nets = {k: v for k, v in nets.items() if k == 'resnet18' or k.startswith('packnet')}
        torch.set_num_threads(1)
    times = {n: [] for n in nets}

    def sync():
        if dev.type == 'cuda':
            torch.cuda.synchronize()

    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            for name, (call, _, _) in nets.items():
                sync()
                t0 = time.perf_counter()
                call(x)
                sync()
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)

    cpu = platform.processor() or platform.machine()
    print(f'# {args.resolution}, device {dev}'
          + (f' ({torch.cuda.get_device_name(dev)})' if dev.type == 'cuda' else
             f' ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)')
          + f', backend {args.backend}, torch {torch.__version__}, {args.runs} runs after {args.warmup} warm-up\n')
    print('| network | parameters | median ms | p90 ms |')
    print('|---|---:|---:|---:|')
    for name, (_, desc, n) in nets.items():
        t = np.asarray(times[name])
        print(f'| {desc} | {n / 1e6:.2f} M | {np.median(t):.1f} | {np.percentile(t, 90):.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
