"""sensor_msgs/PointCloud2 <-> numpy (re-exported by :mod:`depth_ego_ros.ros.conversions`).

:func:`xyzrgb_to_cloud` / :func:`cloud_to_xyzrgb`: x, y, z float32 + ``rgb`` as a float32 whose
bits are 0x00RRGGBB (the PCL / RViz / depth_image_proc convention); :func:`packed_to_cloud` for
points already packed that way (what ``Estimator.point_cloud`` returns). Vectorised numpy; uses
sensor_msgs_py when importable.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from depth_ego_ros.ros import compat
from depth_ego_ros.ros.image_conversions import _NATIVE_BIG, _as_byte_array

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


__all__ = ['XYZRGB_FIELDS', 'XYZ_FIELDS', 'cloud_to_structured', 'cloud_to_xyzrgb', 'pack_rgb',
           'packed_to_cloud', 'unpack_rgb', 'xyzrgb_to_cloud']
