"""`depth-ego <command>`: one entry point, one module per subcommand.

Each module in SUBCOMMANDS defines ``add_parser(subparsers)`` which registers its parser and sets
``func`` (called with the parsed args, returns an exit code). Modules are imported lazily so that
``depth-ego --help`` stays fast and a missing optional dependency only affects its own command.
"""
import argparse
import importlib
import sys

# name -> module (relative to this package)
SUBCOMMANDS = {
    'predict': 'predict',
    'export': 'export',
    'evaluate': 'evaluate',
    'play': 'play',
    'bag-repair': 'bag_repair',
    'synth': 'synth',
    'train': 'train',
    'demo': 'demo',
    'weights': 'weights',
    'view': 'view',
}
# subcommands whose arguments all go to their own parser (they take `--ros-args ...`)
PASSTHROUGH = {'view'}


def build_parser():
    parser = argparse.ArgumentParser(
        prog='depth-ego',
        description='Self-supervised monocular depth and ego-motion tools (depth_ego_ros).')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f'{__package__}.{module}')
        except ImportError as exc:  # an optional dependency of this one command is missing
            p = sub.add_parser(name, help=f'(unavailable: {exc})')
            p.set_defaults(func=lambda _a, _e=exc: _unavailable(_e))
            continue
        mod.add_parser(sub)
    return parser


def _unavailable(exc):
    print(f'depth-ego: this command needs a missing dependency: {exc}', file=sys.stderr)
    return 2


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASSTHROUGH:
        mod = importlib.import_module(f'{__package__}.{SUBCOMMANDS[argv[0]]}')
        return int(mod.run(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
