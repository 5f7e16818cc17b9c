"""SfMModel: the pose conventions, the output reparametrisation folded into checkpoints, the
odometry-length warps and the metric initialisation (no training; tiny tensors)."""
import numpy as np
import pytest
import torch

from depth_ego_ros.core.models import build_networks
from depth_ego_ros.core.geometry import pose_vec_to_mat
from depth_ego_ros.core.networks.depth_decoder import disp_to_depth
from depth_ego_ros.training.model import build_model, init_depth_output, init_pose_forward

pytestmark = pytest.mark.usefixtures('torch_one_thread')

W, H = 64, 64


@pytest.fixture(scope='module')
def frames():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, H, W, generator=g), torch.rand(2, 2, 3, H, W, generator=g)


def test_poses_follow_monodepth2_pairs_and_survive_save_load(frames, tmp_path):
    tgt, src = frames
    m, _ = build_model('resnet18', None, seed=3)
    m.eval()
    with torch.no_grad():
        _, poses, trans = m(tgt, src, (-1, 1))
        # changing the reparametrisation does not change what the model predicts
        m.set_output_scales(rotation=7.0, translation=13.0)
        _, poses2, trans2 = m(tgt, src, (-1, 1))
    assert torch.allclose(poses, poses2, atol=1e-6) and torch.allclose(trans, trans2, atol=1e-6)
    m.save(tmp_path / 'ck', height=H, width=W)
    _, pose_net, meta = build_networks('resnet18', tmp_path / 'ck')
    assert meta['height'] == H and meta['width'] == W
    with torch.no_grad():
        # source after the target: the pair [tgt, src] predicts T_src_tgt directly
        aa, t = pose_net(torch.cat([tgt, src[:, 1]], 1))
        assert torch.allclose(pose_vec_to_mat(aa, t), poses[:, 1], atol=1e-5)
        # source before the target: [src, tgt] predicts T_tgt_src, the model inverts it
        aa, t = pose_net(torch.cat([src[:, 0], tgt], 1))
        assert torch.allclose(pose_vec_to_mat(aa, t, invert=True), poses[:, 0], atol=1e-5)
    # loading divides the factors back out: a model built from the checkpoint with other
    # factors predicts the same
    m2, _ = build_model('resnet18', tmp_path / 'ck')
    m2.set_output_scales(rotation=2.0, translation=5.0)
    m2.eval()
    with torch.no_grad():
        _, poses3, _ = m2(tgt, src, (-1, 1))
    assert torch.allclose(poses3, poses, atol=1e-5)


def test_odometry_lengths_replace_the_translation_length_only(frames):
    tgt, src = frames
    m, _ = build_model('resnet18', None, seed=1)
    m.eval()
    lengths = torch.tensor([[0.5, 0.7], [float('nan'), 1.2]])
    with torch.no_grad():
        _, p0, t0 = m(tgt, src, (-1, 1))
        _, p1, t1 = m(tgt, src, (-1, 1), lengths)
    assert torch.equal(t0, t1)                                   # raw translations unchanged
    for b in range(2):
        for k in range(2):
            R0, R1 = p0[b, k, :3, :3], p1[b, k, :3, :3]
            assert torch.allclose(R0, R1, atol=1e-6)            # rotation from the network
            n0, n1 = p0[b, k, :3, 3].norm(), p1[b, k, :3, 3].norm()
            if torch.isfinite(lengths[b, k]):
                assert float(n1) == pytest.approx(float(lengths[b, k]), rel=1e-5)
                cos = torch.dot(p0[b, k, :3, 3], p1[b, k, :3, 3]) / (n0 * n1)
                assert float(cos) == pytest.approx(1.0, abs=1e-5)
            else:                                                # unknown: the network's own
                assert torch.allclose(p0[b, k], p1[b, k])


def test_metric_initialisation(frames):
    tgt, src = frames
    m, _ = build_model('resnet18', None, seed=2)
    m.set_output_scales(translation=10.0)
    init_depth_output(m, 8.0, 0.1, 100.0)
    init_pose_forward(m, 0.6)
    m.eval()
    with torch.no_grad():
        disps, poses, trans = m(tgt, src, (-1, 1))
    _, depth = disp_to_depth(disps[0], 0.1, 100.0)
    assert float(depth.median()) == pytest.approx(8.0, rel=0.2)
    # both pairs: a forward step of ~0.6 m; T_src_tgt moves target points backwards into the
    # earlier source (+z) and forwards into the later one (-z)
    t = poses[..., :3, 3].numpy()
    assert np.allclose(np.linalg.norm(t, axis=-1), 0.6, rtol=0.15)
    assert np.all(t[:, 0, 2] > 0.5) and np.all(t[:, 1, 2] < -0.5)
