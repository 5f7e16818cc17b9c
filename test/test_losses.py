"""Self-supervised losses: hand-computed cases, view synthesis against the synthetic world's exact
depth and poses, auto-masking, smoothness, velocity scaling, gradients."""
import math

import numpy as np
import pytest
import torch

from depth_ego_ros.core.geometry import axis_angle_to_matrix, pose_vec_to_mat
from depth_ego_ros.core.losses import (LossConfig, SelfSupervisedLoss, dssim, min_reprojection,
                                       photometric_error, smoothness_loss, ssim, velocity_loss,
                                       warp_image)
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld

pytestmark = pytest.mark.usefixtures('torch_one_thread')

W, H = 128, 48


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _img(rgb):
    return _t(rgb).permute(2, 0, 1)[None] / 255.0


@pytest.fixture(scope='module')
def world():
    return SyntheticWorld(SynthConfig(frames=40, width=W, height=H, seed=0))


@pytest.fixture(scope='module')
def pair(world):
    """Target frame t, source frame t+1, GT depth of the target, K and T_src_tgt."""
    ft, fs = world.frame(8), world.frame(9)
    depth = _t(np.minimum(ft.depth, 1e3))[None, None]  # sky (+inf) -> far plane
    T = _t(np.linalg.inv(fs.T_world_cam) @ ft.T_world_cam)[None]
    return _img(ft.rgb), _img(fs.rgb), depth, _t(ft.K)[None], T


# ---------------------------------------------------------------------------------- photometric
def test_ssim_identical_is_one_and_loss_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 20, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones_like(x), atol=1e-6)
    assert dssim(x, x).abs().max() < 1e-6
    assert photometric_error(x, x).abs().max() < 1e-6


def test_photometric_error_hand_computed_constants():
    # constant images a, b: sigma = 0, SSIM = (2ab + c1) / (a^2 + b^2 + c1)
    a, b = 0.2, 0.5
    x = torch.full((1, 3, 8, 8), a)
    y = torch.full((1, 3, 8, 8), b)
    c1 = 0.01 ** 2
    s = (2 * a * b + c1) / (a * a + b * b + c1)
    expected = 0.85 * (1 - s) / 2 + 0.15 * abs(a - b)
    assert torch.allclose(ssim(x, y), torch.full_like(x, s), atol=1e-6)
    assert torch.allclose(photometric_error(x, y), torch.full((1, 1, 8, 8), expected), atol=1e-6)
    assert photometric_error(x, y, alpha=0.0).sub(abs(a - b)).abs().max() < 1e-6
    with pytest.raises(ValueError):
        photometric_error(x, y[:, :, :4])


def test_known_shift_warped_with_correct_depth_and_pose_is_exact():
    """Fronto-parallel plane at Z = 10 m, camera moved 0.4 m right, fx = 50: a 2-pixel shift."""
    g = torch.Generator().manual_seed(1)
    src = torch.rand(1, 3, 24, 40, generator=g)
    tgt = torch.zeros_like(src)
    tgt[..., :-2] = src[..., 2:]
    K = torch.tensor([[[50.0, 0, 19.5], [0, 50.0, 11.5], [0, 0, 1]]])
    depth = torch.full((1, 1, 24, 40), 10.0)
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 0.4                               # target -> source: x_s = x_t + 0.4
    warped, valid = warp_image(src, depth, K, T)
    assert valid[..., :-2].all() and not valid[..., -1].any()
    assert (warped - tgt)[..., :-2].abs().max() < 1e-5
    err = photometric_error(warped, tgt)
    assert err[..., 1:-3].max() < 1e-4             # interior (SSIM windows inside the valid part)
    T_wrong = T.clone()
    T_wrong[0, 0, 3] = 0.2
    assert photometric_error(warp_image(src, depth, K, T_wrong)[0], tgt)[..., 1:-3].mean() > 0.1


def test_synthetic_world_gt_warp_reconstructs_target(pair):
    """Exact depth + exact pose from the synthetic world reconstruct the target; a wrong scale
    or a 1 degree rotation error do much worse."""
    tgt, src, depth, K, T = pair
    warped, valid = warp_image(src, depth, K, T)
    assert valid.float().mean() > 0.7
    e_gt = photometric_error(warped, tgt)[valid].mean().item()
    assert e_gt < 0.07
    wrong = []
    for f in (0.5, 1.5):
        Tw = T.clone()
        Tw[0, :3, 3] *= f
        wrong.append(photometric_error(warp_image(src, depth, K, Tw)[0], tgt)[valid].mean().item())
    Tr = T.clone()
    Tr[0, :3, :3] = axis_angle_to_matrix(torch.tensor([[0.0, math.radians(1.0), 0.0]]))[0] @ Tr[0, :3, :3]
    wrong.append(photometric_error(warp_image(src, depth, K, Tr)[0], tgt)[valid].mean().item())
    identity = photometric_error(src, tgt).mean().item()
    assert min(wrong) > 1.8 * e_gt
    assert identity > 2.5 * e_gt


# ---------------------------------------------------------------------------------- min reprojection
def test_min_reprojection_takes_per_pixel_minimum():
    rep = torch.tensor([[[[0.3, 0.1]], [[0.2, 0.4]]]])           # [B=1,S=2,H=1,W=2]
    loss, keep, src = min_reprojection(rep, None)
    assert torch.allclose(loss, torch.tensor([[[[0.2, 0.1]]]]))
    assert src.tolist() == [[[[1, 0]]]] and keep.all()
    loss, _, _ = min_reprojection(rep, None, average=True)
    assert torch.allclose(loss, torch.tensor([[[[0.25, 0.25]]]]))


def test_automask_masks_static_pixel_hand_case():
    rep = torch.tensor([[[[0.30, 0.10]], [[0.20, 0.40]]]])
    ident = torch.tensor([[[[0.05, 0.50]], [[0.60, 0.50]]]])      # pixel 0 looks static
    loss, keep, src = min_reprojection(rep, ident, noise=0.0)
    assert keep.tolist() == [[[[False, True]]]]
    assert torch.allclose(loss, torch.tensor([[[[0.05, 0.10]]]]))
    assert src.tolist() == [[[[-1, 0]]]]


def test_automask_masks_region_moving_with_the_camera(pair):
    """A patch pasted identically into target and source (like a car bonnet, or an object moving
    with the camera) is auto-masked; the rigid scene around it is kept."""
    tgt, src, depth, K, T = pair
    tgt, src = tgt.clone(), src.clone()
    g = torch.Generator().manual_seed(3)
    patch = torch.rand(1, 3, 12, 30, generator=g)
    r0, c0 = 30, 50
    tgt[..., r0:r0 + 12, c0:c0 + 30] = patch
    src[..., r0:r0 + 12, c0:c0 + 30] = patch
    warped, valid = warp_image(src, depth, K, T)
    rep = photometric_error(warped, tgt)
    ident = photometric_error(src, tgt)
    _, keep, _ = min_reprojection(rep, ident)
    region = torch.zeros_like(keep)
    region[..., r0 + 2:r0 + 10, c0 + 2:c0 + 28] = True
    assert keep[region].float().mean() < 0.05
    outside = valid & ~region
    outside[..., r0 - 2:r0 + 14, c0 - 2:c0 + 32] = False
    assert keep[outside].float().mean() > 0.6
    # a camera standing still: every pixel is masked
    _, keep_static, _ = min_reprojection(rep, photometric_error(tgt, tgt))
    assert not keep_static.any()


# ---------------------------------------------------------------------------------- smoothness
def test_smoothness_zero_for_constant_disparity_and_edge_aware():
    g = torch.Generator().manual_seed(4)
    img = torch.rand(2, 3, 16, 16, generator=g)
    assert smoothness_loss(torch.full((2, 1, 16, 16), 0.3), img).item() == pytest.approx(0.0, abs=1e-7)
    # mean normalisation: the loss ignores the disparity's scale
    d = torch.rand(2, 1, 16, 16, generator=g) + 0.5
    assert smoothness_loss(d, img).item() == pytest.approx(smoothness_loss(7 * d, img).item(), rel=1e-5)
    # a disparity step on an image edge costs less than the same step on a flat image
    step = torch.ones(1, 1, 16, 16)
    step[..., 8:] = 2.0
    edge_img = torch.zeros(1, 3, 16, 16)
    edge_img[..., 8:] = 1.0
    flat_img = torch.full((1, 3, 16, 16), 0.5)
    assert smoothness_loss(step, edge_img) < 0.5 * smoothness_loss(step, flat_img)


# ---------------------------------------------------------------------------------- velocity
def test_velocity_loss_zero_at_right_scale():
    t = torch.tensor([[[0.0, 0.0, 0.8], [0.6, 0.0, -0.8]]])      # norms 0.8 and 1.0
    d = torch.tensor([[0.8, 1.0]])
    assert velocity_loss(t, d).item() == pytest.approx(0.0, abs=1e-7)
    assert velocity_loss(2 * t, d).item() == pytest.approx(0.9, abs=1e-6)   # mean(|1.6-.8|,|2-1|)
    # NaN distances (no odometry) are ignored; all-NaN -> 0 with a gradient path
    assert velocity_loss(2 * t, torch.tensor([[float('nan'), 1.0]])).item() == pytest.approx(1.0)
    tt = t.clone().requires_grad_(True)
    v = velocity_loss(tt, torch.full((1, 2), float('nan')))
    v.backward()
    assert v.item() == 0.0 and tt.grad is not None
    with pytest.raises(ValueError):
        velocity_loss(t, torch.ones(1, 3))


# ---------------------------------------------------------------------------------- composed loss
def _pose_params(T):
    from depth_ego_ros.core.geometry import matrix_to_axis_angle
    return matrix_to_axis_angle(T[:, :3, :3]), T[:, :3, 3].clone()


def test_composed_loss_prefers_ground_truth_and_gradients_flow(world):
    f0, f1, f2 = world.frame(19), world.frame(20), world.frame(21)
    tgt = _img(f1.rgb)
    sources = [_img(f0.rgb), _img(f2.rgb)]
    K = _t(f1.K)[None]
    gt_depth = _t(np.minimum(f1.depth, 80.0))[None, None]
    Ts = [_t(np.linalg.inv(f.T_world_cam) @ f1.T_world_cam)[None] for f in (f0, f2)]
    dist = torch.tensor([[np.linalg.norm(T[0, :3, 3].numpy()) for T in Ts]])
    loss_fn = SelfSupervisedLoss(LossConfig(), depth_fn=lambda d: 1.0 / d)

    def disps_from(depth):  # inverse depth at 4 scales (finest first)
        inv = 1.0 / depth
        return [torch.nn.functional.interpolate(inv, size=(H // 2 ** s, W // 2 ** s), mode='area')
                if s else inv for s in range(4)]

    out_gt = loss_fn(tgt, sources, disps_from(gt_depth), Ts, K, distances=dist)
    out_wrong = loss_fn(tgt, sources, disps_from(gt_depth * 0.5), Ts, K, distances=dist)
    assert out_gt.terms['photometric'] < 0.8 * out_wrong.terms['photometric']
    assert out_gt.terms['velocity'].item() == pytest.approx(0.0, abs=1e-5)
    assert out_gt.automask.shape == (1, 1, H, W) and out_gt.automask.float().mean() > 0.5
    assert len(out_gt.warped) == 2 and out_gt.depth.shape == (1, 1, H, W)

    # gradients reach every disparity scale and the pose parameters
    disps = [d.clone().requires_grad_(True) for d in disps_from(gt_depth * 1.3)]
    params = [tuple(p.requires_grad_(True) for p in _pose_params(T)) for T in Ts]
    poses = [pose_vec_to_mat(aa, tr) for aa, tr in params]
    out = loss_fn(tgt, sources, disps, poses, K, distances=dist * 1.2)
    out.total.backward()
    for d in disps:
        assert d.grad is not None and torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0
    for aa, tr in params:
        assert torch.isfinite(aa.grad).all() and aa.grad.abs().sum() > 0
        assert torch.isfinite(tr.grad).all() and tr.grad.abs().sum() > 0
    assert set(out.terms) >= {'photometric', 'smoothness', 'velocity', 'total', 'automask_fraction'}


def test_composed_loss_default_sigmoid_disparity_and_stacked_inputs():
    """monodepth2 layout: sigmoid disparities at 4 scales, poses stacked [B,S,4,4], sources
    stacked [B,S,3,H,W]; the velocity term appears only with distances."""
    g = torch.Generator().manual_seed(5)
    B = 2
    tgt = torch.rand(B, 3, 32, 64, generator=g)
    srcs = torch.rand(B, 2, 3, 32, 64, generator=g)
    disps = [torch.rand(B, 1, 32 // 2 ** s, 64 // 2 ** s, generator=g).requires_grad_(True) for s in range(4)]
    poses = torch.eye(4).repeat(B, 2, 1, 1)
    poses[..., 2, 3] = 0.5
    K = torch.tensor([[40.0, 0, 31.5], [0, 40.0, 15.5], [0, 0, 1]]).repeat(B, 1, 1)
    fn = SelfSupervisedLoss()
    out = fn(tgt, srcs, disps, poses, K)
    assert 'velocity' not in out.terms and torch.isfinite(out.total)
    out.total.backward()
    assert all(d.grad is not None for d in disps)
    out2 = fn(tgt, srcs, [d.detach() for d in disps], poses, K, distances=torch.full((B, 2), 0.5))
    assert out2.terms['velocity'].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match='pose'):
        fn(tgt, srcs, disps, poses[:, :1], K)


def test_loss_config_validation():
    with pytest.raises(ValueError, match='alpha'):
        LossConfig(alpha=1.5)
    with pytest.raises(ValueError, match='min_depth'):
        LossConfig(min_depth=10, max_depth=1)
    with pytest.raises(ValueError, match='smoothness_weight'):
        LossConfig(smoothness_weight=-1)


def test_nan_pose_gives_invalid_samples_not_a_crash():
    """A diverged pose (NaN) must not crash grid_sample's backward (torch CPU segfaults on NaN
    sampling positions with border padding): the samples are invalid, the warped image finite, and
    the backward pass returns (the trainer skips steps whose loss is not finite)."""
    torch.manual_seed(0)
    src = torch.rand(1, 3, 12, 16)
    depth = torch.full((1, 1, 12, 16), 5.0, requires_grad=True)
    K = torch.tensor([[[10.0, 0, 7.5], [0, 10.0, 5.5], [0, 0, 1]]])
    T = torch.eye(4).unsqueeze(0).clone()
    T[0, 0, 3] = float('nan')
    warped, valid = warp_image(src, depth, K, T)
    assert not valid.any()
    assert torch.isfinite(warped).all()
    warped.sum().backward()
    assert depth.grad is not None and depth.grad.shape == depth.shape
