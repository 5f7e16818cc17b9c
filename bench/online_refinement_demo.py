"""Online refinement demonstration: does test-time adaptation lower the depth error on a sequence
whose statistics differ from the training data?

1. A base model: ``--checkpoint DIR`` (monodepth2 layout), or trained here on the synthetic
   street world (seed 0) with the project's trainer for ``--train-seconds``.
2. A test sequence from a DIFFERENT synthetic world (default: the corridor scene; change scene,
   seed, texture scale, world scale or field of view).
3. The Estimator (torch backend) runs over it twice, frame by frame: without refinement, and with
   an OnlineRefiner driven synchronously (one round after each ``--every`` frames, same budget
   each time, deterministic). Frame t is always evaluated with the weights the refiner had
   BEFORE seeing frame t+1 (causal, as in the node).
4. Depth AbsRel / delta<1.25 (median-scaled, ground truth from the synthetic world) over the
   sequence and its two halves, and the refiner's cost per round.

    python bench/online_refinement_demo.py --checkpoint /path/to/ckpt --scene corridor
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from depth_ego_ros.core import checkpoints as ckpt  # noqa: E402
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig  # noqa: E402
from depth_ego_ros.core.online_refinement import OnlineRefiner, RefinerConfig  # noqa: E402
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld  # noqa: E402
from depth_ego_ros.evaluation.metrics import DepthEvalConfig, depth_metrics  # noqa: E402


def train_base(args, workdir: Path) -> Path:
    from depth_ego_ros.data.synth_bag import write_synth_bag
    from depth_ego_ros.training.config import TrainConfig
    from depth_ego_ros.training.trainer import Trainer
    bag = workdir / 'train_bag'
    sc = SynthConfig(frames=args.train_frames, width=args.camera_width, height=args.camera_height,
                     scene='street', seed=0)
    print(f'rendering the training world (street, seed 0, {sc.frames} frames) ...', flush=True)
    write_synth_bag(SyntheticWorld(sc), bag, overwrite=True)
    out = workdir / 'train'
    tc = TrainConfig(bags=[str(bag)], out=str(out), width=args.width, height=args.height,
                     batch_size=4, lr=3e-4, epochs=10_000, lr_step=10_000,
                     time_budget=args.train_seconds, max_steps=args.train_steps,
                     odometry_warp_steps=-1, anneal_fraction=0.3, val_fraction=0.0,
                     num_threads=args.threads, save_every=10_000, keep_checkpoints=1,
                     image_every=0, seed=0, progress=False, tensorboard=False)
    print(f'training the base model ({args.train_seconds:.0f} s budget) ...', flush=True)
    trainer = Trainer(tc, log_fn=lambda *a: None)
    summary = trainer.fit()
    trainer.ctx.shutdown()
    return Path(summary['checkpoint'])


def evaluate(est: Estimator, frames, refiner: OnlineRefiner | None, every: int, eval_cfg):
    rows, rounds = [], []
    est.reset()
    for i, f in enumerate(frames):
        out = est.infer(f.rgb, f.K, stamp=f.stamp, speed=f.speed)
        m = depth_metrics(f.depth, out.depth, eval_cfg)
        rows.append((m.abs_rel, m.a1))
        if refiner is not None:
            refiner.add_frame(f.rgb, f.K, f.stamp, f.speed)
            if (i + 1) % every == 0:
                r = refiner.refine_round()
                if r is not None:
                    rounds.append(r)
    return np.array(rows), rounds


def summarise(rows):
    n = len(rows)
    h = n // 2
    return {'all': rows.mean(0).tolist(), 'first_half': rows[:h].mean(0).tolist(),
            'second_half': rows[h:].mean(0).tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--checkpoint', help='base model (monodepth2 layout); default: train one')
    ap.add_argument('--train-seconds', type=float, default=300.0)
    ap.add_argument('--train-steps', type=int, default=0)
    ap.add_argument('--train-frames', type=int, default=300)
    ap.add_argument('--camera-width', type=int, default=384)
    ap.add_argument('--camera-height', type=int, default=128)
    ap.add_argument('--width', type=int, default=None, help='network width (default: checkpoint)')
    ap.add_argument('--height', type=int, default=None)
    ap.add_argument('--scene', default='corridor')
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--texture-scale', type=float, default=1.0)
    ap.add_argument('--scale', type=float, default=1.0)
    ap.add_argument('--hfov', type=float, default=82.0)
    ap.add_argument('--frames', type=int, default=60)
    ap.add_argument('--window', type=int, default=6)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--lr', type=float, default=1e-4)
    ap.add_argument('--networks', default='both', choices=('both', 'depth', 'pose'))
    ap.add_argument('--every', type=int, default=1, help='one round after every N frames')
    ap.add_argument('--no-velocity', action='store_true', help='do not give speeds to the refiner')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--json', help='write the figures here')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    workdir = Path(tempfile.mkdtemp(prefix='refine_demo_'))
    try:
        checkpoint = Path(args.checkpoint) if args.checkpoint else train_base(args, workdir)
        meta = ckpt.read_encoder_meta(checkpoint)
        width = args.width or int(meta['width'])
        height = args.height or int(meta['height'])
        world = SyntheticWorld(SynthConfig(frames=args.frames, width=args.camera_width,
                                           height=args.camera_height, scene=args.scene,
                                           seed=args.seed, texture_scale=args.texture_scale,
                                           scale=args.scale, hfov_deg=args.hfov))
        t0 = time.perf_counter()
        frames = list(world.frames())
        print(f'test sequence: {args.scene}, seed {args.seed}, texture_scale {args.texture_scale}, '
              f'scale {args.scale}, hfov {args.hfov}, {len(frames)} frames '
              f'{args.camera_width}x{args.camera_height} ({time.perf_counter() - t0:.1f} s to render)')
        ecfg = EstimatorConfig(width=width, height=height, backend='torch', num_threads=args.threads)
        eval_cfg = DepthEvalConfig(min_depth=1e-3, max_depth=80.0)

        base = Estimator(ecfg, checkpoint)
        rows0, _ = evaluate(base, frames, None, args.every, eval_cfg)

        est = Estimator(ecfg, checkpoint)
        rcfg = RefinerConfig(window=args.window, steps=args.steps, batch=args.batch,
                             learning_rate=args.lr, networks=args.networks, max_share=1.0,
                             threads=args.threads,
                             velocity_weight=0.0 if args.no_velocity else 0.1)
        refiner = OnlineRefiner(est, rcfg)
        if args.no_velocity:
            for f in frames:
                f.speed = None
        t0 = time.perf_counter()
        rows1, rounds = evaluate(est, frames, refiner, args.every, eval_cfg)
        wall = time.perf_counter() - t0
        # the adapted weights once more over the whole sequence (what a saved model would give)
        rows2, _ = evaluate(est, frames, None, args.every, eval_cfg)
        refiner.close()

        s0, s1, s2 = summarise(rows0), summarise(rows1), summarise(rows2)
        st = refiner.stats()
        busy = [r.busy_ms for r in rounds]
        build = [r.build_ms for r in rounds if r.accepted]
        print(f'\nbase model {checkpoint} at {width}x{height}; refiner: window {args.window}, '
              f'{args.steps} steps x batch {args.batch}, lr {args.lr:g}, networks {args.networks}, '
              f'one round per {args.every} frame(s), velocity {"off" if args.no_velocity else "on"}')
        print('| run | AbsRel all | d1 all | AbsRel 1st half | AbsRel 2nd half | d1 2nd half |')
        print('|---|---:|---:|---:|---:|---:|')
        for name, s in (('no refinement', s0), ('online refinement', s1),
                        ('refined weights, 2nd pass', s2)):
            print(f"| {name} | {s['all'][0]:.4f} | {s['all'][1]:.4f} | {s['first_half'][0]:.4f} | "
                  f"{s['second_half'][0]:.4f} | {s['second_half'][1]:.4f} |")
        print(f"\nrounds {st['rounds']} (accepted {st['accepted']}, rejected {st['rejected']}, "
              f"non-finite {st['nonfinite']}); busy per round median {np.median(busy):.0f} ms "
              f"(of which runner rebuild {np.median(build) if build else 0:.0f} ms), swap max "
              f"{st['swap_ms_max'] * 1e3:.1f} us; refinement pass {wall:.1f} s for {len(frames)} frames "
              f"on {args.threads} thread(s)")
        if args.json:
            Path(args.json).write_text(json.dumps({
                'args': vars(args), 'no_refinement': s0, 'online': s1, 'second_pass': s2,
                'stats': st, 'round_ms_median': float(np.median(busy)) if busy else math.nan,
                'per_frame_abs_rel': {'base': rows0[:, 0].tolist(), 'online': rows1[:, 0].tolist()},
            }, indent=1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
