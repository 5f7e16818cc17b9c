"""`depth-ego demo`: the whole self-supervised loop on a synthetic drive, no camera, no downloads.

Stages (each one a function; the ROS ones run real nodes as separate processes over DDS):

1. **synth**     render a training drive and a held-out drive (a different street) into rosbag2
                 bags with ground truth (:mod:`depth_ego_ros.data.synth_bag`).
2. **record**    `depth-ego play` the training drive into the perception node while
                 recorder_node records the camera, camera_info, odometry and /tf_static.
3. **before**    play the held-out drive into the perception node with the starting weights;
                 the recorder records the node's depth and odometry.
4. **train**     fine-tune on the recorded bag (:class:`~depth_ego_ros.training.trainer.Trainer`,
                 velocity loss from the odometry: metric depth).
5. **after**     play the held-out drive again, the node now loads the new checkpoint.
6. **evaluate**  both recordings against the held-out ground truth
                 (:func:`~depth_ego_ros.evaluation.evaluate.evaluate`, recorded mode): AbsRel,
                 RMSE, delta<1.25 with median scaling and without (metric), ATE (Sim(3)) and the
                 5-frame snippet ATE; the same checkpoints also run offline through the Estimator
                 on every held-out frame.
7. **report**    OUT/report.json, OUT/depth_before_after.png (RGB | GT | before | after),
                 OUT/trajectory_before_after.png and a printed table.

``--no-ros`` replaces stages 2, 3 and 5 by their offline equivalents (train on the synthetic
bag directly, evaluate with the Estimator): for machines without rclpy. ``--quick`` shrinks
everything to a smoke test of the pipeline (it cannot show learning).
"""
from __future__ import annotations

import argparse
import sys

from ..demo import DemoConfig, StageError, run_demo

HELP = 'run the whole loop on a synthetic drive: record -> fine-tune -> evaluate before/after'
DESCRIPTION = __doc__.split('\n', 2)[2]


def add_parser(subparsers):
    p = subparsers.add_parser('demo', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='demo_out', help='output directory (default demo_out)')
    p.add_argument('--quick', action='store_true',
                   help='tiny smoke test of the whole pipeline (about a minute; shows no learning)')
    p.add_argument('--no-ros', dest='ros', action='store_false',
                   help='skip the DDS stages (no nodes): train on the synthetic bag, evaluate offline')
    p.add_argument('--scene', choices=('street', 'corridor'), help='synthetic world (default street)')
    p.add_argument('--seed', type=int, help='training world seed (held out: seed + 1000)')
    p.add_argument('--train-frames', type=int)
    p.add_argument('--heldout-frames', type=int)
    p.add_argument('--camera-size', type=int, nargs=2, metavar=('W', 'H'),
                   help='rendered camera resolution (default 384 128)')
    p.add_argument('--net-size', type=int, nargs=2, metavar=('W', 'H'),
                   help='network resolution, multiples of 32 (default 192 64)')
    p.add_argument('--batch-size', type=int)
    p.add_argument('--lr', type=float)
    p.add_argument('--max-steps', type=int, help='the training budget in optimiser steps (default '
                   '%d): seeded, so the same steps give the same result on any machine' %
                   DemoConfig.max_steps)
    p.add_argument('--train-minutes', type=float, help='safety cap on the training time (default '
                   '%g; 0 = none); when it stops a run the report says so' %
                   (DemoConfig.train_seconds / 60))
    p.add_argument('--warmup-steps', type=int, help='linear lr warm-up over N steps (default %d)'
                   % DemoConfig.warmup_steps)
    p.add_argument('--ema-decay', type=float, help='moving average of the weights, saved as the '
                   'checkpoint (default %g; 0 = off)' % DemoConfig.ema_decay)
    p.add_argument('--yaw-rate-weight', type=float, help="rotation supervision from the "
                   "odometry's yaw rate (default %g; 0 = off)" % DemoConfig.yaw_rate_weight)
    p.add_argument('--anneal', choices=('step', 'cosine'), help='shape of the lr anneal over the '
                   "last 30 %% of the steps (default %s)" % DemoConfig.anneal)
    p.add_argument('--curve-every', type=int, help='held-out AbsRel every N training steps '
                   '(a learning curve in report.json; default 0 = off)')
    p.add_argument('--odometry-warp-steps', type=int,
                   help='training curriculum: warps take the translation length from odometry '
                   'for the first N steps (default -1 = whole run; 0 = off)')
    p.add_argument('--init', metavar='CKPT', help='fine-tune this monodepth2-layout checkpoint '
                   'instead of starting from random weights')
    p.add_argument('--threads', type=int, help='torch threads for training (default: all cores)')
    p.add_argument('--play-rate', type=float, help='playback speed of the held-out drive into '
                   'the node (default %g)' % DemoConfig.play_rate)
    p.add_argument('--record-rate', type=float, help='playback speed of the training drive into '
                   'the recorder (default %g; header stamps are kept, so the bag holds the same '
                   'data)' % DemoConfig.record_rate)
    p.add_argument('--domain-id', type=int, help='ROS_DOMAIN_ID for the demo nodes (default: '
                   '$ROS_DOMAIN_ID, else one derived from the process id)')
    p.add_argument('--device', help='auto | cpu | cuda | cuda:N (training and nodes)')
    p.add_argument('--offline-eval', action='store_true',
                   help='also evaluate both checkpoints offline through the Estimator (every '
                   'held-out frame, no DDS): a cross-check of the live numbers')
    p.set_defaults(func=run)
    return p


def config_from_args(args) -> DemoConfig:
    kw = {'out': args.out, 'ros': args.ros, 'offline_eval': args.offline_eval}
    for name in ('scene', 'seed', 'train_frames', 'heldout_frames', 'batch_size', 'lr',
                 'max_steps', 'warmup_steps', 'ema_decay', 'yaw_rate_weight', 'anneal', 'curve_every', 'odometry_warp_steps', 'init', 'threads', 'play_rate', 'record_rate',
                 'domain_id',
                 'device'):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if args.camera_size:
        kw['camera_width'], kw['camera_height'] = args.camera_size
    if args.net_size:
        kw['width'], kw['height'] = args.net_size
    if args.train_minutes is not None:
        kw['train_seconds'] = 60.0 * args.train_minutes
    return DemoConfig.quick_preset(**kw) if args.quick else DemoConfig(**kw)


def run(args) -> int:
    import logging
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    try:
        cfg = config_from_args(args).validate()
    except (ValueError, TypeError) as exc:
        print(f'depth-ego demo: {exc}', file=sys.stderr)
        return 2
    if cfg.ros:
        try:
            import rclpy  # noqa: F401
        except ImportError as exc:
            print(f'depth-ego demo: the ROS stages need rclpy ({exc}); run `make env`, source a '
                  'ROS 2 distro, or use --no-ros', file=sys.stderr)
            return 2
    try:
        run_demo(cfg)
    except StageError as exc:
        print(f'depth-ego demo: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('depth-ego demo: interrupted', file=sys.stderr)
        return 130
    return 0
