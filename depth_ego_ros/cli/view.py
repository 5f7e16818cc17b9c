"""`depth-ego view`: the live view (Foxglove / Lichtblick over a WebSocket); see
depth_ego_ros/ros/live_view.py and docs/live_view.md. Every argument after `view` (its options
and `--ros-args ...`) goes to the view's own parser: `depth-ego view --help`.

`depth-ego view --demo [--checkpoint DIR]`: something to look at without a camera: a synthetic
street drive (rendered once into --demo-dir) played in a loop into a perception node, both
started here, and the view on their outputs (the layout for its topic names is written to
<demo-dir>/foxglove_layout.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_NS = '/depth_ego'
DEMO_CAMERA = '/camera/image_raw'


def add_parser(sub):
    p = sub.add_parser('view', add_help=False,
                       help='live view of the perception node in Foxglove / Lichtblick '
                            '(WebSocket on 127.0.0.1:8765; `depth-ego view --help`)')
    p.set_defaults(func=lambda _args: run([]))


def demo_parser():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument('--demo', action='store_true')
    p.add_argument('--checkpoint', default='', help='--demo: the perception node\'s checkpoint '
                   '(e.g. the one `make demo` trained; default: random weights)')
    p.add_argument('--demo-dir', default=str(Path.home() / '.cache' / 'depth_ego_ros' / 'live_demo'),
                   help='--demo: where the synthetic drive and the logs go')
    p.add_argument('--net', default='192x64', help='--demo: network input WxH (default 192x64)')
    p.add_argument('--frames', type=int, default=150, help='--demo: frames of the drive')
    p.add_argument('--seed', type=int, default=0, help='--demo: seed of the synthetic street')
    return p


class DemoSources:
    """The --demo inputs: a synthetic bag (made once), a perception node and a looping player,
    as child processes logging into ``demo_dir``/logs."""

    def __init__(self, opts, env: dict | None = None, log=print):
        from depth_ego_ros.demo.processes import Proc, node_cmd, ros_environment
        self.dir = Path(opts.demo_dir).expanduser()
        logs = self.dir / 'logs'
        logs.mkdir(parents=True, exist_ok=True)
        self.env = env or ros_environment(logs, None)
        bag = self.dir / f'street_{opts.frames}_seed{opts.seed}'
        if not (bag / 'metadata.yaml').is_file():
            log(f'rendering a synthetic street drive into {bag} (once, ~{opts.frames // 10 + 5} s)')
            synth = Proc('synth', [sys.executable, '-m', 'depth_ego_ros.cli.main', 'synth',
                                   '--out', str(bag), '--frames', str(opts.frames), '--width', '384',
                                   '--height', '128', '--seed', str(opts.seed), '--quiet',
                                   '--overwrite'], self.env, logs)
            if synth.wait(600) != 0:
                raise RuntimeError(f'depth-ego synth failed:\n{synth.tail()}')
        w, h = (int(v) for v in opts.net.lower().split('x'))
        params = {'checkpoint': opts.checkpoint, 'width': w, 'height': h, 'num_threads': 1,
                  'frames.base': 'base_link', 'diagnostics.period': 2.0}
        self.node = Proc('perception_node', node_cmd(
            'depth_ego_ros.ros.perception_node', params,
            {'__ns': DEMO_NS, 'image': DEMO_CAMERA, 'camera_info': '/camera/camera_info'}),
            self.env, logs)
        self.player = Proc('player', [
            sys.executable, '-m', 'depth_ego_ros.cli.main', 'play', str(bag), '--loop',
            '--topics', DEMO_CAMERA, '/camera/camera_info', '/tf_static',
            '--wait-for-subscribers', '1', '--wait-timeout', '600'], self.env, logs)
        self.logs = logs
        log(f'perception node ({opts.checkpoint or "random weights"}) and player started; '
            f'logs in {logs}')

    def view_args(self) -> list:
        """Arguments of the view that shows these sources."""
        return ['--image-topic', DEMO_CAMERA, '--write-layout', str(self.dir / 'foxglove_layout.json'),
                '--path-always']

    def ros_args(self) -> list:
        return ['--ros-args', '-r', f'__ns:={DEMO_NS}']

    def stop(self):
        for p in (self.player, self.node):
            p.stop()


def run(argv) -> int:
    argv = list(argv)
    opts, rest = demo_parser().parse_known_args(argv)
    from depth_ego_ros.ros.live_view import main
    if not opts.demo:
        return main(argv)
    import os
    sources = DemoSources(opts, log=lambda t: print(f'[depth-ego view --demo] {t}', flush=True))
    os.environ.update({k: sources.env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    try:
        if '--ros-args' in rest:
            i = rest.index('--ros-args')
            rest = rest[:i] + sources.view_args() + sources.ros_args() + rest[i + 1:]
        else:
            rest = rest + sources.view_args() + sources.ros_args()
        return main(rest)
    finally:
        sources.stop()
