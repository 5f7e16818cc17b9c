"""Message conversions (project's own path; cv_bridge/sensor_msgs_py parity where installed),
QoS names, parameter declarations and the node's runtime helpers."""
import math
import threading
import time

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')

from sensor_msgs.msg import CompressedImage, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from depth_ego_ros.ros import compat, conversions as cv  # noqa: E402
from depth_ego_ros.ros.qos import profile  # noqa: E402
from depth_ego_ros.ros.runtime import KeyedThrottle, LatestSlot, RateMeter  # noqa: E402

RNG = np.random.default_rng(0)


def rgb_image(h=5, w=7):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def padded_msg(array, encoding, pad, bigendian=False):
    """Hand-built Image with `pad` bytes at the end of each row (what some drivers send)."""
    a = np.asarray(array)
    if bigendian:
        a = a.astype(a.dtype.newbyteorder('>'))
    rows = a.reshape(a.shape[0], -1).view(np.uint8).reshape(a.shape[0], -1)
    data = np.concatenate([rows, np.full((a.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=a.shape[0], width=a.shape[1], encoding=encoding,
                is_bigendian=int(bigendian), step=data.shape[1])
    msg.data = data.tobytes()
    return msg


# ---------------------------------------------------------------------------------------------
# raw images
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_colour_encodings_round_trip_to_rgb(encoding):
    rgb = rgb_image()
    msg = cv.rgb8_to_image(rgb, encoding)
    assert msg.encoding == encoding and msg.width == 7 and msg.height == 5
    out = cv.image_to_rgb8(msg, use_cv_bridge=False)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    if encoding == 'mono8':
        grey = np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        assert np.array_equal(out[:, :, 0], grey.astype(np.uint8))
        assert np.array_equal(out[:, :, 0], out[:, :, 2])
    else:
        assert np.array_equal(out, rgb)


def test_bgr_channel_order_is_swapped():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = [10, 20, 30]
    msg = cv.rgb8_to_image(rgb, 'bgr8')
    assert list(msg.data) == [30, 20, 10]
    bgra = cv.rgb8_to_image(rgb, 'bgra8')
    assert list(bgra.data) == [30, 20, 10, 255]


@pytest.mark.parametrize('encoding,dtype,channels', [
    ('rgb8', np.uint8, 3), ('mono8', np.uint8, 1), ('32FC1', np.float32, 1), ('16UC1', np.uint16, 1),
    ('bgra8', np.uint8, 4)])
@pytest.mark.parametrize('pad', [0, 3, 8])
def test_step_padding_is_dropped(encoding, dtype, channels, pad):
    shape = (4, 6) if channels == 1 else (4, 6, channels)
    a = (RNG.random(shape) * 1000).astype(dtype)
    msg = padded_msg(a, encoding, pad)
    out = cv.image_to_numpy(msg, use_cv_bridge=False)
    assert out.dtype == np.dtype(dtype) and out.shape == a.shape
    assert np.array_equal(out, a)


@pytest.mark.parametrize('encoding,dtype', [('32FC1', np.float32), ('16UC1', np.uint16)])
@pytest.mark.parametrize('pad', [0, 1])
def test_big_endian_data_is_swapped(encoding, dtype, pad):
    a = (RNG.random((3, 5)) * 5000).astype(dtype)
    msg = padded_msg(a, encoding, pad, bigendian=True)
    out = cv.image_to_numpy(msg, use_cv_bridge=False)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert np.array_equal(out, a)


def test_depth_encodings_round_trip_and_nan_survives():
    depth = RNG.random((6, 4)).astype(np.float32) * 10
    depth[0, 0] = np.nan
    msg = cv.numpy_to_image(depth, '32FC1')
    assert msg.step == 16 and msg.is_bigendian == 0 and len(msg.data) == 6 * 16
    back = cv.image_to_numpy(msg, use_cv_bridge=False)
    assert np.array_equal(back, depth, equal_nan=True)
    mm = (depth[1:] * 1000).astype(np.uint16)
    assert np.array_equal(cv.image_to_numpy(cv.numpy_to_image(mm, '16UC1'), use_cv_bridge=False), mm)


@pytest.mark.parametrize('mutate,needle', [
    (lambda m: setattr(m, 'encoding', 'yuv422'), "unsupported image encoding 'yuv422'"),
    (lambda m: setattr(m, 'encoding', 'rgb16'), 'unsupported image encoding'),
    (lambda m: setattr(m, 'step', 20), 'step/size mismatch'),
    (lambda m: setattr(m, 'data', bytes(m.data)[:-5]), 'truncated image data'),
    (lambda m: setattr(m, 'data', bytes(m.data) + b'xx'), 'size mismatch'),
    (lambda m: setattr(m, 'width', 0), 'zero size'),
    (lambda m: setattr(m, 'height', 9), 'truncated image data'),
])
def test_malformed_images_raise_clear_value_errors(mutate, needle):
    msg = cv.rgb8_to_image(rgb_image(), 'rgb8')
    mutate(msg)
    with pytest.raises(ValueError, match=needle):
        cv.image_to_rgb8(msg, use_cv_bridge=False)


def test_depth_encoding_is_not_a_camera_image():
    msg = cv.numpy_to_image(np.ones((2, 2), np.float32), '32FC1')
    with pytest.raises(ValueError, match='not a camera colour image'):
        cv.image_to_rgb8(msg)


def test_numpy_to_image_checks_dtype_and_shape():
    with pytest.raises(ValueError, match='uint8'):
        cv.numpy_to_image(np.zeros((2, 2, 3), np.float32), 'rgb8')
    with pytest.raises(ValueError, match=r'\(H,W\)'):
        cv.numpy_to_image(np.zeros((2, 2, 3), np.float32), '32FC1')


@pytest.mark.skipif(compat.cv_bridge is None, reason='cv_bridge not installed (ROS distro only)')
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', '32FC1', '16UC1'])
@pytest.mark.parametrize('pad_pixels', [0, 2, 0.5])
@pytest.mark.parametrize('bigendian', [False, True])
def test_cv_bridge_path_matches_own_path(encoding, pad_pixels, bigendian):
    dtype, channels = cv.IMAGE_ENCODINGS[encoding]
    shape = (4, 6) if channels == 1 else (4, 6, channels)
    pad = int(pad_pixels * channels * np.dtype(dtype).itemsize)
    a = (RNG.random(shape) * 200).astype(dtype)
    msg = padded_msg(a, encoding, pad, bigendian=bigendian)
    assert np.array_equal(cv.image_to_numpy(msg, use_cv_bridge=True), a)
    assert np.array_equal(cv.image_to_numpy(msg, use_cv_bridge=False), a)
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ValueError, match='truncated'):
        cv.image_to_numpy(msg, use_cv_bridge=True)


# ---------------------------------------------------------------------------------------------
# compressed
# ---------------------------------------------------------------------------------------------
def test_png_is_lossless_and_jpeg_close():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = [200, 30, 30]
    rgb[:, 16:32] = [30, 200, 30]
    rgb[:, 32:] = [30, 30, 200]
    png = cv.rgb8_to_compressed(rgb, 'png')
    assert png.format == 'rgb8; png compressed bgr8'
    assert np.array_equal(cv.compressed_to_rgb8(png), rgb)
    jpg = cv.rgb8_to_compressed(rgb, 'jpeg', quality=95)
    out = cv.compressed_to_rgb8(jpg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out[4:-4, 4:12].astype(int) - [200, 30, 30]).max() < 12   # red stays red


def test_real_jpeg_frame_decodes(shared_data):
    path = sorted((shared_data / 'real/ddad_style_lidar_scene/scene_01/rgb/CAMERA_01').glob('*.jpg'))[0]
    msg = CompressedImage(format='jpeg')
    msg.data = path.read_bytes()
    rgb = cv.compressed_to_rgb8(msg)
    assert rgb.shape == (1216, 1936, 3) and rgb.std() > 10


@pytest.mark.parametrize('data,needle', [
    (b'', 'no data'),
    (b'\xff\xd8\xff\xe0garbage' * 10, 'cannot decode'),
    (b'not an image at all', 'cannot decode'),
])
def test_corrupt_compressed_bytes_raise(data, needle):
    msg = CompressedImage(format='jpeg')
    msg.data = data
    with pytest.raises(ValueError, match=needle):
        cv.compressed_to_rgb8(msg)


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
@pytest.mark.parametrize('keep', [0.5, 0.98])
def test_truncated_compressed_raises(fmt, keep):
    msg = cv.rgb8_to_compressed(rgb_image(64, 64), fmt)
    msg.data = bytes(msg.data)[: int(len(msg.data) * keep)]
    with pytest.raises(ValueError, match=f'cannot decode.*truncated {fmt.upper()}'):
        cv.compressed_to_rgb8(msg)


@pytest.mark.skipif(compat.cv2 is None, reason='cv2 not installed (a ROS distro has it)')
@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_cv2_and_pillow_decoders_agree(fmt, monkeypatch):
    msg = cv.rgb8_to_compressed(rgb_image(40, 48), fmt, quality=95)
    with_cv2 = cv.compressed_to_rgb8(msg)
    monkeypatch.setattr(compat, 'cv2', None)
    with_pil = cv.compressed_to_rgb8(msg)
    assert with_cv2.shape == with_pil.shape == (40, 48, 3)
    assert np.abs(with_cv2.astype(int) - with_pil).max() <= (0 if fmt == 'png' else 8)
    monkeypatch.undo()
    msg.data = b'garbage' * 10
    with pytest.raises(ValueError, match='cannot decode'):
        cv.compressed_to_rgb8(msg)


def test_jpeg_with_trailing_padding_decodes():
    rgb = np.full((16, 16, 3), 100, np.uint8)
    msg = cv.rgb8_to_compressed(rgb, 'jpeg')
    msg.data = bytes(msg.data) + b'\x00' * 32          # some cameras pad their JPEG buffers
    assert np.abs(cv.compressed_to_rgb8(msg).astype(int) - 100).max() < 4


# ---------------------------------------------------------------------------------------------
# camera info
# ---------------------------------------------------------------------------------------------
def test_camera_info_round_trip_and_header_copy():
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    info = cv.make_camera_info(K, 640, 480, Header(frame_id='cam'))
    assert info.width == 640 and info.distortion_model == 'plumb_bob'
    assert np.allclose(cv.camera_info_to_k(info), K)
    assert np.allclose(np.asarray(info.p).reshape(3, 4)[:, :3], K)
    out = cv.camera_info_with_header(info, Header(frame_id='other', stamp=cv.sec_to_stamp(3.5)))
    assert out.header.frame_id == 'other' and out.header.stamp.sec == 3
    assert np.array_equal(out.k, info.k) and out.height == 480


@pytest.mark.parametrize('k', [np.zeros(9), [np.nan, 0, 1, 0, 1, 1, 0, 0, 1], [-1, 0, 1, 0, 1, 1, 0, 0, 1]])
def test_unusable_intrinsics_raise(k):
    info = cv.make_camera_info(np.eye(3), 4, 4)
    info.k = np.asarray(k, dtype=np.float64)
    with pytest.raises(ValueError, match='camera_info K is not usable'):
        cv.camera_info_to_k(info)


# ---------------------------------------------------------------------------------------------
# point clouds
# ---------------------------------------------------------------------------------------------
def test_cloud_layout_is_what_rviz_expects():
    pts = RNG.random((50, 3)).astype(np.float32)
    cols = RNG.integers(0, 256, (50, 3), dtype=np.uint8)
    msg = cv.xyzrgb_to_cloud(pts, cols, Header(frame_id='cam'))
    assert isinstance(msg, PointCloud2)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('rgb', 12, 7, 1)]
    assert msg.point_step == 16 and msg.row_step == 16 * 50 and msg.height == 1 and msg.width == 50
    assert msg.is_dense and len(msg.data) == 800
    # rgb bits are 0x00RRGGBB in a float32
    raw = np.frombuffer(bytes(msg.data), np.uint32).reshape(50, 4)
    assert np.array_equal(raw[:, 3], (cols[:, 0].astype(np.uint32) << 16)
                          | (cols[:, 1].astype(np.uint32) << 8) | cols[:, 2])
    p2, c2 = cv.cloud_to_xyzrgb(msg)
    assert np.array_equal(p2, pts) and np.array_equal(c2, cols)


def test_cloud_reader_handles_padding_and_xyz_only():
    pts = RNG.random((6, 3)).astype(np.float32)
    msg = cv.xyzrgb_to_cloud(pts)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z'] and msg.point_step == 12
    p, c = cv.cloud_to_xyzrgb(msg)
    assert c is None and np.array_equal(p, pts)
    # organised 2x3 cloud with 4 bytes of padding after each row
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(2, 36)
    msg.data = np.concatenate([rows, np.zeros((2, 4), np.uint8)], axis=1).tobytes()
    msg.height, msg.width, msg.row_step = 2, 3, 40
    p, _ = cv.cloud_to_xyzrgb(msg)
    assert np.array_equal(p, pts)
    msg.data = bytes(msg.data)[:50]
    with pytest.raises(ValueError, match='truncated'):
        cv.cloud_to_xyzrgb(msg)


def test_packed_points_become_a_cloud_with_one_copy():
    pts = RNG.random((7, 3)).astype(np.float32)
    cols = RNG.integers(0, 256, (7, 3), dtype=np.uint8)
    packed = np.concatenate([pts, cv.pack_rgb(cols)[:, None]], axis=1)
    msg = cv.packed_to_cloud(packed, Header(frame_id='cam'))
    assert bytes(msg.data) == packed.tobytes() and msg.point_step == 16
    p2, c2 = cv.cloud_to_xyzrgb(msg)
    assert np.array_equal(p2, pts) and np.array_equal(c2, cols)
    assert cv.packed_to_cloud(pts).point_step == 12
    with pytest.raises(ValueError, match=r'\(N,3\) or \(N,4\)'):
        cv.packed_to_cloud(np.zeros((3, 5), np.float32))


def test_cloud_with_nan_is_not_dense():
    pts = np.array([[0, 0, 1], [np.nan, 0, 1]], np.float32)
    assert not cv.xyzrgb_to_cloud(pts, np.zeros((2, 3), np.uint8)).is_dense


# ---------------------------------------------------------------------------------------------
# poses and time
# ---------------------------------------------------------------------------------------------
def _pose(angle, axis, t):
    from transforms3d.axangles import axangle2mat
    T = np.eye(4)
    T[:3, :3] = axangle2mat(axis, angle)
    T[:3, 3] = t
    return T


def test_transform_and_odometry_round_trip_quaternion_xyzw():
    T = _pose(math.pi / 2, [0, 0, 1], [1, 2, 3])
    tf = cv.pose_to_transform(T, cv.sec_to_stamp(1.25), 'odom', 'base_link')
    q = tf.transform.rotation
    assert (q.x, q.y) == (0.0, 0.0) and q.z == pytest.approx(math.sqrt(0.5)) and q.w == pytest.approx(math.sqrt(0.5))
    assert tf.header.frame_id == 'odom' and tf.child_frame_id == 'base_link'
    assert np.allclose(cv.transform_to_matrix(tf), T)
    T2 = _pose(2.9, [0.3, -1, 0.2], [-1, 0.5, 4])
    odom = cv.pose_to_odometry(T2, tf.header.stamp, 'odom', 'cam', linear=[1, 0, 0], angular=[0, 0, 0.5],
                               pose_covariance=np.eye(6) * 0.1, twist_covariance=np.eye(6))
    assert np.allclose(cv.odometry_to_matrix(odom), T2)
    assert odom.twist.twist.linear.x == 1.0 and odom.twist.twist.angular.z == 0.5
    assert odom.pose.covariance[0] == pytest.approx(0.1) and odom.pose.covariance[1] == 0.0
    with pytest.raises(ValueError, match='4x4'):
        cv.pose_to_transform(np.eye(3), tf.header.stamp, 'a', 'b')


def test_stamps():
    s = cv.sec_to_stamp(1700000000.123456789)
    assert s.sec == 1700000000 and abs(s.nanosec - 123456789) < 300
    assert cv.stamp_to_ns(s) == s.sec * 10**9 + s.nanosec
    assert cv.stamp_to_sec(cv.sec_to_stamp(2.5)) == 2.5


# ---------------------------------------------------------------------------------------------
# QoS, parameters, runtime helpers
# ---------------------------------------------------------------------------------------------
def test_qos_names():
    from rclpy.qos import ReliabilityPolicy
    assert profile('sensor_data', 1).reliability == ReliabilityPolicy.BEST_EFFORT
    assert profile('reliable', 5).reliability == ReliabilityPolicy.RELIABLE
    assert profile('reliable', 5).depth == 5
    with pytest.raises(ValueError, match='unknown QoS profile'):
        profile('fast')


def test_param_checks():
    from depth_ego_ros.ros.params import Param
    p = Param('device', 'auto', 'd', choices=('auto', 'cpu', 'cuda'),
              pattern_ok=lambda v: v.startswith('cuda:'), pattern_help='or cuda:N')
    assert p.check('cpu') is None and p.check('cuda:1') is None
    assert 'not one of' in p.check('tpu')
    r = Param('stride', 4, 's', range=(1, 64))
    assert r.check(0) and r.check(4) is None
    assert r.descriptor().integer_range[0].to_value == 64
    f = Param('min_depth', 0.1, 'm', range=(0.001, 1000.0))
    assert f.descriptor().floating_point_range[0].from_value == 0.001
    assert Param('xyz', [0.0, 0.0, 0.0], 'x', length=3).check([1.0]) is not None


def test_latest_slot_keeps_newest_and_counts_drops():
    slot = LatestSlot()
    for i in range(10):
        slot.put(i)
    assert slot.take(0.1) == 9 and slot.dropped == 9
    assert slot.take(0.01) is None
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    worker.start()
    time.sleep(0.05)
    slot.put('x')
    worker.join(2)
    assert got == ['x']
    slot.close()
    assert slot.take(1.0) is None


def test_rate_meter_and_throttle():
    now = [0.0]
    rm = RateMeter(window=2.0, clock=lambda: now[0])
    for _ in range(11):
        rm.tick()
        now[0] += 0.1
    assert rm.rate() == pytest.approx(10.0, rel=1e-6)
    now[0] += 3.0
    assert rm.rate() == 0.0 and rm.count == 11
    th = KeyedThrottle(5.0, clock=lambda: now[0])
    assert th.ready('a') and not th.ready('a') and th.ready('b')
    now[0] += 5.0
    assert th.take_suppressed('a') == 1 and th.ready('a')
