"""3-D alignment of consecutive depth maps (vid2depth, Mahjourian et al. 2018).

:func:`alignment_loss_3d` -- the target depth map's point cloud is moved into the source camera
by the predicted pose and compared with the source depth map's point cloud at the pixel it
projects to (projective association, bilinear -- differentiable w.r.t. both depth maps and the
pose), with a robust distance (:func:`robust_distance`); depth edges (:func:`planarity_edges`)
and occluded points are left out. vid2depth associates with ICP and also penalises the ICP
residual transform; projective association is the cheap differentiable variant.

Conventions as in :mod:`depth_ego_ros.core.losses`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry import backproject, pixels_to_grid, project
from .depth_scale import masked_median
from .warping import safe_grid

__all__ = ['AlignmentOutput', 'alignment_loss_3d', 'planarity_edges', 'robust_distance',
           'ROBUST_KINDS']


ROBUST_KINDS = ('l1', 'l2', 'charbonnier', 'cauchy')


def robust_distance(residual: torch.Tensor, kind: str = 'charbonnier', c: float = 0.01) -> torch.Tensor:
    """Per-point penalty of 3-D residuals [B,3,...] -> [B,1,...].

    * ``l1``: |dx| + |dy| + |dz|;
    * ``l2``: Euclidean distance r;
    * ``charbonnier``: ``sqrt(r^2 + c^2) - c`` (smooth L1-like: ~r^2/2c near 0, ~r beyond c);
    * ``cauchy``: ``c * log(1 + (r/c)^2)`` (bounded influence: outliers such as occlusions and
      moving objects barely pull).
    All are 0 at r = 0.
    """
    if kind == 'l1':
        return residual.abs().sum(1, keepdim=True)
    r2 = (residual * residual).sum(1, keepdim=True)
    if kind == 'l2':
        return torch.sqrt(r2 + 1e-12) - 1e-6
    if not c > 0:
        raise ValueError(f'c must be > 0, got {c}')
    if kind == 'charbonnier':
        return torch.sqrt(r2 + c * c) - c
    if kind == 'cauchy':
        return c * torch.log1p(r2 / (c * c))
    raise ValueError(f'robust must be one of {ROBUST_KINDS}, got {kind!r}')


@dataclass
class AlignmentOutput:
    loss: torch.Tensor          # scalar
    residual: torch.Tensor      # [B,1,H,W] robust distance per target pixel (0 where invalid)
    valid: torch.Tensor         # [B,1,H,W] bool, pixels that took part
    scale: torch.Tensor         # [B,1,1,1] the normalising depth (1 when normalize is None)


def planarity_edges(depth: torch.Tensor, valid: torch.Tensor | None = None,
                    threshold: float = 0.05) -> torch.Tensor:
    """Depth edges: pixels where the inverse depth is not locally planar.

    Inverse depth is an affine function of the pixel coordinates on any plane, so its second
    differences vanish there; a relative second difference (along rows or columns) above
    ``threshold`` marks a discontinuity (occluding contour, thin object). Invalid pixels count as
    edges. Returns [B,1,H,W] bool (no gradient)."""
    with torch.no_grad():
        ok = torch.isfinite(depth) & (depth > 0) if valid is None else valid
        inv = torch.where(ok, 1.0 / torch.where(ok, depth, torch.ones_like(depth)), torch.zeros_like(depth))
        p = F.pad(inv, (1, 1, 1, 1), mode='replicate')
        dxx = (p[..., 1:-1, :-2] - 2 * inv + p[..., 1:-1, 2:]).abs()
        dyy = (p[..., :-2, 1:-1] - 2 * inv + p[..., 2:, 1:-1]).abs()
        rel = torch.maximum(dxx, dyy) / inv.clamp(min=1e-12)
        return (rel > threshold) | ~ok


def alignment_loss_3d(depth_tgt: torch.Tensor, depth_src: torch.Tensor, T_src_tgt: torch.Tensor,
                      K: torch.Tensor, K_src: torch.Tensor | None = None,
                      weight: torch.Tensor | None = None, robust: str = 'charbonnier',
                      c: float = 0.01, normalize: str | None = 'median',
                      edge_threshold: float | None = 0.05,
                      occlusion_tolerance: float | None = 0.05,
                      max_depth: float | None = None) -> AlignmentOutput:
    """3-D point-cloud alignment between consecutive depth maps (vid2depth), projective association.

    Each target pixel is back-projected with ``depth_tgt`` and moved into the source camera by
    ``T_src_tgt`` (point q, at depth z); q projects to source pixel uv. The source point cloud is
    evaluated at uv: the source *inverse* depth is sampled bilinearly there (exact on planar
    surfaces, where inverse depth is affine in the pixel coordinates) and back-projected along
    the ray of uv (point p). The penalty is ``robust_distance(q - p)`` averaged over the pixels
    that take part (weighted by ``weight`` if given). Gradients reach both depth maps and the
    pose (through q, uv and the sampled depth).

    A pixel takes part when its target depth is valid (finite, > 0, <= max_depth), q is in front
    of the source camera and projects inside the image with all four bilinear neighbours valid,
    and -- each test can be switched off with None --

    * ``edge_threshold``: none of those neighbours lies on a depth edge of the source map
      (:func:`planarity_edges`): bilinear sampling across a discontinuity invents points between
      foreground and background; nor does the target pixel itself (thin structures, one pixel
      wide, are not seen consistently by point-sampled depth). Depends only on the depth maps,
      not on the pose.
    * ``occlusion_tolerance``: q is not behind the source surface by more than this fraction
      (``z <= (1 + tol) * depth_src(uv)``): such target points are hidden in the source view.
      (A grossly wrong pose also creates such pixels and they are then left out; the loss stays
      far above its value at the right pose -- see the tests -- but this term is meant to be
      used beside the photometric loss, not alone.)

    Args:
        depth_tgt, depth_src: [B,1,H,W] z-depth of the target and the source frame.
        T_src_tgt: [B,4,4] target camera -> source camera.
        K: [B,3,3] target intrinsics; K_src: source intrinsics (default K).
        weight: optional [B,1,H,W] per-pixel weight (auto-mask, explainability, ...).
        robust, c: see :func:`robust_distance` (c in the units after normalisation).
        normalize: 'median' divides both depth maps and the translation by the per-sample median
            of the valid target depth -- the loss is then invariant to a global scale (a corridor
            and a highway weigh alike, and shrinking the depth cannot lower it); None keeps depth
            units.
    With the exact depth and pose of a rigid scene the loss is 0 up to float rounding on every
    pixel that takes part.
    """
    if depth_tgt.dim() != 4 or depth_tgt.shape[1] != 1 or depth_src.shape != depth_tgt.shape:
        raise ValueError(f'depth_tgt and depth_src must both be [B,1,H,W], got '
                         f'{tuple(depth_tgt.shape)} and {tuple(depth_src.shape)}')
    if normalize not in (None, 'median'):
        raise ValueError(f"normalize must be None or 'median', got {normalize!r}")
    B, _, H, W = depth_tgt.shape
    vt = _valid_depth(depth_tgt, max_depth)
    vs = _valid_depth(depth_src, max_depth)
    dt = torch.where(vt, depth_tgt, torch.ones_like(depth_tgt))
    ds = torch.where(vs, depth_src, torch.ones_like(depth_src))
    T = T_src_tgt if T_src_tgt.dim() == 3 else T_src_tgt.unsqueeze(0)
    if T.shape[0] == 1 and B > 1:
        T = T.expand(B, -1, -1)
    T = T[:, :3, :4]
    if normalize == 'median':
        scale = masked_median(dt, vt).clamp(min=1e-6)
        dt, ds = dt / scale, ds / scale
        T = torch.cat([T[:, :, :3], T[:, :, 3:] / scale.view(-1, 1, 1)], 2)
    else:
        scale = dt.new_ones(B, 1, 1, 1)
    Ks = K if K_src is None else K_src
    p_tgt = backproject(dt, K).reshape(B, 3, -1)                 # target camera
    q = T[:, :, :3] @ p_tgt + T[:, :, 3:]                       # [B,3,HW] source camera
    uv, z = project(q.reshape(B, 3, H, W), Ks)                  # [B,2,H,W], [B,1,H,W]
    grid = safe_grid(pixels_to_grid(uv, H, W, align_corners=False).to(ds.dtype))
    inv_src = torch.where(vs, 1.0 / ds, torch.zeros_like(ds))
    inv_samp = F.grid_sample(inv_src, grid, mode='bilinear', padding_mode='border',
                             align_corners=False)
    d_samp = 1.0 / inv_samp.clamp(min=1e-12)
    ones = torch.ones_like(uv[:, :1])
    Ks33 = Ks if Ks.dim() == 3 else Ks.unsqueeze(0)
    rays = torch.linalg.inv(Ks33[:, :3, :3].to(uv.dtype)) @ torch.cat([uv, ones], 1).reshape(B, 3, -1)
    p = rays.reshape(B, 3, H, W) * d_samp                       # source cloud at uv
    with torch.no_grad():
        u, v = uv[:, 0:1], uv[:, 1:2]
        v_samp = F.grid_sample(vs.to(ds.dtype), grid, mode='bilinear', padding_mode='zeros',
                               align_corners=False)
        valid = (vt & (z > 1e-6) & (v_samp > 0.999) & (u >= 0) & (u <= W - 1)
                 & (v >= 0) & (v <= H - 1))
        if edge_threshold is not None:
            edges = planarity_edges(ds, vs, edge_threshold).to(ds.dtype)
            cell = F.max_pool2d(F.pad(edges, (0, 1, 0, 1)), 2, 1)   # cell (i,j): any corner an edge
            on_edge = F.grid_sample(cell, safe_grid(pixels_to_grid(uv - 0.5, H, W).to(ds.dtype)),
                                    mode='nearest', padding_mode='border', align_corners=False)
            valid &= (on_edge < 0.5) & ~planarity_edges(dt, vt, edge_threshold)
        if occlusion_tolerance is not None:
            valid &= z <= d_samp * (1.0 + occlusion_tolerance)
    rho = robust_distance(q.reshape(B, 3, H, W) - p, robust, c)
    rho = torch.where(valid, rho, torch.zeros_like(rho))
    w = valid.to(rho.dtype)
    if weight is not None:
        if weight.shape != depth_tgt.shape:
            raise ValueError(f'weight must be [B,1,H,W] like depth, got {tuple(weight.shape)}')
        w = w * weight.to(rho.dtype)
    loss = (rho * w).sum() / w.sum().clamp(min=1e-6)
    return AlignmentOutput(loss=loss, residual=rho, valid=valid, scale=scale)


def _valid_depth(d: torch.Tensor, max_depth: float | None) -> torch.Tensor:
    ok = torch.isfinite(d) & (d > 0)
    if max_depth is not None:
        ok = ok & (d <= max_depth)
    return ok
