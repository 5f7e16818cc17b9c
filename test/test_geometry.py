"""Unit tests of depth_ego_ros.core.geometry: round trips and agreement with transforms3d."""
import numpy as np
import pytest
import torch
import transforms3d

from depth_ego_ros.core import geometry as g

torch.set_num_threads(1)
pytestmark = pytest.mark.timeout(60)


def _K(fx=100.0, fy=110.0, cx=31.5, cy=23.5, batch=None):
    K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]], dtype=torch.float64)
    return K if batch is None else K.expand(batch, 3, 3).clone()


def _random_pose(rng, angle_max=0.5, trans_max=1.0):
    aa = rng.normal(size=3)
    aa *= rng.uniform(0, angle_max) / np.linalg.norm(aa)
    T = np.eye(4)
    T[:3, :3] = transforms3d.axangles.axangle2mat(aa / np.linalg.norm(aa), np.linalg.norm(aa))
    T[:3, 3] = rng.uniform(-trans_max, trans_max, size=3)
    return T


def test_backproject_project_identity_pixels():
    B, H, W = 2, 12, 16
    depth = torch.rand(B, 1, H, W, dtype=torch.float64) * 10 + 0.5
    K = torch.stack([_K(), _K(fx=80, fy=80, cx=7.0, cy=5.0)])
    pts = g.backproject(depth, K)
    assert pts.shape == (B, 3, H, W)
    # z of the points is the depth (z-depth convention)
    torch.testing.assert_close(pts[:, 2:3], depth)
    uv, z = g.project(pts.reshape(B, 3, -1), K)
    assert uv.shape == (B, 2, H * W) and z.shape == (B, 1, H * W)
    grid = g.pixel_grid(H, W, dtype=torch.float64)[:2]
    torch.testing.assert_close(uv, grid.expand(B, 2, H * W), atol=1e-9, rtol=0)
    torch.testing.assert_close(z, depth.reshape(B, 1, -1))
    # the H,W layout is kept when points come as [B,3,H,W]
    uv4, z4 = g.project(pts, K)
    assert uv4.shape == (B, 2, H, W) and z4.shape == (B, 1, H, W)


def test_backproject_pixel_convention():
    """Pixel (row 0, col 0) is the point (u=0, v=0); the principal point maps to the optical axis."""
    K = _K(cx=3.0, cy=2.0)
    depth = torch.full((1, 1, 5, 7), 2.0, dtype=torch.float64)
    pts = g.backproject(depth, K)
    torch.testing.assert_close(pts[0, :, 2, 3], torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    # column 6 (u=6) is 3 px right of cx -> x = 3/fx*z
    assert pts[0, 0, 2, 6].item() == pytest.approx(3 / 100.0 * 2.0)
    assert pts[0, 1, 4, 3].item() == pytest.approx(2 / 110.0 * 2.0)


def test_project_with_transform_matches_numpy_and_unbatched_K():
    rng = np.random.default_rng(0)
    T = _random_pose(rng)
    pts = rng.uniform(-2, 2, size=(50, 3)) + [0, 0, 6]
    uv_np, z_np = g.project_np(pts, _K().numpy(), T)
    uv, z = g.project(torch.from_numpy(pts.T[None]), _K(), torch.from_numpy(T)[None])
    np.testing.assert_allclose(uv[0].numpy().T, uv_np, atol=1e-9)
    np.testing.assert_allclose(z[0, 0].numpy(), z_np, atol=1e-12)
    # a 4x4 K (monodepth2 layout) gives the same result
    K4 = torch.eye(4, dtype=torch.float64)
    K4[:3, :3] = _K()
    uv4, _ = g.project(torch.from_numpy(pts.T[None]), K4[None], torch.from_numpy(T)[None])
    torch.testing.assert_close(uv4, uv)


def test_project_behind_camera_no_division_by_zero():
    pts = torch.tensor([[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, -1.0, 1.0]]])
    uv, z = g.project(pts, _K().float())
    assert torch.isfinite(uv).all()
    assert z[0, 0].tolist() == [0.0, -1.0, 1.0]


def test_backproject_half_precision_and_grad():
    depth = (torch.rand(1, 1, 4, 5) + 1).requires_grad_()
    pts = g.backproject(depth, _K().float())
    pts.sum().backward()
    assert depth.grad is not None and torch.isfinite(depth.grad).all()
    pts16 = g.backproject(depth.detach().half(), _K().float())
    assert pts16.dtype == torch.float16


@pytest.mark.parametrize('angle', [0.0, 1e-9, 1e-4, 0.3, 1.5, 3.0, np.pi - 1e-6])
def test_axis_angle_matches_transforms3d(angle):
    rng = np.random.default_rng(int(angle * 1000))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    aa = torch.from_numpy(axis * angle)[None]
    R = g.axis_angle_to_matrix(aa)[0].numpy()
    R_ref = transforms3d.axangles.axangle2mat(axis, angle)
    np.testing.assert_allclose(R, R_ref, atol=1e-12)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    # log map back (angle 0 gives the zero vector)
    back = g.matrix_to_axis_angle_np(R)
    np.testing.assert_allclose(back, axis * angle, atol=1e-7)


def test_axis_angle_gradient_finite_at_zero():
    aa = torch.zeros(2, 1, 3, requires_grad=True)   # monodepth2 decoder layout [B,1,3]
    R = g.axis_angle_to_matrix(aa)
    assert R.shape == (2, 3, 3)
    (R * torch.randn(3, 3)).sum().backward()
    assert torch.isfinite(aa.grad).all()
    # d(R)/d(aa) at 0 is the skew generator: R ~ I + [aa]x
    eps = 1e-4
    Rs = g.axis_angle_to_matrix(torch.tensor([[0.0, 0.0, eps]], dtype=torch.float64))[0]
    assert Rs[1, 0].item() == pytest.approx(eps, rel=1e-6)


def test_pose_vec_to_mat_monodepth2_semantics():
    rng = np.random.default_rng(1)
    aa = torch.from_numpy(rng.normal(size=(3, 1, 3)) * 0.2)
    t = torch.from_numpy(rng.normal(size=(3, 1, 3)))
    T = g.pose_vec_to_mat(aa, t)
    Ti = g.pose_vec_to_mat(aa, t, invert=True)
    assert T.shape == Ti.shape == (3, 4, 4)
    # invert=False: [R | t]
    torch.testing.assert_close(T[:, :3, :3], g.axis_angle_to_matrix(aa))
    torch.testing.assert_close(T[:, :3, 3], t[:, 0])
    torch.testing.assert_close(T[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(3, 4))
    # invert=True: monodepth2 builds R^T @ Translation(-t) -> the exact inverse
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    torch.testing.assert_close(T @ Ti, eye)
    Rt = g.axis_angle_to_matrix(aa).transpose(1, 2)
    torch.testing.assert_close(Ti[:, :3, 3], -(Rt @ t[:, 0, :, None])[..., 0])
    torch.testing.assert_close(g.invert_pose(T), Ti)


def test_chain_and_relative_poses_round_trip():
    rng = np.random.default_rng(2)
    rel = np.stack([_random_pose(rng) for _ in range(5)])
    ab = g.chain_poses(rel)
    assert ab.shape == (6, 4, 4)
    np.testing.assert_allclose(ab[0], np.eye(4))
    np.testing.assert_allclose(ab[3], rel[0] @ rel[1] @ rel[2], atol=1e-12)
    np.testing.assert_allclose(g.relative_poses(ab), rel, atol=1e-12)
    abt = g.chain_poses(torch.from_numpy(rel).float())
    assert torch.is_tensor(abt) and abt.dtype == torch.float32 and abt.shape == (6, 4, 4)
    np.testing.assert_allclose(abt.numpy(), ab, atol=1e-5)
    with pytest.raises(ValueError):
        g.chain_poses(np.zeros((3, 3, 3)))


def test_quaternion_order_explicit():
    rng = np.random.default_rng(3)
    for _ in range(20):
        q_wxyz = rng.normal(size=4)
        q_wxyz /= np.linalg.norm(q_wxyz)
        R_ref = transforms3d.quaternions.quat2mat(q_wxyz)          # transforms3d is w-first
        np.testing.assert_allclose(g.quat_wxyz_to_matrix(q_wxyz), R_ref, atol=1e-12)
        q_xyzw = np.r_[q_wxyz[1:], q_wxyz[0]]                     # ROS order
        np.testing.assert_allclose(g.quat_xyzw_to_matrix(q_xyzw), R_ref, atol=1e-12)
        back = g.matrix_to_quat_xyzw(R_ref)
        assert back[3] >= 0
        np.testing.assert_allclose(np.abs(back @ q_xyzw), 1.0, atol=1e-12)  # same up to sign
    # 90 deg about z: ROS (0,0,sin45,cos45)
    s = np.sqrt(0.5)
    Rz = g.quat_xyzw_to_matrix([0, 0, s, s])
    np.testing.assert_allclose(Rz @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # rotations near 180 deg (the stable branch of the matrix -> quaternion conversion)
    R180 = transforms3d.axangles.axangle2mat([1, 2, 3], np.pi)
    np.testing.assert_allclose(g.quat_wxyz_to_matrix(g.matrix_to_quat_wxyz(R180)), R180, atol=1e-12)
    with pytest.raises(ValueError):
        g.quat_xyzw_to_matrix([0, 0, 0, 0])


def test_pose_tq_round_trip_batched():
    rng = np.random.default_rng(4)
    T = np.stack([_random_pose(rng, angle_max=3.0) for _ in range(7)])
    t, q = g.pose_to_tq_xyzw(T)
    assert t.shape == (7, 3) and q.shape == (7, 4)
    np.testing.assert_allclose(g.pose_from_tq_xyzw(t, q), T, atol=1e-12)


def test_intrinsics_resize_crop_scale():
    K = np.array([[500.0, 0, 319.5], [0, 480.0, 239.5], [0, 0, 1]])
    Ks = g.scale_intrinsics(K, 0.5, 0.25)
    np.testing.assert_allclose(Ks, [[250, 0, 159.75], [0, 120, 59.875], [0, 0, 1]])
    assert K[0, 0] == 500.0  # input untouched
    # half-pixel-exact resize 640x480 -> 320x240: the image centre stays the image centre
    Kr = g.intrinsics_for_resize(K, (640, 480), (320, 240))
    np.testing.assert_allclose(Kr[:2, 2], [159.5, 119.5])
    np.testing.assert_allclose(Kr[0, 0], 250.0)
    Kp = g.intrinsics_for_resize(K, (640, 480), (320, 240), half_pixel=False)
    np.testing.assert_allclose(Kp, g.scale_intrinsics(K, 0.5, 0.5))
    # a 3-D point keeps landing on the resampled position of its source pixel
    uv_src, _ = g.project_np(np.array([[0.3, -0.2, 2.0]]), K)
    uv_dst, _ = g.project_np(np.array([[0.3, -0.2, 2.0]]), Kr)
    np.testing.assert_allclose(uv_dst, (uv_src + 0.5) * 0.5 - 0.5, atol=1e-12)
    Kc = g.intrinsics_for_crop(K, 10, 20)
    np.testing.assert_allclose(Kc[:2, 2], [309.5, 219.5])
    # torch, batched, 4x4
    Kt = torch.eye(4).expand(2, 4, 4).clone()
    Kt[:, 0, 0] = 2.0
    Kt[:, 0, 2] = 1.0
    out = g.scale_intrinsics(Kt, 3.0, 1.0)
    assert torch.is_tensor(out) and out.shape == (2, 4, 4)
    assert out[1, 0, 0].item() == 6.0 and out[1, 0, 2].item() == 3.0 and Kt[0, 0, 0].item() == 2.0
    with pytest.raises(ValueError):
        g.scale_intrinsics(np.eye(2), 1, 1)


def test_resize_intrinsics_consistent_with_interpolate():
    """Half-size bilinear resize (align_corners=False): the 2x2 source block around a projected
    point becomes exactly one destination pixel, the one the resized K projects the point to."""
    H, W = 40, 64
    K = np.array([[60.0, 0, 30.5], [0, 60.0, 18.5], [0, 0, 1]])
    X = np.array([[0.5, 0.3, 3.0]])
    uv, _ = g.project_np(X, K)
    np.testing.assert_allclose(uv[0], [40.5, 24.5])          # between source pixels 40|41, 24|25
    img = torch.zeros(1, 1, H, W, dtype=torch.float64)
    img[0, 0, 24:26, 40:42] = 1.0
    small = torch.nn.functional.interpolate(img, size=(H // 2, W // 2), mode='bilinear', align_corners=False)
    Kr = g.intrinsics_for_resize(K, (W, H), (W // 2, H // 2))
    uv_r, _ = g.project_np(X, Kr)
    np.testing.assert_allclose(uv_r[0], [20.0, 12.0], atol=1e-12)
    assert small[0, 0, 12, 20].item() == pytest.approx(1.0)
    assert small.sum().item() == pytest.approx(1.0)          # nothing leaks to other pixels
    # plain scaling (monodepth2) would be off by a quarter pixel here
    uv_p, _ = g.project_np(X, g.scale_intrinsics(K, 0.5, 0.5))
    np.testing.assert_allclose(uv_p[0], [20.25, 12.25], atol=1e-12)


def test_project_points_to_image_mask():
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    T = np.eye(4)
    T[2, 3] = 1.0  # points frame is 1 m behind the camera along z
    pts = np.array([[0, 0, 4.0],      # z=5 centre -> inside
                    [0, 0, -3.0],     # behind the camera
                    [10, 0, 4.0],     # far right, outside
                    [0, 0, 300.0]])   # beyond max depth
    uv, z, mask = g.project_points_to_image(pts, T, K, 100, 80, max_depth=200)
    np.testing.assert_allclose(uv[0], [50, 40])
    np.testing.assert_allclose(z, [5, -2, 5, 301])
    assert mask.tolist() == [True, False, False, False]


def test_pixels_to_grid_round_trip_with_grid_sample():
    H, W = 6, 9
    img = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)
    uv = g.pixel_grid(H, W, dtype=torch.float64)[:2].reshape(1, 2, H, W)
    for ac in (False, True):
        grid = g.pixels_to_grid(uv, H, W, align_corners=ac)
        out = torch.nn.functional.grid_sample(img, grid, align_corners=ac)
        torch.testing.assert_close(out, img)


def test_interpolate_pose():
    rng = np.random.default_rng(5)
    T0, T1 = _random_pose(rng), _random_pose(rng)
    np.testing.assert_allclose(g.interpolate_pose(T0, T1, 0.0), T0, atol=1e-12)
    np.testing.assert_allclose(g.interpolate_pose(T0, T1, 1.0), T1, atol=1e-10)
    mid = g.interpolate_pose(T0, T1, 0.5)
    a01 = g.rotation_angle_np(T0[:3, :3].T @ T1[:3, :3])
    a0m = g.rotation_angle_np(T0[:3, :3].T @ mid[:3, :3])
    assert a0m == pytest.approx(a01 / 2, rel=1e-9)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match='depth'):
        g.backproject(torch.zeros(1, 4, 4), _K())
    with pytest.raises(ValueError, match='K'):
        g.backproject(torch.zeros(1, 1, 4, 4), torch.eye(2))
    with pytest.raises(ValueError, match='points'):
        g.project(torch.zeros(1, 2, 5), _K())
    with pytest.raises(ValueError, match='axis-angle'):
        g.axis_angle_to_matrix(torch.zeros(2, 4))
    with pytest.raises(ValueError, match='K'):
        g.backproject_np(np.ones((3, 3)), np.zeros((3, 3)))


def test_points_to_depth_image_zbuffer():
    K = np.array([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]])
    pts = np.array([[0, 0, 5.0],       # centre pixel (2,2)
                    [0, 0, 3.0],       # same pixel, nearer -> wins
                    [0.2, 0, 2.0],     # u = 2 + 10*0.1 = 3
                    [0, 0, -1.0],      # behind
                    [5, 0, 1.0]])      # outside
    d = g.points_to_depth_image(pts, np.eye(4), K, 5, 5)
    assert d.dtype == np.float32 and d.shape == (5, 5)
    assert d[2, 2] == 3.0 and d[2, 3] == 2.0
    assert np.count_nonzero(d) == 2
    # consistent with backprojection: the point sits on the ray of its pixel
    P = g.backproject_np(d, K)
    np.testing.assert_allclose(P[2, 3], [0.2, 0, 2.0], atol=1e-6)
