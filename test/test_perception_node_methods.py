"""The perception node with the method options: PoseExpNet (pose_model:=posexp, explainability
output), learned intrinsics (learned_intrinsics:=true, no camera_info needed) and a PackNet
checkpoint (model:=packnet01-w0.25). Real rclpy + Fast DDS, the node as a separate process, tiny
128x64 networks; the first test checks the outputs' shapes, headers and intrinsics, the PackNet
one that the node's depth equals the Estimator's on the same checkpoint and image.
(Online refinement through the node: test_perception_node_refine.py.)"""
import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from sensor_msgs.msg import Image  # noqa: E402

from depth_ego_ros.ros import conversions as cv, qos  # noqa: E402
from depth_ego_ros.ros.testing import generated_frame  # noqa: E402
from test_perception_node import TIMEOUT, Harness, frame_k, module_ros_env  # noqa: E402

PARAMS = {
    'width': 128, 'height': 64, 'num_threads': 1, 'backend': 'torch',
    'qos.input': 'reliable', 'qos.input_depth': 5, 'diagnostics.period': 0.3,
    'log_throttle': 60.0, 'pose_model': 'posexp', 'learned_intrinsics': True,
    'camera_info.fallback_k': [90.0, 90.0, 79.5, 59.5],  # ignored, with a warning: learned K wins
}
W, H = 160, 120


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    mp, env = module_ros_env(tmp_path_factory)
    h = Harness(env, PARAMS)
    try:
        sub = h.probe.subscribe('exp', Image, 'explainability', qos.profile('reliable', 50))
        assert h.probe.wait_matched([sub], TIMEOUT), h.node.log_text()
        yield h
    finally:
        alive, rc = h.close()
        mp.undo()
    assert alive, 'the node died during the tests:\n' + h.node.log_text()
    assert rc == 0, f'node exit code {rc} after SIGINT:\n{h.node.log_text()}'


def _valid_K(K, width, height):
    return (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 and 0 < K[0, 2] < width
            and 0 < K[1, 2] < height and K[0, 1] == 0 and np.allclose(K[2], [0, 0, 1]))


@pytest.mark.timeout(120)
def test_learned_intrinsics_without_camera_info_then_posexp_explainability(node):
    # 1) no camera_info was ever sent: frames run with the learned K, depth/camera_info has it
    outs = [node.send(cv.rgb8_to_image(generated_frame(W, H, i)),
                      keys=('depth', 'depth_info', 'odom')) for i in range(3)]
    for out in outs:
        depth = cv.image_to_numpy(out['depth'])
        assert depth.shape == (H, W) and np.isfinite(depth).mean() > 0.99
        info = out['depth_info']
        assert (info.width, info.height) == (W, H)
        assert info.header.stamp == out['depth'].header.stamp
        assert info.header.frame_id == out['depth'].header.frame_id
        assert _valid_K(np.asarray(info.k).reshape(3, 3), W, H), info.k
    v = node.diag(lambda v: v['frames_learned_intrinsics'] >= 3)
    assert v['pose_model'] == 'posexp' and v['intrinsics'] == 'learned'
    assert 'learned_intrinsics is set: camera_info.fallback_k is ignored' in node.node.log_text()
    assert v['bad_input.missing_camera_info'] == 0

    # 2) PoseExpNet: the explainability mask, mono8 at network resolution, same header
    #    (a few frames: the node may see the subscription a moment after the probe matched)
    for i in range(5):
        out = node.send(cv.rgb8_to_image(generated_frame(W, H, 5 + i)), keys=('depth',))
        stamp = out['depth'].header.stamp
        if node.probe.wait_until(
                lambda: any(m.header.stamp == stamp for m in node.probe.msgs['exp']), 3.0):
            break
    exp = next((m for m in node.probe.msgs['exp'] if m.header.stamp == stamp), None)
    assert exp is not None, 'no explainability image:\n' + node.node.log_text()
    assert (exp.encoding, exp.width, exp.height) == ('mono8', PARAMS['width'], PARAMS['height'])
    assert exp.header.frame_id == out['depth'].header.frame_id
    assert cv.image_to_numpy(exp).shape == (PARAMS['height'], PARAMS['width'])

    # 3) once a camera_info arrives it wins over the learned K
    K = frame_k(W, H)
    out = node.send(cv.rgb8_to_image(generated_frame(W, H, 11)), cv.make_camera_info(K, W, H),
                    keys=('depth_info',))
    assert np.allclose(np.asarray(out['depth_info'].k).reshape(3, 3), K)
    assert node.diag(lambda v: v['intrinsics'] == 'camera_info')['published.explainability'] >= 1


@pytest.mark.timeout(180)
def test_packnet_checkpoint_selected_by_parameter_runs_in_the_node(tmp_path_factory, tmp_path):
    """model:=packnet01-w0.25 with a PackNet checkpoint (+ the monodepth2 pose net): the node
    publishes the depth that the Estimator computes offline from the same checkpoint and image
    (the configured network really ran), and odometry from the pose net."""
    import torch

    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig, build_networks, save_networks
    model = 'packnet01-w0.25'
    depth_net, pose_net, _ = build_networks(model, pose_model='monodepth2', seed=5)
    ck = save_networks(tmp_path / 'packnet', depth_net, pose_net, model=model, height=64, width=128)
    params = {**PARAMS, 'pose_model': 'monodepth2', 'learned_intrinsics': False,
              'model': model, 'checkpoint': str(ck)}
    mp, env = module_ros_env(tmp_path_factory)
    h = Harness(env, params)
    try:
        K = frame_k(128, 64)
        imgs = [generated_frame(128, 64, i) for i in range(3)]       # network size: no resize
        outs = [h.send(cv.rgb8_to_image(img), cv.make_camera_info(K, 128, 64),
                       keys=('depth', 'odom')) for img in imgs]
        torch.set_num_threads(1)
        est = Estimator(EstimatorConfig(width=128, height=64, model=model, device='cpu',
                                        backend='torch', num_threads=1), ck)
        ref = est.infer(imgs[-1], K).depth
        got = cv.image_to_numpy(outs[-1]['depth'])
        assert got.shape == ref.shape == (64, 128)
        np.testing.assert_allclose(got, ref, rtol=1e-3)
        assert np.ptp(got) > 0                        # a real depth map, not a constant
        v = h.diag()
        assert v['model'] == model, v
        assert all(np.isfinite([o['odom'].pose.pose.position.x for o in outs]))
    finally:
        alive, rc = h.close()
        mp.undo()
    assert alive and rc == 0, h.node.log_text()
