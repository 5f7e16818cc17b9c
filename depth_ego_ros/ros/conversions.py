"""ROS message <-> numpy conversions used by the nodes (and by tests, benches, tools).

Images
    :func:`image_to_numpy` / :func:`numpy_to_image` for rgb8, bgr8, rgba8, bgra8, mono8, 32FC1 and
    16UC1, honouring ``step`` (row padding) and ``is_bigendian``; :func:`image_to_rgb8` gives the
    HxWx3 uint8 RGB frame the estimator takes. :func:`compressed_to_rgb8` /
    :func:`rgb8_to_compressed` for sensor_msgs/CompressedImage (jpeg, png).
    cv_bridge (resp. cv2) is used when importable -- a ROS distro -- after the same validation, so
    both paths accept and reject the same messages (and messages cv_bridge would misread -- rows
    padded by part of a pixel, foreign byte order -- take the project's own path); otherwise the
    project's own numpy code runs.
    Every malformed message raises ``ValueError`` with a message saying what is wrong.
Camera
    :func:`camera_info_to_k`, :func:`make_camera_info`, :func:`camera_info_with_header`.
Point clouds
    :func:`xyzrgb_to_cloud` / :func:`cloud_to_xyzrgb`: x, y, z float32 + ``rgb`` as a float32 whose
    bits are 0x00RRGGBB (the PCL / RViz / depth_image_proc convention); :func:`packed_to_cloud`
    for points already packed that way. Vectorised numpy; uses sensor_msgs_py when importable.
Poses
    :func:`pose_to_transform`, :func:`pose_to_odometry`, :func:`transform_to_matrix`,
    :func:`odometry_to_matrix`; quaternions in ROS order (x, y, z, w).
Time
    :func:`stamp_to_sec`, :func:`stamp_to_ns`, :func:`sec_to_stamp`.

Depends on numpy, transforms3d, Pillow and message packages only (no torch).
"""
from __future__ import annotations

import array
import io
import sys

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header
from transforms3d.quaternions import mat2quat, quat2mat

from depth_ego_ros.ros import compat

# encoding -> (dtype, channels)
IMAGE_ENCODINGS = {
    'rgb8': (np.uint8, 3),
    'bgr8': (np.uint8, 3),
    'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4),
    'mono8': (np.uint8, 1),
    '32FC1': (np.float32, 1),
    '16UC1': (np.uint16, 1),
}
COLOR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
_NATIVE_BIG = sys.byteorder == 'big'


def _bridge():
    """A shared CvBridge, or None when cv_bridge is not importable."""
    global _BRIDGE
    if compat.cv_bridge is None:
        return None
    if _BRIDGE is None:
        _BRIDGE = compat.cv_bridge.CvBridge()
    return _BRIDGE


_BRIDGE = None


def _as_byte_array(buffer) -> array.array:
    """Any bytes-like object -> array.array('B') with one copy (what message ``data`` fields take
    without a per-element check)."""
    out = array.array('B')
    out.frombytes(memoryview(buffer).cast('B'))
    return out


# ----------------------------------------------------------------------------------------------
# raw images
# ----------------------------------------------------------------------------------------------
def _encoding_info(encoding: str):
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unsupported image encoding '{encoding}' "
                         f"(supported: {', '.join(IMAGE_ENCODINGS)})") from None


def validate_image(msg: Image):
    """Check encoding, size, step and data length of an Image; return (dtype, channels).

    Raises ValueError naming the problem: unsupported encoding, zero size, step smaller than a row,
    truncated data or a data size that does not match ``step * height``.
    """
    dtype, channels = _encoding_info(msg.encoding)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise ValueError(f'image has zero size ({width}x{height})')
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ValueError(f'image step {step} is smaller than one row of {width} {msg.encoding} '
                         f'pixels ({row_bytes} bytes): step/size mismatch')
    expected = step * height
    size = len(msg.data)
    if size < expected:
        raise ValueError(f'truncated image data: {size} bytes for {width}x{height} {msg.encoding} '
                         f'with step {step} (expected step*height = {expected})')
    if size > expected:
        raise ValueError(f'image data size mismatch: {size} bytes but step*height = {expected} '
                         f'({width}x{height} {msg.encoding}, step {step})')
    return dtype, channels


def image_to_numpy(msg: Image, use_cv_bridge: bool | None = None) -> np.ndarray:
    """sensor_msgs/Image -> array (H,W) for one channel, (H,W,C) otherwise, native byte order.

    Row padding (``step`` larger than a row) is dropped and big-endian data is byte-swapped. The
    result may be a view of ``msg.data`` (no copy when none is needed). ``use_cv_bridge``: None =
    use cv_bridge when importable, False = always the project's own code.
    """
    dtype, channels = validate_image(msg)
    bridge = _bridge() if use_cv_bridge in (None, True) else None
    pixel = channels * np.dtype(dtype).itemsize
    # cv_bridge's Python conversion takes the row length as step // pixel size and byte-swaps
    # with a numpy-1 API: rows padded by a fraction of a pixel and foreign byte order take the
    # project's own path, so both give the same result for every message.
    if bridge is not None and int(msg.step) % pixel == 0 and (
            np.dtype(dtype).itemsize == 1 or bool(msg.is_bigendian) == _NATIVE_BIG):
        try:
            out = bridge.imgmsg_to_cv2(msg, desired_encoding='passthrough')
        except Exception as exc:  # CvBridgeError and cv2 errors -> the module's error type
            raise ValueError(f'cv_bridge could not convert the {msg.encoding} image: {exc}') from exc
        return np.asarray(out)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    item = np.dtype(dtype).itemsize
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :width * channels * item]
    wire = np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<')
    if item == 1:
        out = raw
    else:
        if not raw.flags.c_contiguous and (step % item):
            raw = np.ascontiguousarray(raw)          # padding that breaks element alignment
        out = raw.view(wire)
        if wire.byteorder not in ('=', '|') and (wire.byteorder == '>') != _NATIVE_BIG:
            out = out.astype(np.dtype(dtype))       # byte-swap into native order
    out = out.reshape(height, width, channels)
    return out[:, :, 0] if channels == 1 else out


def numpy_to_image(array_in: np.ndarray, encoding: str, header: Header | None = None,
                   use_cv_bridge: bool | None = None) -> Image:
    """Array -> sensor_msgs/Image (no padding, native byte order).

    The array must match the encoding: uint8 (H,W,3) for rgb8/bgr8, (H,W,4) for rgba8/bgra8,
    (H,W) or (H,W,1) for mono8; float32 (H,W) for 32FC1; uint16 (H,W) for 16UC1.
    """
    dtype, channels = _encoding_info(encoding)
    a = np.asarray(array_in)
    if a.ndim == 3 and a.shape[2] == 1 and channels == 1:
        a = a[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if (a.ndim != expected_ndim or (channels > 1 and a.shape[2] != channels)
            or a.dtype != np.dtype(dtype) or a.shape[0] == 0 or a.shape[1] == 0):
        raise ValueError(f'{encoding} needs a non-empty {np.dtype(dtype).name} array of shape '
                         f"{'(H,W)' if channels == 1 else f'(H,W,{channels})'}, "
                         f'got {a.dtype} {a.shape}')
    bridge = _bridge() if use_cv_bridge in (None, True) else None
    if bridge is not None:
        msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(a), encoding=encoding)
        if header is not None:
            msg.header = header
        return msg
    a = np.ascontiguousarray(a)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIG)
    msg.step = int(a.shape[1] * channels * a.dtype.itemsize)
    msg.data = _as_byte_array(a)
    return msg


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded colour/mono8 image -> contiguous (H,W,3) uint8 RGB."""
    if encoding not in COLOR_ENCODINGS:
        raise ValueError(f"encoding '{encoding}' is not a colour image "
                         f"(need one of {', '.join(COLOR_ENCODINGS)})")
    if encoding == 'rgb8':
        return np.ascontiguousarray(image)
    if encoding == 'bgr8':
        return np.ascontiguousarray(image[:, :, ::-1])
    if encoding == 'rgba8':
        return np.ascontiguousarray(image[:, :, :3])
    if encoding == 'bgra8':
        return np.ascontiguousarray(image[:, :, 2::-1])
    return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)  # mono8


def require_color_encoding(encoding: str):
    """ValueError unless ``encoding`` is a camera colour/grey encoding (rgb8, bgr8, rgba8, bgra8,
    mono8): 'unsupported image encoding' for unknown ones, 'not a camera colour image' for depth
    encodings."""
    if encoding not in COLOR_ENCODINGS:
        _encoding_info(encoding)  # unknown encodings get the 'unsupported' message
        raise ValueError(f"image encoding '{encoding}' is not a camera colour image "
                         f"(need one of {', '.join(COLOR_ENCODINGS)})")


def image_to_rgb8(msg: Image, use_cv_bridge: bool | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H,W,3) uint8 RGB."""
    require_color_encoding(msg.encoding)
    return to_rgb8(image_to_numpy(msg, use_cv_bridge), msg.encoding)


def rgb8_to_image(rgb: np.ndarray, encoding: str = 'rgb8', header: Header | None = None) -> Image:
    """(H,W,3) uint8 RGB -> Image in any colour encoding (for tests, benches, simulators)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be uint8 (H,W,3), got {rgb.dtype} {rgb.shape}')
    if encoding == 'rgb8':
        out = rgb
    elif encoding == 'bgr8':
        out = rgb[:, :, ::-1]
    elif encoding in ('rgba8', 'bgra8'):
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        out = np.concatenate([rgb if encoding == 'rgba8' else rgb[:, :, ::-1], alpha], axis=2)
    elif encoding == 'mono8':
        out = np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        out = out.astype(np.uint8)
    else:
        raise ValueError(f"encoding '{encoding}' is not a colour encoding ({', '.join(COLOR_ENCODINGS)})")
    return numpy_to_image(out, encoding, header)


# ----------------------------------------------------------------------------------------------
# compressed images
# ----------------------------------------------------------------------------------------------
_JPEG_SOI, _JPEG_EOI = b'\xff\xd8', b'\xff\xd9'
_PNG_SIGNATURE, _PNG_IEND = b'\x89PNG\r\n\x1a\n', b'IEND'


def _check_complete(data, what: str):
    """Truncated jpeg/png -> ValueError. Pillow notices truncation itself but cv2 decodes what is
    there (grey bottom rows), so both decoders get the same check: a JPEG must end with its EOI
    marker (trailing padding tolerated), a PNG with its IEND chunk."""
    head = bytes(data[:8])
    tail = bytes(data[-1024:])
    if head[:2] == _JPEG_SOI and _JPEG_EOI not in tail:
        raise ValueError(f'cannot decode {what}: truncated JPEG (no end-of-image marker)')
    if head == _PNG_SIGNATURE and _PNG_IEND not in tail[-16:]:
        raise ValueError(f'cannot decode {what}: truncated PNG (no IEND chunk)')


def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png; the format string is informational, the bytes
    decide) -> (H,W,3) uint8 RGB. Corrupt, truncated or empty data raises ValueError."""
    data = msg.data
    size = len(data)
    what = f"CompressedImage (format '{msg.format}', {size} bytes)"
    if size == 0:
        raise ValueError(f'cannot decode {what}: no data')
    _check_complete(data, what)
    if compat.cv2 is not None:
        cv2 = compat.cv2
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f'cannot decode {what}: not a valid jpeg/png image')
        return np.ascontiguousarray(decoded[:, :, ::-1])
    from PIL import Image as PILImage
    try:
        with PILImage.open(io.BytesIO(memoryview(data))) as img:
            if img.format not in ('JPEG', 'PNG'):
                raise ValueError(f'cannot decode {what}: {img.format} is not jpeg/png')
            img.load()
            rgb = np.asarray(img.convert('RGB'))
    except ValueError:
        raise
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), SyntaxError (png)...
        raise ValueError(f'cannot decode {what}: {exc}') from exc
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f'cannot decode {what}: empty image')
    return rgb


def rgb8_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90,
                       header: Header | None = None) -> CompressedImage:
    """(H,W,3) uint8 RGB -> CompressedImage ('jpeg' or 'png'), format string as image_transport
    writes it (``rgb8; jpeg compressed bgr8``)."""
    from PIL import Image as PILImage
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be uint8 (H,W,3), got {rgb.dtype} {rgb.shape}')
    if fmt not in ('jpeg', 'png'):
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    buf = io.BytesIO()
    kwargs = {'quality': int(quality)} if fmt == 'jpeg' else {}
    PILImage.fromarray(rgb).save(buf, format=fmt.upper(), **kwargs)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f'rgb8; {fmt} compressed bgr8'
    msg.data = _as_byte_array(buf.getbuffer())
    return msg


# ----------------------------------------------------------------------------------------------
# camera info
# ----------------------------------------------------------------------------------------------
def camera_info_to_k(msg: CameraInfo) -> np.ndarray:
    """CameraInfo -> K (3,3) float64; ValueError when K is non-finite or has fx/fy <= 0."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] == 0:
        raise ValueError('camera_info K is not usable (needs finite values, fx > 0, fy > 0): '
                         f'fx={K[0, 0]:g} fy={K[1, 1]:g} cx={K[0, 2]:g} cy={K[1, 2]:g} '
                         f'K[2,2]={K[2, 2]:g}')
    return K / K[2, 2]


def make_camera_info(K, width: int, height: int, header: Header | None = None,
                     distortion_model: str = 'plumb_bob', D=None) -> CameraInfo:
    """K (3,3) + image size -> CameraInfo (R = identity, P = [K | 0], zero distortion unless
    ``D`` is given)."""
    K = np.asarray(K, dtype=np.float64)[:3, :3]
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = distortion_model
    msg.d = [float(x) for x in (D if D is not None else [0.0] * 5)]
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1).tolist()
    return msg


def camera_info_with_header(info: CameraInfo, header: Header) -> CameraInfo:
    """A copy of ``info`` with another header (e.g. depth/camera_info for a depth image)."""
    out = CameraInfo()
    out.header = header
    for field in ('height', 'width', 'distortion_model', 'd', 'k', 'r', 'p',
                  'binning_x', 'binning_y', 'roi'):
        setattr(out, field, getattr(info, field))
    return out


# ----------------------------------------------------------------------------------------------
# point clouds
# ----------------------------------------------------------------------------------------------
_PF_DTYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}
XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate('xyz')]
XYZRGB_FIELDS = XYZ_FIELDS + [PointField(name='rgb', offset=12, datatype=PointField.FLOAT32, count=1)]


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N,3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB."""
    c = np.asarray(colors, dtype=np.uint8).astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N,) float32 packed rgb -> (N,3) uint8."""
    u = np.ascontiguousarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1).astype(np.uint8)


def packed_to_cloud(packed: np.ndarray, header: Header | None = None) -> PointCloud2:
    """float32 (N,4) rows x, y, z, rgb (rgb = float32 whose bits are 0x00RRGGBB, as
    :func:`pack_rgb` and ``Estimator.point_cloud`` make them) or (N,3) rows x, y, z ->
    unorganised PointCloud2 (height 1, width N) with one copy; ``is_dense`` is True when every
    coordinate is finite."""
    data = np.ascontiguousarray(packed, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] not in (3, 4):
        raise ValueError(f'packed points must be (N,3) or (N,4) float32, got {data.shape}')
    fields = XYZRGB_FIELDS if data.shape[1] == 4 else XYZ_FIELDS
    header = header if header is not None else Header()
    if compat.point_cloud2 is not None:
        msg = compat.point_cloud2.create_cloud(header, fields, data)
    else:
        msg = PointCloud2()
        msg.header = header
        msg.height, msg.width = 1, int(data.shape[0])
        msg.fields = list(fields)
        msg.is_bigendian = _NATIVE_BIG
        msg.point_step = int(data.shape[1] * 4)
        msg.row_step = int(msg.point_step * data.shape[0])
        msg.data = _as_byte_array(data)
    msg.is_dense = bool(np.isfinite(data[:, :3]).all())
    return msg


def xyzrgb_to_cloud(points: np.ndarray, colors: np.ndarray | None = None,
                    header: Header | None = None) -> PointCloud2:
    """points (N,3) (+ colors (N,3) uint8 RGB) -> unorganised PointCloud2 (height 1, width N)
    with float32 fields x, y, z[, rgb]; ``is_dense`` is True when every coordinate is finite."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is None:
        return packed_to_cloud(p, header)
    c = np.asarray(colors)
    if c.shape != (p.shape[0], 3):
        raise ValueError(f'colors must be (N,3) = ({p.shape[0]}, 3), got {c.shape}')
    data = np.empty((p.shape[0], 4), np.float32)
    data[:, :3] = p
    data[:, 3] = pack_rgb(c)
    return packed_to_cloud(data, header)


def cloud_to_structured(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 -> structured array (height*width,) with one named column per field,
    honouring offsets, point_step, row_step padding and is_bigendian."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if row_step < width * point_step:
        raise ValueError(f'row_step {row_step} < width*point_step {width * point_step}')
    if len(msg.data) < row_step * height:
        raise ValueError(f'truncated cloud data: {len(msg.data)} bytes, expected {row_step * height}')
    order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _PF_DTYPES:
            raise ValueError(f'field {f.name!r} has unknown datatype {f.datatype}')
        dt = np.dtype(_PF_DTYPES[f.datatype]).newbyteorder(order)
        names.append(f.name)
        formats.append(dt if f.count <= 1 else (dt, (int(f.count),)))
        offsets.append(int(f.offset))
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': point_step})
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=row_step * height).reshape(height, row_step)
    raw = np.ascontiguousarray(raw[:, :width * point_step])
    return raw.view(dtype).reshape(-1)


def cloud_to_xyzrgb(msg: PointCloud2):
    """PointCloud2 -> (points (N,3) float32, colors (N,3) uint8 or None when there is no rgb)."""
    s = cloud_to_structured(msg)
    for name in 'xyz':
        if name not in s.dtype.names:
            raise ValueError(f'cloud has no {name!r} field (fields: {s.dtype.names})')
    points = np.stack([s[n].astype(np.float32) for n in 'xyz'], axis=1)
    colors = unpack_rgb(s['rgb'].astype(np.float32)) if 'rgb' in s.dtype.names else None
    return points, colors


# ----------------------------------------------------------------------------------------------
# poses
# ----------------------------------------------------------------------------------------------
def matrix_to_quat_xyzw(R) -> np.ndarray:
    """Rotation (3,3) -> unit quaternion (x, y, z, w), w >= 0."""
    w, x, y, z = mat2quat(np.asarray(R, dtype=np.float64)[:3, :3])
    q = np.array([x, y, z, w])
    return q if w >= 0 else -q


def quat_xyzw_to_matrix(q) -> np.ndarray:
    x, y, z, w = (float(v) for v in q)
    return quat2mat([w, x, y, z])


def _check_pose(T) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f'pose must be a finite 4x4 matrix, got shape {T.shape}')
    return T


def pose_to_transform(T, stamp: Time, parent: str, child: str) -> TransformStamped:
    """4x4 pose of ``child`` in ``parent`` (T_parent_child) -> TransformStamped parent -> child."""
    T = _check_pose(T)
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    tr = msg.transform.translation
    tr.x, tr.y, tr.z = (float(v) for v in T[:3, 3])
    q = msg.transform.rotation
    q.x, q.y, q.z, q.w = (float(v) for v in matrix_to_quat_xyzw(T[:3, :3]))
    return msg


def transform_to_matrix(msg) -> np.ndarray:
    """TransformStamped or Transform -> 4x4 T_parent_child."""
    t = getattr(msg, 'transform', msg)
    T = np.eye(4)
    q = t.rotation
    T[:3, :3] = quat_xyzw_to_matrix([q.x, q.y, q.z, q.w])
    T[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
    return T


def pose_to_odometry(T, stamp: Time, frame: str, child: str, linear=None, angular=None,
                     pose_covariance=None, twist_covariance=None) -> Odometry:
    """4x4 pose of ``child`` in ``frame`` -> nav_msgs/Odometry.

    ``linear``/``angular`` (3,) are the twist in the child frame (nav_msgs convention); the
    covariances are 6x6 (x, y, z, rot x, rot y, rot z) or 36-element sequences.
    """
    T = _check_pose(T)
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame
    msg.child_frame_id = child
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in T[:3, 3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (
        float(v) for v in matrix_to_quat_xyzw(T[:3, :3]))
    if linear is not None:
        tw = msg.twist.twist.linear
        tw.x, tw.y, tw.z = (float(v) for v in linear)
    if angular is not None:
        tw = msg.twist.twist.angular
        tw.x, tw.y, tw.z = (float(v) for v in angular)
    if pose_covariance is not None:
        msg.pose.covariance = np.asarray(pose_covariance, dtype=np.float64).reshape(36)
    if twist_covariance is not None:
        msg.twist.covariance = np.asarray(twist_covariance, dtype=np.float64).reshape(36)
    return msg


def odometry_to_matrix(msg: Odometry) -> np.ndarray:
    """nav_msgs/Odometry -> 4x4 pose of child_frame_id in header.frame_id."""
    p = msg.pose.pose
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_matrix([p.orientation.x, p.orientation.y, p.orientation.z,
                                     p.orientation.w])
    T[:3, 3] = [p.position.x, p.position.y, p.position.z]
    return T


# ----------------------------------------------------------------------------------------------
# time
# ----------------------------------------------------------------------------------------------
def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_to_sec(stamp: Time) -> float:
    return stamp_to_ns(stamp) * 1e-9


def sec_to_stamp(t: float) -> Time:
    ns = int(round(float(t) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
