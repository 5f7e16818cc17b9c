"""Evaluation inputs from rosbag2 bags, without rclpy: message -> numpy decoding and static TF.

Messages are deserialised by the ``rosbags`` type store (through :mod:`depth_ego_ros.data.bags`);
this module turns them into arrays:

* :func:`image_to_rgb8` — sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1,
  8UC3, 8UC4) -> HxWx3 uint8 RGB, honouring ``step`` (row padding) and ``is_bigendian``.
* :func:`compressed_to_rgb8` — sensor_msgs/CompressedImage (JPEG / PNG) -> HxWx3 uint8 RGB.
* :func:`image_to_depth` — depth images as REP 118 defines them: ``16UC1`` (millimetres,
  0 = no measurement) and ``32FC1`` (metres; NaN = no measurement, +Inf = too far, -Inf = too
  close), also ``mono16`` (read as 16UC1) and ``64FC1`` -> float32 metres with NaN wherever there is
  no finite, positive measurement. A CompressedImage from ``compressed_depth_image_transport``
  (format ``"16UC1; compressedDepth png"`` / ``"32FC1; compressedDepth png"``) is decoded too.
* :func:`cloud_to_xyz` — sensor_msgs/PointCloud2 -> (N,3) float64 of the finite points.
* :func:`camera_info_K`, :func:`pose_message` (Odometry, PoseStamped, PoseWithCovarianceStamped,
  TransformStamped) and :class:`StaticTransforms` (a /tf_static tree with lookups through it).
* :func:`header_stamp` — the header stamp straight from the CDR bytes of any message that starts
  with a std_msgs/Header (Image, PointCloud2, Odometry, ...), without deserialising the payload.

No ROS import: this is the data layer that evaluation and training build on.
"""
from __future__ import annotations

import io
import struct
from collections import deque

import numpy as np

from ..core.geometry import invert_pose, pose_from_tq_xyzw
from .cdr import MessageDecodeError, header_frame_id, header_stamp, header_stamp_ns  # noqa: F401 (re-exported)

__all__ = [
    'IMAGE', 'COMPRESSED_IMAGE', 'CAMERA_INFO', 'POINT_CLOUD2', 'ODOMETRY', 'POSE_STAMPED',
    'POSE_COV_STAMPED', 'TRANSFORM_STAMPED', 'TF_MESSAGE', 'POSE_TYPES', 'IMAGE_TYPES',
    'MessageDecodeError', 'header_stamp', 'header_stamp_ns', 'header_frame_id', 'stamp_to_sec', 'image_to_rgb8', 'compressed_to_rgb8',
    'image_to_depth', 'depth_from_message', 'rgb_from_message', 'cloud_to_xyz', 'camera_info_K',
    'pose_message', 'transform_to_matrix', 'StaticTransforms',
]

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINT_CLOUD2 = 'sensor_msgs/msg/PointCloud2'
ODOMETRY = 'nav_msgs/msg/Odometry'
POSE_STAMPED = 'geometry_msgs/msg/PoseStamped'
POSE_COV_STAMPED = 'geometry_msgs/msg/PoseWithCovarianceStamped'
TRANSFORM_STAMPED = 'geometry_msgs/msg/TransformStamped'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
POSE_TYPES = (ODOMETRY, POSE_STAMPED, POSE_COV_STAMPED, TRANSFORM_STAMPED, TF_MESSAGE)


# ----------------------------------------------------------------------------------------------
# stamps
# ----------------------------------------------------------------------------------------------
def stamp_to_sec(stamp) -> float:
    """builtin_interfaces/Time -> float seconds. (Header fields straight from CDR bytes:
    :mod:`depth_ego_ros.data.cdr`, re-exported here.)"""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------
# encoding -> (numpy dtype, channels)
_ENCODINGS = {
    'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3), 'rgba8': (np.uint8, 4), 'bgra8': (np.uint8, 4),
    'mono8': (np.uint8, 1), '8UC1': (np.uint8, 1), '8UC3': (np.uint8, 3), '8UC4': (np.uint8, 4),
    'mono16': (np.uint16, 1), '16UC1': (np.uint16, 1), 'rgb16': (np.uint16, 3),
    'bgr16': (np.uint16, 3), '32FC1': (np.float32, 1), '64FC1': (np.float64, 1),
}


def _image_array(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H,W,C) array of the encoding's dtype (native byte order)."""
    enc = str(msg.encoding)
    if enc not in _ENCODINGS:
        raise MessageDecodeError(f"unsupported image encoding '{enc}' (supported: "
                                 f"{', '.join(sorted(_ENCODINGS))})")
    dtype, ch = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row = w * ch * itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if h == 0 or w == 0:
        raise MessageDecodeError(f'image has zero size ({w}x{h})')
    if step < row:
        raise MessageDecodeError(f'{enc} image {w}x{h}: step {step} < {row} bytes per row')
    if data.size < step * (h - 1) + row:
        raise MessageDecodeError(f'{enc} image {w}x{h}: {data.size} data bytes, need '
                                 f'{step * (h - 1) + row} (step {step})')
    if data.size < step * h:   # last row without padding
        data = np.concatenate([data, np.zeros(step * h - data.size, np.uint8)])
    rows = data[:step * h].reshape(h, step)[:, :row]
    dt = np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<') if itemsize > 1 else np.dtype(dtype)
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch)
    return arr.astype(dtype, copy=False)


def image_to_rgb8(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H,W,3) uint8 RGB (BGR orders swapped, alpha dropped, grey replicated,
    16-bit reduced to the high byte)."""
    enc = str(msg.encoding)
    if enc in ('16UC1', '32FC1', '64FC1'):
        raise MessageDecodeError(f"'{enc}' is a depth encoding, not a colour image")
    a = _image_array(msg)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if enc in ('bgr8', 'bgra8', 'bgr16', '8UC3', '8UC4'):   # 8UC3/8UC4: OpenCV's BGR order
        a = a[..., [2, 1, 0]]
    elif a.shape[2] == 4:
        a = a[..., :3]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a, dtype=np.uint8)


def _pil_decode(data: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
                return np.asarray(im).astype(np.uint16 if im.mode.startswith('I;16') else np.int32)
            return np.asarray(im.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MessageDecodeError(f'{what}: cannot decode ({exc})') from exc


def compressed_to_rgb8(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG/PNG; the format string is informational) -> RGB uint8."""
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    fmt = str(msg.format)
    if 'compressedDepth' in fmt:
        raise MessageDecodeError(f"CompressedImage format '{fmt}' is a depth image, not colour")
    a = _pil_decode(data, f"CompressedImage (format '{fmt}', {len(data)} bytes)")
    if a.ndim == 2:            # 16-bit PNG
        a = np.repeat(((a >> 8) if a.dtype != np.uint8 else a).astype(np.uint8)[..., None], 3, axis=2)
    return np.ascontiguousarray(a, dtype=np.uint8)


def _finite_positive(depth: np.ndarray) -> np.ndarray:
    d = depth.astype(np.float32, copy=True)
    with np.errstate(invalid='ignore'):
        d[~(np.isfinite(d) & (d > 0))] = np.nan
    return d


def image_to_depth(msg) -> np.ndarray:
    """Depth sensor_msgs/Image (REP 118) -> (H,W) float32 metres, NaN = no measurement.

    16UC1 / mono16: millimetres (0 = none); 32FC1 / 64FC1: metres (NaN, +-Inf, <= 0 = none).
    """
    enc = str(msg.encoding)
    if enc not in ('16UC1', 'mono16', '32FC1', '64FC1'):
        raise MessageDecodeError(f"'{enc}' is not a depth encoding (REP 118: 16UC1 millimetres or "
                                 '32FC1 metres)')
    a = _image_array(msg)[..., 0]
    if a.dtype == np.uint16:
        return _finite_positive(a.astype(np.float32) / np.float32(1000.0))
    return _finite_positive(a)


def compressed_depth_to_depth(msg) -> np.ndarray:
    """CompressedImage from compressed_depth_image_transport -> float32 metres (NaN = none).

    Its data is a 12-byte config header (int32 format, float32 depthQuantA, depthQuantB) followed
    by a PNG: 16UC1 images store millimetres; 32FC1 images store quantised inverse depth
    ``q`` with ``depth = depthQuantA / (q - depthQuantB)`` (q = 0: none).
    """
    fmt = str(msg.format)
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    if len(data) < 12:
        raise MessageDecodeError(f"compressedDepth message ('{fmt}') of {len(data)} bytes is too short")
    _, qa, qb = struct.unpack_from('<iff', data, 0)
    q = _pil_decode(data[12:], f"CompressedImage (format '{fmt}')")
    if q.ndim != 2:
        raise MessageDecodeError(f"compressedDepth ('{fmt}'): expected a single-channel PNG")
    q = q.astype(np.float64)
    if fmt.strip().startswith('32FC1'):
        with np.errstate(divide='ignore', invalid='ignore'):
            d = np.where(q > 0, qa / (q - qb), np.nan)
        return _finite_positive(d)
    return _finite_positive(q / 1000.0)


def depth_from_message(msg, msgtype: str) -> np.ndarray:
    """Image or (compressedDepth) CompressedImage -> float32 metres, NaN = no measurement."""
    if msgtype == IMAGE:
        return image_to_depth(msg)
    if msgtype == COMPRESSED_IMAGE:
        if 'compressedDepth' in str(msg.format):
            return compressed_depth_to_depth(msg)
        a = _pil_decode(bytes(np.asarray(msg.data, np.uint8)), f"CompressedImage ('{msg.format}')")
        if a.ndim != 2 or a.dtype == np.uint8:
            raise MessageDecodeError(f"CompressedImage ('{msg.format}') is not a 16-bit depth PNG")
        return _finite_positive(a.astype(np.float32) / np.float32(1000.0))
    raise MessageDecodeError(f'{msgtype} is not a depth image type')


def rgb_from_message(msg, msgtype: str) -> np.ndarray:
    """Image or CompressedImage -> (H,W,3) uint8 RGB."""
    if msgtype == IMAGE:
        return image_to_rgb8(msg)
    if msgtype == COMPRESSED_IMAGE:
        return compressed_to_rgb8(msg)
    raise MessageDecodeError(f'{msgtype} is not an image type')


# ----------------------------------------------------------------------------------------------
# point clouds
# ----------------------------------------------------------------------------------------------
# sensor_msgs/PointField datatypes
_FIELD_TYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}


def cloud_to_xyz(msg) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N,3) float64 x, y, z of the points with finite coordinates."""
    fields = {str(f.name): f for f in msg.fields}
    missing = [n for n in 'xyz' if n not in fields]
    if missing:
        raise MessageDecodeError(f"PointCloud2 has no field(s) {missing} (fields: {sorted(fields)})")
    endian = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for n in 'xyz':
        f = fields[n]
        if int(f.datatype) not in _FIELD_TYPES:
            raise MessageDecodeError(f'PointCloud2 field {n}: unknown datatype {f.datatype}')
        names.append(n)
        formats.append(endian + _FIELD_TYPES[int(f.datatype)])
        offsets.append(int(f.offset))
    step = int(msg.point_step)
    h, w, row_step = int(msg.height), int(msg.width), int(msg.row_step)
    n_pts = h * w
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step <= 0 or any(o + np.dtype(fm).itemsize > step for o, fm in zip(offsets, formats)):
        raise MessageDecodeError(f'PointCloud2: point_step {step} too small for its x/y/z fields')
    if n_pts == 0:
        return np.zeros((0, 3))
    if h > 1 and row_step != w * step:       # padded rows: drop the padding
        if data.size < row_step * h:
            raise MessageDecodeError(f'PointCloud2: {data.size} bytes < row_step*height {row_step * h}')
        data = np.ascontiguousarray(data[:row_step * h].reshape(h, row_step)[:, :w * step]).reshape(-1)
    if data.size < n_pts * step:
        raise MessageDecodeError(f'PointCloud2: {data.size} data bytes for {n_pts} points of '
                                 f'{step} bytes')
    dt = np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': step})
    rec = np.frombuffer(data[:n_pts * step].tobytes(), dtype=dt, count=n_pts)
    xyz = np.stack([rec['x'].astype(np.float64), rec['y'].astype(np.float64),
                    rec['z'].astype(np.float64)], axis=1)
    return xyz[np.all(np.isfinite(xyz), axis=1)]


# ----------------------------------------------------------------------------------------------
# camera info, poses, TF
# ----------------------------------------------------------------------------------------------
def camera_info_K(msg) -> tuple[np.ndarray, int, int, str]:
    """sensor_msgs/CameraInfo -> (K (3,3), width, height, frame_id). Raises when K is unusable."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MessageDecodeError(f'CameraInfo has no usable K (fx={K[0, 0]}, fy={K[1, 1]})')
    return K, int(msg.width), int(msg.height), str(msg.header.frame_id)


def _pose_to_matrix(p) -> np.ndarray:
    return pose_from_tq_xyzw([p.position.x, p.position.y, p.position.z],
                             [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])


def transform_to_matrix(tr) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    return pose_from_tq_xyzw([tr.translation.x, tr.translation.y, tr.translation.z],
                             [tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w])


def pose_message(msg, msgtype: str) -> list[tuple[float, np.ndarray, str, str]]:
    """A pose-carrying message -> [(stamp s, T_parent_child 4x4, parent frame, child frame)].

    Odometry: pose of ``child_frame_id`` in ``header.frame_id``; PoseStamped /
    PoseWithCovarianceStamped: child frame unknown (''); TransformStamped; TFMessage: every
    transform in it.
    """
    if msgtype == ODOMETRY:
        return [(stamp_to_sec(msg.header.stamp), _pose_to_matrix(msg.pose.pose),
                 str(msg.header.frame_id), str(msg.child_frame_id))]
    if msgtype == POSE_STAMPED:
        return [(stamp_to_sec(msg.header.stamp), _pose_to_matrix(msg.pose), str(msg.header.frame_id), '')]
    if msgtype == POSE_COV_STAMPED:
        return [(stamp_to_sec(msg.header.stamp), _pose_to_matrix(msg.pose.pose),
                 str(msg.header.frame_id), '')]
    if msgtype == TRANSFORM_STAMPED:
        return [(stamp_to_sec(msg.header.stamp), transform_to_matrix(msg.transform),
                 str(msg.header.frame_id), str(msg.child_frame_id))]
    if msgtype == TF_MESSAGE:
        return [x for t in msg.transforms for x in pose_message(t, TRANSFORM_STAMPED)]
    raise MessageDecodeError(f'{msgtype} carries no pose (use one of {", ".join(POSE_TYPES)})')


def _norm_frame(name: str) -> str:
    return str(name).lstrip('/')


class StaticTransforms:
    """A tree of static transforms (from /tf_static) with lookups along any path through it."""

    def __init__(self):
        self.edges: dict[tuple[str, str], np.ndarray] = {}      # (parent, child) -> T_parent_child

    def add(self, parent: str, child: str, T) -> None:
        self.edges[(_norm_frame(parent), _norm_frame(child))] = np.asarray(T, dtype=np.float64)

    def add_message(self, msg) -> None:
        """Add every transform of a tf2_msgs/TFMessage."""
        for _, T, parent, child in pose_message(msg, TF_MESSAGE):
            self.add(parent, child, T)

    def __len__(self):
        return len(self.edges)

    @property
    def frames(self) -> set[str]:
        return {f for e in self.edges for f in e}

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """``T_target_source`` (maps points in ``source`` into ``target``), or None when the two
        frames are not connected."""
        target, source = _norm_frame(target), _norm_frame(source)
        if target == source:
            return np.eye(4)
        graph: dict[str, list[tuple[str, np.ndarray]]] = {}
        for (p, c), T in self.edges.items():
            graph.setdefault(p, []).append((c, T))               # p <- c : T_p_c
            graph.setdefault(c, []).append((p, invert_pose(T)))  # c <- p : T_c_p
        # breadth-first from target: acc = T_target_frame
        seen = {target}
        queue = deque([(target, np.eye(4))])
        while queue:
            frame, acc = queue.popleft()
            for nxt, T in graph.get(frame, []):
                if nxt in seen:
                    continue
                T_target_nxt = acc @ T
                if nxt == source:
                    return T_target_nxt
                seen.add(nxt)
                queue.append((nxt, T_target_nxt))
        return None
