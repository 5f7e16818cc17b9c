"""Record a camera for self-supervised fine-tuning: recorder_node with its parameters file.

    ros2 launch depth_ego_ros record.launch.py camera:=/camera output_dir:=~/bags
    ros2 launch depth_ego_ros record.launch.py camera:=/camera drop_static:=true odom:=/odom
    ros2 launch depth_ego_ros record.launch.py params_file:=/path/to/my_recorder.yaml

``camera`` is the camera's namespace: ``<camera>/<image>`` and ``<camera>/camera_info`` are
recorded (``image:=image_raw/compressed`` for a CompressedImage stream). The other arguments
override config/recorder.yaml; every parameter is documented there and in docs/recorder.md.
Stopping the launch (Ctrl-C) gives the recorder up to ``stop_timeout`` seconds to write its
queue and finalise the bag before launch escalates to SIGTERM/SIGKILL.

Other launch files include this one (e.g. with ``record:=true``) through
IncludeLaunchDescription and pass the same arguments.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# (name, default, description); '' defaults leave the parameters file's value in place
ARGUMENTS = [
    ('camera', '/camera', 'camera namespace'),
    ('image', 'image_raw', 'image topic inside the camera namespace (Image or CompressedImage)'),
    ('camera_info', 'camera_info', 'camera_info topic inside the camera namespace'),
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

    camera = value('camera').rstrip('/')
    params = {
        'camera_topic': f'{camera}/{value("image")}',
        'camera_info_topic': f'{camera}/{value("camera_info")}' if value('camera_info') else '',
        'odom_topic': value('odom'),
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
