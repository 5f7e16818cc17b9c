"""ROS message <-> numpy conversions used by the nodes (and by tests, benches, tools): the one
module to import (``from depth_ego_ros.ros import conversions``); images live in
image_conversions.py and point clouds in cloud_conversions.py, re-exported here.

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

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from transforms3d.quaternions import mat2quat, quat2mat

from depth_ego_ros.ros.cloud_conversions import (  # noqa: F401 - re-exported
    XYZ_FIELDS,
    XYZRGB_FIELDS,
    cloud_to_structured,
    cloud_to_xyzrgb,
    pack_rgb,
    packed_to_cloud,
    unpack_rgb,
    xyzrgb_to_cloud,
)
from depth_ego_ros.ros.image_conversions import (  # noqa: F401 - re-exported
    COLOR_ENCODINGS,
    IMAGE_ENCODINGS,
    compressed_to_rgb8,
    image_to_numpy,
    image_to_rgb8,
    numpy_to_image,
    require_color_encoding,
    rgb8_to_compressed,
    rgb8_to_image,
    to_rgb8,
    validate_image,
)


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
