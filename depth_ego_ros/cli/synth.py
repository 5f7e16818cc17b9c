"""`depth-ego synth`: render a synthetic drive into a rosbag2 (MCAP) with ground truth."""
from __future__ import annotations

import argparse
import sys

HELP = 'render a synthetic drive (RGB, odometry, GT depth and poses) into a rosbag2'
DESCRIPTION = """\
Generate a procedural textured world (road, buildings, poles, trees, parked cars, crates; or an
indoor corridor with --scene corridor), drive a camera through it like a car (turns, speed changes,
stops) and write a rosbag2 directory (MCAP by default) with:

  /camera/image_raw     sensor_msgs/Image rgb8 (frame camera_optical_frame)
  /camera/camera_info   sensor_msgs/CameraInfo (exact pinhole K, no distortion)
  /odom                 nav_msgs/Odometry of base_link (twist = speed, for velocity supervision)
  /ground_truth/depth   sensor_msgs/Image 32FC1 z-depth in metres (+Inf = sky, REP 118)
  /ground_truth/pose    geometry_msgs/PoseStamped, camera optical frame -> world
  /tf_static            base_link -> camera_optical_frame
  with --moving-objects N > 0 also:
  /camera/instance_mask sensor_msgs/Image mono16: 0 = static world, k = moving object k
  /ground_truth/objects geometry_msgs/PoseArray, T_world_obj of object k at index k-1

The same seed and options always give the same bag content.
"""


def add_parser(subparsers):
    p = subparsers.add_parser('synth', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='bag directory to create')
    p.add_argument('--frames', type=int, default=200, help='number of camera frames (default 200)')
    p.add_argument('--width', type=int, default=416, help='image width (default 416)')
    p.add_argument('--height', type=int, default=128, help='image height (default 128)')
    p.add_argument('--seed', type=int, default=0, help='world and trajectory seed (default 0)')
    p.add_argument('--rate', type=float, default=10.0, help='camera frame rate in Hz (default 10)')
    p.add_argument('--scene', default='street', help="'street' (default) or 'corridor'")
    p.add_argument('--fov', type=float, default=82.0, help='horizontal field of view, degrees (default 82)')
    p.add_argument('--scale', type=float, default=1.0,
                   help='multiply every length and speed of the world (default 1)')
    p.add_argument('--texture-scale', type=float, default=1.0,
                   help='multiply texture wavelengths: a different-looking world (default 1)')
    p.add_argument('--odom-rate', type=float, default=50.0, help='/odom rate in Hz (default 50)')
    p.add_argument('--odom-noise', type=float, default=0.0,
                   help='relative std of odometry speed noise (default 0 = exact)')
    p.add_argument('--image-noise', type=float, default=0.0,
                   help='std of Gaussian pixel noise in 0-255 units (default 0)')
    p.add_argument('--supersample', type=int, default=2,
                   help='colour sub-samples per axis on object edges (anti-aliasing; 1 = fastest, default 2)')
    p.add_argument('--moving-objects', type=int, default=0, metavar='N',
                   help='N independently moving objects (vehicles ahead in the lane and oncoming; '
                        'carts in the corridor) + an instance-mask topic (default 0 = rigid world)')
    p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='rosbag2 storage (default mcap)')
    p.add_argument('--no-ground-truth', action='store_true', help='omit the /ground_truth/* topics')
    p.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.add_argument('--workers', type=int, default=0,
                   help='render processes (default 0: one per core; the bag is the same)')
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..data.synth import SynthConfig, SyntheticWorld
    from ..data.synth_bag import render_workers, write_synth_bag
    try:
        cfg = SynthConfig(frames=args.frames, width=args.width, height=args.height, rate=args.rate,
                          seed=args.seed, scene=args.scene, hfov_deg=args.fov, scale=args.scale,
                          texture_scale=args.texture_scale, odom_rate=args.odom_rate,
                          odom_noise=args.odom_noise, image_noise=args.image_noise,
                          supersample=args.supersample, moving_objects=args.moving_objects)
    except ValueError as exc:
        print(f'depth-ego synth: {exc}', file=sys.stderr)
        return 2
    world = SyntheticWorld(cfg)
    bar = None
    if not args.quiet:
        try:
            from tqdm import tqdm
            bar = tqdm(total=cfg.frames, unit='frame', desc='synth', file=sys.stderr)
        except ImportError:
            bar = None

    def progress(i, n):
        if bar is not None:
            bar.update(1)

    try:
        stats = write_synth_bag(world, args.out, storage=args.storage,
                                ground_truth=not args.no_ground_truth, overwrite=args.overwrite,
                                progress=progress, workers=args.workers or render_workers())
    except (FileExistsError, ValueError) as exc:
        print(f'depth-ego synth: {exc}', file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    n = stats['frames']
    print(f"wrote {stats['path']}: {n} frames {cfg.width}x{cfg.height} @ {cfg.rate:g} Hz, "
          f"{stats['bytes'] / 1e6:.1f} MB, seed {cfg.seed}, scene {cfg.scene}")
    print(f"time: {stats['total_s']:.2f} s total, {stats['render_s']:.2f} s rendering "
          f"({1e3 * stats['render_s'] / max(n, 1):.1f} ms/frame, {n / max(stats['total_s'], 1e-9):.1f} frames/s)")
    print('topics: ' + ', '.join(f'{t} ({c})' for t, c in sorted(stats['messages'].items())))
    return 0
