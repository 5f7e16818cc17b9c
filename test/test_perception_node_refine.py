"""The perception node with online refinement on: real rclpy + Fast DDS, the node as a separate
process, the CPU default backend (ONNX Runtime: every accepted round is exported and opened in
the refiner's thread), tiny 64x64 network, random weights. Checked: rounds happen while outputs
keep flowing, the diagnostics report them and the share within its limit, the refined weights
are saved on shutdown and load back."""
import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from depth_ego_ros.ros import conversions as cv  # noqa: E402
from depth_ego_ros.ros.testing import generated_frame  # noqa: E402
from test_perception_node import TIMEOUT, Harness, frame_k, module_ros_env  # noqa: E402

W, H = 96, 72
SHARE = 0.5


@pytest.mark.timeout(180)
def test_node_refines_online_while_serving_and_saves_the_weights(tmp_path_factory, tmp_path):
    save_dir = tmp_path / 'refined'
    params = {
        'width': 64, 'height': 64, 'num_threads': 1,
        'qos.input': 'reliable', 'qos.input_depth': 5, 'diagnostics.period': 0.3,
        'log_throttle': 60.0, 'camera_info.sync_timeout': 5.0,
        'online_refinement.enabled': True, 'online_refinement.window': 4,
        'online_refinement.steps': 1, 'online_refinement.batch': 1,
        'online_refinement.interval': 0.0, 'online_refinement.max_share': SHARE,
        'online_refinement.save_dir': str(save_dir),
    }
    mp, env = module_ros_env(tmp_path_factory)
    h = Harness(env, params)
    K = frame_k(W, H)
    try:
        assert h.node.wait_for_log('online refinement on', TIMEOUT), h.node.log_text()
        keys = ('depth', 'odom')
        i = 0
        for _ in range(4):                  # a window's worth of frames
            h.send(cv.rgb8_to_image(generated_frame(W, H, i)), cv.make_camera_info(K, W, H), keys)
            i += 1
        # outputs keep flowing while rounds run in the background
        deadline_frames = 300  # frames are paced by the node; rounds by the machine: a loaded one needs more frames
        v = None
        while i < deadline_frames:
            out = h.send(cv.rgb8_to_image(generated_frame(W, H, i)), cv.make_camera_info(K, W, H),
                         keys)
            depth = cv.image_to_numpy(out['depth'])
            assert depth.shape == (H, W) and np.isfinite(depth).mean() > 0.99
            i += 1
            v = h.diag()
            if int(v['online_refinement.rounds']) >= 2:
                break
        assert v is not None and int(v['online_refinement.rounds']) >= 2, h.node.log_text()
        assert v['online_refinement'] == 'on'
        rounds = int(v['online_refinement.rounds'])
        assert int(v['online_refinement.accepted']) + int(v['online_refinement.rejected']) == rounds
        assert int(v['online_refinement.errors']) == 0, h.node.log_text()
        assert float(v['online_refinement.share']) <= SHARE * 1.2
        assert int(v['online_refinement.weights_version']) == int(v['online_refinement.accepted'])
        assert int(v['frames_processed']) == i
        # a run-time change within its range is taken
        from test_perception_node import _set_params
        (ok,) = _set_params(h, online_refinement__learning_rate=5e-5)
        assert ok.successful
    finally:
        alive, rc = h.close()
        mp.undo()
    assert alive and rc == 0, h.node.log_text()
    assert 'weights saved to' in h.node.log_text(), h.node.log_text()
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    est = Estimator(EstimatorConfig(width=64, height=64, backend='torch', num_threads=1), save_dir)
    assert est.has_pose
    assert np.isfinite(est.depth_only(generated_frame(W, H, 0), K)).all()
