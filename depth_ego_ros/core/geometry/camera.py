"""The pinhole camera: back-projection, projection, sampling grids, intrinsics of resized and
cropped images, LiDAR points to depth images, and the plumb_bob lens model.

Conventions: see :mod:`depth_ego_ros.core.geometry` (optical frame x right, y down, z forward;
integer pixel centres; u = column, v = row). Torch functions are batched and differentiable;
``*_np`` functions are numpy (float64). Moving points between frames is pose maths
(:mod:`.poses`), used here by :func:`project` / :func:`project_np` when a transform is given.
"""
from __future__ import annotations

import numpy as np
import torch

from .poses import _compute_dtype, transform_points_np

__all__ = [
    'backproject', 'project', 'pixel_grid', 'pixels_to_grid',
    'scale_intrinsics', 'intrinsics_for_resize', 'intrinsics_for_crop',
    'backproject_np', 'project_np', 'project_points_to_image', 'points_to_depth_image',
    'distort_normalized_np',
]


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
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
