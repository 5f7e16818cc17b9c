"""Rotations and rigid poses: SO(3) exp/log maps, pose-network outputs to 4x4 transforms,
inverting and chaining poses, quaternions (both component orders) and pose interpolation.

Conventions: see :mod:`depth_ego_ros.core.geometry` (``T_a_b`` maps frame-b points into frame a;
axis-angle = rotation vector; the quaternion order is in each function's name). Torch functions
are batched and differentiable; ``*_np`` and the quaternion / pose helpers are numpy (float64).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    'axis_angle_to_matrix', 'matrix_to_axis_angle', 'pose_vec_to_mat', 'invert_pose',
    'chain_poses', 'relative_poses', 'transform_points_np',
    'axis_angle_to_matrix_np', 'matrix_to_axis_angle_np', 'rotation_angle_np',
    'quat_xyzw_to_matrix', 'matrix_to_quat_xyzw', 'quat_wxyz_to_matrix', 'matrix_to_quat_wxyz',
    'quat_xyzw_to_wxyz', 'quat_wxyz_to_xyzw', 'pose_from_tq_xyzw', 'pose_to_tq_xyzw',
    'interpolate_pose',
]


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """fp16/bf16 inputs are computed in fp32 (linalg ops and small-angle maths need it)."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


# ----------------------------------------------------------------------------------------------
# rotations and poses (torch, batched)
# ----------------------------------------------------------------------------------------------
def _skew(v: torch.Tensor) -> torch.Tensor:
    """[B,3] -> [B,3,3] cross-product matrices."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).reshape(-1, 3, 3)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rotation vectors -> rotation matrices (SO(3) exponential map, Rodrigues' formula).

    Args:
        aa: [B,3] (also [B,1,3], monodepth2's pose-decoder layout) axis * angle in radians.
    Returns:
        R: [B,3,3]; ``R @ p`` rotates p by |aa| radians about aa/|aa| (right-hand rule).
    Numerically stable and differentiable at aa = 0 (Taylor series for tiny angles).
    """
    if not torch.is_tensor(aa):
        raise ValueError('aa must be a torch tensor')
    if aa.dim() == 3 and aa.shape[1] == 1:
        aa = aa[:, 0]
    if aa.dim() != 2 or aa.shape[1] != 3:
        raise ValueError(f'axis-angle must be [B,3] or [B,1,3], got {tuple(aa.shape)}')
    out_dtype = aa.dtype
    a = aa.to(_compute_dtype(aa))
    theta2 = (a * a).sum(dim=1)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    # A = sin(t)/t, Bc = (1-cos(t))/t^2 with series for small t
    A = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    Bc = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    Kx = _skew(a)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(Kx)
    R = eye + A[:, None, None] * Kx + Bc[:, None, None] * (Kx @ Kx)
    return R.to(out_dtype)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B,3,3] -> rotation vectors [B,3] (SO(3) log map, angle in [0, pi]).
    Computed in float64 numpy (not differentiable; for evaluation and tests)."""
    return torch.from_numpy(matrix_to_axis_angle_np(R.detach().cpu().double().numpy())).to(R)


def pose_vec_to_mat(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Pose-network output -> 4x4 transform, with monodepth2's ``transformation_from_parameters``
    semantics.

    Args:
        axisangle: [B,3] (or [B,1,3]) rotation vector.
        translation: [B,3] (or [B,1,3]).
        invert: False -> ``T = [R | t]`` (rotate, then translate);
                True  -> ``T = [R^T | -R^T t]``, the exact inverse of the False result.
    Returns:
        T: [B,4,4].
    In monodepth2 the pose net sees (frame_a, frame_b) in temporal order and ``invert`` is set for
    the frame before the target, so that in both cases T maps target-camera points into the other
    frame's camera (``T_other_target``).
    """
    if translation.dim() == 3 and translation.shape[1] == 1:
        translation = translation[:, 0]
    if translation.dim() != 2 or translation.shape[1] != 3:
        raise ValueError(f'translation must be [B,3] or [B,1,3], got {tuple(translation.shape)}')
    R = axis_angle_to_matrix(axisangle)
    B = R.shape[0]
    if translation.shape[0] != B:
        raise ValueError(f'axisangle batch {B} != translation batch {translation.shape[0]}')
    t = translation.to(R.dtype)
    if invert:
        R = R.transpose(1, 2)
        t = -(R @ t.unsqueeze(-1)).squeeze(-1)
    T = torch.zeros(B, 4, 4, dtype=R.dtype, device=R.device)
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


def invert_pose(T):
    """Inverse of rigid transforms: numpy (4,4)/(N,4,4) or torch [...,4,4]; returns the same kind."""
    if torch.is_tensor(T):
        R = T[..., :3, :3]
        t = T[..., :3, 3:]
        out = torch.zeros_like(T)
        Rt = R.transpose(-1, -2)
        out[..., :3, :3] = Rt
        out[..., :3, 3:] = -Rt @ t
        out[..., 3, 3] = 1.0
        return out
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] != (4, 4):
        raise ValueError(f'pose must be (...,4,4), got {T.shape}')
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def chain_poses(rel):
    """Relative poses -> absolute trajectory.

    Args:
        rel: [N,4,4] numpy or torch; ``rel[i] = T_i_(i+1)`` (pose of frame i+1 in frame i, e.g. the
            Estimator's ``relative_pose`` T_prev_curr).
    Returns:
        abs: [N+1,4,4] same kind; ``abs[0] = I`` and ``abs[i+1] = abs[i] @ rel[i]``
        (``abs[i] = T_0_i``, camera i -> frame of camera 0).
    """
    is_torch = torch.is_tensor(rel)
    r = rel.detach().cpu().double().numpy() if is_torch else np.asarray(rel, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (4, 4):
        raise ValueError(f'rel must be [N,4,4], got {r.shape}')
    out = np.empty((r.shape[0] + 1, 4, 4))
    out[0] = np.eye(4)
    for i in range(r.shape[0]):
        out[i + 1] = out[i] @ r[i]
    if is_torch:
        return torch.from_numpy(out).to(dtype=rel.dtype, device=rel.device)
    return out


def relative_poses(abs_poses):
    """Inverse of :func:`chain_poses`: [N,4,4] absolute -> [N-1,4,4] with
    ``rel[i] = inv(abs[i]) @ abs[i+1]``. numpy or torch in, same kind out."""
    if torch.is_tensor(abs_poses):
        return invert_pose(abs_poses[:-1]) @ abs_poses[1:]
    a = np.asarray(abs_poses, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (4, 4):
        raise ValueError(f'abs_poses must be [N,4,4], got {a.shape}')
    return invert_pose(a[:-1]) @ a[1:]


# ----------------------------------------------------------------------------------------------
# numpy conveniences
# ----------------------------------------------------------------------------------------------
def transform_points_np(T, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 (or 3x4) transform to points (...,3): ``R @ p + t``."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape not in ((4, 4), (3, 4)):
        raise ValueError(f'T must be (4,4) or (3,4), got {T.shape}')
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f'points must be (...,3), got {p.shape}')
    return p @ T[:3, :3].T + T[:3, 3]



def axis_angle_to_matrix_np(aa) -> np.ndarray:
    """Rotation vector(s) (3,) or (N,3) -> (3,3) or (N,3,3) (float64)."""
    a = np.asarray(aa, dtype=np.float64)
    single = a.ndim == 1
    R = axis_angle_to_matrix(torch.from_numpy(np.atleast_2d(a).copy())).numpy()
    return R[0] if single else R


def matrix_to_axis_angle_np(R) -> np.ndarray:
    """Rotation matrix (3,3) or (N,3,3) -> rotation vector(s) (3,) / (N,3); angle in [0, pi].
    Robust near 0 and near pi (goes through the quaternion)."""
    q = matrix_to_quat_wxyz(R)
    single = q.ndim == 1
    q = np.atleast_2d(q)
    q = q * np.where(q[:, :1] < 0, -1.0, 1.0)               # w >= 0 -> angle in [0, pi]
    vnorm = np.linalg.norm(q[:, 1:], axis=1)
    angle = 2.0 * np.arctan2(vnorm, q[:, 0])
    # angle / sin(angle/2), with the small-angle limit 2 (1 + angle^2/24)
    with np.errstate(invalid='ignore', divide='ignore'):
        factor = np.where(vnorm > 1e-12, angle / np.where(vnorm > 1e-12, vnorm, 1.0), 2.0)
    out = q[:, 1:] * factor[:, None]
    return out[0] if single else out


def rotation_angle_np(R) -> np.ndarray:
    """Rotation angle(s) in radians of (3,3) / (N,3,3) matrices, via arccos((trace-1)/2) clipped
    to [-1, 1] (the formula evo uses for RPE rotation angles)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))


def quat_wxyz_to_matrix(q) -> np.ndarray:
    """Quaternion(s) (w, x, y, z) (4,) or (N,4), any norm > 0 (normalised here) -> (3,3)/(N,3,3)."""
    q = np.asarray(q, dtype=np.float64)
    single = q.ndim == 1
    q = np.atleast_2d(q)
    if q.shape[1] != 4:
        raise ValueError(f'quaternion must have 4 components, got shape {q.shape}')
    n = np.linalg.norm(q, axis=1, keepdims=True)
    if np.any(~np.isfinite(n)) or np.any(n < 1e-12):
        raise ValueError('quaternion must be finite and non-zero')
    w, x, y, z = (q / n).T
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=1).reshape(-1, 3, 3)
    return R[0] if single else R


def matrix_to_quat_wxyz(R) -> np.ndarray:
    """Rotation matrix (3,3) or (N,3,3) -> unit quaternion(s) (w, x, y, z) with w >= 0.
    Uses the numerically stable largest-component method (Shepperd)."""
    R = np.asarray(R, dtype=np.float64)
    single = R.ndim == 2
    R = R.reshape(-1, 3, 3)
    if R.shape[1:] != (3, 3):
        raise ValueError(f'R must be (3,3) or (N,3,3), got {R.shape}')
    m = R
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    k = np.argmax(np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1), axis=1)
    q = np.empty((R.shape[0], 4))
    # branch 0: w is the largest component
    s0 = 2.0 * np.sqrt(np.maximum(1.0 + tr, 1e-300))
    # branches 1..3: x, y or z is the largest
    s1 = 2.0 * np.sqrt(np.maximum(1.0 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], 1e-300))
    s2 = 2.0 * np.sqrt(np.maximum(1.0 + m[:, 1, 1] - m[:, 0, 0] - m[:, 2, 2], 1e-300))
    s3 = 2.0 * np.sqrt(np.maximum(1.0 + m[:, 2, 2] - m[:, 0, 0] - m[:, 1, 1], 1e-300))
    d21, d02, d10 = m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]
    a01, a02, a12 = m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1]
    cand = [np.stack([0.25 * s0, d21 / s0, d02 / s0, d10 / s0], axis=1),
            np.stack([d21 / s1, 0.25 * s1, a01 / s1, a02 / s1], axis=1),
            np.stack([d02 / s2, a01 / s2, 0.25 * s2, a12 / s2], axis=1),
            np.stack([d10 / s3, a02 / s3, a12 / s3, 0.25 * s3], axis=1)]
    for branch in range(4):
        sel = k == branch
        q[sel] = cand[branch][sel]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q[0] if single else q


def quat_xyzw_to_wxyz(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 3:4], q[..., 0:3]], axis=-1)


def quat_wxyz_to_xyzw(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 1:4], q[..., 0:1]], axis=-1)


def quat_xyzw_to_matrix(q) -> np.ndarray:
    """Quaternion(s) in ROS / geometry_msgs / TUM order (x, y, z, w) -> rotation matrix."""
    return quat_wxyz_to_matrix(quat_xyzw_to_wxyz(q))


def matrix_to_quat_xyzw(R) -> np.ndarray:
    """Rotation matrix -> quaternion(s) in ROS / TUM order (x, y, z, w), w >= 0."""
    return quat_wxyz_to_xyzw(matrix_to_quat_wxyz(R))


def pose_from_tq_xyzw(t, q_xyzw) -> np.ndarray:
    """Translation (3,)/(N,3) + quaternion (x,y,z,w) (4,)/(N,4) -> 4x4 pose(s) (float64)."""
    t = np.asarray(t, dtype=np.float64)
    R = quat_xyzw_to_matrix(q_xyzw)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def pose_to_tq_xyzw(T):
    """4x4 pose(s) -> (translation (3,)/(N,3), quaternion (x,y,z,w) (4,)/(N,4))."""
    T = np.asarray(T, dtype=np.float64)
    return T[..., :3, 3].copy(), matrix_to_quat_xyzw(T[..., :3, :3])


def interpolate_pose(T0, T1, alpha: float) -> np.ndarray:
    """Pose between T0 (alpha=0) and T1 (alpha=1): linear translation, geodesic (slerp) rotation."""
    T0 = np.asarray(T0, dtype=np.float64)
    T1 = np.asarray(T1, dtype=np.float64)
    dR = T0[:3, :3].T @ T1[:3, :3]
    R = T0[:3, :3] @ axis_angle_to_matrix_np(alpha * matrix_to_axis_angle_np(dR))
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return out
