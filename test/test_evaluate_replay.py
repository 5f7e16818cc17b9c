"""The live-replay recipe of docs/evaluation.md with real processes and real DDS: `depth-ego play`
-> depth_ego_node -> recorder_node (the node's depth and odometry) -> `depth-ego evaluate
--pred-depth --pred-odom`. The recorded outputs must give the same figures as the offline run of
the same (seeded) networks on the same bag."""
import json
import subprocess
import sys

import numpy as np
import pytest

from depth_ego_ros.cli.main import main

pytestmark = pytest.mark.timeout(150)

NS = '/depth_ego'
CAMERA, INFO = '/camera/image_raw', '/camera/camera_info'


def _eval(argv, out):
    assert main(['evaluate', *argv, '--out', str(out), '--quiet']) == 0
    return json.loads((out / 'report.json').read_text())


def test_live_replay_matches_offline_evaluation(ros_env, tmp_path):
    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    from depth_ego_ros.data.synth_bag import write_synth_bag
    from depth_ego_ros.ros.testing import NodeProcess, Probe, wait_until

    bag = tmp_path / 'sim'
    n_frames = 8
    write_synth_bag(SyntheticWorld(SynthConfig(frames=n_frames, width=128, height=64, seed=4,
                                               supersample=1)), bag)
    node = NodeProcess('depth_ego_ros.ros.perception_node', env=ros_env,
                       params={'width': 128, 'height': 64, 'num_threads': 1, 'device': 'cpu',
                               'publish.points': False, 'publish.colored': False},
                       remaps={'__ns': NS, 'image': CAMERA, 'camera_info': INFO})
    recorder = NodeProcess('depth_ego_ros.ros.recorder_node', env=ros_env,
                           params={'camera_topic': CAMERA, 'camera_info_topic': INFO,
                                   'extra_topics': [f'{NS}/depth', f'{NS}/odom'],
                                   'output_dir': str(tmp_path), 'bag_name': 'rec'})
    probe = Probe('replay_probe')
    try:
        from nav_msgs.msg import Odometry
        probe.subscribe('odom', Odometry, f'{NS}/odom', 10)
        # node subscribed to the camera, recorder (and probe) subscribed to the node's outputs
        ready = wait_until(lambda: probe.node.count_subscribers(CAMERA) >= 1
                           and probe.node.count_subscribers(f'{NS}/depth') >= 1
                           and probe.node.count_subscribers(f'{NS}/odom') >= 2, 90, 0.1)
        assert ready, node.log_text()[-2000:] + recorder.log_text()[-2000:]
        play = subprocess.run(
            [sys.executable, '-m', 'depth_ego_ros.cli.main', 'play', str(bag), '--rate', '0.5',
             '--topics', CAMERA, INFO, '--wait-for-subscribers', '2', '--wait-timeout', '30'],
            env=ros_env, capture_output=True, text=True, timeout=90)
        assert play.returncode == 0, play.stderr
        assert f'{CAMERA} {n_frames}' in play.stdout
        # the node may still work on the last frame: wait for its outputs (as the recorder does)
        wait_until(lambda: len(probe.msgs['odom']) >= n_frames, 10, 0.05)
    finally:
        probe.close()
        node.stop()
        rc = recorder.stop()
    assert rc == 0, recorder.log_text()[-3000:]

    gt = ['--bag', str(bag), '--gt-depth', '/ground_truth/depth', '--gt-poses', '/ground_truth/pose']
    live = _eval([*gt, '--pred-bag', str(tmp_path / 'rec'), '--pred-depth', f'{NS}/depth',
                  '--pred-odom', f'{NS}/odom'], tmp_path / 'live')
    offline = _eval([*gt, '--width', '128', '--height', '64', '--threads', '1', '--device', 'cpu'],
                    tmp_path / 'offline')
    assert live['mode'] == 'recorded' and offline['mode'] == 'estimator'
    n_live = live['frames']['depth_evaluated']
    assert n_live >= n_frames - 2, live['frames']             # the node may drop a frame when busy
    # frame by frame (by stamp), the recorded depth gives the offline figures
    off = {p['stamp']: p for p in offline['per_frame']}
    for p in live['per_frame']:
        for k in ('abs_rel', 'rmse', 'a1', 'ratio'):
            assert p[k] == pytest.approx(off[p['stamp']][k], rel=1e-5), (k, p['stamp'])
    if n_live == n_frames:     # no frame dropped: the chained odometry is the offline chain
        for k in ('ate', 'rpe_translation', 'rpe_rotation_deg'):
            assert live['trajectory'][k]['stats']['rmse'] == pytest.approx(
                offline['trajectory'][k]['stats']['rmse'], rel=1e-4, abs=1e-9), k
        np.testing.assert_allclose(live['trajectory']['alignment']['scale'],
                                   offline['trajectory']['alignment']['scale'], rtol=1e-4)
