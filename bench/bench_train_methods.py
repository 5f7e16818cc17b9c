#!/usr/bin/env python3
"""Cost of one training step of every trainer method, relative to the monodepth2 baseline.

One step = exactly what `depth-ego train` runs (``Trainer.compute_loss`` on a batch of a
synthetic bag + backward + Adam step), CPU fp32, the same fixed batch for every method; methods
are timed interleaved (round-robin) so that load from other processes hits them alike. Prints
the median step time per method and its ratio to the baseline.

    python bench/bench_train_methods.py [--size 320x96] [--batch 2] [--steps 3] [--threads 1]
                                        [--methods baseline,packnet01-w0.25,...]
"""
import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld  # noqa: E402
from depth_ego_ros.data.synth_bag import write_synth_bag  # noqa: E402
from depth_ego_ros.training.config import TrainConfig  # noqa: E402
from depth_ego_ros.training.trainer import Trainer  # noqa: E402

METHODS = {
    'baseline': {},                                            # resnet18 + monodepth2 pose
    'packnet01-w0.25': dict(model='packnet01-w0.25'),
    'packnet01-w0.5': dict(model='packnet01-w0.5'),
    'packnet01': dict(model='packnet01'),
    'posexp': dict(pose_model='posexp'),                       # + explainability (weight 0.2)
    'posexp-noexp': dict(pose_model='posexp', explainability_weight=0.0),
    'learned_intrinsics': dict(learned_intrinsics=True),
    'alignment': dict(alignment_weight=0.1),
    'norm-sample': dict(depth_normalization='sample'),
    'norm-sequence': dict(depth_normalization='sequence'),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', default='320x96')
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--steps', type=int, default=3, help='timed steps per method')
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--methods', default=','.join(m for m in METHODS if m != 'packnet01'),
                    help=f'comma-separated, of: {", ".join(METHODS)}')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    W, H = (int(v) for v in args.size.split('x'))
    names = args.methods.split(',')
    for n in names:
        if n not in METHODS:
            ap.error(f'unknown method {n!r}')
    with tempfile.TemporaryDirectory() as tmp:
        bag = pathlib.Path(tmp) / 'drive'
        write_synth_bag(SyntheticWorld(SynthConfig(frames=6, width=W, height=H, seed=3,
                                                   supersample=1)), bag)
        trainers = {}
        for n in names:
            cfg = TrainConfig(bags=[str(bag)], out=str(pathlib.Path(tmp) / n), width=W, height=H,
                              batch_size=args.batch, epochs=1, val_fraction=0.0, progress=False,
                              tensorboard=False, image_every=0, **METHODS[n])
            trainers[n] = Trainer(cfg, log_fn=lambda s: None)
        batch = next(iter(torch.utils.data.DataLoader(trainers[names[0]].train_set,
                                                      batch_size=args.batch)))
        times = {n: [] for n in names}
        for it in range(args.warmup + args.steps):
            for n in names:
                tr = trainers[n]
                t = time.perf_counter()
                out, _ = tr.compute_loss(batch, train=True)
                tr.optimizer.zero_grad(set_to_none=True)
                out.total.backward()
                tr.optimizer.step()
                dt = time.perf_counter() - t
                if it >= args.warmup:
                    times[n].append(dt)
        base = statistics.median(times[names[0]])
        print(f'{W}x{H}, batch {args.batch}, {args.threads} thread(s), median of {args.steps} steps '
              f'after {args.warmup} warm-up, interleaved; torch {torch.__version__}')
        print(f'{"method":<20} {"s/step":>8} {"vs " + names[0]:>14}')
        for n in names:
            med = statistics.median(times[n])
            print(f'{n:<20} {med:8.3f} {med / base:13.2f}x')


if __name__ == '__main__':
    main()
