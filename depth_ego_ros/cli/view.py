"""`depth-ego view`: the live view (Foxglove / Lichtblick over a WebSocket); see
depth_ego_ros/ros/live_view.py and docs/live_view.md. Every argument after `view` (its options
and `--ros-args ...`) goes to the view's own parser: `depth-ego view --help`."""


def add_parser(sub):
    p = sub.add_parser('view', add_help=False,
                       help='live view of the perception node in Foxglove / Lichtblick '
                            '(WebSocket on 127.0.0.1:8765; `depth-ego view --help`)')
    p.set_defaults(func=lambda _args: run([]))


def run(argv) -> int:
    from depth_ego_ros.ros.live_view import main
    return main(list(argv))
