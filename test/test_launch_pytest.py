"""launch_pytest: the node started through launch/depth_ego.launch.py (as `ros2 launch` would)
answers camera frames with all its outputs in the camera namespace.

Needs a ROS 2 distro (launch, launch_ros, launch_pytest) and the package installed (colcon build):
skipped otherwise. Without a distro the same behaviour is tested by test_perception_node.py, which
starts the node's entry point as a separate process.
"""
import pathlib

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='launch_pytest is not installed (ROS 2 distro only); '
    'test_perception_node.py tests the node started as a process instead')
pytest.importorskip('launch_ros', reason='launch_ros is not installed (ROS 2 distro only)')
pytest.importorskip('torch', reason='the perception node needs torch')

import launch  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from depth_ego_ros.ros import conversions as cv  # noqa: E402
from depth_ego_ros.ros.testing import generated_frame  # noqa: E402
from test_perception_node import (FRAME, Harness, check_frame_outputs, frame_k,  # noqa: E402
                                  module_ros_env)

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMESPACE = 'cam'


@pytest.fixture(scope='module')
def graph_env(tmp_path_factory):
    """Own ROS domain for the launched processes and the probe (set before launch starts)."""
    mp, env = module_ros_env(tmp_path_factory)
    yield env
    mp.undo()


@pytest.fixture(scope='module')
def small_params(tmp_path_factory):
    """The shipped parameter file with a tiny network, so the test is fast."""
    data = yaml.safe_load((REPO / 'config' / 'depth_ego.yaml').read_text())
    p = data['/**']['ros__parameters']
    p.update(width=128, height=64, num_threads=1)
    p['qos']['input'] = 'reliable'
    path = tmp_path_factory.mktemp('params') / 'depth_ego_small.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


@launch_pytest.fixture(scope='module')
def depth_ego_launch(graph_env, small_params):
    return launch.LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(REPO / 'launch' / 'depth_ego.launch.py')),
            launch_arguments={'camera_namespace': NAMESPACE, 'image_topic': 'image_raw',
                              'params_file': str(small_params), 'device': 'cpu',
                              'rviz': 'false'}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.timeout(180)
@pytest.mark.launch(fixture=depth_ego_launch)
def test_launched_node_publishes_every_output(graph_env):
    h = Harness(graph_env, None, image_topic='image_raw', namespace=NAMESPACE)
    try:
        K = frame_k(160, 120)
        info = cv.make_camera_info(K, 160, 120)
        for i in range(3):
            rgb = generated_frame(160, 120, i)
            header = h.next_header()
            out = h.send(cv.rgb8_to_image(rgb), info, header=header)
            check_frame_outputs(out, header, rgb, K, 160, 120)
            assert out['odom'].child_frame_id == FRAME
        assert not np.allclose(cv.odometry_to_matrix(out['odom']), np.eye(4))
        v = h.diag()
        assert v['frames_processed'] >= 3 and v['network_input'] == '128x64'
    finally:
        h.close()
