"""`depth-ego bag-repair BAG`: make a bag readable after its recorder was killed.

SIGKILL, a power cut or a crash leave the file being written without its MCAP summary (or a
sqlite3 file with a hot journal) and metadata.yaml listing only the files finished before. This
rewrites such files from every complete chunk and rebuilds metadata.yaml from what the files
really hold (see ``depth_ego_ros.data.bags.repair_bag``).
"""
from __future__ import annotations

import argparse
import sys

HELP = 'rebuild a killed recording (MCAP summary, metadata.yaml)'
DESCRIPTION = """\
Check every .mcap/.db3 file of the bag directory BAG: an MCAP file without summary/footer is
rewritten from all of its complete chunks (messages in the chunk that was being filled when the
recorder died are lost: at most chunk_size bytes or flush_period seconds of data); a sqlite3 file
rolls back its unfinished transaction. metadata.yaml is then rebuilt from the files, keeping the
recorder's custom_data, so `ros2 bag info/play`, rosbags and `depth-ego play` open the bag.

Exit status: 0 when metadata.yaml was written, 1 otherwise.
"""


def add_parser(subparsers):
    p = subparsers.add_parser('bag-repair', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('bag', metavar='BAG', help='bag directory')
    p.add_argument('--dry-run', action='store_true', help='only report what would be done')
    p.add_argument('--keep-damaged', action='store_true',
                   help='keep each rewritten original as <file>.damaged')
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.bags import BagError, repair_bag

    try:
        report = repair_bag(args.bag, keep_damaged=args.keep_damaged, dry_run=args.dry_run)
    except (BagError, OSError) as exc:
        print(f'depth-ego bag-repair: {exc}', file=sys.stderr)
        return 1
    print(report.text())
    return 0 if report.metadata_written or args.dry_run else 1
