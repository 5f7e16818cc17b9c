"""`depth-ego predict`: depth maps (and a trajectory) for image files.

The command-line twin of monodepth2's test_simple.py: for each image it writes
``OUTDIR/<stem>_depth.npy`` (float32, HxW of the input image) and ``OUTDIR/<stem>_depth.png``
(magma colour map of inverse depth); for two or more images, taken in the given order, it also
writes ``OUTDIR/poses.txt`` with the chained camera trajectory in TUM format.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ..core.names import MODELS, POSE_MODELS   # torch-free

HELP = 'depth maps (and chained camera poses) for image files'
DESCRIPTION = """\
Predict depth for each IMAGE and, for two or more images (taken as a sequence in the given
order), the camera trajectory.

Writes, per image, OUTDIR/<stem>_depth.npy (float32, same height x width as the input image;
metres when a metric scale mode is chosen, else relative units) and OUTDIR/<stem>_depth.png
(colour-mapped inverse depth, bright = near). For >= 2 images also OUTDIR/poses.txt, one line
per image in TUM format:

    index tx ty tz qx qy qz qw

index = position of the image on the command line (0-based). Each line is the pose of that
frame's camera in the first camera's frame, i.e. the camera->world transform with world = the
first camera (so line 0 is the identity), in optical-frame axes (x right, y down, z forward).
Translation is in the depth units.

Intrinsics: give --K (9 numbers, row-major, pixels) or --fx [--fy --cx --cy] for the input
images. Without them monodepth2's KITTI intrinsics scaled to each image are assumed (this only
matters for --scale-mode camera_height), or with --learned-intrinsics the intrinsics head's
estimate is used (printed at the end, written to OUTDIR/intrinsics.txt).

Methods: --model resnet18|resnet50 (monodepth2) or packnet01|packnet01-w0.5|packnet01-w0.25
(PackNet01; --checkpoint may then be a PackNet-SfM .ckpt file); --pose-model monodepth2|posexp
(posexp also writes OUTDIR/<stem>_explainability.png, the SfMLearner mask, white = explained).
Model, pose model and learned intrinsics default to what the checkpoint holds.
"""


def add_parser(subparsers):
    p = subparsers.add_parser('predict', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('images', nargs='+', metavar='IMAGE', help='input images (PNG/JPEG/...), in sequence order')
    p.add_argument('--out', required=True, metavar='OUTDIR', help='output directory (created)')
    p.add_argument('--checkpoint', metavar='DIR|CKPT|NAME',
                   help='model-zoo name (`depth-ego weights list`, e.g. mono_640x192) or '
                        'checkpoint directory (monodepth2 layout: encoder.pth, depth.pth, '
                        '[pose_encoder.pth, pose.pth]; or the project\'s PackNet/PoseExpNet '
                        'files, [intrinsics.pth]) or a PackNet-SfM .ckpt file. Without it the '
                        'networks have RANDOM weights (only useful to test the pipeline)')
    p.add_argument('--model', choices=list(MODELS), default=None,
                   help='depth network (default: detected from the checkpoint, else resnet18)')
    p.add_argument('--pose-model', choices=list(POSE_MODELS), default=None,
                   help='pose network (default: detected from the checkpoint, else monodepth2)')
    p.add_argument('--learned-intrinsics', action=argparse.BooleanOptionalAction, default=None,
                   help='use the intrinsics head (default: on when the checkpoint has '
                        'intrinsics.pth; --no-learned-intrinsics ignores it); without --K/--fx '
                        'the learned K is used')
    p.add_argument('--width', type=int, default=None,
                   help='network input width (default: from encoder.pth, else 640)')
    p.add_argument('--height', type=int, default=None,
                   help='network input height (default: from encoder.pth, else 192)')
    p.add_argument('--device', default='auto', help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument('--precision', choices=['fp32', 'fp16', 'bf16', 'auto'], default='fp32')
    p.add_argument('--backend', choices=['torch', 'onnxruntime', 'torchscript', 'openvino', 'auto'],
                   default='torch')
    p.add_argument('--min-depth', type=float, default=0.1, help='default 0.1 (monodepth2)')
    p.add_argument('--max-depth', type=float, default=100.0, help='default 100 (monodepth2)')
    p.add_argument('--scale-mode', choices=['none', 'relative', 'fixed', 'camera_height'], default='none',
                   help='metric scale: none (relative), fixed (--scale-factor), camera_height '
                        '(ground plane --camera-height metres below the camera)')
    p.add_argument('--scale-factor', type=float, default=None,
                   help='for --scale-mode fixed (default: the factor the checkpoint records, '
                        '5.4 for monodepth2 stereo zoo models, else 1)')
    p.add_argument('--camera-height', type=float, default=1.0, help='metres, for camera_height')
    k = p.add_mutually_exclusive_group()
    k.add_argument('--K', type=float, nargs=9, metavar='K', default=None,
                   help='3x3 intrinsics of the input images, row-major, pixels')
    k.add_argument('--fx', type=float, default=None, help='focal length in pixels')
    p.add_argument('--fy', type=float, default=None, help='default: fx')
    p.add_argument('--cx', type=float, default=None, help='default: image centre')
    p.add_argument('--cy', type=float, default=None, help='default: image centre')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0 = library default)')
    p.set_defaults(func=run)
    return p


def _intrinsics(args, width: int, height: int) -> np.ndarray:
    from depth_ego_ros.core.cameras import default_intrinsics
    if args.K is not None:
        return np.asarray(args.K, dtype=np.float64).reshape(3, 3)
    if args.fx is not None:
        fy = args.fy if args.fy is not None else args.fx
        cx = args.cx if args.cx is not None else (width - 1) / 2.0
        cy = args.cy if args.cy is not None else (height - 1) / 2.0
        return np.array([[args.fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return default_intrinsics(width, height)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'), dtype=np.uint8)


def _output_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (``name``, ``name_1``, ...) when two inputs share a stem."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f'{p.stem}_{n}')
    return stems


def write_tum_poses(path: Path, poses: np.ndarray) -> None:
    """poses [N,4,4] camera->world -> TUM lines ``index tx ty tz qx qy qz qw``."""
    from depth_ego_ros.core.geometry import pose_to_tq_xyzw
    t, q = pose_to_tq_xyzw(poses)
    with open(path, 'w') as f:
        f.write('# index tx ty tz qx qy qz qw  (camera->world; world = first camera; '
                'optical axes x right, y down, z forward)\n')
        for i in range(poses.shape[0]):
            f.write(f'{i} ' + ' '.join(f'{v:.9f}' for v in (*t[i], *q[i])) + '\n')


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    from PIL import Image
    from depth_ego_ros.core import checkpoints as ckpt
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    from depth_ego_ros.core.visualize import colorize_disparity
    from depth_ego_ros.core.geometry import chain_poses

    paths = [Path(p) for p in args.images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f'depth-ego predict: image(s) not found: {", ".join(missing)}', file=sys.stderr)
        return 2

    try:
        from depth_ego_ros.zoo import resolve_checkpoint
        args.checkpoint = resolve_checkpoint(args.checkpoint)     # a path or a zoo name
        opts, _ = ckpt.network_options(args.checkpoint, args.model, args.pose_model,
                                       args.learned_intrinsics, args.width, args.height)
    except ckpt.CheckpointError as exc:     # includes ZooError (name not fetched, unknown)
        print(f'depth-ego predict: {exc}', file=sys.stderr)
        return 2
    model, width, height = opts['model'], opts['width'], opts['height']
    pose_model, learned = opts['pose_model'], opts['learned_intrinsics']
    if not args.checkpoint:
        print('depth-ego predict: WARNING: no --checkpoint given: the networks have RANDOM '
              'weights, the depth maps and poses are MEANINGLESS (pipeline test only)',
              file=sys.stderr)
    use_learned_K = bool(learned) and args.K is None and args.fx is None
    if args.K is None and args.fx is None and not use_learned_K:
        print('depth-ego predict: note: no --K/--fx given; assuming monodepth2\'s KITTI '
              'intrinsics scaled to each image (fx=0.58*W, fy=1.92*H, principal point at '
              'the centre)', file=sys.stderr)

    try:
        config = EstimatorConfig(
            model=model or 'resnet18', pose_model=pose_model or 'monodepth2',
            learned_intrinsics=bool(learned), width=width or 640, height=height or 192,
            device=args.device, precision=args.precision, backend=args.backend,
            min_depth=args.min_depth, max_depth=args.max_depth, scale_mode=args.scale_mode,
            scale_factor=args.scale_factor, camera_height=args.camera_height,
            num_threads=args.threads)
        estimator = Estimator(config, args.checkpoint)
    except ValueError as exc:  # includes CheckpointError
        print(f'depth-ego predict: {exc}', file=sys.stderr)
        return 2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rel = []
    for path, stem in zip(paths, _output_stems(paths)):
        try:
            image = _read_rgb(path)
        except Exception as exc:  # unreadable / not an image
            print(f'depth-ego predict: cannot read {path}: {exc}', file=sys.stderr)
            return 2
        H, W = image.shape[:2]
        try:
            result = estimator.infer(image, None if use_learned_K else _intrinsics(args, W, H))
        except ValueError as exc:
            print(f'depth-ego predict: {path}: {exc}', file=sys.stderr)
            return 2
        np.save(out / f'{stem}_depth.npy', result.depth.astype(np.float32))
        Image.fromarray(colorize_disparity(result.depth)).save(out / f'{stem}_depth.png')
        if result.explainability is not None:
            from depth_ego_ros.core.networks.posexp_net import mask_to_mono8
            Image.fromarray(mask_to_mono8(result.explainability)).save(
                out / f'{stem}_explainability.png')
        if result.relative_pose is not None:
            rel.append(result.relative_pose)
        d = result.depth
        print(f'{path} -> {out / (stem + "_depth.npy")} ({W}x{H}, depth {d.min():.3g}..{d.max():.3g}, '
              f'{result.timings["total"]:.0f} ms)')

    if len(paths) >= 2:
        if len(rel) != len(paths) - 1:
            print('depth-ego predict: the checkpoint has no pose networks: poses.txt not written',
                  file=sys.stderr)
        else:
            poses = chain_poses(np.stack(rel))
            write_tum_poses(out / 'poses.txt', poses)
            print(f'trajectory of {len(paths)} frames -> {out / "poses.txt"} (camera->world, TUM)')
    if use_learned_K:
        K = result.K        # the last image's: the running mean over all pairs so far
        np.savetxt(out / 'intrinsics.txt', K, fmt='%.6f',
                   header=f'learned K for {W}x{H} images (row-major, pixels)')
        print(f'learned intrinsics ({W}x{H}): fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} '
              f'cy {K[1, 2]:.2f} -> {out / "intrinsics.txt"}')
    return 0
