"""Geometry against real sensor data in ../shared/data/real (skipped when ../shared is absent).

* TUM RGB-D fr1/xyz: depth + mocap poses -> reprojection is photometrically and geometrically
  consistent with the ground-truth pose and clearly worse with wrong poses.
* SUN3D: the same check with a large motion (depth consistency).
* KITTI odometry 06: GT poses chain, plausible forward motion between frames 12 and 13.
* DDAD-style scene: LiDAR sweeps project into CAMERA_01 in front of the camera with plausible
  depths, and the two ways of getting the extrinsic (calibration vs. per-datum poses) agree.
"""
import numpy as np
import pytest
import torch

from depth_ego_ros.core import geometry as g
from depth_ego_ros.data import real_datasets as rd
from depth_ego_ros.evaluation import trajectory as tr

torch.set_num_threads(1)
pytestmark = pytest.mark.timeout(120)


def _reprojection_errors(img_a, depth_a, img_b, depth_b, K, T_b_a):
    """Warp frame A into frame B with the torch geometry API.

    Returns (mean |I_B(warp) - I_A| over valid pixels, median |D_B(warp) - z_B| over valid pixels,
    fraction of valid pixels)."""
    H, W = depth_a.shape
    Kt = torch.from_numpy(np.asarray(K, dtype=np.float64))[None]
    pts = g.backproject(torch.from_numpy(depth_a.astype(np.float64))[None, None], Kt)
    uv, z = g.project(pts, Kt, torch.from_numpy(np.asarray(T_b_a, dtype=np.float64))[None])
    grid = g.pixels_to_grid(uv, H, W, align_corners=False)
    img_w = torch.nn.functional.grid_sample(torch.from_numpy(img_b.astype(np.float64))[None, None], grid,
                                            align_corners=False)[0, 0].numpy()
    dep_w = torch.nn.functional.grid_sample(torch.from_numpy(depth_b.astype(np.float64))[None, None], grid,
                                            mode='nearest', align_corners=False)[0, 0].numpy()
    u, v, zz = uv[0, 0].numpy(), uv[0, 1].numpy(), z[0, 0].numpy()
    valid = (depth_a > 0) & (zz > 0) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1) & (dep_w > 0)
    assert valid.mean() > 0.3, 'too few valid reprojected pixels for a meaningful comparison'
    photo = float(np.abs(img_w - img_a)[valid].mean())
    geo = float(np.median(np.abs(dep_w - zz)[valid]))
    return photo, geo, float(valid.mean())


def _grey(path):
    return rd.read_rgb(path).astype(np.float64).mean(axis=-1) / 255.0


# ----------------------------------------------------------------------------------------------
# TUM RGB-D
# ----------------------------------------------------------------------------------------------
def test_tum_depth_png_and_camera_description(shared_data):
    root = shared_data / 'real' / 'tum_fr1_xyz'
    cam = rd.read_camera_description(root / 'camera.txt')
    assert (cam.width, cam.height) == (640, 480)
    np.testing.assert_allclose(cam.K, [[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])
    assert cam.extra['depth_scale'] == 5000 and cam.distortion.shape == (5,)
    stamp, name = rd.read_timestamp_list(root / 'depth.txt')[0]
    depth = rd.read_tum_depth_png(root / name)
    from PIL import Image
    raw = np.asarray(Image.open(root / name))
    assert depth.dtype == np.float32 and depth.shape == (480, 640)
    # metres = value / 5000, zeros stay invalid
    np.testing.assert_allclose(depth, raw / 5000.0, rtol=1e-6)
    assert np.all(depth[raw == 0] == 0) and (raw == 0).mean() < 0.5
    valid = depth[depth > 0]
    assert 0.3 < valid.min() and valid.max() < 10.0          # a Kinect indoors
    assert 0.5 < np.median(valid) < 3.0
    # fr3 depth PNGs decode the same way
    fr3 = sorted((root / 'fr3_long_office_pair' / 'depth').glob('*.png'))
    assert len(fr3) == 2
    d3 = rd.read_tum_depth_png(fr3[0])
    assert 0.5 < np.median(d3[d3 > 0]) < 5.0


def test_tum_reprojection_with_mocap_pose_beats_wrong_poses(shared_data):
    root = shared_data / 'real' / 'tum_fr1_xyz'
    cam = rd.read_camera_description(root / 'camera.txt')
    (ta, fa), (tb, fb) = rd.read_timestamp_list(root / 'rgb.txt')
    depths = rd.read_timestamp_list(root / 'depth.txt')
    # associate depth to rgb (nearest, within 20 ms as TUM's associate.py)
    ia, idep = tr.associate([ta, tb], [s for s, _ in depths], max_diff=0.02)
    assert ia.tolist() == [0, 1]
    depth_a = rd.read_tum_depth_png(root / depths[idep[0]][1])
    depth_b = rd.read_tum_depth_png(root / depths[idep[1]][1])
    img_a, img_b = _grey(root / fa), _grey(root / fb)

    gt = tr.read_tum(root / 'groundtruth.txt')           # camera -> world, 100 Hz
    T_w_a, T_w_b = tr.interpolate_trajectory(gt, [ta, tb], max_gap=0.05).poses
    T_b_a = g.invert_pose(T_w_b) @ T_w_a                  # points of camera A -> camera B
    moved = np.linalg.norm(T_b_a[:3, 3])
    assert 0.01 < moved < 0.2, f'unexpected motion between the frames: {moved} m'

    photo_gt, geo_gt, _ = _reprojection_errors(img_a, depth_a, img_b, depth_b, cam.K, T_b_a)
    wrong = {
        'identity': np.eye(4),
        'inverse (direction swapped)': g.invert_pose(T_b_a),
        '+3 cm x': g.pose_from_tq_xyzw([0.03, 0, 0], [0, 0, 0, 1]) @ T_b_a,
        '+1.5 deg yaw': np.block([[g.axis_angle_to_matrix_np([0, np.radians(1.5), 0]), np.zeros((3, 1))],
                                  [np.zeros((1, 3)), np.ones((1, 1))]]) @ T_b_a,
    }
    photo_wrong = {k: _reprojection_errors(img_a, depth_a, img_b, depth_b, cam.K, T)[:2] for k, T in wrong.items()}
    # photometric: measured ~0.056 (GT) vs 0.14 identity, 0.20 inverse, 0.09 / 0.10 perturbed
    assert photo_gt < 0.07
    for name, (photo, _) in photo_wrong.items():
        assert photo_gt < 0.8 * photo, f'GT pose not clearly better than {name}: {photo_gt:.4f} vs {photo:.4f}'
    assert photo_gt < 0.5 * photo_wrong['identity'][0]
    # geometric: predicted depth in B vs measured depth in B, median ~1 cm with GT
    assert geo_gt < 0.02
    assert geo_gt < 0.4 * photo_wrong['identity'][1] and geo_gt < 0.2 * photo_wrong['inverse (direction swapped)'][1]


# ----------------------------------------------------------------------------------------------
# SUN3D
# ----------------------------------------------------------------------------------------------
def test_sun3d_large_motion_depth_consistency(shared_data):
    root = shared_data / 'real' / 'sun3d'
    K = rd.read_sun3d_intrinsics(root / 'camera-intrinsics.txt')

    def load(i):
        f = root / 'seq-01' / f'frame-{i:06d}'
        return (_grey(f'{f}.color.png'), rd.read_sun3d_depth_png(f'{f}.depth.png'),
                rd.read_matrix_txt(f'{f}.pose.txt'))

    img_a, dep_a, T_w_a = load(2)
    img_b, dep_b, T_w_b = load(116)
    assert T_w_a.shape == (4, 4) and 0.5 < np.median(dep_a[dep_a > 0]) < 6.0   # millimetres decoded
    T_b_a = g.invert_pose(T_w_b) @ T_w_a
    assert np.degrees(g.rotation_angle_np(T_b_a[:3, :3])) > 20          # a large rotation
    _, geo_gt, _ = _reprojection_errors(img_a, dep_a, img_b, dep_b, K, T_b_a)
    _, geo_id, _ = _reprojection_errors(img_a, dep_a, img_b, dep_b, K, np.eye(4))
    _, geo_inv, _ = _reprojection_errors(img_a, dep_a, img_b, dep_b, K, g.invert_pose(T_b_a))
    # measured: 0.09 m (reconstruction poses are approximate) vs 0.74 m identity, 1.0 m inverse
    assert geo_gt < 0.15
    assert geo_gt < 0.3 * geo_id and geo_gt < 0.3 * geo_inv


# ----------------------------------------------------------------------------------------------
# KITTI odometry 06
# ----------------------------------------------------------------------------------------------
def test_kitti06_gt_poses_chain(shared_data):
    root = shared_data / 'real' / 'kitti_odometry_06'
    traj = tr.read_kitti(root / 'poses_06.txt', root / 'times.txt')
    assert len(traj) == 1101 and traj.stamps[0] == 0.0
    np.testing.assert_allclose(traj.poses[0], np.eye(4), atol=1e-9)
    # exact relative transforms chain back to the absolute poses
    rel_exact = np.linalg.inv(traj.poses[:-1]) @ traj.poses[1:]
    chained = traj.poses[0] @ g.chain_poses(rel_exact)        # chain_poses starts at exactly I
    np.testing.assert_allclose(chained, traj.poses, rtol=0, atol=1e-6)
    # with rigid inverses (R^T; the file's rotations are orthonormal to ~1e-7) the drift over the
    # 1.2 km sequence stays below a centimetre
    rel = g.relative_poses(traj.poses)
    assert np.abs(g.chain_poses(rel) - traj.poses).max() < 0.01
    assert 1100 < tr.path_length(traj) < 1300

    # frames 12 -> 13: the car drives forward (+z of the camera) at a plausible speed
    T_12_13 = rel[12]
    dt = traj.stamps[13] - traj.stamps[12]
    assert 0.09 < dt < 0.12                                   # ~10 Hz
    t = T_12_13[:3, 3]
    speed = np.linalg.norm(t) / dt
    assert t[2] > 0.95 * np.linalg.norm(t), f'motion is not forward: {t}'
    assert 3.0 < speed < 30.0, f'implausible speed {speed:.1f} m/s'
    assert np.degrees(g.rotation_angle_np(T_12_13[:3, :3])) < 3.0
    # monodepth2's snippet ATE of the GT against itself is 0
    res = tr.snippet_ate(traj.poses[10:20], rel[10:19])
    assert res['mean'] < 1e-9 and res['n_snippets'] == 9


def test_kitti_camera_description(shared_data):
    cam = rd.read_camera_description(shared_data / 'real' / 'kitti_odometry_06' / 'camera.txt')
    assert (cam.width, cam.height) == (1226, 370)
    baseline = cam.extra['bf_gray'] / cam.K[0, 0]
    assert 0.5 < baseline < 0.6
    # intrinsics for monodepth2's 640x192 KITTI input
    K_small = g.intrinsics_for_resize(cam.K, (1226, 370), (640, 192))
    assert K_small[0, 0] == pytest.approx(707.0912 * 640 / 1226)
    assert 0.45 * 640 < K_small[0, 2] < 0.55 * 640


# ----------------------------------------------------------------------------------------------
# DDAD-style LiDAR -> camera
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scene_name', ['scene_01', 'scene_02'])
def test_ddad_lidar_projects_into_camera_01(shared_data, scene_name):
    scene = rd.DGPScene.from_folder(shared_data / 'real' / 'ddad_style_lidar_scene' / scene_name)
    assert len(scene) == 3 and 'CAMERA_01' in scene.sensors
    K = scene.K('CAMERA_01')
    for i in range(len(scene)):
        lidar = scene.datum(i, 'LIDAR')
        cam = scene.datum(i, 'CAMERA_01')
        assert cam.kind == 'image' and lidar.kind == 'point_cloud'
        W, H = cam.width, cam.height
        assert (W, H) == (1936, 1216)
        pts = scene.load_points(lidar)
        assert pts.shape[1] == 4 and pts.shape[0] > 40000
        # extrinsic from the per-datum world poses
        T_cam_lidar = g.invert_pose(cam.T_world_sensor) @ lidar.T_world_sensor
        # ... agrees with the one from the calibration (sensor -> vehicle body) within 6 cm / 0.1 deg
        T_cal = g.invert_pose(scene.T_body_sensor('CAMERA_01')) @ scene.T_body_sensor('LIDAR')
        assert np.linalg.norm(T_cam_lidar[:3, 3] - T_cal[:3, 3]) < 0.06
        assert np.degrees(g.rotation_angle_np(T_cam_lidar[:3, :3].T @ T_cal[:3, :3])) < 0.1

        uv, z, mask = g.project_points_to_image(pts, T_cam_lidar, K, W, H, max_depth=np.inf)
        n_in = int(mask.sum())
        # a front camera with a ~48 deg field of view sees roughly a tenth of a 360 deg sweep
        assert n_in > 3000 and 0.05 < mask.mean() < 0.3, (n_in, mask.mean())
        assert np.all(z[mask] > 0)
        # depths within 0-200 m: scene_01 has a handful (~0.4 %) of far returns up to the sweep's
        # 231 m maximum range, so: all within the sensor range, >= 99 % within 200 m
        assert 0.0 < z[mask].min() and z[mask].max() < 1.01 * np.linalg.norm(pts[:, :3], axis=1).max()
        assert np.mean(z[mask] <= 200.0) > 0.99
        _, _, mask200 = g.project_points_to_image(pts, T_cam_lidar, K, W, H, max_depth=200.0)
        assert mask200.sum() > 0.99 * n_in and z[mask200].max() <= 200.0
        assert 3.0 < np.median(z[mask]) < 60.0
        # points cover the image widely (not a sliver): columns and the lower half of the rows
        assert np.ptp(uv[mask, 0]) > 0.8 * W and uv[mask, 1].max() > 0.9 * H
        # the ground (low points in the vehicle frame) lies below the horizon, in the lower image
        body = g.transform_points_np(scene.T_body_sensor('LIDAR'), pts[:, :3])
        ground = mask & (body[:, 2] < 0.3) & (z < 40)
        assert ground.sum() > 300
        assert np.mean(uv[ground, 1] > K[1, 2]) > 0.95
        # a sparse GT depth image (what a LiDAR-based evaluation uses): nearest point per pixel
        if i == 0:
            sparse = g.points_to_depth_image(pts, T_cam_lidar, K, W, H, max_depth=200.0)
            filled = sparse > 0
            assert 0.9 * mask200.sum() < filled.sum() <= mask200.sum()   # few pixel collisions
            assert sparse.max() <= 200.0 and filled[int(0.6 * H):].mean() > filled[:int(0.3 * H)].mean()
        # points behind the camera are never accepted
        behind = z <= 0
        assert behind.sum() > 0.3 * len(z) and not np.any(mask & behind)
