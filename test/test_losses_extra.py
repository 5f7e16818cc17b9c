"""3-D alignment loss (vid2depth) and depth normalisation for mixed depth ranges (RealMonoDepth
idea): exactness on planes and on the synthetic world's ground truth, sensitivity to a wrong
pose, gradients, global-scale invariance, per-sequence normalisation."""
import math

import numpy as np
import pytest
import torch

from depth_ego_ros.core.geometry import axis_angle_to_matrix, pose_vec_to_mat
from depth_ego_ros.core.losses import (LossConfig, SelfSupervisedLoss, SequenceDepthNormalizer,
                                       alignment_loss_3d, depth_statistics, masked_median,
                                       normalize_depth, planarity_edges, relative_depth,
                                       relative_depth_fn, robust_distance,
                                       scale_invariant_depth_loss)
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('torch_one_thread')]
W, H = 128, 48


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).float()


@pytest.fixture(scope='module')
def world():
    return SyntheticWorld(SynthConfig(frames=40, width=W, height=H, seed=0))


@pytest.fixture(scope='module')
def pairs(world):
    """(target depth, source depth, K, T_src_tgt) for three consecutive-frame pairs; sky = +inf."""
    out = []
    for i, j in ((8, 9), (20, 21), (30, 32)):
        ft, fs = world.frame(i), world.frame(j)
        out.append((_t(ft.depth)[None, None], _t(fs.depth)[None, None], _t(ft.K)[None],
                    _t(np.linalg.inv(fs.T_world_cam) @ ft.T_world_cam)[None]))
    return out


def _K(f=60.0, w=W, h=H):
    return torch.tensor([[[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]])


def _plane_depth(K, n, d, h=H, w=W):
    """z-depth of the plane n.p = d seen from the origin (inverse depth affine in u, v)."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing='ij')
    rays = torch.linalg.inv(K[0].double()) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    z = d / (torch.tensor(n, dtype=torch.float64) @ rays)
    return z.reshape(1, 1, h, w)


# ---------------------------------------------------------------------------------- alignment
def test_exact_on_a_tilted_plane_with_any_motion():
    """On a plane, inverse depth is affine in the pixel coordinates, so bilinear sampling of the
    source's inverse depth is exact: the loss vanishes (float rounding) with the true pose."""
    K = _K().double()
    n = torch.tensor([0.1, -0.6, -0.8], dtype=torch.float64)
    n = n / n.norm()
    d = -8.0                                         # plane in front of the camera: n.p = d
    T = pose_vec_to_mat(torch.tensor([[0.02, -0.03, 0.01]], dtype=torch.float64),
                        torch.tensor([[0.3, -0.1, 0.5]], dtype=torch.float64))      # T_src_tgt
    # the same plane in the source camera: n_s = R n, d_s = d + n_s . t
    n_s = T[0, :3, :3] @ n
    d_s = d + n_s @ T[0, :3, 3]
    dt, ds = _plane_depth(K, n.tolist(), d), _plane_depth(K, n_s.tolist(), float(d_s))
    assert (dt > 0).all() and (ds > 0).all()
    out = alignment_loss_3d(dt, ds, T, K, robust='l2', normalize=None)
    assert out.valid.float().mean() > 0.6
    assert out.residual[out.valid].max() < 1e-9 * dt.max()
    T_wrong = T.clone()
    T_wrong[0, 0, 3] += 0.1
    assert alignment_loss_3d(dt, ds, T_wrong, K, robust='l2', normalize=None).loss > 1e-3


def test_near_zero_at_ground_truth_and_positive_with_a_wrong_pose(pairs):
    """Synthetic world, exact depth and pose: with the edge and occlusion tests (exact maps have
    sharp edges and occlusions) the loss is ~0 -- under 1e-4 of the median depth on average --
    while 20 % translation error or a 0.5 degree rotation error raise it by far."""
    for dt, ds, K, T in pairs:
        kw = dict(robust='l2', edge_threshold=0.01, occlusion_tolerance=0.05)
        gt = alignment_loss_3d(dt, ds, T, K, **kw)
        assert gt.valid.float().mean() > 0.3
        assert gt.loss < 1e-4
        assert gt.residual[gt.valid].max() < 5e-3
        Tt = T.clone()
        Tt[0, :3, 3] *= 1.2
        Tr = T.clone()
        Tr[0, :3, :3] = axis_angle_to_matrix(torch.tensor([[0.0, math.radians(0.5), 0.0]]))[0] @ T[0, :3, :3]
        for Tw in (Tt, Tr):
            assert alignment_loss_3d(dt, ds, Tw, K, **kw).loss > 30 * gt.loss
        # the defaults (edge 0.05, occlusion 0.05, Charbonnier) are near zero too
        d = alignment_loss_3d(dt, ds, T, K).loss
        assert d < 3e-4 and alignment_loss_3d(dt, ds, Tt, K).loss > 20 * d
        # without the edge / occlusion tests, a bounded-influence kernel still prefers the true pose
        plain = dict(edge_threshold=None, occlusion_tolerance=None, robust='cauchy', c=0.05)
        p = alignment_loss_3d(dt, ds, T, K, **plain).loss
        assert alignment_loss_3d(dt, ds, Tt, K, **plain).loss > 1.05 * p   # edges dominate: weak
        assert alignment_loss_3d(dt, ds, Tr, K, **plain).loss > 1.05 * p


def test_gradients_reach_both_depths_and_the_pose(pairs):
    dt, ds, K, T = pairs[0]
    dt = torch.nan_to_num(dt, posinf=200.0).requires_grad_(True)
    ds = torch.nan_to_num(ds, posinf=200.0).requires_grad_(True)
    aa = torch.zeros(1, 3, requires_grad=True)
    tr = T[:, :3, 3].clone().mul(1.1).requires_grad_(True)
    Tp = pose_vec_to_mat(aa, tr) @ torch.cat([torch.cat([T[:, :3, :3], torch.zeros(1, 3, 1)], 2),
                                               torch.tensor([[[0, 0, 0, 1.0]]])], 1)
    out = alignment_loss_3d(dt, ds, Tp, K)
    out.loss.backward()
    for g in (dt.grad, ds.grad, aa.grad, tr.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_descending_the_loss_corrects_a_wrong_translation(pairs):
    dt, ds, K, T = pairs[1]
    t = (T[:, :3, 3] * 1.3).clone().requires_grad_(True)
    opt = torch.optim.Adam([t], lr=0.01)
    t_true = T[:, :3, 3]
    err0 = (t - t_true).norm().item()
    for _ in range(30):
        Tp = torch.cat([torch.cat([T[:, :3, :3], t[:, :, None]], 2), T[:, 3:]], 1)
        loss = alignment_loss_3d(dt, ds, Tp, K, robust='cauchy', c=0.05).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (t - t_true).norm().item() < 0.3 * err0


def test_normalised_loss_is_invariant_to_a_global_scale(pairs):
    dt, ds, K, T = pairs[2]
    ref = alignment_loss_3d(dt, ds, T * torch.tensor([1, 1, 1.0, 1.1]), K)   # some error
    for s in (0.05, 3.0, 40.0):
        Ts = T.clone()
        Ts[0, :3, 3] *= s * 1.1
        o = alignment_loss_3d(dt * s, ds * s, Ts, K)
        assert torch.allclose(o.loss, ref.loss, rtol=1e-4)
        assert torch.allclose(o.scale, ref.scale * s, rtol=1e-5)
    # without normalisation an L2 distance scales with the scene
    a = alignment_loss_3d(dt, ds, T * torch.tensor([1, 1, 1.0, 1.1]), K, robust='l2', normalize=None).loss
    Ts = T.clone()
    Ts[0, :3, 3] *= 3.0 * 1.1
    b = alignment_loss_3d(dt * 3, ds * 3, Ts, K, robust='l2', normalize=None).loss
    assert torch.allclose(b, 3 * a, rtol=1e-4)


def test_weight_and_bad_input():
    K = _K()
    d = torch.full((1, 1, H, W), 5.0)
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 0.05
    w = torch.zeros(1, 1, H, W)
    assert alignment_loss_3d(d, d, T, K, weight=w).loss == 0.0
    with pytest.raises(ValueError):
        alignment_loss_3d(d, d[..., :10], T, K)
    with pytest.raises(ValueError):
        alignment_loss_3d(d, d, T, K, normalize='mean')
    with pytest.raises(ValueError):
        alignment_loss_3d(d, d, T, K, weight=torch.ones(1, 1, 4, 4))
    # a diverged pose (NaN) gives no valid pixel and no crash, forward or backward
    Tn = T.clone().requires_grad_(True)
    out = alignment_loss_3d(d, d, Tn * float('nan'), K)
    out.loss.backward()
    assert not out.valid.any()


def test_robust_kernels_and_planarity_edges():
    r = torch.tensor([[[0.0, 0.003, 3.0]], [[0.0, 0.004, 4.0]], [[0.0, 0.0, 0.0]]]).permute(1, 0, 2)
    assert torch.allclose(robust_distance(r, 'l1')[0, 0], torch.tensor([0.0, 0.007, 7.0]))
    assert torch.allclose(robust_distance(r, 'l2')[0, 0], torch.tensor([0.0, 0.005, 5.0]), atol=2e-6)
    ch = robust_distance(r, 'charbonnier', c=0.01)[0, 0]
    ca = robust_distance(r, 'cauchy', c=0.01)[0, 0]
    assert ch[0] == 0 and ca[0] == 0 and abs(ch[2] - 4.99) < 1e-3 and ca[2] < 0.2
    with pytest.raises(ValueError):
        robust_distance(r, 'huber')
    K = _K()
    plane = _plane_depth(K, [0.0, -0.7, -0.7], -5.0).float()
    assert not planarity_edges(plane, threshold=0.01)[..., 1:-1, 1:-1].any()
    step = plane.clone()
    step[..., :, 60:] *= 0.5                          # an occluding contour
    e = planarity_edges(step, threshold=0.01)
    assert e[..., 5:-5, 59:61].all() and not e[..., 5:-5, 10:50].any()


# ---------------------------------------------------------------------------------- normalisation
def test_depth_statistics_hand_case_and_modes():
    d = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, float('inf')]).view(1, 1, 2, 3)
    med, mad = depth_statistics(d)
    assert med.item() == 3.0                        # median of the 5 finite values
    assert abs(mad.item() - (2 + 1 + 0 + 1 + 7) / 5) < 1e-6
    n = normalize_depth(d, mode='scale')
    assert torch.allclose(n.flatten()[:5], torch.tensor([1, 2, 3, 4, 10]) / 3.0)
    ss = normalize_depth(d, mode='scale_shift').flatten()[:5]
    assert torch.allclose(ss, (torch.tensor([1, 2, 3, 4, 10.0]) - 3) / 2.2)
    with pytest.raises(ValueError):
        normalize_depth(d, mode='minmax')
    m = torch.tensor([True, True, False, False, False, False]).view(1, 1, 2, 3)
    assert masked_median(d, m).item() == 1.0        # torch's lower median of (1, 2)


def test_relative_depth_output_mode():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(2, 1, 8, 8, generator=g) * 50 + 1
    r = relative_depth(d)
    assert torch.allclose(masked_median(r), torch.ones(2, 1, 1, 1))
    assert torch.allclose(relative_depth(d * 17.0), r, rtol=1e-5)
    a = np.array([[2.0, 4.0, np.inf], [6.0, 0.0, 8.0]], dtype=np.float32)
    ra = relative_depth(a)
    assert ra.dtype == np.float32 and ra[0, 1] == pytest.approx(4 / 5) and np.isinf(ra[0, 2])


def test_scale_invariant_depth_loss():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 1, 16, 16, generator=g) * 20 + 1
    assert scale_invariant_depth_loss(gt * 7.0, gt).item() < 1e-6
    assert scale_invariant_depth_loss(gt * 7.0 + 3.0, gt).item() < 1e-5          # scale and shift
    assert scale_invariant_depth_loss(gt * 7.0 + 3.0, gt, mode='scale').item() > 1e-2
    other = torch.rand(2, 1, 16, 16, generator=g) * 20 + 1
    base = scale_invariant_depth_loss(other, gt)
    assert base > 0.3
    for s in (0.01, 5.0, 300.0):
        assert torch.allclose(scale_invariant_depth_loss(other * s, gt), base, rtol=1e-4)
        assert torch.allclose(scale_invariant_depth_loss(other, gt * s), base, rtol=1e-4)


def test_relative_depth_fn_makes_the_photometric_loss_scale_free(world):
    """The same views with the scene (depth and translation) scaled by 1/10 or 20 -- a corridor
    and a highway that look alike -- give the same photometric loss through relative_depth_fn,
    and the networks see the same numbers (median depth 1)."""
    ft, fs = world.frame(8), world.frame(9)

    def img(a):
        return _t(a).permute(2, 0, 1)[None] / 255.0
    depth = _t(np.minimum(ft.depth, 300.0))[None, None]
    T = _t(np.linalg.inv(fs.T_world_cam) @ ft.T_world_cam)[None]
    med = masked_median(depth).item()
    loss = SelfSupervisedLoss(LossConfig(automask=False, smoothness_weight=0.0),
                              depth_fn=relative_depth_fn(lambda disp: 1.0 / disp))
    vals = []
    for s in (0.1, 1.0, 20.0):
        Ts = T.clone()
        Ts[0, :3, 3] *= 1.0 / med          # the pose network's translation, in median-depth units
        out = loss(img(ft.rgb), [img(fs.rgb)], [1.0 / (depth * s)], [Ts], _t(ft.K)[None])
        vals.append(out.total.item())
        assert abs(masked_median(out.depth).item() - 1.0) < 1e-5
    assert max(vals) - min(vals) < 1e-5
    # the same value as the metric loss (metric depth and metric pose, no normalisation) ...
    metric = SelfSupervisedLoss(LossConfig(automask=False, smoothness_weight=0.0),
                                depth_fn=lambda disp: 1.0 / disp)
    m = metric(img(ft.rgb), [img(fs.rgb)], [1.0 / depth], [T], _t(ft.K)[None]).total.item()
    assert abs(vals[0] - m) < 1e-5
    # ... and a wrong translation scale is worse
    Tw = T.clone()
    Tw[0, :3, 3] *= 1.5
    assert metric(img(ft.rgb), [img(fs.rgb)], [1.0 / depth], [Tw], _t(ft.K)[None]).total.item() > 1.1 * m


def test_sequence_normalizer_keeps_frame_ratios_and_equalises_sequences():
    g = torch.Generator().manual_seed(2)
    base = torch.rand(4, 1, 8, 8, generator=g) + 0.5
    corridor = base * 2.0                             # ~2 m
    highway = base * 60.0                             # ~60 m
    norm = SequenceDepthNormalizer(momentum=1.0)      # momentum 1: the latest batch's median
    a = norm(corridor, ['corridor'] * 4)
    b = norm(highway, ['highway'] * 4)
    assert torch.allclose(a, b, rtol=1e-5)            # both scenes land in the same range
    med = masked_median(a).flatten()
    assert med.median().item() == pytest.approx(1.0, rel=0.2)
    # one scale per sequence: the per-frame ratios inside a sequence are kept
    assert torch.allclose(a[1] / a[0], corridor[1] / corridor[0], rtol=1e-5)
    slow = SequenceDepthNormalizer(momentum=0.1)
    slow(corridor, ['c'] * 4)
    slow(corridor * 2, ['c'] * 4)
    assert 1.0 < slow.scale('c') / masked_median(corridor).median().item() < 1.2   # EMA of log median
    s2 = SequenceDepthNormalizer()
    s2.load_state_dict(norm.state_dict())
    assert s2.scale('highway') == pytest.approx(norm.scale('highway'))
    assert torch.equal(s2(highway, ['highway'] * 4, update=False), b)
    with pytest.raises(ValueError):
        norm(corridor, ['x'])
    # no gradient along a sample's overall scale (the loss cannot observe it), the rest flows
    x = corridor.clone().requires_grad_(True)
    out = s2(x, ['c'] * 4, update=False)
    assert torch.allclose(out, corridor / s2.scale('c'), rtol=1e-6)     # the value is unchanged
    w = torch.rand(out.shape, generator=g)
    (out * w).sum().backward()
    along_scale = (x.grad * corridor).flatten(1).sum(1)                 # d/dlambda at lambda = 1
    assert float(along_scale.abs().max()) < 1e-4 * float(x.grad.abs().sum())
    assert float(x.grad.abs().sum()) > 0
