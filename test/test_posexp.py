"""PoseExpNet (SfMLearner): pose + explainability shapes, softmax masks, the explainability
regulariser, mask-weighted photometric loss against the synthetic world, gradients."""
import numpy as np
import pytest
import torch

from depth_ego_ros.core.geometry import pose_vec_to_mat
from depth_ego_ros.core.losses import (explainability_photometric_loss,
                                       explainability_regularization, masked_photometric_loss)
from depth_ego_ros.core.networks.posexp_net import POSE_SCALE, PoseExpNet, mask_to_mono8
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('torch_one_thread')]
H, W = 32, 96


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return PoseExpNet(num_sources=2)


def _frames(B=2, N=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g), torch.rand(B, N, 3, H, W, generator=g)


def test_shapes_and_mask_range(net):
    tgt, srcs = _frames()
    with torch.no_grad():
        out = net(tgt, srcs)
    assert out['axisangle'].shape == (2, 2, 3) and out['translation'].shape == (2, 2, 3)
    assert sorted(out['masks']) == [0, 1, 2, 3]
    for s, m in out['masks'].items():
        assert m.shape == (2, 2, H // 2 ** s, W // 2 ** s)
        assert (m >= 0).all() and (m <= 1).all()
        lg = out['mask_logits'][s]
        assert lg.shape == (2, 2, 2, H // 2 ** s, W // 2 ** s)
        # the mask is the softmax probability of the second ("explainable") class of each pair
        assert torch.allclose(m, torch.softmax(lg, 2)[:, :, 1], atol=1e-6)
    assert out['bottleneck'].shape == (2, 256, 1, 1)
    T = PoseExpNet.pose_matrices(out)
    assert T.shape == (2, 2, 4, 4)
    assert torch.allclose(T[1, 0], pose_vec_to_mat(out['axisangle'][1, :1], out['translation'][1, :1])[0])
    # the list form of the sources is the same input
    with torch.no_grad():
        out2 = net(tgt, list(srcs.unbind(1)))
    assert torch.equal(out2['translation'], out['translation'])


def test_pose_is_scaled_small_and_sources_matter(net):
    tgt, srcs = _frames()
    with torch.no_grad():
        out = net(tgt, srcs)
        raw = net.pose_pred(net.conv7(net.conv6(net.conv5(net.conv4(net.conv3(net.conv2(net.conv1(
            (torch.cat([tgt, srcs[:, 0], srcs[:, 1]], 1) - 0.5) / 0.5))))))))
    pose = torch.cat([out['axisangle'], out['translation']], -1)
    assert torch.allclose(pose, POSE_SCALE * raw.mean((2, 3)).view(2, 2, 6), atol=1e-7)
    # swapping the two sources swaps the prediction slots' inputs: predictions change
    with torch.no_grad():
        sw = net(tgt, srcs.flip(1))
    assert not torch.allclose(sw['translation'], out['translation'])


def test_pose_only_variant_and_bad_inputs():
    n = PoseExpNet(num_sources=1, output_exp=False)
    tgt, srcs = _frames(B=1, N=1)
    out = n(tgt, srcs)
    assert 'masks' not in out and out['axisangle'].shape == (1, 1, 3)
    assert not any(k.startswith(('upconv', 'predict_mask')) for k in n.state_dict())
    with pytest.raises(ValueError, match='expected 1 source'):
        n(tgt, [tgt, tgt])
    with pytest.raises(ValueError, match='multiples of 32'):
        n(torch.rand(1, 3, 30, 96), torch.rand(1, 1, 3, 30, 96))
    with pytest.raises(ValueError, match='does not match'):
        n(tgt, torch.rand(1, 1, 3, 64, 96))


def test_gradients_flow_to_pose_and_mask_branches(net):
    tgt, srcs = _frames(B=1)
    net.zero_grad()
    out = net(tgt, srcs)
    loss = out['translation'].abs().sum() + out['axisangle'].abs().sum() \
        + explainability_regularization(out['mask_logits'])
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


# ------------------------------------------------------------------------------ regulariser
def test_regulariser_is_zero_for_all_ones_and_grows_as_masks_drop():
    ones = {s: torch.ones(2, 2, H >> s, W >> s) for s in range(4)}
    assert explainability_regularization(ones).item() == 0.0
    vals = [explainability_regularization({s: torch.full_like(m, p) for s, m in ones.items()}).item()
            for p in (0.99, 0.9, 0.5, 0.1)]
    assert vals == sorted(vals) and vals[0] > 0
    assert abs(vals[2] - np.log(2)) < 1e-6                  # -log(0.5)
    # logits form: large positive "explainable" logit -> ~0; equal logits -> log 2
    lg = torch.zeros(1, 2, 2, 4, 4)
    assert abs(explainability_regularization([lg]).item() - np.log(2)) < 1e-6
    lg[:, :, 1] = 30.0
    assert explainability_regularization(lg).item() < 1e-10
    with pytest.raises(ValueError):
        explainability_regularization(torch.ones(2, 2, 2))


def test_regulariser_gradient_pushes_masks_up(net):
    tgt, srcs = _frames(B=1, seed=3)
    out = net(tgt, srcs)
    m = out['masks'][0].detach().clone().requires_grad_(True)
    explainability_regularization({0: m}).backward()
    assert (m.grad < 0).all()                               # descending raises every mask value


# ------------------------------------------------------------------------------ weighted photometric
def test_masked_photometric_loss_weighting():
    err = torch.rand(2, 2, 8, 12) + 0.1
    ones = torch.ones(2, 2, 4, 6)
    assert torch.allclose(masked_photometric_loss(err, ones), err.mean())
    zeros = torch.zeros(2, 2, 8, 12)
    assert masked_photometric_loss(err, zeros).item() == 0.0
    half = torch.ones(2, 2, 8, 12)
    half[:, 1] = 0.0                                        # second source fully unexplainable
    assert torch.allclose(masked_photometric_loss(err, half), err[:, 0].mean() / 2)
    valid = torch.zeros(2, 2, 8, 12, dtype=torch.bool)
    valid[..., :6] = True
    assert torch.allclose(masked_photometric_loss(err, torch.ones_like(err), valid), err[..., :6].mean())
    with pytest.raises(ValueError):
        masked_photometric_loss(err, torch.ones(2, 3, 8, 12))


def test_mask_downweights_a_region_that_breaks_the_rigid_warp():
    """Synthetic world, exact depth and pose: a patch pasted into the target (an object the rigid
    warp cannot explain) dominates the error; masking it out lowers the weighted loss, and the
    loss's gradient w.r.t. the mask is largest there."""
    world = SyntheticWorld(SynthConfig(frames=20, width=W, height=H, seed=2))
    ft, fs = world.frame(6), world.frame(7)

    def img(a):
        return torch.from_numpy(a).float().permute(2, 0, 1)[None] / 255.0
    tgt, src = img(ft.rgb), img(fs.rgb)
    depth = torch.from_numpy(np.minimum(ft.depth, 1e3)).float()[None, None]
    K = torch.from_numpy(ft.K).float()[None]
    T = torch.from_numpy(np.linalg.inv(fs.T_world_cam) @ ft.T_world_cam).float()[None]
    tgt = tgt.clone()
    tgt[..., 10:22, 30:50] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]   # magenta "object"
    mask = torch.ones(1, 1, H, W, requires_grad=True)
    loss, errors, valid = explainability_photometric_loss(tgt, [src], depth, [T], K, mask)
    assert errors.shape == (1, 1, H, W) and valid.shape == (1, 1, H, W)
    region = torch.zeros(1, 1, H, W, dtype=torch.bool)
    region[..., 10:22, 30:50] = True
    assert errors[region].mean() > 5 * errors[~region & valid].mean()
    loss.backward()
    g = mask.grad.abs()
    assert g[region].mean() > 5 * g[~region].mean()
    masked = torch.where(region, torch.zeros_like(mask), torch.ones_like(mask))
    loss2, _, _ = explainability_photometric_loss(tgt, [src], depth, [T], K, masked)
    assert loss2 < 0.6 * loss


def test_mask_to_mono8():
    m = torch.tensor([[0.0, 0.5, 1.0]])[None]
    img = mask_to_mono8(m)
    assert img.dtype == np.uint8 and img.shape == (1, 3) and img.tolist() == [[0, 128, 255]]
    with pytest.raises(ValueError):
        mask_to_mono8(np.zeros((2, 2, 2)))
