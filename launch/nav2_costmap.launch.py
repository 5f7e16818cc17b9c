"""depth_ego_node feeding Nav2: point cloud for the costmap's obstacle/voxel layer, a laser scan
from the depth image (depthimage_to_laserscan, when installed), REP 105 frames, and optionally a
standalone costmap to look at. Recipe and reasons: docs/nav2.md.

    ros2 launch depth_ego_ros nav2_costmap.launch.py camera_namespace:=camera \\
        checkpoint:=/path/to/metric_model scale_mode:=camera_height camera_height:=0.45 \\
        wheel_odometry:=true costmap:=true

* ``wheel_odometry:=true`` (default): the robot already publishes odom -> base_link (wheel
  odometry / robot_localization), so the node publishes its visual odometry only as
  nav_msgs/Odometry on <ns>/odom (fuse it, e.g. robot_localization) and **not** on /tf
  (``publish.tf: false``). ``wheel_odometry:=false``: the node owns odom -> base_link.
* The node's child frame is ``base_frame`` (base_link); the base -> camera optical transform
  comes from the robot's URDF (robot_state_publisher), or from the node with
  ``static_tf:=true`` and ``camera_xyz`` / ``camera_rpy``.
* Costmaps need metres: ``scale_mode`` must be fixed / camera_height / speed, or the checkpoint
  must be trained metric (velocity scaling from odometry) with ``scale_mode:=none``; a relative
  mode is refused here.
* ``lifecycle:=true`` runs depth_ego_lifecycle_node under a nav2_lifecycle_manager (when
  installed) with the costmap, so it comes up in Nav2's order.
"""
import os

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch_ros.actions import LifecycleNode, Node

PACKAGE = 'depth_ego_ros'

ARGUMENTS = [
    ('camera_namespace', 'camera', 'namespace of the camera topics; the node runs in it'),
    ('image_topic', 'image_raw', 'image topic, relative to camera_namespace'),
    ('camera_info_topic', 'camera_info', 'camera_info topic, relative to camera_namespace'),
    ('checkpoint', '', 'checkpoint directory (empty = the params file value)'),
    ('params_file', '', 'node parameters (empty = share/depth_ego_ros/config/depth_ego.yaml)'),
    ('scale_mode', '', 'fixed | camera_height | speed | none (metric checkpoint); '
                       'empty = the params file value'),
    ('camera_height', '', 'metres above the ground (scale_mode camera_height)'),
    ('wheel_odometry', 'true', 'true: the robot publishes odom -> base_link; the node does not'),
    ('odom_frame', 'odom', 'REP 105 odometry frame'),
    ('base_frame', 'base_link', 'REP 105 robot body frame'),
    ('static_tf', 'false', 'the node publishes base -> camera (else the URDF does)'),
    ('camera_xyz', '[0.0, 0.0, 0.5]', 'camera position in base_frame (static_tf:=true)'),
    ('camera_rpy', '[-1.5707963, 0.0, -1.5707963]', 'optical frame orientation in base_frame'),
    ('laser_scan', 'true', 'depthimage_to_laserscan on <ns>/depth -> <ns>/scan when installed'),
    ('laser_frame', 'camera_link', 'scan frame: the camera body frame (x forward, z up)'),
    ('scan_height', '10', 'depth image rows merged into the scan'),
    ('range_max', '8.0', 'metres; farther depth is dropped from the scan'),
    ('costmap', 'false', 'start a standalone nav2_costmap_2d with config/nav2_costmap.yaml'),
    ('costmap_params', '', 'costmap parameters (empty = share/depth_ego_ros/config/nav2_costmap.yaml)'),
    ('lifecycle', 'false', 'run depth_ego_lifecycle_node, brought up by nav2_lifecycle_manager'),
    ('use_sim_time', 'false', 'use /clock (bag playback)'),
]
METRIC_MODES = ('fixed', 'camera_height', 'speed', 'none')


def _true(text: str) -> bool:
    return text.lower() in ('true', '1', 'yes')


def _have(package: str) -> bool:
    try:
        get_package_share_directory(package)
        return True
    except PackageNotFoundError:
        return False


def node_overrides(arg: dict) -> dict:
    """The depth_ego_node parameters this recipe sets (docs/nav2.md explains each)."""
    import yaml
    p = {
        'use_sim_time': _true(arg['use_sim_time']),
        'frames.odom': arg['odom_frame'],
        'frames.base': arg['base_frame'],
        'publish.tf': not _true(arg['wheel_odometry']),
        'static_transform.publish': _true(arg['static_tf']),
        'static_transform.xyz': [float(v) for v in yaml.safe_load(arg['camera_xyz'])],
        'static_transform.rpy': [float(v) for v in yaml.safe_load(arg['camera_rpy'])],
        # reliable outputs: Nav2's best-effort (SensorDataQoS) subscriptions match them too
        'qos.output': 'reliable',
        'points.max_range': float(arg['range_max']),
    }
    if arg['checkpoint']:
        p['checkpoint'] = arg['checkpoint']
    if arg['scale_mode']:
        p['scale.mode'] = arg['scale_mode']
    if arg['camera_height']:
        p['scale.camera_height'] = float(arg['camera_height'])
    return p


def _setup(context):
    from launch.substitutions import LaunchConfiguration
    share = get_package_share_directory(PACKAGE)
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    ns = arg['camera_namespace'].strip('/')
    pre = f'/{ns}/' if ns else '/'
    if arg['scale_mode'] and arg['scale_mode'] not in METRIC_MODES:
        return [LogInfo(msg=f"scale_mode:={arg['scale_mode']} gives no metres: Nav2 costmaps need "
                            'metric depth (fixed, camera_height, speed, or a metric checkpoint '
                            'with none); see docs/nav2.md'), Shutdown()]
    params_file = arg['params_file'] or os.path.join(share, 'config', 'depth_ego.yaml')
    overrides = node_overrides(arg)
    remappings = [('image', arg['image_topic']),
                  ('image/compressed', arg['image_topic'] + '/compressed'),
                  ('camera_info', arg['camera_info_topic'])]
    lifecycle = _true(arg['lifecycle'])
    node_cls = LifecycleNode if lifecycle else Node
    actions = [node_cls(
        package=PACKAGE, executable='depth_ego_lifecycle_node' if lifecycle else 'depth_ego_node',
        name='depth_ego_node', namespace=ns, output='screen', emulate_tty=True,
        parameters=[params_file, overrides], remappings=remappings)]
    managed = [f'{pre}depth_ego_node'.lstrip('/')] if lifecycle else []

    if _true(arg['laser_scan']):
        if _have('depthimage_to_laserscan'):
            actions.append(Node(
                package='depthimage_to_laserscan', executable='depthimage_to_laserscan_node',
                name='depth_to_scan', namespace=ns, output='screen',
                remappings=[('depth', f'{pre}depth'), ('depth_camera_info', f'{pre}depth/camera_info'),
                            ('scan', f'{pre}scan')],
                parameters=[{'output_frame': arg['laser_frame'], 'scan_height': int(arg['scan_height']),
                             'range_min': 0.1, 'range_max': float(arg['range_max']),
                             'scan_time': 0.1, 'use_sim_time': _true(arg['use_sim_time'])}]))
        else:
            actions.append(LogInfo(msg='depthimage_to_laserscan is not installed: no <ns>/scan '
                                       '(apt install ros-$ROS_DISTRO-depthimage-to-laserscan); the '
                                       'costmap still gets the point cloud'))

    if _true(arg['costmap']):
        if _have('nav2_costmap_2d'):
            costmap_params = arg['costmap_params'] or os.path.join(share, 'config', 'nav2_costmap.yaml')
            # the standalone costmap node names itself /costmap/costmap
            actions.append(Node(
                package='nav2_costmap_2d', executable='nav2_costmap_2d', output='screen',
                parameters=[costmap_params, {'use_sim_time': _true(arg['use_sim_time'])}],
                remappings=[('/camera/points', f'{pre}points'), ('/camera/scan', f'{pre}scan')]))
            managed.append('costmap/costmap')
        else:
            actions.append(LogInfo(msg='nav2_costmap_2d is not installed: costmap:=true ignored'))

    if managed:
        if _have('nav2_lifecycle_manager'):
            actions.append(Node(
                package='nav2_lifecycle_manager', executable='lifecycle_manager',
                name='lifecycle_manager_depth_ego', output='screen',
                parameters=[{'node_names': managed, 'autostart': True, 'bond_timeout': 0.0,
                             'use_sim_time': _true(arg['use_sim_time'])}]))
        else:
            actions.append(LogInfo(msg='nav2_lifecycle_manager is not installed: bring the '
                                       f'lifecycle nodes up yourself: {managed} (ros2 lifecycle '
                                       'set <node> configure, then activate)'))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_setup)])
