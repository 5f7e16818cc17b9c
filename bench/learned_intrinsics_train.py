#!/usr/bin/env python3
"""Learned intrinsics in full joint training: how fast the trainer's intrinsics head finds the
synthetic camera's K, starting from a wrong prior.

A synthetic street drive (with turns, odometry and camera_info) is written to a temporary bag;
`Trainer` trains depth + pose + IntrinsicsHead from random weights with the project's metric
start (depth at 10 m, pose at the odometry step, translation reparametrised) and
``learned_intrinsics=True``: the head's K replaces camera_info's K in the loss, camera_info's K
is only used to print the error. Prints, per epoch, the epoch-mean learned fx, fy, cx, cy and
their errors (pixels at the network resolution) and the photometric loss.

    python bench/learned_intrinsics_train.py [--size 128x64] [--frames 80] [--epochs 12]
        [--init-focal 0.72] [--lr 1e-3] [--lr-factor 10] [--odometry-warps] [--threads 1]
"""
import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld  # noqa: E402
from depth_ego_ros.data.synth_bag import write_synth_bag  # noqa: E402
from depth_ego_ros.training.config import TrainConfig  # noqa: E402
from depth_ego_ros.training.trainer import Trainer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', default='128x64')
    ap.add_argument('--frames', type=int, default=80)
    ap.add_argument('--epochs', type=int, default=12)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--init-focal', type=float, nargs='+', default=[0.72, 1.44],
                    help='prior fx/W [fy/H] of the head (default: 25 %% above the synthetic '
                    'camera\'s 0.575, 1.15 at 128x64)')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--lr-factor', type=float, default=10.0, help='intrinsics_lr_factor')
    ap.add_argument('--odometry-warps', action='store_true', help='odometry_warp_steps -1')
    ap.add_argument('--scene', default='street')
    ap.add_argument('--seed', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    W, H = (int(v) for v in args.size.split('x'))
    with tempfile.TemporaryDirectory() as tmp:
        bag = pathlib.Path(tmp) / 'drive'
        world = SyntheticWorld(SynthConfig(scene=args.scene, frames=args.frames, width=W, height=H,
                                           seed=args.seed, supersample=1))
        write_synth_bag(world, bag)
        K = world.frame(0).K
        foc = args.init_focal * 2 if len(args.init_focal) == 1 else args.init_focal
        print(f'true K at {W}x{H}: fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f}; '
              f'prior fx {foc[0] * W:.2f} fy {foc[1] * H:.2f} (centred)')
        cfg = TrainConfig(bags=[str(bag)], out=str(pathlib.Path(tmp) / 'run'), width=W, height=H,
                          batch_size=args.batch, epochs=args.epochs, lr=args.lr, val_fraction=0.0,
                          learned_intrinsics=True, intrinsics_init_focal=tuple(foc),
                          intrinsics_lr_factor=args.lr_factor, scales=(0, 1, 2, 3),
                          odometry_warp_steps=-1 if args.odometry_warps else 0,
                          progress=False, tensorboard=False, image_every=0, save_every=10 ** 6,
                          seed=args.seed)
        tr = Trainer(cfg, log_fn=lambda s: None)
        print(f'{len(tr.train_set)} training samples, {tr.steps_per_epoch} steps/epoch, '
              f'lr {args.lr:g} (head x{args.lr_factor:g}), odometry warps: {args.odometry_warps}')
        print(f'{"epoch":>5} {"steps":>5} {"fx":>7} {"fy":>7} {"cx":>7} {"cy":>7} {"|dfx|":>6} '
              f'{"|dfy|":>6} {"|dcx|":>6} {"|dcy|":>6} {"photo":>7} {"s":>6}')
        t0 = time.perf_counter()

        orig = tr._train_epoch

        def epoch(e, t_start):
            rec, stopped = orig(e, t_start)
            k = rec['intrinsics']
            print(f'{e:5d} {rec["global_step"]:5d} {k["fx"]:7.2f} {k["fy"]:7.2f} {k["cx"]:7.2f} '
                  f'{k["cy"]:7.2f} {k["fx_error"]:6.2f} {k["fy_error"]:6.2f} {k["cx_error"]:6.2f} '
                  f'{k["cy_error"]:6.2f} {rec["train"]["photometric"]:7.4f} '
                  f'{time.perf_counter() - t0:6.0f}', flush=True)
            return rec, stopped
        tr._train_epoch = epoch
        tr.fit()


if __name__ == '__main__':
    main()
