#!/usr/bin/env python3
"""Training throughput (images/s) of one self-supervised step, as `depth-ego train` runs it.

One step = depth net on the target + pose net on both (t-1, t) and (t, t+1) pairs + the monodepth2
loss (SSIM+L1 min-reprojection over 4 scales, auto-mask, smoothness, velocity) + backward + Adam.
Variants, timed interleaved so machine load hits them alike:
  eager          fp32, NCHW
  channels_last  fp32, channels_last inputs and weights
  amp            fp16 autocast + GradScaler (CUDA) / bf16 autocast (CPU)
  compile        torch.compile of both networks (first calls excluded as warm-up)
Prints a table per device and resolution: median step time, images/s, ratio to eager.

    python bench/bench_train.py [--sizes 320x96,640x192] [--batch 2] [--steps 5] [--warmup 2]
                                [--devices cpu,cuda] [--variants eager,channels_last,amp,compile]
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from depth_ego_ros.core.losses import LossConfig, SelfSupervisedLoss  # noqa: E402
from depth_ego_ros.training.model import build_model  # noqa: E402

OFFSETS = (-1, 1)


def make_batch(batch, width, height, device):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(batch, 3, height, width, generator=g)
    sources = torch.rand(batch, len(OFFSETS), 3, height, width, generator=g)
    K = torch.tensor([[0.58 * width, 0, 0.5 * width], [0, 1.92 * height, 0.5 * height], [0, 0, 1]])
    K = K.expand(batch, 3, 3).contiguous()
    distance = torch.full((batch, len(OFFSETS)), 1.0)
    return {k: v.to(device) for k, v in
            dict(image=img, sources=sources, K=K, distance=distance).items()}


class Variant:
    def __init__(self, name, device, width, height, batch):
        self.name, self.device = name, device
        self.model, _ = build_model('resnet18', seed=0)
        self.model.to(device)
        self.batch = make_batch(batch, width, height, device)
        if name == 'channels_last':
            self.model = self.model.to(memory_format=torch.channels_last)
            self.batch['image'] = self.batch['image'].contiguous(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if name == 'compile' else self.model
        self.loss_fn = SelfSupervisedLoss(LossConfig())
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], 1e-4)
        self.amp_dtype = None
        if name == 'amp':
            self.amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
        self.scaler = torch.amp.GradScaler('cuda') if name == 'amp' and device.type == 'cuda' else None

    def step(self):
        b = self.batch
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            disps, poses, _ = self.forward(b['image'], b['sources'], OFFSETS)
        out = self.loss_fn(b['image'], b['sources'], [d.float() for d in disps], poses.float(),
                           b['K'], distances=b['distance'])
        if self.scaler is not None:
            self.scaler.scale(out.total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            out.total.backward()
            self.opt.step()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        return float(out.total.detach())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='320x96,640x192')
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--steps', type=int, default=5, help='timed steps per variant')
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--devices', default='cpu,cuda')
    ap.add_argument('--variants', default='eager,channels_last,amp,compile')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device(d) for d in args.devices.split(',')
               if d == 'cpu' or (d.startswith('cuda') and torch.cuda.is_available())]
    print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, CUDA: '
          f'{torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CUDA rows not measured)"}, '
          f'ResNet-18 depth + pose, batch {args.batch}, {len(OFFSETS)} source frames, '
          f'{args.steps} timed steps after {args.warmup} warm-up')
    for device in devices:
        for size in args.sizes.split(','):
            w, h = map(int, size.split('x'))
            variants = []
            for name in args.variants.split(','):
                try:
                    variants.append(Variant(name, device, w, h, args.batch))
                except Exception as exc:  # a variant the platform lacks
                    print(f'  {device} {size} {name}: skipped ({exc})')
            times = {v.name: [] for v in variants}
            for v in list(variants):
                try:
                    for _ in range(args.warmup):
                        v.step()
                except Exception as exc:   # e.g. torch.compile without a compiler toolchain
                    print(f'  {device} {size} {v.name}: skipped ({type(exc).__name__}: {exc})'[:200])
                    variants.remove(v)
            for _ in range(args.steps):
                for v in variants:                     # interleaved
                    t0 = time.perf_counter()
                    v.step()
                    times[v.name].append(time.perf_counter() - t0)
            base = statistics.median(times['eager']) if times.get('eager') else None
            print(f'\n{device} {w}x{h}')
            print('| variant | median step s | images/s | vs eager |')
            print('|---|---:|---:|---:|')
            for v in variants:
                med = statistics.median(times[v.name])
                ratio = f'{med / base:.2f}' if base else '-'
                print(f'| {v.name} | {med:.3f} | {args.batch / med:.1f} | {ratio} |')


if __name__ == '__main__':
    main()
