"""`depth-ego export`: the depth and pose networks as ONNX, TorchScript or TensorRT files that
the Estimator (and the perception node) load through ``exported_model_dir``."""
from __future__ import annotations

import argparse
import logging
import sys

from ..core.names import MODELS, POSE_MODELS   # torch-free

HELP = 'export the depth and pose networks (ONNX / TorchScript / TensorRT / OpenVINO) and check them'
DESCRIPTION = """\
Export the depth and pose networks of a checkpoint (monodepth2 layout, the project's
PackNet / PoseExpNet / intrinsics-head files, or a PackNet-SfM .ckpt) to OUTDIR:

    OUTDIR/export.json             manifest (format, model, resolution, precision, check result)
    OUTDIR/depth.{onnx,pt,engine}  image [B,3,H,W] RGB in [0,1] -> disparity [B,1,H,W]
    OUTDIR/pose.{onnx,pt,engine}   pair [B,6,H,W] = [previous, current] -> axisangle [B,3],
                                   translation [B,3] (T_curr_prev); absent without pose files
                                   --pose-model posexp: + explainability [B,1,H,W] (and
                                   translation is T_prev_curr, as PoseExpNet predicts it);
                                   --learned-intrinsics: + intrinsics [B,4] (normalised
                                   fx, fy, cx, cy)

--model, --pose-model and --learned-intrinsics default to what the checkpoint holds; the
manifest records them, so the Estimator / perception node run the exported files like the
torch networks.

Inputs/outputs are float32 with a dynamic batch axis (TensorRT: 1..--max-batch). --fp16 makes
the inside half precision (weights and compute; TensorRT: FP16 builder flag) except the pose
decoder and the disparity output, which stay float32.

After writing, the exported models are loaded with the runtime the Estimator uses (ONNX Runtime
with the CUDA or CPU provider by --device, TorchScript, TensorRT) and compared with float32
eager torch on a 2-frame batch: the max abs error of the disparity (sigmoid output, 0..1) and of
the pose vectors is printed with the tolerance (fp32: 1e-4 / 1e-5, fp16: 2e-2 / 2e-3).
Exit status: 0 = exported and within tolerance, 1 = exported but NOT within tolerance,
2 = nothing (usable) exported (bad arguments, checkpoint error, TensorRT unavailable).

--format openvino writes OpenVINO IR (depth.xml/.bin, pose.xml/.bin, float32 weights) run on the
CPU in --precision fp32 or bf16 (the same IR, bf16 inference precision); --int8 (or --precision
int8) also writes NNCF post-training int8 models (depth_int8.xml, pose_int8.xml) calibrated on
--calib-frames frames of --calib-bag BAG (the pose decoder stays float). Every variant is checked
by the accuracy guard against float32 torch (disparity relative error, depth AbsRel between the
two, pose translation / rotation error; thresholds in docs/inference.md) on the last calibration
frames (or fixed synthetic frames); the manifest lists each result under "checks" and the
default variant's under "check". Exit status 1 when the default variant fails the guard.

Use it: EstimatorConfig(exported_model_dir=OUTDIR) (backend 'auto' picks the format's runtime;
for an OpenVINO export the fastest variant that passed the guard on this machine, measured once
and cached in OUTDIR/auto_choice.json).
"""


def add_parser(subparsers):
    p = subparsers.add_parser('export', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--checkpoint', metavar='DIR|FILE|NAME',
                   help='checkpoint directory, PackNet-SfM .ckpt file or model-zoo name (`depth-ego '
                   'weights list`) (without it: RANDOM '
                        'weights, for pipeline tests and benchmarks only)')
    p.add_argument('--format', required=True, choices=['onnx', 'torchscript', 'tensorrt', 'openvino'])
    p.add_argument('--out', required=True, metavar='OUTDIR', help='output directory (created)')
    p.add_argument('--model', choices=MODELS, default=None,
                   help='depth network (default: detected from the checkpoint, else resnet18)')
    p.add_argument('--pose-model', choices=POSE_MODELS, default=None,
                   help='pose network: monodepth2 or posexp (SfMLearner PoseExpNet with its '
                        'explainability output); default: the checkpoint\'s, else monodepth2')
    p.add_argument('--learned-intrinsics', action=argparse.BooleanOptionalAction, default=None,
                   help='export the intrinsics head with the pose network (default: on when '
                        'the checkpoint has intrinsics.pth)')
    p.add_argument('--width', type=int, default=None,
                   help="network width, multiple of 32 (default: the checkpoint's, else 640)")
    p.add_argument('--height', type=int, default=None,
                   help="network height, multiple of 32 (default: the checkpoint's, else 192)")
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (onnx, tensorrt; default 17)')
    p.add_argument('--fp16', action='store_true', help='half precision inside (see above)')
    p.add_argument('--max-batch', type=int, default=8,
                   help='largest batch of the TensorRT engines (default 8 = 8 cameras)')
    p.add_argument('--device', default='auto',
                   help='where the check runs: auto | cpu | cuda | cuda:N (default auto)')
    p.add_argument('--disp-tol', type=float, default=None, help='override the disparity tolerance')
    p.add_argument('--pose-tol', type=float, default=None, help='override the pose tolerance')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0 = library default)')
    p.add_argument('--precision', choices=['fp32', 'bf16', 'int8'], default=None,
                   help='openvino: the variant the directory runs by default (default fp32, '
                        'int8 with --int8)')
    p.add_argument('--int8', action='store_true',
                   help='openvino: also write NNCF int8 models calibrated on --calib-bag')
    p.add_argument('--calib-bag', metavar='BAG', help='bag whose camera frames calibrate int8 '
                   '(and check every variant)')
    p.add_argument('--calib-frames', type=int, default=64,
                   help='frames taken from --calib-bag, evenly spaced pairs (default 64)')
    p.add_argument('--calib-topic', default=None, help='camera topic of --calib-bag '
                   '(default: its only camera topic)')
    p.set_defaults(func=run)
    return p


def _err(msg: str) -> int:
    print(f'depth-ego export: {msg}', file=sys.stderr)
    return 2


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    import torch
    from depth_ego_ros.core import checkpoints as ckpt
    from depth_ego_ros.core import export as export_mod
    from depth_ego_ros.core.models import export_estimator_models

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        from depth_ego_ros.zoo import resolve_checkpoint
        args.checkpoint = resolve_checkpoint(args.checkpoint)     # a path or a zoo name
        opts, _ = ckpt.network_options(args.checkpoint, args.model, args.pose_model,
                                       args.learned_intrinsics, args.width, args.height)
    except ckpt.CheckpointError as exc:     # includes ZooError
        return _err(str(exc))
    model, width, height = opts['model'], opts['width'], opts['height']
    pose_model, learned = opts['pose_model'], opts['learned_intrinsics']
    if not args.checkpoint:
        print('depth-ego export: WARNING: no --checkpoint given: exporting RANDOM weights '
              '(pipeline tests / benchmarks only)', file=sys.stderr)
    model, width, height = model or 'resnet18', width or 640, height or 192
    pose_model, learned = pose_model or 'monodepth2', bool(learned)
    if args.format == 'tensorrt':
        reason = export_mod.tensorrt_unavailable_reason(None if args.device == 'auto' else args.device)
        if reason:
            return _err(f'skipping the TensorRT export: {reason}')
    if args.format != 'openvino' and (args.int8 or args.precision):
        return _err('--int8 / --precision are OpenVINO options (--format openvino)')
    calib = None
    if args.calib_bag:
        try:
            calib = calibration_frames(args.calib_bag, width, height, args.calib_frames,
                                       args.calib_topic)
        except (ValueError, RuntimeError, OSError) as exc:
            return _err(f'--calib-bag {args.calib_bag}: {exc}')
    elif args.int8 or args.precision == 'int8':
        return _err('--int8 needs --calib-bag BAG (frames to calibrate the quantization on)')
    tol = {}
    if args.disp_tol is not None:
        tol['disparity'] = args.disp_tol
    if args.pose_tol is not None:
        tol['pose'] = args.pose_tol
    try:
        manifest = export_estimator_models(
            args.out, args.format, model=model, pose_model=pose_model, learned_intrinsics=learned,
            checkpoint=args.checkpoint, width=width, height=height, opset=args.opset,
            fp16=args.fp16, max_batch=args.max_batch, device=args.device, tolerances=tol,
            num_threads=args.threads,
            **({'precision': args.precision, 'int8': args.int8, 'calib_frames': calib}
               if args.format == 'openvino' else {}))
    except (ValueError, RuntimeError) as exc:   # CheckpointError is a ValueError
        return _err(str(exc))

    files = ', '.join(f for f in manifest['files'].values() if f)
    methods = f'{model}/{manifest.get("pose_model", pose_model)}' + (
        ' + learned intrinsics' if manifest.get('learned_intrinsics') else '')
    if learned and not manifest.get('learned_intrinsics'):
        print('depth-ego export: WARNING: no pose network: the intrinsics head is not exported',
              file=sys.stderr)
    print(f'exported {methods} {width}x{height} {manifest["precision"]} {args.format} to '
          f'{args.out}: {files}')
    c = manifest['check']
    if args.format == 'openvino':
        return _print_guard(manifest)
    t = c['tolerance']
    pose = (f'pose max |err| {c["pose_max_abs"]:.3g} (tolerance {t["pose"]:.3g})'
            if c['pose_max_abs'] is not None else 'no pose network')
    if c.get('explainability_max_abs') is not None:
        pose += (f', explainability max |err| {c["explainability_max_abs"]:.3g} (tolerance '
                 f'{t["disparity"]:.3g})')
    verdict = 'PASS' if c['passed'] else 'FAIL: the exported model does NOT match torch'
    print(f'check vs torch fp32 (batch {c["batch"]}, {c["runtime"]}): disparity max |err| '
          f'{c["disparity_max_abs"]:.3g} (tolerance {t["disparity"]:.3g}), {pose}: {verdict}')
    return 0 if c['passed'] else 1


def calibration_frames(bag, width: int, height: int, n: int = 64, topic: str | None = None):
    """``n`` camera frames of ``bag`` at the network resolution as a float tensor [n,3,H,W] in
    [0,1]: pairs of consecutive frames (so the pose network sees real motion) at evenly spaced
    places of the bag."""
    import numpy as np
    import torch
    from ..data.dataset import DatasetConfig, load_bag_sequences
    cfg = DatasetConfig(width=width, height=height, image_topic=topic, odom_topic='',
                        skip_static=False, augment=False, val_fraction=0.0,
                        require_camera_info=False, mask_topic='')
    images = np.concatenate([s.images for s in load_bag_sequences(bag, cfg)])
    if len(images) < 3:
        raise ValueError(f'only {len(images)} camera frames (need >= 3)')
    starts = np.linspace(0, len(images) - 2, max(2, n // 2)).round().astype(int)
    idx = np.stack([starts, starts + 1], 1).reshape(-1)[:max(3, n)]
    return torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div_(255.0)


def _print_guard(manifest) -> int:
    for precision, c in manifest['checks'].items():
        m, t = c['metrics'], c['thresholds']
        parts = ', '.join(f'{k} {m[k]:.3g} (max {t[k]:g})' for k in t if k in m)
        verdict = 'PASS' if c['passed'] else f'FAIL ({", ".join(c["failed"])})'
        default = ' [default]' if precision == manifest['precision'] else ''
        print(f'accuracy guard {precision}{default} vs torch fp32 ({c["frames"]} frames, '
              f'{c["runtime"]}): {parts}: {verdict}')
    return 0 if manifest['check']['passed'] else 1
