"""Live replay for evaluation: bag player -> depth_ego_node -> recorder of the node's outputs.

    ros2 launch depth_ego_ros replay_eval.launch.py bag:=BAG [checkpoint:=DIR] [rate:=0.5] \\
        [output_dir:=replay_bags] [camera_topic:=/camera/image_raw] \\
        [camera_info_topic:=/camera/camera_info]

then

    depth-ego evaluate --bag BAG --pred-bag replay_bags/<bag_name> \\
        --pred-depth /depth_ego/depth --pred-odom /depth_ego/odom \\
        --gt-depth /ground_truth/depth --gt-poses /ground_truth/pose --out eval_live

The player is ``ros2 bag play`` where a ROS distro provides it (the ``ros2`` command and
rosbag2_py are found at launch time), otherwise ``depth-ego play`` (rclpy only; it also waits for
subscribers before playing). It plays the
camera, camera_info and /tf_static topics; when it is done the launch waits ``tail`` seconds for
the node's last frames and shuts down, so the recorder closes its bag cleanly.
The perception node runs in namespace ``namespace`` (outputs ``/<namespace>/depth``, ``odom``...);
the recorder records the camera (for the report's images), the node's depth, depth/camera_info,
odometry and /tf, /tf_static.
Play slower (``rate:=0.5``) when the node cannot keep up: it processes the newest frame and drops
the others (the evaluation matches frames by stamp, so dropped frames are just missing).
"""
import importlib.util
import shutil
import sys

ARGUMENTS = {
    'bag': ('', 'bag to replay (directory, .mcap or .db3)'),
    'checkpoint': ('', 'checkpoint directory or model-zoo name (empty = random weights)'),
    'model': ('resnet18', 'depth network: resnet18 | resnet50 | packnet01[-w0.5|-w0.25]'),
    'pose_model': ('monodepth2', 'pose network: monodepth2 | posexp'),
    'learned_intrinsics': ('false', 'true: use the learned K until a camera_info arrives'),
    'width': ('640', 'network input width'),
    'height': ('192', 'network input height'),
    'device': ('auto', 'auto | cpu | cuda | cuda:N'),
    'camera_topic': ('/camera/image_raw', 'camera image topic in the bag'),
    'camera_info_topic': ('/camera/camera_info', 'CameraInfo topic in the bag'),
    'image_transport': ('raw', 'raw (Image on camera_topic) | compressed (camera_topic/compressed)'),
    'namespace': ('depth_ego', 'namespace of the perception node (its output topics)'),
    'rate': ('1.0', 'playback speed factor'),
    'delay': ('3.0', 'seconds before playback starts (nodes start and discover each other)'),
    'tail': ('3.0', 'seconds between the end of playback and the shutdown'),
    'output_dir': ('replay_bags', 'where the recorder writes its bag'),
    'bag_name': ('replay_%Y%m%d_%H%M%S', 'name of the recorded bag (strftime codes allowed)'),
    'player': ('auto', 'auto | ros2 | depth-ego: which bag player to use'),
}


def ros2_bag_available() -> bool:
    """True where ``ros2 bag play`` can run (a ROS distro: the ros2 command and rosbag2_py)."""
    return shutil.which('ros2') is not None and importlib.util.find_spec('rosbag2_py') is not None


def depth_ego_command() -> list:
    exe = shutil.which('depth-ego')
    return [exe] if exe else [sys.executable, '-m', 'depth_ego_ros.cli.main']


def player_command(bag: str, topics: list, rate: str = '1.0', delay: str = '3.0',
                   player: str = 'auto') -> list:
    """Command line of the bag player (decided here, at launch time)."""
    use_ros2 = ros2_bag_available() if player == 'auto' else player == 'ros2'
    if use_ros2:
        return ['ros2', 'bag', 'play', bag, '--rate', str(rate), '--delay', str(delay),
                '--topics', *topics]
    return [*depth_ego_command(), 'play', bag, '--rate', str(rate), '--delay', str(delay),
            '--wait-for-subscribers', '1', '--wait-timeout', '30', '--topics', *topics]


def output_topics(namespace: str) -> list:
    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return [f'{ns}/depth', f'{ns}/depth/camera_info', f'{ns}/odom']


def _setup(context):
    from launch.actions import EmitEvent, ExecuteProcess, RegisterEventHandler, TimerAction
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    a = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    if not a['bag']:
        raise RuntimeError('replay_eval.launch.py: give bag:=<path of the bag to replay>')
    cam, info = a['camera_topic'], a['camera_info_topic']
    played = [cam + ('/compressed' if a['image_transport'] == 'compressed' else ''), info,
              '/tf_static']
    player = ExecuteProcess(cmd=player_command(a['bag'], played, a['rate'], a['delay'], a['player']),
                            name='bag_player', output='screen')
    node = Node(
        package='depth_ego_ros', executable='depth_ego_node', name='depth_ego_node',
        namespace=a['namespace'], output='screen',
        parameters=[{'checkpoint': a['checkpoint'], 'model': a['model'],
                     'pose_model': a['pose_model'],
                     'learned_intrinsics': a['learned_intrinsics'].lower() in ('1', 'true', 'yes'),
                     'width': int(a['width']), 'height': int(a['height']), 'device': a['device'],
                     'image_transport': a['image_transport']}],
        remappings=[('image', cam), ('image/compressed', cam + '/compressed'),
                    ('camera_info', info)])
    recorder = Node(
        package='depth_ego_ros', executable='recorder_node', name='replay_recorder',
        output='screen',
        parameters=[{'camera_topic': played[0], 'camera_info_topic': info,
                     'extra_topics': output_topics(a['namespace']), 'record_tf': True,
                     'output_dir': a['output_dir'], 'bag_name': a['bag_name']}])
    stop = RegisterEventHandler(OnProcessExit(
        target_action=player,
        on_exit=[TimerAction(period=float(a['tail']),
                             actions=[EmitEvent(event=Shutdown(reason='bag played'))])]))
    return [node, recorder, player, stop]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_setup)])
