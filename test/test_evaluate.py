"""`depth-ego evaluate` end to end on small bags: the estimator pipeline, recorded outputs (pred =
GT must give zero errors), LiDAR ground truth (synthetic with exact answers, and the real DDAD-style
scene), ground-truth frame conversions, trajectory files, and clear errors for bad inputs."""
import json
import math
import py_compile
from importlib import util as importlib_util
from pathlib import Path

import numpy as np
import pytest

from depth_ego_ros.cli.main import main
from depth_ego_ros.core import geometry as g
from depth_ego_ros.evaluation import trajectory as tr

REPO = Path(__file__).resolve().parents[1]
W, H = 128, 64                  # tiny images; network at the same size (multiples of 32)
NET = ['--width', '128', '--height', '64', '--threads', '1', '--device', 'cpu']

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('torch_one_thread')]


# ----------------------------------------------------------------------------------------------
# bag builders
# ----------------------------------------------------------------------------------------------
def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


class BagBuilder:
    """Tiny rosbag2 writer for tests: add(topic, msgtype, stamp, msg)."""

    def __init__(self, path):
        from rosbags.rosbag2 import Writer
        self.ts = _typestore()
        self.T = self.ts.types
        self.writer = Writer(path, version=9)
        self.writer.open()
        self.conns = {}

    def connection(self, topic, msgtype):
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        return self.conns[topic]

    def add(self, topic, msgtype, stamp, msg):
        self.writer.write(self.connection(topic, msgtype), int(round(stamp * 1e9)),
                          self.ts.serialize_cdr(msg, msgtype))

    def close(self):
        self.writer.close()

    # message builders
    def header(self, stamp, frame):
        sec = int(math.floor(stamp))
        return self.T['std_msgs/msg/Header'](
            stamp=self.T['builtin_interfaces/msg/Time'](sec=sec, nanosec=int(round((stamp - sec) * 1e9)) % 10**9),
            frame_id=frame)

    def image(self, stamp, frame, arr, encoding):
        arr = np.ascontiguousarray(arr)
        return self.T['sensor_msgs/msg/Image'](header=self.header(stamp, frame), height=arr.shape[0],
                                               width=arr.shape[1], encoding=encoding, is_bigendian=0,
                                               step=arr.strides[0], data=arr.view(np.uint8).reshape(-1))

    def compressed(self, stamp, frame, rgb, fmt='jpeg'):
        import io
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format='JPEG' if fmt == 'jpeg' else 'PNG', quality=90)
        return self.T['sensor_msgs/msg/CompressedImage'](header=self.header(stamp, frame), format=fmt,
                                                         data=np.frombuffer(buf.getvalue(), np.uint8))

    def camera_info(self, stamp, frame, K, w, h):
        P = np.zeros((3, 4))
        P[:3, :3] = K
        roi = self.T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
        return self.T['sensor_msgs/msg/CameraInfo'](
            header=self.header(stamp, frame), height=h, width=w, distortion_model='plumb_bob',
            d=np.zeros(5), k=np.asarray(K, float).reshape(-1), r=np.eye(3).reshape(-1),
            p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def _pose(self, M):
        q = g.matrix_to_quat_xyzw(M[:3, :3])
        return self.T['geometry_msgs/msg/Pose'](
            position=self.T['geometry_msgs/msg/Point'](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
            orientation=self.T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))

    def pose_stamped(self, stamp, frame, M):
        return self.T['geometry_msgs/msg/PoseStamped'](header=self.header(stamp, frame), pose=self._pose(M))

    def tf(self, stamp, items):
        T = self.T
        tfs = []
        for parent, child, M in items:
            q = g.matrix_to_quat_xyzw(M[:3, :3])
            tfs.append(T['geometry_msgs/msg/TransformStamped'](
                header=self.header(stamp, parent), child_frame_id=child,
                transform=T['geometry_msgs/msg/Transform'](
                    translation=T['geometry_msgs/msg/Vector3'](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                    rotation=T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))))
        return T['tf2_msgs/msg/TFMessage'](transforms=tfs)

    def cloud(self, stamp, frame, xyz):
        T = self.T
        n = len(xyz)
        arr = np.zeros((n, 4), np.float32)
        arr[:, :3] = xyz
        arr[:, 3] = 1.0
        fields = [T['sensor_msgs/msg/PointField'](name=nm, offset=4 * k, datatype=7, count=1)
                  for k, nm in enumerate(('x', 'y', 'z', 'intensity'))]
        return T['sensor_msgs/msg/PointCloud2'](header=self.header(stamp, frame), height=1, width=n,
                                                fields=fields, is_bigendian=False, point_step=16,
                                                row_step=16 * n, data=arr.view(np.uint8).reshape(-1),
                                                is_dense=True)


def _rpy(r, p, y, xyz):
    M = np.eye(4)
    M[:3, :3] = (g.axis_angle_to_matrix_np([0, 0, y]) @ g.axis_angle_to_matrix_np([0, p, 0])
                 @ g.axis_angle_to_matrix_np([r, 0, 0]))
    M[:3, 3] = xyz
    return M


T_BASE_LIDAR = _rpy(0.02, -0.03, 0.4, [0.8, -0.3, 1.9])   # LiDAR mounted above, yawed


@pytest.fixture(scope='module')
def world():
    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    return SyntheticWorld(SynthConfig(frames=8, width=W, height=H, seed=3, supersample=1))


@pytest.fixture(scope='module')
def synth_bag(tmp_path_factory, world):
    """The project's synthetic bag (depth-ego synth): Image, CameraInfo, /odom, 32FC1 GT depth,
    GT PoseStamped (camera -> world), /tf_static base_link -> camera_optical_frame."""
    from depth_ego_ros.data.synth_bag import write_synth_bag
    out = tmp_path_factory.mktemp('synth') / 'bag'
    write_synth_bag(world, out)
    return out


@pytest.fixture(scope='module')
def lidar_bag(tmp_path_factory, world):
    """A bag built here from the same world: JPEG CompressedImage camera, 16UC1 (mm) GT depth, a
    'LiDAR' cloud made from the exact depth in a LiDAR frame (base_link -> lidar on /tf_static,
    base_link -> camera too), GT Odometry of base_link."""
    path = tmp_path_factory.mktemp('lidar') / 'bag'
    b = BagBuilder(path)
    T_base_cam = g.invert_pose(world.frame(0).T_world_base) @ world.frame(0).T_world_cam
    b.add('/tf_static', 'tf2_msgs/msg/TFMessage', world.stamps[0],
          b.tf(world.stamps[0], [('base_link', 'camera_optical_frame', T_base_cam),
                                 ('base_link', 'lidar_top', T_BASE_LIDAR)]))
    T_lidar_cam = g.invert_pose(T_BASE_LIDAR) @ T_base_cam
    rng = np.random.default_rng(0)
    for i in range(len(world)):
        f = world.frame(i)
        t = f.stamp
        b.add('/cam/camera_info', 'sensor_msgs/msg/CameraInfo', t,
              b.camera_info(t, 'camera_optical_frame', f.K, W, H))
        b.add('/cam/image/compressed', 'sensor_msgs/msg/CompressedImage', t,
              b.compressed(t, 'camera_optical_frame', f.rgb))
        mm = np.where(np.isfinite(f.depth), np.round(f.depth * 1000), 0).clip(0, 65535).astype(np.uint16)
        b.add('/gt/depth_mm', 'sensor_msgs/msg/Image', t, b.image(t, 'camera_optical_frame', mm, '16UC1'))
        # LiDAR: 30 % of the pixels with a surface closer than 60 m, in the LiDAR frame, 4 ms earlier
        pts = g.backproject_np(np.where(np.isfinite(f.depth), f.depth, 0), f.K).reshape(-1, 3)
        keep = (pts[:, 2] > 0) & (pts[:, 2] < 60) & (rng.random(len(pts)) < 0.3)
        cloud = g.transform_points_np(T_lidar_cam, pts[keep])
        b.add('/lidar/points', 'sensor_msgs/msg/PointCloud2', t - 0.004, b.cloud(t - 0.004, 'lidar_top', cloud))
        odom = b.T['nav_msgs/msg/Odometry'](
            header=b.header(t, 'world'), child_frame_id='base_link',
            pose=b.T['geometry_msgs/msg/PoseWithCovariance'](pose=b._pose(f.T_world_base), covariance=np.zeros(36)),
            twist=b.T['geometry_msgs/msg/TwistWithCovariance'](
                twist=b.T['geometry_msgs/msg/Twist'](linear=b.T['geometry_msgs/msg/Vector3'](x=f.speed, y=0.0, z=0.0),
                                                     angular=b.T['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0)),
                covariance=np.zeros(36)))
        b.add('/gt/odom', 'nav_msgs/msg/Odometry', t, odom)
    b.close()
    return path


def _run(argv, capsys):
    rc = main(['evaluate', *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _report(out):
    return json.loads((Path(out) / 'report.json').read_text())


def _png_ok(path, min_std=8.0):
    from PIL import Image
    assert path.is_file() and path.stat().st_size > 5000, path
    with Image.open(path) as im:
        a = np.asarray(im.convert('RGB')).astype(np.float64)
    assert a.shape[0] > 200 and a.shape[1] > 300
    assert a.std() > min_std, f'{path.name} looks empty (pixel std {a.std():.1f})'
    # more than a few colours: lines, images, colour bars
    assert len(np.unique(a.reshape(-1, 3)[::7], axis=0)) > 50


# ----------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------
def test_estimator_pipeline_end_to_end(synth_bag, tmp_path, capsys):
    out = tmp_path / 'eval'
    rc, stdout, err = _run(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth',
                            '--gt-poses', '/ground_truth/pose', '--out', str(out), *NET,
                            '--examples', '3'], capsys)
    assert rc == 0, err
    assert 'abs_rel' in stdout and 'ATE rmse' in stdout
    assert 'evaluate' in err and '8/8' in err                  # the tqdm progress bar ran
    r = _report(out)
    assert r['mode'] == 'estimator'
    for key in ('tool', 'inputs', 'settings', 'sizes', 'association', 'frames', 'depth',
                'trajectory', 'per_frame', 'timings', 'warnings', 'files'):
        assert key in r, key
    assert r['tool']['versions']['torch'] and r['tool']['versions']['depth_ego_ros']
    assert r['inputs']['topics']['camera']['topic'] == '/camera/image_raw'   # auto-detected
    assert r['inputs']['camera_frame'] == 'camera_optical_frame'
    s = r['settings']
    assert s['estimator']['width'] == 128 and s['estimator']['height'] == 64
    assert s['depth_metrics'] == {'min_depth': 1e-3, 'max_depth': 80.0, 'garg_crop': False,
                                  'median_scaling': True, 'pred_scale_factor': 1.0}
    assert s['align'] == 'sim3' and s['depth_max_dt'] == 0.05 and s['checkpoint']['path'] is None
    assert r['sizes'] == {'image': [W, H], 'gt_depth': [W, H], 'network': [128, 64]}
    a = r['association']['gt_depth']
    assert a['matched'] == 8 and a['unmatched'] == 0 and a['dt']['max_s'] < 1e-6
    assert 'header stamp' in r['association']['method']
    assert r['frames']['in_bag'] == 8 and r['frames']['processed'] == 8 and r['frames']['depth_evaluated'] == 8
    m = r['depth']['mean']
    assert m['n_frames'] == 8 and len(r['depth']['per_frame']) == 8
    assert 0 < m['abs_rel'] < 5 and 0 <= m['a1'] <= m['a2'] <= m['a3'] <= 1 and m['rmse'] > 0
    assert m['ratio_median'] > 0 and m['ratio_std'] >= 0
    assert np.mean([p['abs_rel'] for p in r['depth']['per_frame']]) == pytest.approx(m['abs_rel'])
    assert 0.5 < r['depth']['gt_valid_fraction_mean'] <= 1.0          # sky is invalid
    t = r['trajectory']
    assert t['association']['n_associated'] == 8 and t['alignment']['mode'] == 'sim3'
    assert math.isfinite(t['ate']['stats']['rmse']) and t['ate']['stats']['rmse'] >= 0
    assert t['rpe_translation']['n'] == 7 and t['snippet_ate_5']['n_snippets'] == 7
    assert t['path_length_gt_m'] > 1.0
    assert len(t['per_pose']) == 8
    assert any('RANDOM' in w for w in r['warnings'])
    assert r['timings']['estimator']['frames'] == 8 and r['timings']['estimator']['depth_ms_mean'] > 0
    # PNGs a person looks at
    for name in ('trajectory_top', 'trajectory_error', 'depth_abs_rel', 'depth_examples'):
        assert r['files'][name] == f'{name}.png'
        _png_ok(out / f'{name}.png')
    # trajectories in TUM and KITTI format, readable again
    est = tr.read_tum(out / 'trajectories' / 'estimate.tum')
    gt = tr.read_tum(out / 'trajectories' / 'ground_truth.tum')
    assert len(est) == len(gt) == 8
    np.testing.assert_allclose(est.poses[0], np.eye(4), atol=1e-9)
    assert len(tr.read_kitti(out / 'trajectories' / 'estimate_aligned.kitti')) == 8
    # the ATE in the report is the one the exported trajectories give
    again = tr.ape(gt, est, align_mode='sim3')
    assert again.stats['rmse'] == pytest.approx(t['ate']['stats']['rmse'], rel=1e-6, abs=1e-7)


def test_recorded_outputs_equal_to_ground_truth_give_zero_error(synth_bag, tmp_path, capsys):
    """Live-replay path with the 'predictions' replaced by the ground truth itself: every depth
    metric is perfect and ATE/RPE vanish -- the whole pipeline (decoding, association, scaling,
    alignment) is consistent."""
    for scaling in ('median', 'none'):
        out = tmp_path / scaling
        rc, stdout, err = _run(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth',
                                '--gt-poses', '/ground_truth/pose', '--pred-depth', '/ground_truth/depth',
                                '--pred-odom', '/ground_truth/pose', '--scaling', scaling,
                                '--out', str(out), '--quiet', '--stride', '2'], capsys)
        assert rc == 0, err
        r = _report(out)
        assert r['mode'] == 'recorded' and r['settings']['estimator'] is None
        assert r['frames']['selected'] == 4 and r['frames']['depth_evaluated'] == 4
        m = r['depth']['mean']
        assert m['abs_rel'] == 0 and m['sq_rel'] == 0 and m['rmse'] == 0 and m['rmse_log'] == 0
        assert m['a1'] == m['a2'] == m['a3'] == 1.0
        if scaling == 'median':
            assert m['ratio_median'] == 1.0 and m['ratio_std'] == 0
        t = r['trajectory']
        assert t['ate']['stats']['rmse'] < 1e-9 and t['rpe_translation']['stats']['rmse'] < 1e-9
        assert t['rpe_rotation_deg']['stats']['max'] < 1e-6
        assert t['alignment']['scale'] == pytest.approx(1.0, abs=1e-9)
        assert t['snippet_ate_5']['mean'] < 1e-9
        _png_ok(out / 'depth_examples.png')


def test_pose_file_and_frame_conversion(synth_bag, tmp_path, capsys):
    """GT from a TUM file gives the same figures as from the topic; GT odometry of base_link is
    moved to the camera frame with /tf_static (without that, the relative motions differ)."""
    gt_tum = tmp_path / 'gt.tum'
    from depth_ego_ros.data.bag_reader import pose_message
    from depth_ego_ros.data.bags import TypeCatalog, read_messages
    cat = TypeCatalog()
    samples = [pose_message(cat.deserialize(m.data, m.msgtype), m.msgtype)[0]
               for m in read_messages(synth_bag, ['/ground_truth/pose'])]
    # a slightly perturbed GT so that the errors are not zero
    rng = np.random.default_rng(5)
    poses = np.stack([s[1] for s in samples])
    poses[:, :3, 3] += rng.normal(scale=0.05, size=(len(poses), 3))
    tr.write_tum(gt_tum, tr.Trajectory(poses, np.array([s[0] for s in samples])))
    common = ['--bag', str(synth_bag), '--pred-odom', '/ground_truth/pose', '--quiet', '--no-plots',
              '--align', 'se3']
    rc, _, err = _run([*common, '--gt-poses', str(gt_tum), '--out', str(tmp_path / 'file')], capsys)
    assert rc == 0, err
    ate_file = _report(tmp_path / 'file')['trajectory']['ate']['stats']['rmse']
    assert 0.02 < ate_file < 0.15
    # same file through the evo-compatible module directly
    est = tr.read_tum(tmp_path / 'file' / 'trajectories' / 'estimate.tum')
    assert tr.ape(tr.read_tum(gt_tum), est, 'se3', max_diff=0.02).stats['rmse'] == pytest.approx(ate_file)

    # base_link odometry (50 Hz, planar dead reckoning) as GT against the camera poses
    rc, _, err = _run([*common, '--gt-poses', '/odom', '--out', str(tmp_path / 'odom')], capsys)
    assert rc == 0, err
    r = _report(tmp_path / 'odom')
    assert any('converted to the camera frame' in n for n in r['notes'])
    assert r['trajectory']['ate']['stats']['rmse'] < 0.2
    assert r['trajectory']['rpe_translation']['stats']['rmse'] < 0.1
    # the 50 Hz odometry interpolated at the frame stamps: the same poses (frames fall on samples)
    rc, _, err = _run([*common, '--gt-poses', '/odom', '--pose-association', 'interpolate',
                       '--out', str(tmp_path / 'interp')], capsys)
    assert rc == 0, err
    ri = _report(tmp_path / 'interp')['trajectory']
    assert ri['association']['method'].startswith('GT interpolated')
    assert ri['ate']['stats']['rmse'] == pytest.approx(r['trajectory']['ate']['stats']['rmse'], rel=1e-6)
    # ground truth but no estimate: nothing to evaluate, said clearly
    _expect_error(['--bag', str(synth_bag), '--gt-poses', '/odom', '--pred-depth', '/ground_truth/depth',
                   '--out', str(tmp_path / 'none')], capsys, 'nothing to evaluate')


def test_lidar_ground_truth_through_tf_static(lidar_bag, world, tmp_path, capsys):
    """A LiDAR cloud in its own frame, placed by a /tf_static chain (base_link -> lidar_top,
    base_link -> camera): rendered into the camera it must reproduce the depth it was made from.
    The 16UC1 (mm) depth image is the 'prediction', the compressed camera stream is auto-found."""
    out = tmp_path / 'lidar'
    rc, _, err = _run(['--bag', str(lidar_bag), '--gt-cloud', '/lidar/points', '--pred-depth',
                       '/gt/depth_mm', '--scaling', 'none', '--out', str(out), '--quiet'], capsys)
    assert rc == 0, err
    r = _report(out)
    ext = r['settings']['lidar_to_camera']
    assert ext['source'] == '/tf_static: lidar_top -> camera_optical_frame'
    m = r['depth']['mean']
    assert m['abs_rel'] < 2e-3 and m['a1'] == 1.0            # mm quantisation only
    assert r['association']['gt_cloud']['dt']['max_s'] == pytest.approx(0.004, abs=1e-6)
    for p in r['per_frame']:
        assert 0.1 < p['gt_valid_fraction'] < 0.35                # 30 % of the surface pixels
        assert p['cloud']['n_in_image'] == p['cloud']['n_points']
    assert r['inputs']['topics']['camera']['type'] == 'sensor_msgs/msg/CompressedImage'
    _png_ok(out / 'depth_examples.png')
    T_cam_lidar = np.array(ext['T_cam_lidar'])
    T_base_cam = g.invert_pose(world.frame(0).T_world_base) @ world.frame(0).T_world_cam
    np.testing.assert_allclose(T_cam_lidar, g.invert_pose(T_base_cam) @ T_BASE_LIDAR, atol=1e-9)
    # the same extrinsic given on the command line gives the same figures; 30 cm off is visible
    for shift, check in ((0.0, lambda a: a == pytest.approx(m['abs_rel'], abs=1e-9)),
                         (0.3, lambda a: a > 10 * m['abs_rel'] and a > 0.01)):
        T = T_cam_lidar.copy()
        T[0, 3] += shift
        rc, _, err = _run(['--bag', str(lidar_bag), '--gt-cloud', '/lidar/points', '--pred-depth',
                           '/gt/depth_mm', '--scaling', 'none', '--out', str(tmp_path / 'given'),
                           '--quiet', '--no-plots', '--lidar-to-camera', *map(str, T.reshape(-1))], capsys)
        assert rc == 0, err
        r2 = _report(tmp_path / 'given')
        assert r2['settings']['lidar_to_camera']['source'].startswith('given')
        assert check(r2['depth']['mean']['abs_rel']), (shift, r2['depth']['mean']['abs_rel'])


def test_estimator_on_compressed_camera_with_odometry_gt(lidar_bag, tmp_path, capsys):
    out = tmp_path / 'est'
    rc, _, err = _run(['--bag', str(lidar_bag), '--camera-topic', '/cam/image/compressed',
                       '--gt-cloud', '/lidar/points', '--gt-poses', '/gt/odom', '--out', str(out),
                       '--quiet', '--max-frames', '5', *NET], capsys)
    assert rc == 0, err
    r = _report(out)
    assert r['frames']['selected'] == 5 and r['trajectory']['association']['n_associated'] == 5
    assert any('base_link converted to the camera frame' in n for n in r['notes'])
    assert r['depth']['mean']['n_frames'] == 5


def test_ddad_lidar_projects_into_camera_01(shared_data, tmp_path, capsys):
    """The real DDAD-style scene as a bag (CAMERA_01 JPEG at 1/8 size + CameraInfo, the LiDAR
    sweep as PointCloud2 in its own frame, calibration on /tf_static): the LiDAR points land inside
    CAMERA_01 with plausible depths and give a plausible sparse GT depth image."""
    from PIL import Image
    from depth_ego_ros.data import real_datasets as rd
    scene = rd.DGPScene.from_folder(shared_data / 'real' / 'ddad_style_lidar_scene' / 'scene_02')
    bag_path = tmp_path / 'ddad'
    b = BagBuilder(bag_path)
    T_body_cam, T_body_lidar = scene.T_body_sensor('CAMERA_01'), scene.T_body_sensor('LIDAR')
    w, h = 1936 // 8, 1216 // 8
    K = g.intrinsics_for_resize(scene.K('CAMERA_01'), (1936, 1216), (w, h))
    base = 1_600_000_000.0

    def stamp(datum):               # DGP file names are 1e-7 s since an epoch far in the future
        return base + (int(Path(datum.path).stem) - 15616458240000000) * 1e-7

    b.add('/tf_static', 'tf2_msgs/msg/TFMessage', base,
          b.tf(base, [('base_link', 'camera_01', T_body_cam), ('base_link', 'lidar', T_body_lidar)]))
    expected = []
    for i in range(len(scene)):
        cam, lid = scene.datum(i, 'CAMERA_01'), scene.datum(i, 'LIDAR')
        with Image.open(cam.path) as im:
            rgb = np.asarray(im.convert('RGB').resize((w, h), Image.BILINEAR))
        tc, tl = stamp(cam), stamp(lid)
        b.add('/camera_01/camera_info', 'sensor_msgs/msg/CameraInfo', tc, b.camera_info(tc, 'camera_01', K, w, h))
        b.add('/camera_01/image', 'sensor_msgs/msg/Image', tc, b.image(tc, 'camera_01', rgb, 'rgb8'))
        pts = scene.load_points(lid)[:, :3]
        b.add('/lidar/points', 'sensor_msgs/msg/PointCloud2', tl, b.cloud(tl, 'lidar', pts))
        b.add('/gt/camera_pose', 'geometry_msgs/msg/PoseStamped', tc, b.pose_stamped(tc, 'world', cam.T_world_sensor))
        T_cal = g.invert_pose(T_body_cam) @ T_body_lidar
        expected.append(int(g.project_points_to_image(pts.astype(np.float32), T_cal, K, w, h)[2].sum()))
    b.close()

    out = tmp_path / 'eval'
    rc, _, err = _run(['--bag', str(bag_path), '--gt-cloud', '/lidar/points', '--gt-poses',
                       '/gt/camera_pose', '--pose-max-dt', '0.01',
                       '--max-depth', '200', '--out', str(out), '--quiet', '--width', '128',
                       '--height', '96', '--threads', '1', '--device', 'cpu'], capsys)
    assert rc == 0, err
    r = _report(out)
    np.testing.assert_allclose(np.array(r['settings']['lidar_to_camera']['T_cam_lidar']),
                               g.invert_pose(T_body_cam) @ T_body_lidar, atol=1e-9)
    dts = r['association']['gt_cloud']['dt']
    assert r['association']['gt_cloud']['matched'] == 3 and 0.005 < dts['max_s'] < 0.02  # LiDAR ~9 ms later
    for p, n_exp in zip(r['per_frame'], expected):
        c = p['cloud']
        assert c['n_points'] > 40000
        assert c['n_in_image'] == n_exp                    # same points, same K, same extrinsic
        assert c['n_in_image'] > 3000 and 0.05 < c['n_in_image'] / c['n_points'] < 0.3
        assert 3.0 < c['z_median_in_image'] < 60.0 and 3.0 < p['gt_median'] < 60.0
        assert 0.02 < p['gt_valid_fraction'] < 0.3          # sparse, but not a sliver
    assert r['depth']['mean']['n_frames'] == 3
    assert r['trajectory']['association']['n_associated'] == 3
    assert r['trajectory']['path_length_gt_m'] == pytest.approx(2.55, abs=0.3)   # ~1.3 m/s
    _png_ok(out / 'depth_examples.png')


# ----------------------------------------------------------------------------------------------
# bad inputs: clear errors, no traceback
# ----------------------------------------------------------------------------------------------
def _expect_error(argv, capsys, *needles):
    rc, _, err = _run(argv, capsys)
    assert rc == 2, err
    assert 'Traceback' not in err and 'depth-ego evaluate: error:' in err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_missing_topic_names_it(synth_bag, tmp_path, capsys):
    _expect_error(['--bag', str(synth_bag), '--gt-depth', '/lidar/depth', '--out', str(tmp_path)],
                  capsys, "'/lidar/depth'", 'ground-truth depth', 'not in bag', '/ground_truth/depth')
    _expect_error(['--bag', str(synth_bag), '--gt-cloud', '/ground_truth/depth', '--out', str(tmp_path)],
                  capsys, "'/ground_truth/depth'", 'PointCloud2')
    _expect_error(['--bag', str(synth_bag), '--gt-poses', 'no_such_file.txt', '--out', str(tmp_path)],
                  capsys, 'no_such_file.txt', 'neither a topic')
    _expect_error(['--bag', str(synth_bag), '--out', str(tmp_path)], capsys, 'nothing to compare')
    _expect_error(['--bag', str(tmp_path / 'nope'), '--gt-depth', '/d', '--out', str(tmp_path)],
                  capsys, 'nope')
    _expect_error(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth', '--camera-topic',
                   '/camera/raw', '--out', str(tmp_path)], capsys, "'/camera/raw' (camera)")


def test_timestamps_beyond_the_association_window(synth_bag, tmp_path, capsys):
    gt = tmp_path / 'late.tum'
    st = 1_700_000_000.0 + 0.1 * np.arange(8) + 5.0                 # 5 s late
    tr.write_tum(gt, tr.Trajectory(np.repeat(np.eye(4)[None], 8, 0), st))
    err = _expect_error(['--bag', str(synth_bag), '--gt-poses', str(gt), '--out', str(tmp_path / 'o'),
                         *NET], capsys, 'no ground-truth pose', 'within 0.02 s', '--pose-max-dt')
    assert '1700000005.000' in err                                  # the spans are shown
    assert not (tmp_path / 'o' / 'report.json').exists()


def test_depth_stamps_beyond_window(tmp_path, capsys, world):
    path = tmp_path / 'shifted'
    b = BagBuilder(path)
    for i in range(3):
        f = world.frame(i)
        b.add('/c/image', 'sensor_msgs/msg/Image', f.stamp, b.image(f.stamp, 'cam', f.rgb, 'rgb8'))
        b.add('/c/camera_info', 'sensor_msgs/msg/CameraInfo', f.stamp, b.camera_info(f.stamp, 'cam', f.K, W, H))
        t = f.stamp + 0.5
        b.add('/gt/depth', 'sensor_msgs/msg/Image', t, b.image(t, 'cam', f.depth.astype(np.float32), '32FC1'))
        b.add('/velodyne/points', 'sensor_msgs/msg/PointCloud2', f.stamp,
              b.cloud(f.stamp, 'velodyne', np.array([[1.0, 2.0, 3.0]] * 4)))
    b.close()
    # a cloud whose frame /tf_static does not link to the camera
    _expect_error(['--bag', str(path), '--gt-cloud', '/velodyne/points', '--out', str(tmp_path / 'o'),
                   *NET], capsys, "cloud frame 'velodyne'", "camera frame 'cam'", '--lidar-to-camera')
    _expect_error(['--bag', str(path), '--gt-depth', '/gt/depth', '--out', str(tmp_path / 'o'), *NET],
                  capsys, "no ground-truth depth on '/gt/depth' within 0.05 s", '--depth-max-dt')
    # with a wide enough window it runs and states the association
    rc, _, err = _run(['--bag', str(path), '--gt-depth', '/gt/depth', '--out', str(tmp_path / 'o'),
                       '--depth-max-dt', '0.6', '--quiet', '--no-plots', *NET], capsys)
    assert rc == 0, err
    a = _report(tmp_path / 'o')['association']['gt_depth']
    assert a['matched'] == 3 and a['dt']['max_s'] == pytest.approx(0.5, abs=1e-6)


def test_empty_bag(tmp_path, capsys):
    path = tmp_path / 'empty'
    b = BagBuilder(path)
    b.connection('/camera/image_raw', 'sensor_msgs/msg/Image')
    b.close()
    _expect_error(['--bag', str(path), '--gt-depth', '/d', '--out', str(tmp_path / 'o')], capsys,
                  'no messages', 'empty bag')


# ----------------------------------------------------------------------------------------------
# launch file (launch / launch_ros are not installed here: syntax, and the player decision)
# ----------------------------------------------------------------------------------------------
def test_replay_launch_file(monkeypatch):
    path = REPO / 'launch' / 'replay_eval.launch.py'
    py_compile.compile(str(path), doraise=True)
    spec = importlib_util.spec_from_file_location('replay_eval_launch', path)
    mod = importlib_util.module_from_spec(spec)
    spec.loader.exec_module(mod)                      # no launch import at module level
    assert callable(mod.generate_launch_description)
    topics = ['/camera/image_raw', '/camera/camera_info', '/tf_static']
    cmd = mod.player_command('bags/run', topics, '0.5', '2', player='depth-ego')
    assert cmd[-4:] == ['--topics', *topics] and cmd[cmd.index('--rate') + 1] == '0.5'
    assert 'play' in cmd and cmd[cmd.index('--delay') + 1] == '2' and '--wait-for-subscribers' in cmd
    assert mod.player_command('b', topics, player='ros2')[:4] == ['ros2', 'bag', 'play', 'b']
    monkeypatch.setattr(mod.shutil, 'which', lambda name: None)
    assert mod.player_command('b', topics)[0] != 'ros2'          # no distro here -> depth-ego play
    assert mod.output_topics('depth_ego') == ['/depth_ego/depth', '/depth_ego/depth/camera_info',
                                              '/depth_ego/odom']


def test_camera_auto_detection_skips_instance_masks(tmp_path, capsys):
    """A bag with moving objects also carries /camera/instance_mask (mono16): the camera is still
    auto-detected (a mask topic is never taken for the camera)."""
    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    from depth_ego_ros.data.synth_bag import write_synth_bag
    bag = tmp_path / 'bag'
    write_synth_bag(SyntheticWorld(SynthConfig(frames=4, width=W, height=H, seed=3, supersample=1,
                                               moving_objects=2)), bag)
    out = tmp_path / 'eval'
    rc, _, err = _run(['--bag', str(bag), '--gt-depth', '/ground_truth/depth', '--out', str(out),
                       *NET, '--examples', '0'], capsys)
    assert rc == 0, err
    assert _report(out)['inputs']['topics']['camera']['topic'] == '/camera/image_raw'


def test_online_refinement_while_evaluating(synth_bag, tmp_path, capsys):
    """--online-refinement: the evaluator drives the refiner (one round every 2 frames) and
    reports its rounds; later frames are predicted by the adapted weights."""
    out = tmp_path / 'eval'
    rc, stdout, err = _run(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth',
                            '--out', str(out), *NET, '--examples', '0', '--no-plots', '--quiet',
                            '--online-refinement', '--refine-every', '2', '--refine-window', '4',
                            '--refine-steps', '2', '--refine-lr', '1e-3'], capsys)
    assert rc == 0, err
    assert 'online refinement:' in stdout
    r = _report(out)
    o = r['online_refinement']
    assert o['refine_every'] == 2 and o['config']['window'] == 4 and o['config']['steps'] == 2
    st = o['stats']
    rounds = [p['refinement'] for p in r['per_frame'] if 'refinement' in p]
    # frames 2, 4, 6, 8 end a round (the first needs three frames in the window: from frame 4 on)
    assert st['rounds'] == len(rounds) >= 3
    assert st['accepted'] + st['rejected'] + st['nonfinite'] == st['rounds']
    for x in rounds:
        assert math.isfinite(x['loss_before'])
        assert x['accepted'] == (x['loss_after'] < x['loss_before'])
    assert st['weights_version'] == st['accepted']
    # refusals: recorded outputs cannot be refined; a bad refiner setting is named
    _expect_error(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth', '--pred-depth',
                   '/ground_truth/depth', '--online-refinement', '--out', str(tmp_path / 'x')],
                  capsys, 'online refinement', 'recorded outputs')
    _expect_error(['--bag', str(synth_bag), '--gt-depth', '/ground_truth/depth', *NET,
                   '--online-refinement', '--refine-window', '2', '--out', str(tmp_path / 'y')],
                  capsys, 'online refinement', 'window')
