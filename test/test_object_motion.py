"""Object motion (struct2depth / Depth from Videos in the Wild): the composition against the
synthetic world's exact object poses, the object-aware warp, the loss hook, gradients,
a short optimisation and the checkpoint file."""
import numpy as np
import pytest
import torch

from depth_ego_ros.core.checkpoints import CheckpointError
from depth_ego_ros.core.losses import (LossConfig, SelfSupervisedLoss, apply_object_motion,
                                       mask_row_extent, object_size_loss, photometric_error,
                                       warp_image, warp_image_with_objects)
from depth_ego_ros.core.object_motion import (ObjectMotionNet, ObjectSizePrior, load_object_motion,
                                              load_object_size, mask_centroids,
                                              object_motion_matrices, save_object_motion,
                                              save_object_size)
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


# ---------------------------------------------------------------------------------------------
# object size prior (struct2depth)
# ---------------------------------------------------------------------------------------------
# the synthetic world's cars (data/synth_movers.py, MovingObjects): body box from 0.25 m to 1.15 m above
# the road, cabin on top up to 1.42 + 0.27 = 1.69 m -> a visible height of 1.44 m (scale 1)
CAR_HEIGHT = 1.69 - 0.25


def _rect_case(h_true=1.5, fy=100.0):
    """One 20-row mask (rows 10..29 of 48) at exactly the depth fy h / 20."""
    masks = torch.zeros(1, 2, 48, 64)
    masks[0, 0, 10:30, 20:40] = 1
    K = torch.tensor([[[100.0, 0, 32], [0, fy, 24], [0, 0, 1]]])
    depth = torch.full((1, 1, 48, 64), 50.0)
    depth[0, 0, 10:30, 20:40] = fy * h_true / 20
    return depth, masks, K


def test_object_size_loss_zero_at_true_height_and_grows():
    depth, masks, K = _rect_case()
    top, bottom, rows, present = mask_row_extent(masks)
    assert rows.tolist() == [[20, 0]] and present.tolist() == [[True, False]]
    assert (int(top[0, 0]), int(bottom[0, 0])) == (10, 29)
    vals = []
    for h in (0.75, 1.0, 1.3, 1.5, 1.7, 2.0, 3.0):
        loss, n = object_size_loss(depth, masks, K, torch.tensor(np.log(h)), return_count=True)
        assert n == 1                                      # the empty slot is not counted
        vals.append(float(loss))
        assert float(loss) == pytest.approx(abs(np.log(h / 1.5)), abs=1e-5)
    assert vals[3] < 1e-6 and vals[:4] == sorted(vals[:4], reverse=True) and vals[3:] == sorted(vals[3:])
    # the median statistic gives the same on a constant-depth object
    assert float(object_size_loss(depth, masks, K, torch.tensor(np.log(1.5)), depth_stat='median')) < 1e-6


def test_object_size_loss_excludes_truncated_and_tiny_masks_and_has_gradients():
    depth, masks, K = _rect_case()
    cut = torch.zeros_like(masks)
    cut[0, 0, 0:15, 5:10] = 1          # touches the top border: truncated
    cut[0, 1, 20:23, 50:55] = 1        # 3 rows: below min_rows
    depth.requires_grad_(True)
    lh = torch.tensor([np.log(2.0)], requires_grad=True)
    loss, n = object_size_loss(depth, cut, K, lh, return_count=True)
    assert n == 0 and float(loss.detach()) == 0.0
    loss.backward()                    # a graph even without objects (a step with none is fine)
    bottom = torch.zeros_like(masks)
    bottom[0, 0, 30:48, 5:10] = 1      # touches the bottom border
    assert object_size_loss(depth, bottom, K, lh, return_count=True)[1] == 0
    # gradients reach the depth inside the mask only, and the prior
    depth.grad = None
    lh.grad = None
    loss = object_size_loss(depth, masks, K, lh)
    loss.backward()
    g = depth.grad[0, 0]
    outside = g.clone()
    outside[10:30, 20:40] = 0
    assert float(g[10:30, 20:40].abs().min()) > 0 and float(outside.abs().max()) == 0
    assert float(lh.grad) > 0          # the prior is too tall: the gradient lowers it
    # per-class priors: class 1 holds the true height
    cls = torch.tensor([[1, 0]])
    lh2 = torch.tensor([np.log(3.0), np.log(1.5)])
    assert float(object_size_loss(depth.detach(), masks, K, lh2, classes=cls)) < 1e-6
    with pytest.raises(ValueError, match='classes'):
        object_size_loss(depth, masks, K, lh2, classes=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='depth must be'):
        object_size_loss(depth[:, 0], masks, K, lh)


def test_object_size_loss_pixel_statistic_is_not_gamed_by_a_bimodal_object():
    """The trainer's statistic: a mask whose mean depth is right but whose pixels split into a
    near and a far half (what a depth net trained on the 'mean' form did) costs nothing with
    'mean' and a lot with 'pixel'; on a constant-depth object all three agree."""
    depth, masks, K = _rect_case()
    lh = torch.tensor(np.log(1.5))
    d_est = 100.0 * 1.5 / 20
    split = depth.clone()
    split[0, 0, 10:30, 20:30] = 0.2 * d_est
    split[0, 0, 10:30, 30:40] = 1.8 * d_est                        # mean still d_est
    assert float(object_size_loss(split, masks, K, lh, depth_stat='mean')) < 1e-5
    pix = float(object_size_loss(split, masks, K, lh, depth_stat='pixel'))
    assert pix == pytest.approx((abs(np.log(0.2)) + abs(np.log(1.8))) / 2, rel=1e-4)
    for stat in ('pixel', 'mean', 'median'):
        assert float(object_size_loss(depth, masks, K, lh, depth_stat=stat)) < 1e-6
    # descending the pixel form brings both halves to d_est (the mean form has no gradient here)
    x = split.clone().log().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        object_size_loss(x.exp(), masks, K, lh).backward()
        opt.step()
    inside = x.detach().exp()[0, 0, 10:30, 20:40]
    assert float((inside / d_est - 1).abs().max()) < 0.05
    with pytest.raises(ValueError, match='depth_stat'):
        object_size_loss(depth, masks, K, lh, depth_stat='max')


@pytest.fixture(scope='module')
def size_batch():
    """Exact depth, instance masks (one slot per moving object) and K of 8 frames of a street
    with 4 moving objects at 192x64."""
    w = SyntheticWorld(SynthConfig(frames=16, width=192, height=64, seed=1, moving_objects=4,
                                   supersample=1))
    depth, masks, K = [], [], []
    for i in range(0, 16, 2):
        f = w.frame(i)
        depth.append(np.where(np.isfinite(f.depth), f.depth, 1e3).astype(np.float32))
        masks.append(np.stack([f.instance_mask == k for k in range(1, 5)]).astype(np.float32))
        K.append(f.K.astype(np.float32))
    return (torch.from_numpy(np.stack(depth))[:, None], torch.from_numpy(np.stack(masks)),
            torch.from_numpy(np.stack(K)))


def test_object_size_prior_recovers_the_synthetic_car_height(size_batch):
    depth, masks, K = size_batch
    at_true, n = object_size_loss(depth, masks, K, torch.tensor(np.log(CAR_HEIGHT)), return_count=True)
    assert n >= 8, n                                   # enough untruncated objects in the batch
    assert float(at_true) < 0.06                       # pixel rounding of a few-pixel-tall mask
    for h in (0.8, 1.0, 2.0, 3.0):
        assert float(object_size_loss(depth, masks, K, torch.tensor(np.log(h)))) > float(at_true) + 0.1
    # the prior alone, from a wrong start (3 m), finds the cars' height
    prior = ObjectSizePrior(init_height=3.0)
    opt = torch.optim.Adam(prior.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        object_size_loss(depth, masks, K, prior()).backward()
        opt.step()
    h = float(prior.height[0])
    assert abs(h / CAR_HEIGHT - 1) < 0.1, h


def test_object_size_prior_save_and_load(tmp_path):
    prior = ObjectSizePrior(num_classes=2, init_height=1.2)
    with torch.no_grad():
        prior.log_height[1] = np.log(0.8)
    path = save_object_size(prior, tmp_path)
    assert path.name == 'object_size.pth'
    back = load_object_size(tmp_path)
    assert back.num_classes == 2 and torch.allclose(back.height, torch.tensor([1.2, 0.8]))
    save_object_motion(ObjectMotionNet(channels=(4, 4)), tmp_path / 'om.pth')
    with pytest.raises(CheckpointError, match='not an object size prior'):
        load_object_size(tmp_path / 'om.pth')
    with pytest.raises(ValueError, match='init_height'):
        ObjectSizePrior(init_height=0)
