"""`depth-ego train`: self-supervised fine-tuning of depth + ego-motion on rosbag2 bags."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ..core.names import MODELS, POSE_MODELS   # torch-free

HELP = 'train / fine-tune the depth and pose networks on bags (self-supervised)'
DESCRIPTION = """\
Train depth and pose networks (monodepth2's by default; PackNet01, PoseExpNet with
explainability masks, learned intrinsics, 3-D alignment, depth normalisation and object motion
from instance masks by option) on camera bags (from recorder_node or
`depth-ego synth`) without labels: photometric reprojection of (t-1, t, t+1) triplets with
auto-masking and edge-aware smoothness, plus PackNet-SfM's velocity loss when the bags have
odometry (it makes depth metric). From scratch, or from a monodepth2-layout checkpoint (--init).

Writes OUT/weights_N/ after every epoch in monodepth2's layout (encoder.pth, depth.pth,
pose_encoder.pth, pose.pth: give it to the perception node as `checkpoint`), OUT/latest ->
the newest one, the optimiser state (weights_N/adam.pth) for --resume, train_config.json,
history.jsonl and TensorBoard logs (tensorboard --logdir OUT/tensorboard).

Several GPUs (or CPU processes): the same command under torchrun, e.g.
  torchrun --nproc_per_node 4 -m depth_ego_ros.cli.main train --bags ... --out run1

Examples:
  depth-ego train --bags bags/run1 bags/run2 --out run1 --epochs 20 --batch-size 12
  depth-ego train --bags bags/robot --init mono_640x192 --out ft --epochs 5 --lr 5e-5
  depth-ego train --bags bags/robot --weights-init imagenet --out scratch --epochs 20
  depth-ego train --out ft --epochs 10 --resume       # continue ft/latest with ft's configuration
  depth-ego train --config run1/train_config.json --epochs 30 --resume
  depth-ego train --bags bags/run1 --out pn --model packnet01-w0.25 --pose-model posexp
  depth-ego train --bags bags/nocalib --out li --learned-intrinsics --alignment-weight 0.1
  depth-ego train --bags bags/corridor bags/highway --out mixed --depth-normalization sequence
  depth-ego synth --out bags/traffic --moving-objects 3 && \
    depth-ego train --bags bags/traffic --out om --object-motion   # needs an instance-mask topic
"""


def add_parser(subparsers):
    from ..training.config import TrainConfig
    d = TrainConfig()
    p = subparsers.add_parser('train', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', metavar='FILE', help='train_config.json/.yaml to start from '
                   '(options given on the command line override it)')
    p.add_argument('--bags', nargs='+', metavar='BAG', help='training bag directories')
    p.add_argument('--out', metavar='DIR', help='output directory (checkpoints, logs)')
    p.add_argument('--init', metavar='CKPT|NAME', help='start from this checkpoint directory (any '
                   'layout the Estimator loads), for packnet01* a PackNet-SfM .ckpt file, or a '
                   'model-zoo name (e.g. mono_640x192; `depth-ego weights fetch NAME` first): '
                   'fine-tuning released weights on your bags')
    p.add_argument('--weights-init', choices=('none', 'imagenet'),
                   help='from scratch: imagenet = ResNet encoders from torchvision\'s ImageNet '
                   'weights (`depth-ego weights fetch resnet18_imagenet` first; the pose '
                   'encoder\'s first convolution adapted to the stacked frames) (default none)')
    p.add_argument('--resume', nargs='?', const='', metavar='DIR',
                   help='continue a run: networks, optimiser and progress from DIR (a weights_N '
                   'directory or a run directory); without DIR: OUT/latest')
    g = p.add_argument_group('networks')
    g.add_argument('--model', choices=MODELS,
                   help=f'depth network (default {d.model}); packnet01* = PackNet01 at that width')
    g.add_argument('--pose-model', choices=POSE_MODELS,
                   help=f"pose network (default {d.pose_model}); posexp = SfMLearner's PoseExpNet")
    g.add_argument('--explainability-weight', type=float,
                   help=f'posexp: explainability regulariser weight; > 0 also weights the '
                   f'photometric loss by the masks (default {d.explainability_weight}; 0 = no masks)')
    g.add_argument('--learned-intrinsics', action='store_const', const=True,
                   help='learn K with an intrinsics head on the pose network (replaces camera_info '
                   'K in the loss; the learned K is saved as intrinsics.pth); bags without '
                   'camera_info are then accepted')
    g.add_argument('--intrinsics-init-focal', type=float, nargs='+', metavar='F',
                   help='prior of a fresh intrinsics head: fx/W = fy/H, or fx/W fy/H '
                   f'(default {d.intrinsics_init_focal})')
    g.add_argument('--intrinsics-lr-factor', type=float, metavar='F',
                   help=f"the intrinsics head's biases learn at lr x F (default {d.intrinsics_lr_factor})")
    g.add_argument('--width', type=int, help=f'network width, multiple of 32 (default {d.width})')
    g.add_argument('--height', type=int, help=f'network height, multiple of 32 (default {d.height})')
    g.add_argument('--min-depth', type=float, help=f'(default {d.min_depth})')
    g.add_argument('--max-depth', type=float, help=f'(default {d.max_depth})')
    g.add_argument('--init-depth', help="from scratch: start the depth output at this many metres; "
                   "'auto' (default: 10 m with odometry) or 'off'")
    g.add_argument('--pose-init', choices=('auto', 'zero', 'forward'),
                   help="from scratch: start the pose output at the median odometry step forward "
                   "(default auto = forward with odometry)")
    g.add_argument('--translation-scale', help="training-time scale of the pose translations "
                   "(checkpoints unaffected); 'auto' (default) = median odometry step / 0.05")
    g.add_argument('--rotation-scale', type=float,
                   help='training-time scale of the pose rotations (checkpoints unaffected; default 1)')
    g.add_argument('--odometry-warp-steps', type=int,
                   help='curriculum: for the first N steps the warps take the translation length '
                   'from odometry (-1 = whole run, default 0 = off)')
    g = p.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int, help=f'(default {d.epochs})')
    g.add_argument('--batch-size', type=int, help=f'per process (default {d.batch_size})')
    g.add_argument('--lr', type=float, help=f'Adam learning rate (default {d.lr})')
    g.add_argument('--lr-step', type=int, help=f'epochs between learning-rate drops (default {d.lr_step})')
    g.add_argument('--lr-gamma', type=float, help=f'learning-rate drop factor (default {d.lr_gamma})')
    g.add_argument('--weight-decay', type=float)
    g.add_argument('--max-steps', type=int, help='stop after N optimiser steps (default 0 = no limit)')
    g.add_argument('--time-budget', type=float, metavar='SEC',
                   help='stop after SEC seconds of training (default 0 = no limit)')
    g.add_argument('--anneal-fraction', type=float, metavar='F',
                   help='with --max-steps/--time-budget: the last F of the budget runs at '
                   'lower lr, see --anneal (default 0 = off); with --max-steps its progress '
                   'is counted in steps and --time-budget is only a safety cap')
    g.add_argument('--anneal', choices=('step', 'cosine'),
                   help="shape of the anneal: 'step' = one drop to lr x lr-gamma, 'cosine' = half "
                   'cosine down to lr x lr-gamma (default step)')
    g.add_argument('--warmup-steps', type=int, metavar='N',
                   help='linear learning-rate warm-up over the first N steps (default 0)')
    g.add_argument('--ema-decay', type=float, metavar='D',
                   help='keep an exponential moving average of the weights (e.g. 0.99) and save '
                   'that: steadier short runs (default 0 = off)')
    g.add_argument('--no-amp', dest='amp', action='store_const', const=False,
                   help='no mixed precision on CUDA (AMP is on by default there)')
    g.add_argument('--device', help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument('--num-workers', type=int, help='DataLoader workers (default 0)')
    g.add_argument('--threads', dest='num_threads', type=int, help='torch CPU threads (0 = default)')
    g.add_argument('--seed', type=int)
    g = p.add_argument_group('data')
    g.add_argument('--val-fraction', type=float, help=f'share held out (default {d.val_fraction})')
    g.add_argument('--image-topic')
    g.add_argument('--camera-info-topic')
    g.add_argument('--odom-topic', help="odometry topic ('' = ignore odometry; default: auto)")
    g.add_argument('--mask-topic', help='instance-mask image topic for --object-motion (mono8/mono16, '
                   '0 = static, k = object k; default: auto, an Image topic named *mask*)')
    g.add_argument('--no-augment', dest='augment', action='store_const', const=False)
    g = p.add_argument_group('loss')
    g.add_argument('--smoothness-weight', type=float)
    g.add_argument('--velocity-weight', type=float, help='velocity loss weight (0 = off)')
    g.add_argument('--yaw-rate-weight', type=float, help='rotation supervision from the odometry '
                   "yaw rate (twist.angular.z): |pose net's turn - odometry's| x this (default 0 = "
                   'off; the demo uses 1)')
    g.add_argument('--no-automask', dest='automask', action='store_const', const=False)
    g.add_argument('--scales', type=int, nargs='+', help='loss scales (default 0 1 2 3)')
    g.add_argument('--alignment-weight', type=float,
                   help="vid2depth's 3-D alignment loss weight (default 0 = off; ~0.1)")
    g.add_argument('--depth-normalization', choices=('none', 'sample', 'sequence'),
                   help='divide depth by its per-sample or per-sequence median in the losses '
                   '(scenes of different depth range together; relative depth, no velocity loss)')
    g.add_argument('--object-motion', action='store_const', const=True,
                   help="struct2depth's object motion: a per-object motion net moves the masked "
                   'objects in the warp (needs an instance-mask topic in every bag; saved as '
                   'object_motion.pth)')
    g.add_argument('--object-size-weight', type=float,
                   help="struct2depth's object size constraint with --object-motion: weight of "
                   '|log object depth - log fy h / mask rows| with a learned height prior h '
                   '(default 0 = off; saved as object_size.pth)')
    g.add_argument('--object-height-init', type=float,
                   help='start of the learned object height prior (default 1.5, metres with odometry)')
    g = p.add_argument_group('logging')
    g.add_argument('--log-every', type=int, help='steps between TensorBoard points')
    g.add_argument('--image-every', type=int, help='epochs between sample images (0 = never)')
    g.add_argument('--save-every', type=int, help='epochs between checkpoints')
    g.add_argument('--keep-checkpoints', type=int,
                   help='keep only the newest N weights_N directories (default 0 = all)')
    g.add_argument('--no-tensorboard', dest='tensorboard', action='store_const', const=False)
    g.add_argument('--quiet', dest='progress', action='store_const', const=False,
                   help='no progress bar')
    p.set_defaults(func=run)
    return p


_FIELDS = ('bags', 'out', 'init', 'weights_init', 'model', 'pose_model', 'explainability_weight',
           'learned_intrinsics', 'intrinsics_init_focal', 'intrinsics_lr_factor', 'alignment_weight',
           'depth_normalization', 'object_motion', 'object_size_weight', 'object_height_init',
           'mask_topic', 'width', 'height', 'min_depth', 'max_depth',
           'init_depth', 'pose_init', 'translation_scale', 'rotation_scale', 'odometry_warp_steps', 'epochs', 'batch_size', 'lr', 'lr_step', 'lr_gamma',
           'weight_decay', 'max_steps', 'time_budget', 'anneal_fraction', 'anneal', 'warmup_steps', 'ema_decay', 'amp', 'device', 'num_workers',
           'num_threads', 'seed', 'val_fraction', 'image_topic', 'camera_info_topic', 'odom_topic',
           'augment', 'smoothness_weight', 'velocity_weight', 'yaw_rate_weight', 'automask', 'scales', 'log_every',
           'image_every', 'save_every', 'keep_checkpoints', 'tensorboard', 'progress')


def config_from_args(args):
    """TrainConfig from --config (if any) overridden by the options given."""
    from pathlib import Path

    from ..training.config import CONFIG_FILE, TrainConfig
    config = args.config
    if config is None and args.resume is not None:
        # resuming without --config: the run's own configuration is the base
        run_dir = Path(args.resume) if args.resume else Path(args.out) if args.out else None
        for cand in ([run_dir / CONFIG_FILE, run_dir.parent / CONFIG_FILE] if run_dir else []):
            if cand.is_file():
                config = cand
                break
    base = TrainConfig.load(config).to_dict() if config else TrainConfig().to_dict()
    if config and args.resume is not None and args.init is None:
        base['init'] = None            # the resumed run's own weights take over
    for name in _FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            base[name] = v
    return TrainConfig.from_dict(base)


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    from ..training.config import TrainConfigError
    from ..training.trainer import Trainer, TrainingError
    trainer = None
    try:
        cfg = config_from_args(args)
        cfg.validate()
        resume = None
        if args.resume is not None:
            resume = args.resume or cfg.out
        trainer = Trainer(cfg, resume=resume)
        summary = trainer.fit()
    except (TrainConfigError, TrainingError, ValueError) as exc:
        print(f'depth-ego train: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('depth-ego train: interrupted (the last saved epoch is in OUT/latest)', file=sys.stderr)
        return 130
    finally:
        if trainer is not None:
            trainer.ctx.shutdown()
    if trainer.ctx.is_main:
        short = {k: v for k, v in summary.items() if k != 'history'}
        print(json.dumps(short, indent=2, default=str))
        print(f"checkpoint: {summary.get('checkpoint')}")
    return 0
