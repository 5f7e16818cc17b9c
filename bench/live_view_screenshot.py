#!/usr/bin/env python3
"""docs/live_view.png from real live-view channels: what `depth-ego view --demo` serves, received
by a Foxglove WebSocket client (as Foxglove / Lichtblick would), decoded and drawn.

1. a checkpoint: --checkpoint DIR, or a short self-supervised training (--train-steps, default
   150 at 192x64, one torch thread, on a synthetic street drive with another seed than the one shown);
2. the --demo sources (synthetic street, perception node, looping player) and the view process;
3. a FoxgloveClient subscribes to every channel for --seconds, then render() draws camera,
   coloured depth, the last point clouds in the odom frame and the path.

    python bench/live_view_screenshot.py                          # ~6 min on 2 loaded CPU cores
    python bench/live_view_screenshot.py --checkpoint demo_out/... --out /tmp/live.png
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from depth_ego_ros.cli.view import DEMO_NS, DemoSources, demo_parser  # noqa: E402
from depth_ego_ros.demo.processes import Proc  # noqa: E402
from depth_ego_ros.live.client import FoxgloveClient  # noqa: E402
from depth_ego_ros.live.render import decode, render  # noqa: E402


def train(opts, work: Path, log) -> str:
    from depth_ego_ros.training.config import TrainConfig
    from depth_ego_ros.training.trainer import Trainer
    bag = work / 'train_street'
    if not (bag / 'metadata.yaml').is_file():
        import subprocess
        subprocess.run([sys.executable, '-m', 'depth_ego_ros.cli.main', 'synth', '--out', str(bag),
                        '--frames', '300', '--width', '384', '--height', '128', '--seed', '1000',
                        '--quiet', '--overwrite'], check=True)
    w, h = (int(v) for v in opts.net.split('x'))
    tc = TrainConfig(bags=[str(bag)], out=str(work / 'train_out'), width=w, height=h,
                     batch_size=4, lr=3e-4, epochs=10_000, lr_step=10_000, max_steps=opts.train_steps,
                     anneal_fraction=0.3, lr_gamma=0.1, val_fraction=0.0, device='cpu', num_threads=1,
                     save_every=10_000, keep_checkpoints=1, image_every=0, seed=0, progress=False,
                     odom_topic='/odom', image_topic='/camera/image_raw',
                     camera_info_topic='/camera/camera_info')
    t0 = time.monotonic()
    trainer = Trainer(tc, log_fn=log)
    summary = trainer.fit()
    trainer.ctx.shutdown()
    log(f'trained {summary["steps"]} steps in {time.monotonic() - t0:.0f} s')
    return summary['checkpoint']


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], parents=[demo_parser()])
    p.add_argument('--train-steps', type=int, default=150, help='0 = random weights')
    p.add_argument('--seconds', type=float, default=25.0, help='seconds of channels recorded')
    p.add_argument('--out', default=str(REPO / 'docs' / 'live_view.png'))
    p.add_argument('--work', default='/tmp/depth_ego_live_view_screenshot')
    opts = p.parse_args(argv)
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    opts.demo_dir = str(work)

    def log(t):
        print(f'[screenshot] {t}', file=sys.stderr, flush=True)
    if not opts.checkpoint and opts.train_steps > 0:
        opts.checkpoint = train(opts, work, log)
    sources = DemoSources(opts, log=log)
    view = None
    try:
        view = Proc('view', [sys.executable, '-m', 'depth_ego_ros.ros.live_view', '--port', '0',
                             '--max-rate', '0', *sources.view_args(), *sources.ros_args()],
                    sources.env, sources.logs)
        if not view.wait_for('live view on ws://', 120):
            raise RuntimeError('the view did not start:\n' + view.tail())
        port = int(re.search(r'ws://127\.0\.0\.1:(\d+)', view.text()).group(1))
        recorded, types = {}, {}
        with FoxgloveClient(f'ws://127.0.0.1:{port}') as client:
            client.wait_channels([f'{DEMO_NS}/depth/colored', f'{DEMO_NS}/path'], 60)
            time.sleep(1.0)
            for m in client.messages(timeout=1.0):
                pass
            chans = client.topics()
            client.subscribe(list(chans))
            types = {t: c['schemaName'] for t, c in chans.items()}
            t0 = time.monotonic()
            for m in client.messages(timeout=opts.seconds + 120):
                recorded.setdefault(m.topic, []).append(m.data)
                if time.monotonic() - t0 > opts.seconds and recorded.get(f'{DEMO_NS}/points'):
                    break
        counts = {t: len(v) for t, v in recorded.items()}
        log(f'received {counts}')
        topics = {'camera': '/camera/image_raw', 'colored': f'{DEMO_NS}/depth/colored',
                  'points': f'{DEMO_NS}/points', 'odom': f'{DEMO_NS}/odom',
                  'path': f'{DEMO_NS}/path', 'tf_static': '/tf_static'}
        msgs = decode({t: recorded.get(t, []) for t in topics.values()}, types)
        drawn = render(msgs, topics, Path(opts.out),
                       title='depth-ego view --demo: channels received over the Foxglove WebSocket '
                             f'(synthetic street, {opts.train_steps} training steps, 2 CPU cores)')
        from PIL import Image            # 256 colours: a third of the size, same look
        Image.open(opts.out).convert('RGB').quantize(256).save(opts.out, optimize=True)
        log(f'wrote {opts.out}: {drawn}')
        print(json.dumps({'received': counts, 'drawn': drawn, 'checkpoint': opts.checkpoint}))
    finally:
        if view is not None:
            view.stop()
        sources.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
