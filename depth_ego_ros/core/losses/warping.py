"""Inverse warping: synthesise the target view from a source image with the target's depth and
the relative pose -- rigidly, or with independently moving objects.

* :func:`warp_image` -- every target pixel is back-projected with its depth, moved into the
  source camera by ``T_src_tgt`` and projected; the source is sampled there (bilinear);
* :func:`warp_image_with_objects` -- the same, with pixels of object m moved by
  ``T_src_tgt @ T_obj_m`` first (struct2depth; ``T_obj`` is defined and derived in
  :mod:`depth_ego_ros.core.object_motion`), via :func:`apply_object_motion`;
* :func:`sample_source` -- the shared second half (target-frame points -> sampled source + valid
  mask), :func:`safe_grid` -- the guard against non-finite sampling positions.

Conventions as in :mod:`depth_ego_ros.core.losses`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import backproject, pixels_to_grid, project
from ..instance_masks import check_masks, resize_masks

__all__ = ['warp_image', 'sample_source', 'safe_grid', 'apply_object_motion',
           'warp_image_with_objects']


def warp_image(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T_src_tgt: torch.Tensor,
               padding_mode: str = 'border', K_source: torch.Tensor | None = None):
    """Synthesise the target view from a source image (inverse warping).

    Every target pixel is back-projected with its depth, moved into the source camera by
    ``T_src_tgt`` and projected; the source is sampled there (bilinear).

    Args:
        source: [B,C,H,W] source image.
        depth: [B,1,H,W] target z-depth.
        K: [B,3,3] target intrinsics (also used for the source unless K_source is given).
        T_src_tgt: [B,4,4] target camera -> source camera.
        padding_mode: grid_sample padding for samples outside the source ('border' as monodepth2).
    Returns:
        warped [B,C,H,W]; valid [B,1,H,W] bool -- the projection lands inside the source image and
        in front of the source camera.
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be [B,1,H,W], got {tuple(depth.shape)}')
    if source.dim() != 4 or source.shape[0] != depth.shape[0] or source.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f'source {tuple(source.shape)} and depth {tuple(depth.shape)} must share B, H, W')
    points = backproject(depth, K)                                         # [B,3,H,W]
    return sample_source(source, points, K if K_source is None else K_source, T_src_tgt,
                         padding_mode)


def sample_source(source: torch.Tensor, points: torch.Tensor, K_source: torch.Tensor,
                  T_src_tgt: torch.Tensor, padding_mode: str = 'border'):
    """The second half of an inverse warp: target-frame points [B,3,H,W] -> the source image
    sampled where ``T_src_tgt`` and ``K_source`` project them. Returns (warped [B,C,H,W],
    valid [B,1,H,W] bool) as :func:`warp_image` (the rigid warp and the object-aware warp
    :func:`warp_image_with_objects` share it)."""
    B, _, H, W = points.shape
    uv, z = project(points, K_source, T_src_tgt)                           # [B,2,H,W], [B,1,H,W]
    grid = pixels_to_grid(uv, H, W, align_corners=False)
    # A diverged pose or depth gives NaN/inf sampling positions; torch's CPU grid_sample backward
    # with border padding crashes the process on NaN. Clamp far outside [-1, 1] instead: the
    # sample is then out of the image (invalid below) and the loss stays finite.
    grid = safe_grid(grid)
    warped = F.grid_sample(source, grid.to(source.dtype), mode='bilinear', padding_mode=padding_mode,
                           align_corners=False)
    u, v = uv[:, 0:1], uv[:, 1:2]
    valid = (z > 1e-3) & (u > -0.5) & (u < W - 0.5) & (v > -0.5) & (v < H - 0.5)
    return warped, valid


def safe_grid(grid: torch.Tensor) -> torch.Tensor:
    """Non-finite sampling positions -> outside the image, everything clamped to [-2, 2].

    grid_sample's CPU backward crashes the process (segmentation fault, torch 2.14) on NaN
    coordinates, e.g. after a diverged pose; such samples are invalid anyway."""
    return torch.nan_to_num(grid, nan=-2.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)


def apply_object_motion(points: torch.Tensor, masks: torch.Tensor,
                        object_poses: torch.Tensor) -> torch.Tensor:
    """Move target-camera points [B,3,H,W] by their object's motion: ``p + sum_m mask_m (T_m p - p)``
    (exactly ``T_m p`` inside a binary mask m, ``p`` outside all masks; soft masks blend)."""
    B, _, H, W = points.shape
    masks = check_masks(masks, B, H, W, 'masks').to(points.dtype)
    M = masks.shape[1]
    if object_poses.shape != (B, M, 4, 4):
        raise ValueError(f'object_poses must be [B,M,4,4] = [{B},{M},4,4], got {tuple(object_poses.shape)}')
    if M == 0:
        return points
    T = object_poses.to(points.dtype)
    p = points.reshape(B, 1, 3, H * W)
    moved = T[..., :3, :3] @ p + T[..., :3, 3:]                      # [B,M,3,N]
    delta = ((moved - p) * masks.reshape(B, M, 1, H * W)).sum(1)     # [B,3,N]
    return points + delta.reshape(B, 3, H, W)


def warp_image_with_objects(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                            T_src_tgt: torch.Tensor, object_masks: torch.Tensor | None,
                            object_poses: torch.Tensor | None, padding_mode: str = 'border'):
    """Inverse warp of a source image into the target view with per-object motion.

    Pixels inside object mask m are moved by ``T_src_tgt @ T_obj_m``, all others by
    ``T_src_tgt`` (``T_obj``: see :mod:`depth_ego_ros.core.object_motion`). Without masks/poses
    it is the rigid warp (:func:`warp_image`, the same numbers).

    Args:
        source [B,C,H,W]; depth [B,1,H,W] target z-depth; K [B,3,3]; T_src_tgt [B,4,4];
        object_masks [B,M,H,W] in [0,1] (target frame; resized by nearest neighbour when at
        another resolution); object_poses [B,M,4,4] ``T_obj`` per object.
    Returns: (warped [B,C,H,W], valid [B,1,H,W] bool) as warp_image.
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be [B,1,H,W], got {tuple(depth.shape)}')
    if source.dim() != 4 or source.shape[0] != depth.shape[0] or source.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f'source {tuple(source.shape)} and depth {tuple(depth.shape)} must share B, H, W')
    B, _, H, W = depth.shape
    points = backproject(depth, K)
    if object_masks is not None and object_poses is not None:
        masks = resize_masks(object_masks, H, W)
        points = apply_object_motion(points, masks, object_poses)
    return sample_source(source, points, K, T_src_tgt, padding_mode)
