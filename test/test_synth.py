"""Synthetic world: exact geometry, deterministic, car-like motion, and a readable rosbag2."""
import io
import math
import contextlib

import numpy as np
import pytest

from depth_ego_ros.core.geometry import backproject_np, transform_points_np, project_np
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld, R_BASE_OPTICAL

SMALL = dict(width=96, height=32)


@pytest.fixture(scope='module')
def world():
    return SyntheticWorld(SynthConfig(frames=200, seed=0, **SMALL))


@pytest.mark.timeout(60)
def test_deterministic_from_seed():
    a = SyntheticWorld(SynthConfig(frames=6, seed=5, **SMALL))
    b = SyntheticWorld(SynthConfig(frames=6, seed=5, **SMALL))
    c = SyntheticWorld(SynthConfig(frames=6, seed=6, **SMALL))
    fa, fb, fc = a.frame(5), b.frame(5), c.frame(5)
    assert np.array_equal(fa.rgb, fb.rgb)
    assert np.array_equal(fa.depth, fb.depth)
    assert np.array_equal(fa.T_world_cam, fb.T_world_cam)
    assert not np.array_equal(fa.rgb, fc.rgb)
    assert fa.rgb.dtype == np.uint8 and fa.rgb.shape == (32, 96, 3)
    assert fa.depth.dtype == np.float32 and fa.depth.shape == (32, 96)


@pytest.mark.timeout(60)
def test_intrinsics_and_poses_are_exact(world):
    K = world.K
    f = 0.5 * 96 / math.tan(math.radians(82.0) / 2)
    assert np.allclose(K, [[f, 0, 47.5], [0, f, 15.5], [0, 0, 1]])
    R = world.T_world_cam[:, :3, :3]
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)
    # optical axis roughly horizontal, image y axis pointing down, camera at its mounting height
    z_axis, y_axis = R[:, :, 2], R[:, :, 1]
    assert np.all(np.abs(z_axis[:, 2]) < 0.05) and np.all(y_axis[:, 2] < -0.99)
    assert np.allclose(world.T_world_cam[:, 2, 3], 1.5, atol=0.02)
    assert np.allclose(world.T_base_cam[:3, :3], R_BASE_OPTICAL)


@pytest.mark.timeout(60)
def test_depth_is_exact_z_depth_on_the_ground(world):
    """Back-projected ground pixels land on z = 0 in the world (to float precision)."""
    for i in (0, 37, 120):
        f = world.frame(i)
        pts_w = transform_points_np(f.T_world_cam, backproject_np(np.where(np.isfinite(f.depth), f.depth, 0), f.K))
        # the bottom rows see mostly the road in front of the car: those points lie exactly on
        # z = 0; nothing is ever below the ground
        z = pts_w[-3:, :, 2]
        assert np.all(np.isfinite(f.depth[-3:]))
        assert np.mean(np.abs(z) < 1e-4) > 0.5
        assert z.min() > -1e-4
        # sky = +inf (REP 118 "no return"), only in the upper half
        sky = ~np.isfinite(f.depth)
        assert not sky[16:].any()
        assert np.all(f.depth[~sky] > 0)


@pytest.mark.timeout(60)
def test_depth_and_poses_are_mutually_consistent(world):
    """Depth of frame i moved with the GT poses into frame j predicts frame j's depth."""
    i, j = 10, 13
    fi, fj = world.frame(i), world.frame(j)
    valid = np.isfinite(fi.depth) & (fi.depth < 60)
    pts = backproject_np(np.where(valid, fi.depth, 0), fi.K)[valid]
    T_j_i = np.linalg.inv(fj.T_world_cam) @ fi.T_world_cam
    uv, z = project_np(pts, fj.K, T_j_i)
    inside = (z > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] <= 95) & (uv[:, 1] >= 0) & (uv[:, 1] <= 31)
    uv, z = uv[inside], z[inside]
    # inverse depth of a plane is affine in (u, v): interpolate it bilinearly
    inv = np.where(np.isfinite(fj.depth), 1.0 / fj.depth, 0.0)
    u0 = np.clip(np.floor(uv[:, 0]).astype(int), 0, 94)
    v0 = np.clip(np.floor(uv[:, 1]).astype(int), 0, 30)
    a, b = uv[:, 0] - u0, uv[:, 1] - v0
    inv_j = ((1 - a) * (1 - b) * inv[v0, u0] + a * (1 - b) * inv[v0, u0 + 1]
             + (1 - a) * b * inv[v0 + 1, u0] + a * b * inv[v0 + 1, u0 + 1])
    rel = np.abs(inv_j * z - 1.0)
    assert inside.sum() > 500
    # occlusions and silhouettes (many pixels at 96x32) leave a tail; the bulk agrees to float
    # precision
    assert np.median(rel) < 1e-5
    assert np.mean(rel < 1e-4) > 0.6


@pytest.mark.timeout(60)
def test_motion_is_car_like_not_constant_velocity(world):
    P = world.T_world_cam
    rel = np.linalg.inv(P[:-1]) @ P[1:]
    step = np.linalg.norm(rel[:, :3, 3], axis=1)
    # stops: runs of exactly identical frames
    static = step < 1e-9
    assert static.sum() >= 5
    k = int(np.nonzero(static)[0][0])
    assert np.array_equal(world.frame(k).rgb, world.frame(k + 1).rgb)
    # speed changes a lot, the heading turns
    v = world.speeds
    assert v.max() > 6 and v.std() / v.mean() > 0.3
    fwd = P[:, :2, 2]
    heading = np.unwrap(np.arctan2(fwd[:, 1], fwd[:, 0]))
    assert np.ptp(heading) > math.radians(25)
    # a constant-velocity extrapolation of the first second misses the end by far
    T_cv = P[0].copy()
    d = np.linalg.inv(P[0]) @ P[10]
    for _ in range(len(P) // 10 - 1):
        T_cv = T_cv @ d
    path = step.sum()
    end_err = np.linalg.norm(T_cv[:3, 3] - P[(len(P) // 10) * 10 - 10][:3, 3])
    assert end_err > 0.2 * path


@pytest.mark.timeout(60)
def test_odometry_speed_matches_camera_motion(world):
    odo = world.odometry()
    assert np.all(np.diff(odo.stamps) > 0)
    assert odo.stamps[0] <= world.stamps[0] and odo.stamps[-1] >= world.stamps[-1] - 1e-9
    speed = np.linalg.norm(odo.linear, axis=1)
    cum = np.concatenate([[0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(odo.stamps))])
    d_odo = np.diff(np.interp(world.stamps, odo.stamps, cum))
    P = world.T_world_cam
    d_cam = np.linalg.norm(P[1:, :3, 3] - P[:-1, :3, 3], axis=1)
    assert np.abs(d_odo - d_cam).sum() < 0.02 * d_cam.sum()
    # forward speed on the body x axis, little sideways or vertical motion
    assert np.all(odo.linear[:, 0] >= -1e-6)
    assert np.abs(odo.linear[:, 1:]).max() < 0.1 * speed.max()


@pytest.mark.timeout(60)
def test_scale_and_corridor_scene():
    a = SyntheticWorld(SynthConfig(frames=20, seed=2, **SMALL))
    b = SyntheticWorld(SynthConfig(frames=20, seed=2, scale=2.0, **SMALL))
    assert np.allclose(b.T_world_cam[:, :3, 3], 2 * a.T_world_cam[:, :3, 3])
    fa, fb = a.frame(7), b.frame(7)
    fin = np.isfinite(fa.depth)
    assert np.allclose(fb.depth[fin], 2 * fa.depth[fin], rtol=1e-4)
    c = SyntheticWorld(SynthConfig(frames=20, seed=2, scene='corridor', **SMALL))
    fc = c.frame(5)
    assert np.all(np.isfinite(fc.depth))            # walls, floor and ceiling everywhere
    assert np.median(fc.depth) < 8.0 and c.speeds.max() < 2.0


def test_config_validation():
    with pytest.raises(ValueError, match='frames'):
        SynthConfig(frames=0)
    with pytest.raises(ValueError, match='scene'):
        SynthConfig(scene='moon')
    with pytest.raises(ValueError, match='rate'):
        SynthConfig(rate=-1)
    with pytest.raises(ValueError, match='supersample'):
        SynthConfig(supersample=0)


# ----------------------------------------------------------------------------------------------
# the bag
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def small_bag(tmp_path_factory):
    from depth_ego_ros.data.synth_bag import write_synth_bag
    world = SyntheticWorld(SynthConfig(frames=8, seed=1, **SMALL))
    out = tmp_path_factory.mktemp('synth') / 'bag'
    stats = write_synth_bag(world, out)
    return world, out, stats


@pytest.mark.timeout(60)
def test_bag_readable_with_rosbags(small_bag):
    from rosbags.highlevel import AnyReader
    world, out, stats = small_bag
    assert (out / 'metadata.yaml').exists() and list(out.glob('*.mcap'))
    with AnyReader([out]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            '/camera/image_raw': 'sensor_msgs/msg/Image',
            '/camera/camera_info': 'sensor_msgs/msg/CameraInfo',
            '/odom': 'nav_msgs/msg/Odometry',
            '/ground_truth/depth': 'sensor_msgs/msg/Image',
            '/ground_truth/pose': 'geometry_msgs/msg/PoseStamped',
            '/tf_static': 'tf2_msgs/msg/TFMessage'}
        msgs = {}
        for conn, t, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    assert len(msgs['/camera/image_raw']) == 8 and len(msgs['/ground_truth/depth']) == 8
    assert len(msgs['/odom']) == int(round(0.7 * 50)) + 1
    f3 = world.frame(3)
    t, img = msgs['/camera/image_raw'][3]
    assert img.encoding == 'rgb8' and (img.height, img.width, img.step) == (32, 96, 96 * 3)
    assert img.header.frame_id == 'camera_optical_frame'
    assert t == img.header.stamp.sec * 10**9 + img.header.stamp.nanosec
    assert t == f3.stamp_ns == 1_700_000_000_300_000_000
    assert np.array_equal(img.data.reshape(32, 96, 3), f3.rgb)
    _, dep = msgs['/ground_truth/depth'][3]
    assert dep.encoding == '32FC1' and dep.is_bigendian == 0
    d = dep.data.view(np.float32).reshape(32, 96)
    assert np.array_equal(d, f3.depth, equal_nan=True)
    _, info = msgs['/camera/camera_info'][3]
    assert np.allclose(info.k.reshape(3, 3), world.K) and info.distortion_model == 'plumb_bob'
    assert np.allclose(info.p.reshape(3, 4)[:, :3], world.K)
    _, pose = msgs['/ground_truth/pose'][3]
    from depth_ego_ros.core.geometry import quat_xyzw_to_matrix
    q = pose.pose.orientation
    assert np.allclose(quat_xyzw_to_matrix([q.x, q.y, q.z, q.w]), f3.T_world_cam[:3, :3], atol=1e-9)
    assert np.isclose(pose.pose.position.x, f3.T_world_cam[0, 3])
    _, tf = msgs['/tf_static'][0]
    tr = tf.transforms[0]
    assert (tr.header.frame_id, tr.child_frame_id) == ('base_link', 'camera_optical_frame')
    assert np.isclose(tr.transform.translation.z, 1.5)
    _, odom = msgs['/odom'][10]
    assert odom.child_frame_id == 'base_link' and odom.header.frame_id == 'odom'
    assert odom.twist.twist.linear.x > 0


@pytest.mark.timeout(60)
def test_bag_rendered_by_two_processes_is_the_same(small_bag, tmp_path):
    """workers=2 (forked renderers, the demo's setting) writes the same messages in the same order."""
    from rosbags.highlevel import AnyReader
    from depth_ego_ros.data.synth_bag import write_synth_bag
    world, out1, _ = small_bag
    out2 = tmp_path / 'bag2'
    stats = write_synth_bag(world, out2, workers=2)
    assert stats['frames'] == 8 and stats['render_s'] > 0

    def messages(path):
        with AnyReader([path]) as reader:
            return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    m1, m2 = messages(out1), messages(out2)
    assert len(m1) == len(m2) > 8
    assert m1 == m2


@pytest.mark.timeout(60)
def test_bag_readable_with_mcap(small_bag):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    world, out, _ = small_bag
    mcap_file = next(out.glob('*.mcap'))
    with open(mcap_file, 'rb') as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        imgs = [m for _, _, _, m in reader.iter_decoded_messages(topics=['/camera/image_raw'])]
    assert len(imgs) == 8
    m = imgs[5]
    assert m.encoding == 'rgb8'
    assert np.array_equal(np.frombuffer(bytes(m.data), np.uint8).reshape(32, 96, 3), world.frame(5).rgb)


@pytest.mark.timeout(60)
def test_cli_synth(tmp_path):
    from depth_ego_ros.cli.main import main
    out = tmp_path / 'b'
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(['synth', '--out', str(out), '--frames', '5', '--width', '64', '--height', '24',
                   '--seed', '3', '--quiet', '--no-ground-truth'])
    assert rc == 0
    text = buf.getvalue()
    assert 'ms/frame' in text and '5 frames 64x24' in text
    from rosbags.highlevel import AnyReader
    with AnyReader([out]) as reader:
        topics = {c.topic for c in reader.connections}
    assert '/camera/image_raw' in topics and not any(t.startswith('/ground_truth') for t in topics)
    # refuses to overwrite without --overwrite, with a clear message and exit code 2
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(['synth', '--out', str(out), '--frames', '2', '--quiet'])
    assert rc == 2 and 'exists' in err.getvalue()


# ----------------------------------------------------------------------------------------------
# moving objects
# ----------------------------------------------------------------------------------------------
MOVERS = dict(width=128, height=48, supersample=1)


def _on_box_surface(local, half, tol=1e-3):
    """Points (n,3) in a box frame lie on the box surface (inside the extents, on a face)."""
    r = np.abs(local) / half
    return (r.max(axis=1) < 1 + tol) & (np.abs(r.max(axis=1) - 1) < tol)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('scene', ['street', 'corridor'])
def test_moving_objects_exact_depth_and_consistent_ids(scene):
    cfg = SynthConfig(frames=30, seed=0, scene=scene, moving_objects=3, **MOVERS)
    world = SyntheticWorld(cfg)
    rigid = SyntheticWorld(SynthConfig(frames=30, seed=0, scene=scene, **MOVERS))
    assert world.num_moving_objects == 3 and rigid.num_moving_objects == 0
    assert np.array_equal(world.T_world_cam, rigid.T_world_cam)     # same drive, same world
    seen = set()
    for i in (0, 9, 21):
        f, r = world.frame(i), rigid.frame(i)
        assert r.instance_mask is None and r.object_poses is None
        m = f.instance_mask
        assert m.dtype == np.uint16 and m.shape == (48, 128) and f.object_poses.shape == (3, 4, 4)
        assert set(np.unique(m)) <= {0, 1, 2, 3}
        # objects only occlude: the static world is bit-identical where no object is seen
        assert np.array_equal(f.depth[m == 0], r.depth[m == 0])
        assert np.all(f.depth[m > 0] < r.depth[m > 0])
        pts = backproject_np(np.where(np.isfinite(f.depth), f.depth, 0), f.K)
        pts_w = transform_points_np(f.T_world_cam, pts)
        for k in np.unique(m[m > 0]):
            seen.add(int(k))
            # exact depth AND the right id: object k's pixels lie on object k's own boxes
            mv = world._movers[k - 1]
            local = transform_points_np(np.linalg.inv(f.object_poses[k - 1]), pts_w[m == k])
            on = np.zeros(len(local), bool)
            for c, h, *_ in mv['parts']:
                on |= _on_box_surface(local - np.array(c) * cfg.scale, np.array(h) * cfg.scale)
            assert on.all(), (scene, i, k, (~on).sum())
    assert len(seen) >= 2
    # deterministic per seed; poses agree with frame_object_poses
    again = SyntheticWorld(cfg).frame(9)
    f9 = world.frame(9)
    assert np.array_equal(again.instance_mask, f9.instance_mask) and np.array_equal(again.rgb, f9.rgb)
    np.testing.assert_allclose(world.frame_object_poses(9), f9.object_poses)
    # objects move: the lead vehicle keeps ahead of the camera, an oncoming one approaches
    P0, P1 = world.frame_object_poses(0), world.frame_object_poses(20)
    assert np.linalg.norm(P1[0, :3, 3] - P0[0, :3, 3]) > 0.5 * np.linalg.norm(
        world.T_world_cam[20, :3, 3] - world.T_world_cam[0, :3, 3])
    d = [np.linalg.norm(P[1, :2, 3] - world.T_world_cam[i, :2, 3]) for P, i in ((P0, 0), (P1, 20))]
    assert d[1] < d[0] or world._movers[1]['t_pass'] < 2.0
    with pytest.raises(ValueError, match='moving_objects'):
        SynthConfig(moving_objects=-1)


@pytest.mark.timeout(60)
def test_moving_objects_bag_has_mask_topic(tmp_path):
    from rosbags.highlevel import AnyReader
    from depth_ego_ros.cli.main import main
    out = tmp_path / 'mv'
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(['synth', '--out', str(out), '--frames', '6', '--width', '96', '--height', '32',
                   '--seed', '2', '--moving-objects', '2', '--supersample', '1', '--quiet'])
    assert rc == 0
    world = SyntheticWorld(SynthConfig(frames=6, seed=2, width=96, height=32, supersample=1,
                                       moving_objects=2))
    with AnyReader([out]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types['/camera/instance_mask'] == 'sensor_msgs/msg/Image'
        assert types['/ground_truth/objects'] == 'geometry_msgs/msg/PoseArray'
        msgs = {}
        for conn, t, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    assert len(msgs['/camera/instance_mask']) == 6
    for i in (0, 4):
        f = world.frame(i)
        (ti, img), (tm, mask) = msgs['/camera/image_raw'][i], msgs['/camera/instance_mask'][i]
        assert tm == ti == f.stamp_ns and mask.header.stamp == img.header.stamp
        assert mask.header.frame_id == img.header.frame_id == 'camera_optical_frame'
        assert mask.encoding == 'mono16' and mask.is_bigendian == 0 and mask.step == 96 * 2
        assert np.array_equal(mask.data.view('<u2').reshape(32, 96), f.instance_mask)
        assert np.array_equal(img.data.reshape(32, 96, 3), f.rgb)
        _, pa = msgs['/ground_truth/objects'][i]
        assert pa.header.frame_id == 'world' and len(pa.poses) == 2
        assert np.isclose(pa.poses[1].position.x, f.object_poses[1][0, 3])
