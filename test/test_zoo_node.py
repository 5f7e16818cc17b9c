"""The perception node takes a model-zoo name as its `checkpoint` parameter (real rclpy + Fast
DDS, the node as its own process): a name not in the cache stops the node at start-up with the
exact fetch command (it never downloads on its own); with `auto_fetch: true` it downloads the
model from a loopback HTTP server, verifies it and publishes the depth those weights give."""
import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from depth_ego_ros.ros import conversions as cv  # noqa: E402
from depth_ego_ros.ros.testing import NodeProcess, generated_frame  # noqa: E402
from depth_ego_ros.zoo import HOME_ENV, REGISTRY_ENV  # noqa: E402
from test_perception_node import NODE_PARAMS, TIMEOUT, Harness, frame_k, module_ros_env  # noqa: E402
from zoo_testing import ArchiveServer, build_archives, standard_registry, write_registry  # noqa: E402

PARAMS = {k: v for k, v in NODE_PARAMS.items() if not k.startswith(('frames.', 'static_'))}


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    files = build_archives(tmp_path_factory.mktemp('zoo_archives'))
    server = ArchiveServer(files['mono'].parent)
    reg = write_registry(tmp_path_factory.mktemp('zoo_reg') / 'registry.json',
                         standard_registry(server, files))
    yield files, reg
    server.close()


def _env(env, tmp_path, reg):
    return dict(env, **{HOME_ENV: str(tmp_path / 'home'), REGISTRY_ENV: str(reg)})


def test_node_refuses_an_unfetched_name_then_auto_fetches_and_runs_it(served, tmp_path_factory,
                                                                      tmp_path):
    import torch
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    files, reg = served
    mp, env = module_ros_env(tmp_path_factory)
    env = _env(env, tmp_path, reg)
    try:
        node = NodeProcess('depth_ego_ros.ros.perception_node',
                           {**PARAMS, 'checkpoint': 'tiny_mono'}, env)
        rc = node.proc.wait(TIMEOUT)
        log = node.log_text()
        assert rc == 1, log
        assert 'run `depth-ego weights fetch tiny_mono`' in log, log
        assert not (tmp_path / 'home' / 'models' / 'tiny_mono').exists()   # nothing downloaded

        h = Harness(env, {**PARAMS, 'checkpoint': 'tiny_mono', 'auto_fetch': True})
        try:
            K = frame_k(128, 64)
            img = generated_frame(128, 64, 0)
            out = h.send(cv.rgb8_to_image(img), cv.make_camera_info(K, 128, 64), keys=('depth',))
            assert (tmp_path / 'home' / 'models' / 'tiny_mono' / 'encoder.pth').is_file()
            torch.set_num_threads(1)
            est = Estimator(EstimatorConfig(width=128, height=64, device='cpu', backend='torch',
                                            num_threads=1), files['mono_dir'])
            ref = est.depth_only(img, K)
            got = cv.image_to_numpy(out['depth'])
            np.testing.assert_allclose(got, ref, rtol=1e-3)     # the fetched weights ran
            assert 'RANDOM' not in h.node.log_text()
        finally:
            alive, rc = h.close()
        assert alive and rc == 0, h.node.log_text()
    finally:
        mp.undo()
