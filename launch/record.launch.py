"""Record a camera for self-supervised fine-tuning: recorder_node with its parameters file.

    ros2 launch depth_ego_ros record.launch.py camera_namespace:=camera output_dir:=~/bags
    ros2 launch depth_ego_ros record.launch.py camera_namespace:=camera drop_static:=true odom:=/odom
    ros2 launch depth_ego_ros record.launch.py params_file:=/path/to/my_recorder.yaml

Records ``<camera_namespace>/<image_topic>`` (Image, or CompressedImage with
``image_topic:=image_raw/compressed``) and ``<camera_namespace>/<camera_info_topic>`` — the same
argument names as depth_ego.launch.py, which includes this file for ``record:=true``. The other
arguments override config/recorder.yaml; every parameter is documented there and in
docs/recorder.md. Stopping the launch (Ctrl-C) gives the recorder up to ``stop_timeout`` seconds
to write its queue and finalise the bag before launch escalates to SIGTERM/SIGKILL.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# (name, default, description); '' defaults leave the parameters file's value in place
ARGUMENTS = [
    ('camera_namespace', 'camera', 'namespace of the camera topics'),
    ('image_topic', 'image_raw', 'image topic, relative to camera_namespace (or absolute)'),
    ('camera_info_topic', 'camera_info', 'camera_info topic, relative to camera_namespace; '
                                         'empty = none'),
    ('odom', '', 'odometry / twist topic (velocity supervision); empty = none'),
    ('output_dir', '', 'directory for the bags (default from the parameters file: bags)'),
    ('storage', '', 'mcap (default) or sqlite3'),
    ('compression', '', 'none (default) or zstd'),
    ('drop_static', '', 'true: drop frames while the camera does not move'),
    ('max_rate', '', 'keep at most this many frames per second (0 = all)'),
    ('max_bag_size', '', 'split files at this many bytes (0 = never)'),
    ('max_bag_duration', '', 'split files at this many seconds (0 = never)'),
    ('start_paused', '', 'true: wait for ~/start'),
    ('namespace', '', 'namespace of the recorder node'),
    ('use_sim_time', 'false', 'use /clock (bag playback)'),
    ('stop_timeout', '30.0', 'seconds the recorder gets to finalise its bag on shutdown'),
]
# overriding arguments and their parameter types (a double parameter refuses an integer)
OVERRIDES = {'output_dir': str, 'storage': str, 'compression': str, 'max_rate': float,
             'max_bag_size': int, 'max_bag_duration': float,
             'drop_static': lambda v: v.strip().lower() in ('true', '1', 'yes'),
             'start_paused': lambda v: v.strip().lower() in ('true', '1', 'yes')}


def _launch_setup(context):
    def value(name):
        return LaunchConfiguration(name).perform(context)

    namespace = value('camera_namespace').strip('/')

    def topic(name):
        if not name or name.startswith('/') or not namespace:
            return name
        return f'/{namespace}/{name}'

    params = {
        'camera_topic': topic(value('image_topic')),
        'camera_info_topic': topic(value('camera_info_topic')),
        'odom_topic': value('odom'),
        'use_sim_time': value('use_sim_time').lower() in ('true', '1', 'yes'),
    }
    for name, convert in OVERRIDES.items():
        if value(name) != '':
            params[name] = convert(value(name))
    return [Node(
        package='depth_ego_ros', executable='recorder_node', name='recorder',
        namespace=value('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), params],
        sigterm_timeout=value('stop_timeout'), sigkill_timeout=value('stop_timeout'),
    )]


def generate_launch_description():
    from launch.actions import OpaqueFunction

    args = [DeclareLaunchArgument(name, default_value=default, description=desc)
            for name, default, desc in ARGUMENTS]
    args.append(DeclareLaunchArgument(
        'params_file', description='recorder parameters (YAML)',
        default_value=PathJoinSubstitution([FindPackageShare('depth_ego_ros'), 'config',
                                            'recorder.yaml'])))
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
