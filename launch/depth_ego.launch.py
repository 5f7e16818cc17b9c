"""Depth and ego-motion from one camera: depth_ego_node (+ RViz, + the bag recorder).

    ros2 launch depth_ego_ros depth_ego.launch.py camera_namespace:=camera image_topic:=image_raw \\
        checkpoint:=/path/to/monodepth2_model device:=cuda rviz:=true
    ros2 launch depth_ego_ros depth_ego.launch.py checkpoint:=mono_640x192   # a model-zoo name

The node runs in ``camera_namespace``: it reads <ns>/<image_topic> (or <ns>/<image_topic>/compressed
with image_transport:=compressed) and <ns>/<camera_info_topic>, and publishes <ns>/depth,
<ns>/depth/camera_info, <ns>/depth/colored, <ns>/points, <ns>/odom, /tf and /diagnostics.
Parameters come from ``params_file`` (default: the package's config/depth_ego.yaml); the launch
arguments checkpoint, device and image_transport override it when given (non-empty). checkpoint
may be a model-zoo name (`depth-ego weights list`); the node does not download it unless
auto_fetch:=true (run `depth-ego weights fetch NAME` once instead).

Several cameras, one node process (frames batched through the networks):

    ros2 launch depth_ego_ros depth_ego.launch.py camera_namespace:='' cameras:=front,left,rear

reads <cam>/<image_topic> and <cam>/<camera_info_topic> for each camera and publishes <cam>/depth,
<cam>/depth/camera_info, <cam>/depth/colored, <cam>/points, <cam>/odom (TF <cam>_odom -> camera).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, LogInfo,
                            OpaqueFunction, SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace

PACKAGE = 'depth_ego_ros'

ARGUMENTS = [
    ('camera_namespace', 'camera', 'namespace of the camera topics; the nodes run in it'),
    ('image_topic', 'image_raw', 'image topic, relative to camera_namespace'),
    ('camera_info_topic', 'camera_info', 'camera_info topic, relative to camera_namespace'),
    ('cameras', '', 'comma-separated camera namespaces served by one node (e.g. front,left); '
                    'empty = the params file value (one camera by default)'),
    ('image_transport', '', 'raw | compressed (empty = the params file value, raw by default)'),
    ('checkpoint', '', 'checkpoint directory or model-zoo name, e.g. mono_640x192 (empty = the '
                       'params file value)'),
    ('auto_fetch', '', 'true = download a model-zoo checkpoint not in the cache at start-up '
                       '(empty = the params file value, false by default)'),
    ('device', '', 'auto | cpu | cuda | cuda:N (empty = the params file value)'),
    ('params_file', '', 'ROS parameters YAML (empty = share/depth_ego_ros/config/depth_ego.yaml)'),
    ('use_sim_time', 'false', 'use /clock (bag playback)'),
    ('lifecycle', 'false', 'run depth_ego_lifecycle_node (a managed node: configure + activate '
                           'it with `ros2 lifecycle set` or a lifecycle manager)'),
    ('rviz', 'false', 'start RViz with rviz/depth_ego.rviz'),
    ('record', 'false', 'also record the camera with launch/record.launch.py (the recorder)'),
    ('fastdds_profile', '', "'shm' = Fast DDS shared-memory profile for big images "
                            '(config/fastdds_shm.xml) for the processes started here'),
]


def _setup(context):
    share = get_package_share_directory(PACKAGE)
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = arg['params_file'] or os.path.join(share, 'config', 'depth_ego.yaml')
    overrides = {k: arg[k] for k in ('checkpoint', 'device', 'image_transport') if arg[k]}
    overrides['use_sim_time'] = arg['use_sim_time'].lower() in ('true', '1', 'yes')
    if arg['auto_fetch']:
        overrides['auto_fetch'] = arg['auto_fetch'].lower() in ('true', '1', 'yes')
    image = arg['image_topic']
    cameras = [c.strip().strip('/') for c in arg['cameras'].split(',') if c.strip().strip('/')]
    if cameras:
        overrides['cameras'] = cameras
    remappings = [('image', image), ('image/compressed', image + '/compressed'),
                  ('camera_info', arg['camera_info_topic'])]
    for cam in cameras:
        remappings += [(f'{cam}/image', f'{cam}/{image}'),
                       (f'{cam}/image/compressed', f'{cam}/{image}/compressed'),
                       (f'{cam}/camera_info', f'{cam}/{arg["camera_info_topic"]}')]
    actions = []
    if arg['fastdds_profile'] == 'shm':
        actions.append(SetEnvironmentVariable(
            'FASTDDS_DEFAULT_PROFILES_FILE', os.path.join(share, 'config', 'fastdds_shm.xml')))
    elif arg['fastdds_profile']:
        actions.append(LogInfo(msg=f"unknown fastdds_profile '{arg['fastdds_profile']}' (use shm); "
                                   'keeping the Fast DDS defaults'))

    group = [PushRosNamespace(arg['camera_namespace'])] if arg['camera_namespace'] else []
    group.append(Node(
        package=PACKAGE, name='depth_ego_node', output='screen',
        executable=('depth_ego_lifecycle_node' if arg['lifecycle'].lower() in ('true', '1', 'yes')
                    else 'depth_ego_node'),
        emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=remappings))

    actions.append(GroupAction(group))

    if arg['record'].lower() in ('true', '1', 'yes'):
        record = os.path.join(share, 'launch', 'record.launch.py')
        if os.path.isfile(record):
            # its own scope: our params_file argument must not become the recorder's
            recorder_args = {'camera_namespace': arg['camera_namespace'], 'image_topic': image,
                             'camera_info_topic': arg['camera_info_topic'],
                             'use_sim_time': arg['use_sim_time']}
            recorder_params = os.path.join(share, 'config', 'recorder.yaml')
            if os.path.isfile(recorder_params):
                recorder_args['params_file'] = recorder_params
            actions.append(GroupAction([IncludeLaunchDescription(
                PythonLaunchDescriptionSource(record), launch_arguments=recorder_args.items())]))
        else:
            actions.append(LogInfo(msg=f'record:=true but {record} is not installed: not recording'))
    actions.append(Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        arguments=['-d', os.path.join(share, 'rviz', 'depth_ego.rviz')],
        parameters=[{'use_sim_time': overrides['use_sim_time']}],
        condition=IfCondition(LaunchConfiguration('rviz'))))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_setup)])
