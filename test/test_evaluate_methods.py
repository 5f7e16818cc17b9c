"""`depth-ego evaluate` with the method options: --pose-model posexp, --learned-intrinsics, and
their defaults read from a checkpoint (core.checkpoints.read_checkpoint_meta). Tiny bags."""
import math

import numpy as np
import pytest

from depth_ego_ros.cli import evaluate as cli_evaluate
from test_evaluate import NET, BagBuilder, _report, _run, synth_bag, world  # noqa: F401

W, H = 128, 64
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('torch_one_thread')]


def test_cli_choices_are_the_estimators():
    from depth_ego_ros.core.estimator import MODELS, POSE_MODELS
    assert tuple(cli_evaluate.MODELS) == tuple(MODELS)
    assert tuple(cli_evaluate.POSE_MODELS) == tuple(POSE_MODELS)


def test_posexp_pose_model(synth_bag, tmp_path, capsys):  # noqa: F811
    out = tmp_path / 'eval'
    rc, stdout, err = _run(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth',
                            '--gt-poses', '/ground_truth/pose', '--out', str(out), *NET,
                            '--pose-model', 'posexp', '--no-plots', '--quiet'], capsys)
    assert rc == 0, err
    r = _report(out)
    e = r['settings']['estimator']
    assert e['pose_model'] == 'posexp' and e['learned_intrinsics'] is False
    assert r['frames']['processed'] == 8 and r['depth']['mean']['n_frames'] == 8
    t = r['trajectory']
    assert t['association']['n_associated'] == 8 and math.isfinite(t['ate']['stats']['rmse'])
    assert r['inputs']['learned_K'] is None          # the bag's camera_info K was used


@pytest.fixture(scope='module')
def posexp_intrinsics_ckpt(tmp_path_factory):
    from depth_ego_ros.core.models import build_networks, save_networks
    depth, pose, _ = build_networks('resnet18', pose_model='posexp', learned_intrinsics=True)
    return save_networks(tmp_path_factory.mktemp('ckpt') / 'posexp', depth, pose,
                         model='resnet18', height=H, width=W)


@pytest.fixture(scope='module')
def bag_without_camera_info(tmp_path_factory, world):  # noqa: F811
    path = tmp_path_factory.mktemp('nocaminfo') / 'bag'
    b = BagBuilder(path)
    for i in range(5):
        f = world.frame(i)
        b.add('/cam/image_raw', 'sensor_msgs/msg/Image', f.stamp,
              b.image(f.stamp, 'camera_optical_frame', f.rgb, 'rgb8'))
        b.add('/gt/depth', 'sensor_msgs/msg/Image', f.stamp,
              b.image(f.stamp, 'camera_optical_frame', f.depth.astype(np.float32), '32FC1'))
    b.close()
    return path


def test_learned_intrinsics_and_pose_model_default_from_the_checkpoint(
        bag_without_camera_info, posexp_intrinsics_ckpt, tmp_path, capsys):
    out = tmp_path / 'eval'
    rc, stdout, err = _run(['--bag', str(bag_without_camera_info), '--camera-topic', '/cam/image_raw',
                            '--gt-depth', '/gt/depth', '--out', str(out),
                            '--checkpoint', str(posexp_intrinsics_ckpt),
                            '--threads', '1', '--device', 'cpu', '--no-plots', '--quiet'], capsys)
    assert rc == 0, err
    r = _report(out)
    e = r['settings']['estimator']
    # nothing given on the command line: the checkpoint says posexp + intrinsics head, 128x64
    assert (e['model'], e['pose_model'], e['learned_intrinsics']) == ('resnet18', 'posexp', True)
    assert (e['width'], e['height']) == (W, H)
    assert r['frames']['processed'] == 5 and r['depth']['mean']['n_frames'] == 5
    assert r['inputs']['camera_info'] is None
    lk = r['inputs']['learned_K']
    K = np.asarray(lk['K'])
    assert lk['size'] == [W, H] and K.shape == (3, 3) and np.all(np.isfinite(K))
    assert K[0, 0] > 0 and K[1, 1] > 0 and 0 < K[0, 2] < W and 0 < K[1, 2] < H
    assert not any('KITTI intrinsics' in w for w in r['warnings'])

    # --no-learned-intrinsics overrides the checkpoint's default
    out2 = tmp_path / 'eval2'
    rc, _, err = _run(['--bag', str(bag_without_camera_info), '--camera-topic', '/cam/image_raw',
                       '--gt-depth', '/gt/depth', '--out', str(out2),
                       '--checkpoint', str(posexp_intrinsics_ckpt), '--no-learned-intrinsics',
                       '--threads', '1', '--device', 'cpu', '--no-plots', '--quiet'], capsys)
    assert rc == 0, err
    r2 = _report(out2)
    assert r2['settings']['estimator']['learned_intrinsics'] is False
    assert r2['inputs']['learned_K'] is None
