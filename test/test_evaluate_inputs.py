"""ROS-free message decoding for the evaluation (depth_ego_ros.data.bag_reader): images and depth
encodings (REP 118), compressed images, PointCloud2, static TF lookups, header parsing from CDR."""
import io
import struct

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from depth_ego_ros.core import geometry as g
from depth_ego_ros.data import bag_reader as br

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types


def _header(stamp=12.25, frame='cam'):
    sec = int(stamp)
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=sec, nanosec=int(round((stamp - sec) * 1e9))),
                                     frame_id=frame)


def _image(arr, encoding, step=None, bigendian=False):
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    if bigendian and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder('>'))
    rows = arr.reshape(h, -1).view(np.uint8)
    row = rows.shape[1]
    step = step or row
    buf = np.zeros((h, step), np.uint8)
    buf[:, :row] = rows
    return T['sensor_msgs/msg/Image'](header=_header(), height=h, width=w, encoding=encoding,
                                      is_bigendian=int(bigendian), step=step, data=buf.reshape(-1))


def _roundtrip(msg, msgtype):
    """Serialise and deserialise: what the evaluation gets from a bag."""
    return TS.deserialize_cdr(TS.serialize_cdr(msg, msgtype), msgtype)


def test_colour_encodings_with_row_padding():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for enc, arr in (('rgb8', rgb), ('bgr8', rgb[..., ::-1]),
                     ('rgba8', np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], 2)),
                     ('bgra8', np.concatenate([rgb[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], 2))):
        msg = _roundtrip(_image(arr, enc, step=arr.shape[1] * arr.shape[2] + 3), br.IMAGE)
        np.testing.assert_array_equal(br.image_to_rgb8(msg), rgb, err_msg=enc)
    grey = rgb[..., 0]
    out = br.image_to_rgb8(_roundtrip(_image(grey, 'mono8', step=8), br.IMAGE))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 2], grey)
    m16 = (grey.astype(np.uint16) << 8) | 0x7F
    for be in (False, True):
        out = br.image_to_rgb8(_roundtrip(_image(m16, 'mono16', bigendian=be), br.IMAGE))
        assert np.array_equal(out[..., 0], grey), be


def test_depth_encodings_rep118():
    mm = np.array([[0, 1000, 2500], [65535, 10, 0]], np.uint16)
    for be in (False, True):
        d = br.image_to_depth(_roundtrip(_image(mm, '16UC1', step=8, bigendian=be), br.IMAGE))
        assert d.dtype == np.float32 and d.shape == (2, 3)
        assert np.isnan(d[0, 0]) and np.isnan(d[1, 2])                 # 0 = no measurement
        np.testing.assert_allclose(d[0, 1:], [1.0, 2.5])
        np.testing.assert_allclose(d[1, :2], [65.535, 0.01], rtol=1e-6)
    f = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, 42.0]], np.float32)
    d = br.image_to_depth(_roundtrip(_image(f, '32FC1'), br.IMAGE))
    assert d[0, 0] == 1.5 and d[1, 2] == 42.0
    assert np.isnan(d[[0, 0, 1, 1], [1, 2, 0, 1]]).all()                 # NaN, +-Inf, 0 -> none
    with pytest.raises(br.MessageDecodeError, match='not a depth encoding'):
        br.image_to_depth(_roundtrip(_image(mm.astype(np.uint8), 'mono8'), br.IMAGE))
    with pytest.raises(br.MessageDecodeError, match='unsupported image encoding'):
        br.image_to_rgb8(_roundtrip(_image(mm.astype(np.uint8), 'bayer_rggb8'), br.IMAGE))
    bad = _image(f, '32FC1')
    bad.data = bad.data[:-5]
    with pytest.raises(br.MessageDecodeError, match='data bytes'):
        br.image_to_depth(bad)


def _png(arr) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format='PNG')
    return buf.getvalue()


def test_compressed_colour_and_compressed_depth():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    msg = T['sensor_msgs/msg/CompressedImage'](header=_header(), format='png',
                                                data=np.frombuffer(_png(rgb), np.uint8))
    msg = _roundtrip(msg, br.COMPRESSED_IMAGE)
    np.testing.assert_array_equal(br.rgb_from_message(msg, br.COMPRESSED_IMAGE), rgb)
    # compressed_depth_image_transport, 16UC1: 12-byte header + PNG of millimetres
    mm = np.array([[0, 1234], [5000, 7]], np.uint16)
    data = struct.pack('<iff', 0, 0.0, 0.0) + _png(mm)
    msg = T['sensor_msgs/msg/CompressedImage'](header=_header(), format='16UC1; compressedDepth png',
                                                data=np.frombuffer(data, np.uint8))
    d = br.depth_from_message(_roundtrip(msg, br.COMPRESSED_IMAGE), br.COMPRESSED_IMAGE)
    assert np.isnan(d[0, 0])
    np.testing.assert_allclose(d[[0, 1, 1], [1, 0, 1]], [1.234, 5.0, 0.007], rtol=1e-6)
    # 32FC1: quantised inverse depth, depth = A / (q - B)
    A, B = 100.0, -50.0
    q = np.array([[0, 150], [250, 1050]], np.uint16)
    data = struct.pack('<iff', 0, A, B) + _png(q)
    msg = T['sensor_msgs/msg/CompressedImage'](header=_header(), format='32FC1; compressedDepth png',
                                                data=np.frombuffer(data, np.uint8))
    d = br.depth_from_message(msg, br.COMPRESSED_IMAGE)
    assert np.isnan(d[0, 0])
    np.testing.assert_allclose(d[[0, 1, 1], [1, 0, 1]], [A / 200, A / 300, A / 1100], rtol=1e-6)
    bad = T['sensor_msgs/msg/CompressedImage'](header=_header(), format='jpeg',
                                                data=np.frombuffer(b'not an image at all', np.uint8))
    with pytest.raises(br.MessageDecodeError, match='cannot decode'):
        br.rgb_from_message(bad, br.COMPRESSED_IMAGE)


def _cloud(points, dtype='f4', extra_pad=0, height=1, bigendian=False):
    n = len(points)
    itemsize = np.dtype(dtype).itemsize
    step = 3 * itemsize + 4 + extra_pad             # x y z intensity(f4) + padding
    e = '>' if bigendian else '<'
    dt = np.dtype({'names': ['x', 'y', 'z', 'intensity'],
                   'formats': [e + dtype] * 3 + [e + 'f4'],
                   'offsets': [0, itemsize, 2 * itemsize, 3 * itemsize], 'itemsize': step})
    rec = np.zeros(n, dt)
    rec['x'], rec['y'], rec['z'] = points[:, 0], points[:, 1], points[:, 2]
    rec['intensity'] = 7.0
    code = {'f4': 7, 'f8': 8}[dtype]
    fields = [T['sensor_msgs/msg/PointField'](name=nm, offset=o, datatype=dc, count=1)
              for nm, o, dc in (('x', 0, code), ('y', itemsize, code), ('z', 2 * itemsize, code),
                                ('intensity', 3 * itemsize, 7))]
    w = n // height
    return T['sensor_msgs/msg/PointCloud2'](header=_header(frame='lidar'), height=height, width=w,
                                            fields=fields, is_bigendian=bigendian, point_step=step,
                                            row_step=step * w,
                                            data=np.frombuffer(rec.tobytes(), np.uint8),
                                            is_dense=False)


def test_pointcloud2_decoding():
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(12, 3)) * 10
    pts[3] = np.nan
    for dtype, pad, h, be in (('f4', 0, 1, False), ('f8', 4, 3, False), ('f4', 2, 2, True)):
        msg = _roundtrip(_cloud(pts, dtype, pad, h, be), br.POINT_CLOUD2)
        xyz = br.cloud_to_xyz(msg)
        assert xyz.shape == (11, 3)                                         # NaN point dropped
        np.testing.assert_allclose(xyz, np.delete(pts, 3, 0), rtol=1e-6 if dtype == 'f4' else 0)
    msg = _cloud(pts)
    msg.fields = [f for f in msg.fields if f.name != 'z']
    with pytest.raises(br.MessageDecodeError, match="no field"):
        br.cloud_to_xyz(msg)


def test_header_from_cdr_and_static_tf_lookups():
    msg = _image(np.zeros((2, 2), np.float32), '32FC1')
    msg.header = _header(1700000123.456789, 'camera_optical_frame')
    raw = TS.serialize_cdr(msg, br.IMAGE)
    assert br.header_stamp(raw) == pytest.approx(1700000123.456789, abs=1e-9)
    assert br.header_frame_id(raw) == 'camera_optical_frame'
    with pytest.raises(br.MessageDecodeError):
        br.header_stamp(b'\x00\x01')

    # base -> lidar and base -> cam: T_cam_lidar = inv(T_base_cam) T_base_lidar, through the tree
    T_base_lidar = g.pose_from_tq_xyzw([1.0, 0.2, 1.8], g.matrix_to_quat_xyzw(g.axis_angle_to_matrix_np([0, 0, 0.1])))
    T_base_cam = g.pose_from_tq_xyzw([1.5, 0.0, 1.4], [-0.5, 0.5, -0.5, 0.5])
    st = br.StaticTransforms()
    tf = T['tf2_msgs/msg/TFMessage'](transforms=[
        T['geometry_msgs/msg/TransformStamped'](
            header=_header(0.0, 'base_link'), child_frame_id=child,
            transform=T['geometry_msgs/msg/Transform'](
                translation=T['geometry_msgs/msg/Vector3'](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                rotation=T['geometry_msgs/msg/Quaternion'](**dict(zip('xyzw', g.matrix_to_quat_xyzw(M[:3, :3]))))))
        for child, M in (('lidar', T_base_lidar), ('/cam', T_base_cam))])
    st.add_message(_roundtrip(tf, br.TF_MESSAGE))
    expect = g.invert_pose(T_base_cam) @ T_base_lidar
    np.testing.assert_allclose(st.lookup('cam', 'lidar'), expect, atol=1e-12)
    np.testing.assert_allclose(st.lookup('lidar', 'cam'), g.invert_pose(expect), atol=1e-12)
    np.testing.assert_allclose(st.lookup('base_link', 'cam'), T_base_cam, atol=1e-12)
    assert np.array_equal(st.lookup('cam', 'cam'), np.eye(4))
    assert st.lookup('cam', 'gps') is None
