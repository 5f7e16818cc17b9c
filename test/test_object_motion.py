"""Object motion (struct2depth / Depth from Videos in the Wild): the composition against the
synthetic world's exact object poses, the object-aware warp, the loss hook, gradients,
a short optimisation and the checkpoint file."""
import numpy as np
import pytest
import torch

from depth_ego_ros.core.checkpoints import CheckpointError
from depth_ego_ros.core.losses import LossConfig, SelfSupervisedLoss, photometric_error, warp_image
from depth_ego_ros.core.object_motion import (ObjectMotionNet, apply_object_motion, load_object_motion,
                                              mask_centroids, object_motion_matrices, save_object_motion,
                                              warp_image_with_objects)
from depth_ego_ros.core.geometry import backproject_np, matrix_to_axis_angle_np, transform_points_np
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld

pytestmark = [pytest.mark.usefixtures('torch_one_thread'), pytest.mark.timeout(120)]

W, H = 128, 48
TGT, SRC = 5, 6   # the lead car (object 1) is well inside both frames of seed 0


@pytest.fixture(scope='module')
def world():
    return SyntheticWorld(SynthConfig(frames=12, width=W, height=H, seed=0, moving_objects=3,
                                      supersample=1))


@pytest.fixture(scope='module')
def pair(world):
    ft, fs = world.frame(TGT), world.frame(SRC)
    n = world.num_moving_objects

    def img(f):
        return torch.from_numpy(f.rgb).permute(2, 0, 1)[None].float() / 255

    depth = np.where(np.isfinite(ft.depth), ft.depth, 1e3).astype(np.float32)
    ids = torch.from_numpy(ft.instance_mask.astype(np.int64))
    return dict(
        ft=ft, fs=fs, target=img(ft), source=img(fs),
        depth=torch.from_numpy(depth)[None, None], K=torch.from_numpy(ft.K)[None].float(),
        T=torch.from_numpy(world.relative_pose(SRC, TGT))[None].float(),
        masks=torch.stack([(ids == k + 1).float() for k in range(n)])[None],
        source_masks=torch.stack([(torch.from_numpy(fs.instance_mask.astype(np.int64)) == k + 1).float()
                                  for k in range(n)])[None],
        T_obj=torch.from_numpy(world.object_motion(TGT, SRC))[None].float())


def test_composition_matches_exact_object_poses(world):
    """p_src = T_src_tgt @ T_obj @ p_tgt for points fixed on each object (numpy, float64)."""
    for i, j in ((2, 3), (7, 5), (0, 11)):
        T_src_tgt = world.relative_pose(j, i)
        T_obj = world.object_motion(i, j)
        Pi, Pj = world.frame_object_poses(i), world.frame_object_poses(j)
        rng = np.random.default_rng(i)
        for m in range(world.num_moving_objects):
            X_o = rng.uniform(-2, 2, (20, 3))                                   # object frame
            p_t = transform_points_np(np.linalg.inv(world.T_world_cam[i]) @ Pi[m], X_o)
            p_s = transform_points_np(np.linalg.inv(world.T_world_cam[j]) @ Pj[m], X_o)
            np.testing.assert_allclose(transform_points_np(T_src_tgt @ T_obj[m], p_t), p_s, atol=1e-8)
            # the other order is wrong whenever the object moves
            if not np.allclose(T_obj[m], np.eye(4), atol=1e-6):
                assert np.abs(transform_points_np(T_obj[m] @ T_src_tgt, p_t) - p_s).max() > 1e-3
    # torch: apply_object_motion moves exactly the masked points, centre parametrisation is exact
    T_obj = torch.from_numpy(world.object_motion(2, 3))[None]
    pts = torch.randn(1, 3, 4, 5, dtype=torch.float64) * 5
    masks = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    masks[0, 1, 1:3, 2:4] = 1
    moved = apply_object_motion(pts, masks, T_obj)
    p = pts[0].reshape(3, -1)
    want = (T_obj[0, 1, :3, :3] @ p + T_obj[0, 1, :3, 3:]).reshape(3, 4, 5)
    inside = masks[0, 1] > 0
    torch.testing.assert_close(moved[0][:, inside], want[:, inside])
    torch.testing.assert_close(moved[0][:, ~inside], pts[0][:, ~inside])
    c = torch.randn(1, 3, 3, dtype=torch.float64)
    R = T_obj[..., :3, :3]
    aa = torch.from_numpy(np.stack([matrix_to_axis_angle_np(r) for r in R[0].numpy()]))[None]
    t = T_obj[..., :3, 3] - c + (R @ c.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(object_motion_matrices(aa, t, c), T_obj, atol=1e-9, rtol=0)


def test_object_warp_matches_exact_geometry_and_reconstructs_objects(world, pair):
    ft, fs, world_ = pair['ft'], pair['fs'], world
    # geometry: object pixels land where the source frame sees the same object at the predicted depth
    pts = backproject_np(np.where(np.isfinite(ft.depth), ft.depth, 1e3), ft.K)   # HxWx3
    sel = ft.instance_mask == 1
    p = pts[sel]
    for T, name in ((world_.relative_pose(SRC, TGT) @ world_.object_motion(TGT, SRC)[0], 'object'),
                    (world_.relative_pose(SRC, TGT), 'ego')):
        q = transform_points_np(T, p)
        u = np.round(ft.K[0, 0] * q[:, 0] / q[:, 2] + ft.K[0, 2]).astype(int)
        v = np.round(ft.K[1, 1] * q[:, 1] / q[:, 2] + ft.K[1, 2]).astype(int)
        ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        same = fs.instance_mask[v[ok], u[ok]] == 1
        rel = np.abs(fs.depth[v[ok], u[ok]] - q[ok, 2]) / q[ok, 2]
        if name == 'object':
            assert ok.mean() > 0.95 and same.mean() > 0.9
            assert np.median(rel[same]) < 2e-2          # rounding to the pixel grid only
        else:
            assert np.median(rel) > 0.05 or same.mean() < 0.7
    # photometric: error inside the masks drops a lot, outside it is the rigid warp's
    we, _ = warp_image(pair['source'], pair['depth'], pair['K'], pair['T'])
    wo, _ = warp_image_with_objects(pair['source'], pair['depth'], pair['K'], pair['T'],
                                    pair['masks'], pair['T_obj'])
    ee, eo = photometric_error(we, pair['target']), photometric_error(wo, pair['target'])
    inside = pair['masks'].sum(1, keepdim=True) > 0
    assert inside.sum() > 100
    assert eo[inside].mean() < 0.4 * ee[inside].mean(), (eo[inside].mean(), ee[inside].mean())
    far = ~(torch.nn.functional.max_pool2d(inside.float(), 5, 1, 2) > 0)  # SSIM windows do not reach
    torch.testing.assert_close(eo[far], ee[far])
    # without masks: the rigid warp exactly
    wn, vn = warp_image_with_objects(pair['source'], pair['depth'], pair['K'], pair['T'], None, None)
    _, ve = warp_image(pair['source'], pair['depth'], pair['K'], pair['T'])
    torch.testing.assert_close(wn, we)
    assert torch.equal(vn, ve)


def _disp_for(depth, cfg):
    """Sigmoid disparity that monodepth2's mapping turns back into `depth`."""
    lo, hi = 1 / cfg.max_depth, 1 / cfg.min_depth
    return ((1 / depth.clamp(cfg.min_depth, cfg.max_depth)) - lo) / (hi - lo)


def test_loss_hook_identical_without_objects_and_lower_with_true_motion(pair):
    cfg = LossConfig()
    loss = SelfSupervisedLoss(cfg)
    disp = _disp_for(pair['depth'], cfg)
    args = (pair['target'], [pair['source']], [disp], [pair['T']], pair['K'])
    torch.manual_seed(0)
    base = loss(*args)
    torch.manual_seed(0)
    zero = loss(*args, object_masks=torch.zeros_like(pair['masks']),
                object_poses=[pair['T_obj']])
    torch.manual_seed(0)
    none = loss(*args, object_masks=None, object_poses=None)
    for o in (zero, none):
        torch.testing.assert_close(o.total, base.total, rtol=0, atol=1e-7)
        torch.testing.assert_close(o.warped[0], base.warped[0], rtol=0, atol=1e-6)
    torch.manual_seed(0)
    obj = loss(*args, object_masks=pair['masks'], object_poses=torch.stack([pair['T_obj']], 1))
    assert obj.terms['photometric'] < base.terms['photometric']
    with pytest.raises(ValueError, match='together'):
        loss(*args, object_masks=pair['masks'])
    with pytest.raises(ValueError, match='one'):
        loss(*args, object_masks=pair['masks'], object_poses=[pair['T_obj'], pair['T_obj']])


def test_net_shapes_empty_slots_and_gradients(pair):
    torch.manual_seed(0)
    net = ObjectMotionNet()
    masks = torch.cat([pair['masks'], torch.zeros(1, 2, H, W)], 1)       # 2 padding slots
    aa, tr = net(pair['target'], pair['source'], masks, torch.cat([pair['source_masks'],
                                                                     torch.zeros(1, 2, H, W)], 1))
    assert aa.shape == tr.shape == (1, 5, 3)
    assert torch.all(aa[:, 3:] == 0) and torch.all(tr[:, 3:] == 0)
    assert 0 < tr[:, 0].abs().max() < 0.05                                   # small initial motion
    centres = mask_centroids(pair['depth'], pair['K'], masks)
    assert torch.all(centres[:, 3:] == 0) and centres[0, 0, 2] > 1          # in front of the camera
    T_obj = object_motion_matrices(aa, tr, centres)
    out = SelfSupervisedLoss()(pair['target'], [pair['source']], [_disp_for(pair['depth'], LossConfig())],
                               [pair['T']], pair['K'], object_masks=masks, object_poses=[T_obj])
    out.total.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.head.weight.grad.abs().sum() > 0 and net.encoder[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        net(pair['target'], pair['source'][:, :, :10], masks)


def test_optimising_object_motion_lowers_the_masked_loss(pair):
    """Fixed exact depth and ego-pose, the object-motion net alone: a few dozen Adam steps."""
    torch.manual_seed(0)
    net = ObjectMotionNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    masks = pair['masks'][:, :1]                                  # the lead car
    centres = mask_centroids(pair['depth'], pair['K'], masks)

    def masked_loss():
        aa, tr = net(pair['target'], pair['source'], masks, pair['source_masks'][:, :1])
        w, _ = warp_image_with_objects(pair['source'], pair['depth'], pair['K'], pair['T'], masks,
                                       object_motion_matrices(aa, tr, centres))
        err = photometric_error(w, pair['target'])
        return (err * masks).sum() / masks.sum()

    with torch.no_grad():
        start = float(masked_loss())
    for _ in range(40):
        opt.zero_grad()
        loss = masked_loss()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(masked_loss())
    exact = photometric_error(warp_image_with_objects(pair['source'], pair['depth'], pair['K'], pair['T'],
                                                      masks, pair['T_obj'][:, :1])[0], pair['target'])
    exact = float((exact * masks).sum() / masks.sum())
    assert end < start - 0.3 * (start - exact), (start, end, exact)


def test_save_and_load(tmp_path):
    torch.manual_seed(1)
    net = ObjectMotionNet(channels=(8, 16, 16), motion_scale=0.02)
    path = save_object_motion(net, tmp_path / 'ckpt')
    assert path.name == 'object_motion.pth'
    back = load_object_motion(tmp_path / 'ckpt')
    assert back.channels == (8, 16, 16) and back.motion_scale == 0.02
    x = torch.rand(1, 3, 32, 64)
    m = torch.zeros(1, 1, 32, 64)
    m[..., 10:20, 20:40] = 1
    with torch.no_grad():
        torch.testing.assert_close(back(x, x.flip(-1), m), net.eval()(x, x.flip(-1), m))
    data = torch.load(path, weights_only=True)
    assert data['model'] == 'object_motion'
    data['model'] = 'posexp'
    torch.save(data, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointError, match='not an object-motion'):
        load_object_motion(tmp_path / 'bad.pth')
    with pytest.raises(CheckpointError, match='not found'):
        load_object_motion(tmp_path / 'missing.pth')
