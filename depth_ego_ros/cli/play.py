"""`depth-ego play BAG`: publish a bag's messages on their topics at the recorded timing.

For machines without ``ros2 bag play`` (e.g. the PyPI-wheel environment): the recorded CDR bytes
are published as they are (rclpy serialized publishing), each topic with the QoS recorded in the
bag. On a ROS distro ``ros2 bag play`` is the usual tool; both read the same bags.
"""
from __future__ import annotations

import argparse
import sys

HELP = "replay a rosbag2 bag on its topics (no ROS distro needed)"
DESCRIPTION = """\
Publish the messages of BAG (a rosbag2 directory, MCAP or sqlite3, or a single .mcap/.db3 file)
on their recorded topics, spaced as recorded (divided by --rate). Messages go out as the recorded
serialized bytes: nothing is decoded or re-encoded. Each topic uses the QoS its publisher offered
at recording time (e.g. /tf_static stays transient local).

Examples:
  depth-ego play bags/run1                       # once, real time
  depth-ego play bags/run1 --rate 0.5 --loop     # half speed, forever
  depth-ego play bags/run1 --topics /camera/image_raw /camera/camera_info --start-offset 12
  depth-ego play bags/run1 --wait-for-subscribers 1 --clock 100   # for use_sim_time nodes

A bag whose recorder was killed may lack metadata.yaml: run `depth-ego bag-repair BAG` first.
"""


def add_parser(subparsers):
    p = subparsers.add_parser('play', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('bag', metavar='BAG', help='bag directory (or .mcap / .db3 file)')
    p.add_argument('--rate', '-r', type=float, default=1.0,
                   help='playback speed factor (default 1.0; 2 = twice as fast)')
    p.add_argument('--loop', '-l', action='store_true', help='play again and again')
    p.add_argument('--max-loops', type=int, default=0, metavar='N',
                   help='with --loop: stop after N passes (default 0 = until Ctrl-C)')
    p.add_argument('--start-offset', type=float, default=0.0, metavar='SEC',
                   help='skip the first SEC seconds of the bag')
    p.add_argument('--topics', nargs='+', default=[], metavar='TOPIC',
                   help='play only these topics (default: all)')
    p.add_argument('--delay', '-d', type=float, default=0.0, metavar='SEC',
                   help='sleep SEC seconds before the first message')
    p.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                   help='wait until every played topic has N subscribers (see --wait-timeout)')
    p.add_argument('--wait-timeout', type=float, default=10.0, metavar='SEC',
                   help='give up waiting for subscribers after SEC seconds (default 10)')
    p.add_argument('--clock', type=float, default=0.0, metavar='HZ',
                   help='publish /clock (bag time) at HZ, for nodes with use_sim_time')
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.bags import BagError
    from ..ros.recorder_player import PlayOptions, play_bag

    try:
        options = PlayOptions(rate=args.rate, loop=args.loop, start_offset=args.start_offset,
                              topics=tuple(args.topics), delay=args.delay,
                              wait_for_subscribers=args.wait_for_subscribers,
                              wait_timeout=args.wait_timeout, clock=args.clock,
                              max_loops=args.max_loops).validate()
    except ValueError as exc:
        print(f'depth-ego play: {exc}', file=sys.stderr)
        return 2

    def log(text):
        print(text, file=sys.stderr, flush=True)

    try:
        counts = play_bag(args.bag, options, log=log)
    except BagError as exc:
        print(f'depth-ego play: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    total = sum(counts.values())
    print(f'played {total} messages: ' +
          ', '.join(f'{t} {n}' for t, n in sorted(counts.items())), flush=True)
    return 0
