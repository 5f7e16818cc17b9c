"""Camera geometry: back-projection, projection, rotations, poses and intrinsics.

Conventions (used throughout the project)
-----------------------------------------
* Camera frame = optical frame (REP 103 ``*_optical_frame``): x right, y down, z forward.
* Pixel coordinates: u along the width (column), v along the height (row); the centre of pixel
  (row i, column j) is at (u, v) = (j, i) -- integer pixel centres, as OpenCV, ROS CameraInfo and
  monodepth2's back-projection grid.
* A 4x4 pose ``T_a_b`` maps points from frame b into frame a: ``p_a = T_a_b @ p_b``. It is also the
  pose of frame b expressed in frame a (e.g. ``T_world_cam`` = camera->world = camera pose).
* Axis-angle vectors are rotation vectors (axis * angle, radians); ``axis_angle_to_matrix`` is the
  SO(3) exponential map (Rodrigues), as monodepth2's ``rot_from_axisangle``.
* Quaternion component order is always in the function name: ``xyzw`` is the ROS /
  geometry_msgs/TUM-file order, ``wxyz`` is the transforms3d / Eigen-constructor order.

Torch functions are batched (leading dimension B) and differentiable; the ``*_np`` functions and the
quaternion / pose helpers are numpy conveniences for I/O and evaluation code. Functions taking a
pose or an intrinsics matrix accept numpy arrays or torch tensors where stated and return the same
kind. Invalid shapes raise ``ValueError`` saying what was expected.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    'backproject', 'project', 'pixel_grid', 'pixels_to_grid',
    'axis_angle_to_matrix', 'matrix_to_axis_angle', 'pose_vec_to_mat', 'invert_pose',
    'scale_intrinsics', 'intrinsics_for_resize', 'intrinsics_for_crop', 'chain_poses',
    'relative_poses',
    'backproject_np', 'project_np', 'project_points_to_image', 'transform_points_np',
    'axis_angle_to_matrix_np', 'matrix_to_axis_angle_np', 'rotation_angle_np',
    'quat_xyzw_to_matrix', 'matrix_to_quat_xyzw', 'quat_wxyz_to_matrix', 'matrix_to_quat_wxyz',
    'quat_xyzw_to_wxyz', 'quat_wxyz_to_xyzw', 'pose_from_tq_xyzw', 'pose_to_tq_xyzw',
    'interpolate_pose', 'distort_normalized_np', 'points_to_depth_image',
]


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """fp16/bf16 inputs are computed in fp32 (linalg ops and small-angle maths need it)."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _as_K33(K: torch.Tensor, batch: int, what: str = 'K') -> torch.Tensor:
    """[3,3] | [4,4] | [B,3,3] | [B,4,4] (or B=1) -> [B,3,3]."""
    if not torch.is_tensor(K):
        raise ValueError(f'{what} must be a torch tensor, got {type(K).__name__}')
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if K.dim() != 3 or K.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f'{what} must have shape [B,3,3] or [B,4,4] (or unbatched), got {tuple(K.shape)}')
    K = K[:, :3, :3]
    if K.shape[0] == 1 and batch != 1:
        K = K.expand(batch, 3, 3)
    if K.shape[0] != batch:
        raise ValueError(f'{what} batch {K.shape[0]} does not match data batch {batch}')
    return K


def _as_T(T: torch.Tensor, batch: int) -> torch.Tensor:
    """[4,4] | [3,4] | [B,4,4] | [B,3,4] -> [B,3,4]."""
    if T.dim() == 2:
        T = T.unsqueeze(0)
    if T.dim() != 3 or T.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f'T must have shape [B,4,4] or [B,3,4] (or unbatched), got {tuple(T.shape)}')
    T = T[:, :3, :]
    if T.shape[0] == 1 and batch != 1:
        T = T.expand(batch, 3, 4)
    if T.shape[0] != batch:
        raise ValueError(f'T batch {T.shape[0]} does not match points batch {batch}')
    return T


# ----------------------------------------------------------------------------------------------
# back-projection / projection (torch, batched)
# ----------------------------------------------------------------------------------------------
def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates of every pixel centre.

    Returns [3, H*W]: rows (u, v, 1) in row-major pixel order (u = column index, v = row index).
    """
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing='ij')
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width, device=device, dtype=dtype)])


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift a depth map to 3-D points in the camera (optical) frame.

    Args:
        depth: [B,1,H,W] z-depth (distance along the optical axis, not along the ray).
        K: [B,3,3] (or [B,4,4], or unbatched [3,3]/[4,4]) pinhole intrinsics for this resolution.
    Returns:
        points: [B,3,H,W], ``points[:, :, v, u] = depth[:, 0, v, u] * K^-1 @ (u, v, 1)``.
    """
    if not torch.is_tensor(depth) or depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be a [B,1,H,W] tensor, got {tuple(getattr(depth, "shape", ()))}')
    B, _, H, W = depth.shape
    cdtype = _compute_dtype(depth)
    K = _as_K33(K, B).to(device=depth.device, dtype=cdtype)
    K_inv = torch.linalg.inv(K)                                   # [B,3,3]
    pix = pixel_grid(H, W, device=depth.device, dtype=cdtype)     # [3,HW]
    rays = K_inv @ pix.unsqueeze(0)                               # [B,3,HW]
    points = rays * depth.reshape(B, 1, H * W).to(cdtype)
    return points.reshape(B, 3, H, W).to(depth.dtype)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor | None = None,
            eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Project 3-D points to pixels, optionally moving them to another frame first.

    Args:
        points: [B,3,N] points (also accepted: [B,3,H,W]; the outputs then keep the H,W layout).
        K: [B,3,3] (or [B,4,4], or unbatched) intrinsics of the target camera.
        T: optional [B,4,4] (or [B,3,4]) transform applied first: ``p' = R @ p + t``
           (i.e. ``T_target_source`` for points given in the source frame).
        eps: the depth used in the division is pushed away from 0 by at least eps, keeping its
           sign (points behind the camera, z<0, project mirrored: mask them with ``z > 0``).
    Returns:
        uv: [B,2,N] pixel coordinates (u = column, v = row; pixel centres at integers).
        z:  [B,1,N] depth of the points in the target camera frame.
    """
    if not torch.is_tensor(points) or points.dim() not in (3, 4) or points.shape[1] != 3:
        raise ValueError(f'points must be a [B,3,N] or [B,3,H,W] tensor, got {tuple(getattr(points, "shape", ()))}')
    spatial = points.shape[2:]
    B = points.shape[0]
    out_dtype = points.dtype
    cdtype = _compute_dtype(points)
    p = points.reshape(B, 3, -1).to(cdtype)
    if T is not None:
        T = _as_T(T, B).to(device=p.device, dtype=cdtype)
        p = T[:, :, :3] @ p + T[:, :, 3:]
    K = _as_K33(K, B).to(device=p.device, dtype=cdtype)
    cam = K @ p
    z = p[:, 2:3]
    denom = torch.where(z >= 0, z.clamp(min=eps), z.clamp(max=-eps))
    uv = cam[:, :2] / denom
    return uv.reshape(B, 2, *spatial).to(out_dtype), z.reshape(B, 1, *spatial).to(out_dtype)


def pixels_to_grid(uv: torch.Tensor, height: int, width: int, align_corners: bool = False) -> torch.Tensor:
    """Pixel coordinates -> normalised sampling grid for ``torch.nn.functional.grid_sample``.

    Args:
        uv: [B,2,H',W'] pixel coordinates in an image of size height x width.
        align_corners: must match the flag given to grid_sample. With False (recommended, and
            grid_sample's default) pixel centre u maps to (2u+1)/W - 1; with True to 2u/(W-1) - 1.
    Returns:
        grid: [B,H',W',2] (x, y) in [-1, 1] for in-image samples.
    """
    if uv.dim() != 4 or uv.shape[1] != 2:
        raise ValueError(f'uv must be [B,2,H,W], got {tuple(uv.shape)}')
    u, v = uv[:, 0], uv[:, 1]
    if align_corners:
        x = 2.0 * u / max(width - 1, 1) - 1.0
        y = 2.0 * v / max(height - 1, 1) - 1.0
    else:
        x = (2.0 * u + 1.0) / width - 1.0
        y = (2.0 * v + 1.0) / height - 1.0
    return torch.stack([x, y], dim=-1)


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
# intrinsics (numpy or torch)
# ----------------------------------------------------------------------------------------------
def _check_K(K):
    if torch.is_tensor(K):
        if K.dim() < 2 or K.shape[-2:] not in ((3, 3), (4, 4)):
            raise ValueError(f'K must be [...,3,3] or [...,4,4], got {tuple(K.shape)}')
        return K.clone()
    K = np.array(K, dtype=np.float64)  # copy
    if K.ndim < 2 or K.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f'K must be (3,3) or (4,4) (optionally batched), got {K.shape}')
    return K


def scale_intrinsics(K, sx: float, sy: float):
    """Plain scaling of the first two rows: fx, cx (and skew) *= sx; fy, cy *= sy.

    This is monodepth2's convention (normalised K times the image size). For the intrinsics of a
    resized image with exact pixel-centre bookkeeping use :func:`intrinsics_for_resize`.
    K: numpy (3,3)/(4,4) or torch [...,3,3]/[...,4,4]; returns a new object of the same kind.
    """
    K = _check_K(K)
    K[..., 0, :3] *= sx
    K[..., 1, :3] *= sy
    return K


def intrinsics_for_resize(K, src_wh, dst_wh, half_pixel: bool = True):
    """Intrinsics of an image resized from src_wh=(W,H) to dst_wh=(W',H').

    With ``half_pixel=True`` (default) the result matches resampling with cv2.resize, PIL, or
    ``torch.nn.functional.interpolate(align_corners=False)``: a point at pixel u in the source
    lands at ``(u + 0.5) * W'/W - 0.5``, so ``fx' = fx*s``, ``cx' = (cx + 0.5)*s - 0.5``.
    ``half_pixel=False`` is the plain scaling of :func:`scale_intrinsics` (monodepth2; differs by
    less than one pixel).
    """
    (sw, sh), (dw, dh) = src_wh, dst_wh
    if min(sw, sh, dw, dh) <= 0:
        raise ValueError(f'image sizes must be positive, got src {src_wh} dst {dst_wh}')
    sx, sy = dw / sw, dh / sh
    K = scale_intrinsics(K, sx, sy)
    if half_pixel:
        K[..., 0, 2] += 0.5 * sx - 0.5
        K[..., 1, 2] += 0.5 * sy - 0.5
    return K


def intrinsics_for_crop(K, x0: float, y0: float):
    """Intrinsics of the crop whose top-left pixel is (column x0, row y0) of the original image:
    cx -= x0, cy -= y0. numpy or torch in, same kind out."""
    K = _check_K(K)
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    return K


# ----------------------------------------------------------------------------------------------
# numpy conveniences
# ----------------------------------------------------------------------------------------------
def _K33_np(K) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape not in ((3, 3), (4, 4)):
        raise ValueError(f'K must be (3,3) or (4,4), got {K.shape}')
    K = K[:3, :3]
    if not np.all(np.isfinite(K)) or K[0, 0] == 0 or K[1, 1] == 0:
        raise ValueError(f'K must be finite with non-zero focal lengths, got {K.tolist()}')
    return K


def backproject_np(depth: np.ndarray, K) -> np.ndarray:
    """depth (H,W) z-depth + K (3,3) -> points (H,W,3) in the camera frame (float64)."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be (H,W), got {depth.shape}')
    K = _K33_np(K)
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)             # H,W,3
    rays = pix @ np.linalg.inv(K).T
    return rays * depth[..., None].astype(np.float64)


def transform_points_np(T, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 (or 3x4) transform to points (...,3): ``R @ p + t``."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape not in ((4, 4), (3, 4)):
        raise ValueError(f'T must be (4,4) or (3,4), got {T.shape}')
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f'points must be (...,3), got {p.shape}')
    return p @ T[:3, :3].T + T[:3, 3]


def project_np(points: np.ndarray, K, T=None, eps: float = 1e-7):
    """points (N,3) [optionally moved by T (4,4)] -> (uv (N,2), z (N,)). Same maths as
    :func:`project`."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f'points must be (N,3), got {p.shape}')
    if T is not None:
        p = transform_points_np(T, p)
    K = _K33_np(K)
    z = p[:, 2]
    denom = np.where(z >= 0, np.maximum(z, eps), np.minimum(z, -eps))
    uv = (p @ K.T)[:, :2] / denom[:, None]
    return uv, z


def project_points_to_image(points: np.ndarray, T_cam_from_points, K, width: int, height: int,
                            min_depth: float = 1e-3, max_depth: float = np.inf):
    """Project points given in some frame (e.g. a LiDAR frame or the world) into a camera image.

    Args:
        points: (N,3) (extra columns, e.g. intensity, are ignored).
        T_cam_from_points: (4,4) extrinsic ``T_cam_src`` mapping the points' frame into the camera
            optical frame (for a LiDAR: ``inv(T_world_cam) @ T_world_lidar``).
        K: (3,3) camera intrinsics; width, height: image size in pixels.
        min_depth, max_depth: accepted depth range (points behind the camera are never accepted).
    Returns:
        uv: (N,2) pixel coordinates (float), depth: (N,) z in the camera frame,
        mask: (N,) bool, True where min_depth < z <= max_depth and the pixel centre lies in the
        image (-0.5 <= u < W-0.5, -0.5 <= v < H-0.5, i.e. it rounds to a valid pixel).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f'points must be (N,3+), got {p.shape}')
    uv, z = project_np(p[:, :3], K, T_cam_from_points)
    mask = ((z > min_depth) & (z <= max_depth)
            & (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5)
            & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5))
    return uv, z, mask


def points_to_depth_image(points: np.ndarray, T_cam_from_points, K, width: int, height: int,
                          min_depth: float = 1e-3, max_depth: float = np.inf) -> np.ndarray:
    """Render a sparse depth image (e.g. LiDAR ground truth) from 3-D points.

    Each accepted point (see :func:`project_points_to_image`) goes to the pixel its projection
    rounds to; where several points land on one pixel the nearest wins (z-buffer).
    Returns (H,W) float32 z-depth in metres, 0 where no point landed.
    """
    uv, z, mask = project_points_to_image(points, T_cam_from_points, K, width, height, min_depth, max_depth)
    cols = np.clip(np.floor(uv[mask, 0] + 0.5).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(uv[mask, 1] + 0.5).astype(np.int64), 0, height - 1)
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, rows * width + cols, z[mask])
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(height, width).astype(np.float32)


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


def distort_normalized_np(xy, dist) -> np.ndarray:
    """Apply the OpenCV / ROS ``plumb_bob`` lens model to normalised image coordinates.

    Args:
        xy: (...,2) undistorted normalised coordinates (x/z, y/z).
        dist: (k1, k2, p1, p2[, k3]) as in sensor_msgs/CameraInfo ``d`` for plumb_bob.
    Returns:
        (...,2) distorted normalised coordinates; pixels are then ``K @ (xd, yd, 1)``.
    """
    d = np.zeros(5)
    dist = np.asarray(dist, dtype=np.float64).ravel()
    if dist.size not in (4, 5):
        raise ValueError(f'plumb_bob distortion needs 4 or 5 coefficients, got {dist.size}')
    d[:dist.size] = dist
    k1, k2, p1, p2, k3 = d
    xy = np.asarray(xy, dtype=np.float64)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)
