"""`depth-ego evaluate`: depth and trajectory metrics of a bag against its ground truth."""
from __future__ import annotations

import argparse
import logging
import sys

# torch-free, so that building the parser (`depth-ego --help`) does not import torch
from ..core.names import MODELS, POSE_MODELS


HELP = 'evaluate depth and ego-motion on a bag with ground truth (report.json + plots)'
DESCRIPTION = """\
Read the camera stream of BAG, run the same Estimator the perception node runs (no DDS, as fast
as the machine allows) and compare with ground truth; or, with --pred-depth/--pred-odom, compare
depth images and odometry that were RECORDED from the node (live replay; no network runs).

Ground truth:
  depth  --gt-depth TOPIC   depth image (REP 118: 16UC1 millimetres or 32FC1 metres; also a
                            compressedDepth CompressedImage)
         --gt-cloud TOPIC   LiDAR PointCloud2, projected into the camera with the extrinsic from
                            the bag's /tf_static (or --lidar-to-camera) and the camera_info K
  poses  --gt-poses TOPIC   Odometry, PoseStamped, PoseWithCovarianceStamped or TF (/tf) topic;
                            poses of another frame (e.g. base_link) are moved to the camera frame
                            with /tf_static
         --gt-poses FILE    TUM (t x y z qx qy qz qw), KITTI (12 numbers; --gt-times) or EuRoC csv

Time association: by header stamps (never the bag receive time); each frame takes the GT message
with the nearest stamp within --depth-max-dt; poses nearest within --pose-max-dt (evo's rule) or
interpolated (--pose-association interpolate). Both are written into report.json.

Depth metrics are monodepth2's (Eigen): AbsRel, SqRel, RMSE, RMSE log, d<1.25^k, GT in
(--min-depth, --max-depth), optional --garg-crop, --scaling median (per image, default: the
monocular case), none (metric models) or fixed (times --scale-factor). Trajectory: ATE after
--align sim3 (default) / se3, RPE (translation, rotation), monodepth2's 5-frame snippet ATE.

Writes OUT/report.json (every figure, per frame values and the exact settings), the plots
trajectory_top.png, trajectory_error.png, depth_abs_rel.png, depth_examples.png and the
trajectories in TUM and KITTI format under OUT/trajectories/.

Examples:
  depth-ego synth --out sim --frames 100
  depth-ego evaluate --bag sim --checkpoint ckpt --gt-depth /ground_truth/depth \\
      --gt-poses /ground_truth/pose --out eval_sim
  depth-ego evaluate --bag drive --gt-cloud /lidar/points --gt-poses gt.txt --out eval_drive
  # live replay (launch/replay_eval.launch.py recorded the node's outputs into rec/):
  depth-ego evaluate --bag sim --pred-bag rec --pred-depth /depth_ego/depth \\
      --pred-odom /depth_ego/odom --gt-depth /ground_truth/depth --gt-poses /ground_truth/pose \\
      --out eval_live
"""


def add_parser(subparsers):
    p = subparsers.add_parser('evaluate', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--bag', required=True, help='bag with the camera stream and the ground truth')
    p.add_argument('--out', required=True, metavar='DIR', help='output directory (created)')
    p.add_argument('--checkpoint', metavar='DIR|NAME', help='checkpoint directory or model-zoo '
                   'name (`depth-ego weights list`) '
                   '(without it the networks have RANDOM weights: pipeline test only)')
    g = p.add_argument_group('inputs')
    g.add_argument('--camera-topic', help='Image or CompressedImage topic (default: auto-detected)')
    g.add_argument('--camera-info-topic', help='CameraInfo topic (default: <camera ns>/camera_info)')
    g.add_argument('--camera-frame', help='camera optical frame id (default: from the image headers)')
    gt = g.add_mutually_exclusive_group()
    gt.add_argument('--gt-depth', metavar='TOPIC', help='ground-truth depth image topic')
    gt.add_argument('--gt-cloud', metavar='TOPIC', help='ground-truth LiDAR PointCloud2 topic')
    g.add_argument('--gt-poses', metavar='TOPIC|FILE', help='ground-truth poses: topic or file')
    g.add_argument('--gt-poses-format', choices=('auto', 'tum', 'kitti', 'euroc'), default='auto')
    g.add_argument('--gt-times', metavar='FILE', help='KITTI times.txt for a KITTI pose file')
    g.add_argument('--gt-tf-parent', metavar='FRAME', help='TF ground truth: parent frame')
    g.add_argument('--gt-tf-child', metavar='FRAME', help='TF ground truth: child frame '
                   '(default: the camera frame)')
    g.add_argument('--lidar-to-camera', type=float, nargs='+', metavar='V',
                   help='T_cam_lidar override: x y z qx qy qz qw, or 16 numbers (4x4 row-major)')
    g.add_argument('--pred-depth', metavar='TOPIC', help='recorded depth (32FC1) of the node: '
                   'evaluate it instead of running the network')
    g.add_argument('--pred-odom', metavar='TOPIC', help='recorded odometry (Odometry/PoseStamped/TF)')
    g.add_argument('--pred-bag', metavar='BAG', help='bag holding --pred-depth/--pred-odom '
                   '(default: --bag)')
    s = p.add_argument_group('frames and association')
    s.add_argument('--max-frames', type=int, default=0, help='evaluate at most N frames (0 = all)')
    s.add_argument('--stride', type=int, default=1, help='use every K-th frame (default 1)')
    s.add_argument('--depth-max-dt', type=float, default=0.05,
                   help='max |stamp difference| frame <-> GT depth/cloud, seconds (default 0.05)')
    s.add_argument('--pose-max-dt', type=float, default=0.02,
                   help='max |stamp difference| frame <-> GT pose, seconds (default 0.02)')
    s.add_argument('--pose-association', choices=('nearest', 'interpolate'), default='nearest')
    d = p.add_argument_group('depth metrics')
    d.add_argument('--min-depth', type=float, default=1e-3, help='GT range lower bound (1e-3 m)')
    d.add_argument('--max-depth', type=float, default=80.0, help='GT range upper bound (80 m)')
    d.add_argument('--garg-crop', action='store_true', help='Garg/Eigen crop (KITTI-shaped images)')
    d.add_argument('--scaling', choices=('median', 'none', 'fixed'), default='median',
                   help='per-image median scaling (default), none (metric), fixed (--scale-factor)')
    d.add_argument('--scale-factor', type=float, default=1.0, help='for --scaling fixed')
    t = p.add_argument_group('trajectory metrics')
    t.add_argument('--align', choices=('sim3', 'se3', 'scale', 'none'), default='sim3',
                   help='trajectory alignment before ATE (default sim3: monocular scale)')
    t.add_argument('--rpe-delta', type=float, default=1.0, help='RPE pair distance (default 1)')
    t.add_argument('--rpe-unit', choices=('frames', 'm'), default='frames')
    e = p.add_argument_group('estimator (when the network runs)')
    e.add_argument('--model', choices=MODELS, default=None,
                   help='depth network (default: from the checkpoint, else resnet18)')
    e.add_argument('--pose-model', choices=POSE_MODELS, default=None,
                   help='pose network: monodepth2 or posexp (SfMLearner PoseExpNet); default: '
                   'from the checkpoint, else monodepth2')
    e.add_argument('--learned-intrinsics', action=argparse.BooleanOptionalAction, default=None,
                   help='use the pose network\'s learned intrinsics when the bag has no camera_info '
                   '(a camera_info K always wins); default: on when the checkpoint has an '
                   'intrinsics head (intrinsics.pth)')
    e.add_argument('--width', type=int, default=None, help='network width (default: checkpoint, else 640)')
    e.add_argument('--height', type=int, default=None, help='network height (default: checkpoint, else 192)')
    e.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    e.add_argument('--precision', choices=('fp32', 'fp16', 'bf16'), default='fp32')
    e.add_argument('--backend', choices=('torch', 'onnxruntime', 'openvino'), default='torch')
    e.add_argument('--estimator-scale', choices=('none', 'relative', 'fixed', 'camera_height', 'speed'),
                   default='none', help="the Estimator's metric scale mode (default none: the "
                   "network's units; relative: median depth 1 per image)")
    e.add_argument('--estimator-scale-factor', type=float, default=None,
                   help='for --estimator-scale fixed (default: the factor the checkpoint records, '
                   '5.4 for monodepth2 stereo zoo models, else 1)')
    e.add_argument('--camera-height', type=float, default=1.0, help='metres, for camera_height')
    e.add_argument('--speed-topic', help='Odometry/TwistStamped topic for --estimator-scale speed')
    e.add_argument('--threads', type=int, default=0, help='CPU threads (0 = library default)')
    r = p.add_argument_group('online refinement (struct2depth test-time adaptation; docs/online_refinement.md)')
    r.add_argument('--online-refinement', action='store_true',
                   help='adapt the networks while evaluating: one refinement round on the last '
                        '--refine-window frames after every --refine-every frames')
    r.add_argument('--refine-every', type=int, default=1, metavar='N', help='frames per round (default 1)')
    r.add_argument('--refine-window', type=int, default=8, metavar='N', help='sliding window (default 8)')
    r.add_argument('--refine-steps', type=int, default=3, metavar='N', help='optimiser steps per round (default 3)')
    r.add_argument('--refine-lr', type=float, default=1e-4, help='learning rate (default 1e-4)')
    r.add_argument('--refine-networks', choices=('both', 'depth', 'pose'), default='both',
                   help='which networks adapt (default both)')
    o = p.add_argument_group('report')
    o.add_argument('--examples', type=int, default=4, help='frames shown side by side (default 4)')
    o.add_argument('--no-plots', action='store_true', help='write report.json only')
    o.add_argument('--quiet', action='store_true', help='no progress bar')
    p.set_defaults(func=run)
    return p


def config_from_args(args):
    from ..evaluation.evaluate import EvaluateConfig
    return EvaluateConfig(
        bag=args.bag, out=args.out, pred_bag=args.pred_bag, checkpoint=args.checkpoint,
        camera_topic=args.camera_topic, camera_info_topic=args.camera_info_topic,
        camera_frame=args.camera_frame, gt_depth=args.gt_depth, gt_cloud=args.gt_cloud,
        gt_poses=args.gt_poses, gt_poses_format=args.gt_poses_format, gt_times=args.gt_times,
        gt_tf_parent=args.gt_tf_parent, gt_tf_child=args.gt_tf_child,
        pred_depth=args.pred_depth, pred_odom=args.pred_odom, lidar_to_camera=args.lidar_to_camera,
        speed_topic=args.speed_topic, max_frames=args.max_frames, stride=args.stride,
        min_depth=args.min_depth, max_depth=args.max_depth, garg_crop=args.garg_crop,
        scaling=args.scaling, scale_factor=args.scale_factor, align=args.align,
        rpe_delta=args.rpe_delta, rpe_unit=args.rpe_unit, pose_association=args.pose_association,
        depth_max_dt=args.depth_max_dt, pose_max_dt=args.pose_max_dt, n_examples=args.examples,
        progress=not args.quiet, plots=not args.no_plots,
        estimator={'model': args.model, 'pose_model': args.pose_model,
                   'learned_intrinsics': args.learned_intrinsics, 'width': args.width, 'height': args.height,
                   'device': args.device, 'precision': args.precision, 'backend': args.backend,
                   'scale_mode': args.estimator_scale, 'scale_factor': args.estimator_scale_factor,
                   'camera_height': args.camera_height, 'num_threads': args.threads},
        online_refinement=({'window': args.refine_window, 'steps': args.refine_steps,
                            'learning_rate': args.refine_lr, 'networks': args.refine_networks,
                            'threads': max(1, args.threads or 1), 'max_share': 1.0}
                           if args.online_refinement else None),
        refine_every=args.refine_every)


def _summary(report) -> str:
    lines = [f"evaluated {report['frames']['processed']} of {report['frames']['in_bag']} frames "
             f"({report['mode']} mode) in {report['timings']['total_s']:.1f} s"]
    d = report.get('depth')
    if d:
        m = d['mean']
        lines.append(f"depth ({m['n_frames']} frames, scaling {d['scaling']}):  abs_rel "
                     f"{m['abs_rel']:.4f}  sq_rel {m['sq_rel']:.4f}  rmse {m['rmse']:.4f}  "
                     f"rmse_log {m['rmse_log']:.4f}  a1 {m['a1']:.4f}  a2 {m['a2']:.4f}  a3 {m['a3']:.4f}")
        if 'ratio_median' in m:
            lines.append(f"  median-scaling ratios: median {m['ratio_median']:.4g}, std "
                         f"{m['ratio_std']:.4g}")
    t = report.get('trajectory')
    if t:
        lines.append(f"trajectory ({t['association']['n_associated']} poses, {t['alignment']['mode']} "
                     f"alignment, scale {t['alignment']['scale']:.4g}):  ATE rmse "
                     f"{t['ate']['stats']['rmse']:.4g} m  RPE transl. rmse "
                     f"{t['rpe_translation']['stats']['rmse']:.4g}  RPE rot. rmse "
                     f"{t['rpe_rotation_deg']['stats']['rmse']:.4g} deg")
    o = report.get('online_refinement')
    if o:
        st = o['stats']
        lines.append(f"online refinement: {st['rounds']} rounds, {st['accepted']} accepted, "
                     f"{st['rejected']} rejected; {st['round_ms_mean']:.0f} ms per round")
    for w in report.get('warnings', []):
        lines.append(f'warning: {w}')
    return '\n'.join(lines)


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    from ..evaluation.evaluate import EvaluationError, evaluate
    from ..zoo import ZooError, resolve_checkpoint
    try:
        if args.checkpoint:                 # a path or a zoo name
            args.checkpoint = str(resolve_checkpoint(args.checkpoint))
    except ZooError as exc:
        print(f'depth-ego evaluate: error: {exc}', file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
        report = evaluate(cfg, argv=getattr(args, 'argv', None) or sys.argv[1:])
    except EvaluationError as exc:
        print(f'depth-ego evaluate: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('depth-ego evaluate: interrupted', file=sys.stderr)
        return 130
    print(_summary(report))
    print(f'report: {args.out}/report.json')
    return 0
