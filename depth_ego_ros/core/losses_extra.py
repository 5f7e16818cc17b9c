"""Losses of the seed's other methods, beside :mod:`depth_ego_ros.core.losses` (monodepth2).

Explainability (SfMLearner, Zhou et al. 2017)
    :func:`explainability_regularization` -- cross-entropy of the explainability masks toward
    "explainable" (label 1), which keeps the network from switching every pixel off;
    :func:`masked_photometric_loss` -- per-source photometric errors weighted by the masks;
    :func:`explainability_photometric_loss` -- warp + photometric error + weighting in one call.

3-D alignment (vid2depth, Mahjourian et al. 2018)
    :func:`alignment_loss_3d` -- the target depth map's point cloud is moved into the source camera
    by the predicted pose and compared with the source depth map's point cloud at the pixel it
    projects to (projective association, bilinear -- differentiable w.r.t. both depth maps and the
    pose), with a robust distance. vid2depth associates with ICP and also penalises the ICP
    residual transform; projective association is the cheap differentiable variant.

Mixed depth ranges (after RealMonoDepth, Mertan et al. 2020)
    :func:`depth_statistics`, :func:`normalize_depth`, :func:`relative_depth` -- per-sample
    median / mean-absolute-deviation normalisation; :func:`scale_invariant_depth_loss` compares
    depth maps after it; :func:`relative_depth_fn` wraps a disparity->depth function so that the
    photometric loss sees depth with median 1 in every sample (a corridor and a highway give the
    networks the same numeric ranges; translations come out in units of the scene's median depth);
    :class:`SequenceDepthNormalizer` keeps one running scale per sequence instead of per frame.

Conventions as in :mod:`depth_ego_ros.core.losses`: images [B,3,H,W] in [0,1], depth z-depth
[B,1,H,W], ``T_src_tgt`` [B,4,4] maps target-camera points into the source camera, K [B,3,3].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .geometry import backproject, pixels_to_grid, project
from .losses import photometric_error, warp_image

__all__ = [
    'explainability_regularization', 'masked_photometric_loss', 'explainability_photometric_loss',
    'AlignmentOutput', 'alignment_loss_3d', 'planarity_edges', 'robust_distance', 'ROBUST_KINDS',
    'masked_median', 'depth_statistics', 'normalize_depth', 'relative_depth', 'relative_depth_fn',
    'scale_invariant_depth_loss', 'SequenceDepthNormalizer',
]


# ----------------------------------------------------------------------------------------------
# explainability
# ----------------------------------------------------------------------------------------------
def _scales(masks) -> list:
    if torch.is_tensor(masks):
        return [masks]
    if isinstance(masks, Mapping):
        return [masks[k] for k in sorted(masks)]
    return list(masks)


def explainability_regularization(masks, eps: float = 1e-6) -> torch.Tensor:
    """Cross-entropy of explainability masks toward label 1 ("explainable"), mean over pixels
    and sources, averaged over scales.

    Args:
        masks: per scale (dict {s: ...}, list, or one tensor) either probabilities [B,N,h,w] in
            [0,1] (loss ``-log p``, p clamped to >= eps) or the 2-way logits [B,N,2,h,w] of
            :class:`~.networks.posexp_net.PoseExpNet` (loss ``-log_softmax(logits)[:, :, 1]``,
            numerically exact).
    Returns: scalar >= 0; 0 exactly when every probability is 1.
    """
    terms = []
    for m in _scales(masks):
        if m.dim() == 5 and m.shape[2] == 2:
            terms.append(-F.log_softmax(m, dim=2)[:, :, 1].mean())
        elif m.dim() == 4:
            terms.append(-torch.log(m.clamp(min=eps, max=1.0)).mean())
        else:
            raise ValueError(f'masks must be [B,N,h,w] probabilities or [B,N,2,h,w] logits, got '
                             f'{tuple(m.shape)}')
    if not terms:
        raise ValueError('no masks given')
    return torch.stack(terms).mean()


def _upsample(m: torch.Tensor, size) -> torch.Tensor:
    if m.shape[-2:] == tuple(size):
        return m
    return F.interpolate(m, size=size, mode='bilinear', align_corners=False)


def masked_photometric_loss(errors: torch.Tensor, masks: torch.Tensor,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``mask * error`` over sources and (valid) pixels (SfMLearner's weighting).

    Args:
        errors: [B,N,H,W] photometric error of each warped source against the target.
        masks: [B,N,h,w] explainability probabilities (bilinearly resized to H x W if needed).
        valid: optional [B,N,H,W] bool/float (e.g. the warp landed inside the source image).
    The mean is over valid pixels, not over mask weight: lowering the mask lowers the loss, which
    is what :func:`explainability_regularization` counters.
    """
    if errors.dim() != 4 or masks.dim() != 4 or masks.shape[:2] != errors.shape[:2]:
        raise ValueError(f'errors [B,N,H,W] and masks [B,N,h,w] must share B and N, got '
                         f'{tuple(errors.shape)} and {tuple(masks.shape)}')
    m = _upsample(masks, errors.shape[-2:])
    weighted = m * errors
    if valid is None:
        return weighted.mean()
    v = valid.to(errors.dtype)
    if v.shape != errors.shape:
        v = v.expand_as(errors)
    return (weighted * v).sum() / v.sum().clamp(min=1.0)


def explainability_photometric_loss(target: torch.Tensor, sources: Sequence[torch.Tensor],
                                    depth: torch.Tensor, poses: Sequence[torch.Tensor],
                                    K: torch.Tensor, masks: torch.Tensor, alpha: float = 0.85,
                                    padding_mode: str = 'border'):
    """Warp every source into the target with ``depth`` and ``poses`` (T_src_tgt each), compute
    the photometric error (SSIM + L1, alpha) and weight it with the explainability masks.

    Args: target [B,3,H,W]; sources: N tensors [B,3,H,W] (or [B,N,3,H,W]); depth [B,1,H,W];
    poses: N tensors [B,4,4] (or [B,N,4,4]); K [B,3,3]; masks [B,N,h,w].
    Returns (loss scalar, errors [B,N,H,W], valid [B,N,H,W] bool).
    """
    srcs = list(sources.unbind(1)) if torch.is_tensor(sources) and sources.dim() == 5 else list(sources)
    Ts = list(poses.unbind(1)) if torch.is_tensor(poses) and poses.dim() == 4 else list(poses)
    if len(srcs) != len(Ts) or len(srcs) != masks.shape[1]:
        raise ValueError(f'need one pose and one mask per source: {len(srcs)} sources, {len(Ts)} '
                         f'poses, {masks.shape[1]} masks')
    errs, valids = [], []
    for s, T in zip(srcs, Ts):
        w, v = warp_image(s, depth, K, T, padding_mode=padding_mode)
        errs.append(photometric_error(w, target, alpha))
        valids.append(v)
    errors = torch.cat(errs, 1)
    valid = torch.cat(valids, 1)
    return masked_photometric_loss(errors, masks, valid), errors, valid


# ----------------------------------------------------------------------------------------------
# 3-D alignment
# ----------------------------------------------------------------------------------------------
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
    grid = _safe_grid(pixels_to_grid(uv, H, W, align_corners=False).to(ds.dtype))
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
            on_edge = F.grid_sample(cell, _safe_grid(pixels_to_grid(uv - 0.5, H, W).to(ds.dtype)),
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


def _safe_grid(grid: torch.Tensor) -> torch.Tensor:
    """Non-finite sampling positions -> outside the image, everything clamped to [-2, 2].

    grid_sample's CPU backward crashes the process (segmentation fault, torch 2.14) on NaN
    coordinates, e.g. after a diverged pose; such samples are invalid anyway."""
    return torch.nan_to_num(grid, nan=-2.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)


def _valid_depth(d: torch.Tensor, max_depth: float | None) -> torch.Tensor:
    ok = torch.isfinite(d) & (d > 0)
    if max_depth is not None:
        ok = ok & (d <= max_depth)
    return ok


# ----------------------------------------------------------------------------------------------
# depth normalisation (mixed depth ranges)
# ----------------------------------------------------------------------------------------------
def masked_median(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample median of x [B,C,H,W] over the True entries of mask (all entries when None).
    Returns [B,1,1,1]; differentiable (the gradient goes to the median element). A sample
    without valid entries gets 1."""
    B = x.shape[0]
    flat = x.reshape(B, -1)
    if mask is None:
        return flat.median(dim=1).values.view(B, 1, 1, 1)
    m = mask.expand_as(x).reshape(B, -1)
    out = []
    for b in range(B):
        vals = flat[b][m[b]]
        out.append(vals.median() if vals.numel() else flat.new_ones(()))
    return torch.stack(out).view(B, 1, 1, 1)


def depth_statistics(depth: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6):
    """(median, mean absolute deviation from the median), each [B,1,1,1], over valid pixels
    (mask, and finite positive depth)."""
    valid = torch.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid = valid & mask.bool()
    d = torch.where(valid, depth, torch.ones_like(depth))
    med = masked_median(d, valid)
    dev = (d - med).abs() * valid
    mad = dev.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return med, mad.view(-1, 1, 1, 1).clamp(min=eps)


def normalize_depth(depth: torch.Tensor, mask: torch.Tensor | None = None,
                    mode: str = 'scale', eps: float = 1e-6) -> torch.Tensor:
    """Per-sample normalised depth.

    * ``'scale'``: ``depth / median`` -- stays a valid (positive) depth, median 1; use before
      warping or any geometric term;
    * ``'scale_shift'``: ``(depth - median) / MAD`` -- invariant to scale and shift; only for
      comparing depth maps (not a depth any more).
    """
    med, mad = depth_statistics(depth, mask, eps)
    if mode == 'scale':
        return depth / med.clamp(min=eps)
    if mode == 'scale_shift':
        return (depth - med) / mad
    raise ValueError(f"mode must be 'scale' or 'scale_shift', got {mode!r}")


def relative_depth(depth, mask=None):
    """The relative-depth output mode: depth divided by its per-image median (median 1).
    torch [B,1,H,W] (mask optional) or a numpy HxW array (non-finite / non-positive pixels are
    ignored for the median and kept as they are)."""
    if torch.is_tensor(depth):
        return normalize_depth(depth, mask, 'scale')
    import numpy as np
    d = np.asarray(depth)
    ok = np.isfinite(d) & (d > 0)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    med = float(np.median(d[ok])) if ok.any() else 1.0
    return (d / med).astype(d.dtype, copy=False)


def relative_depth_fn(depth_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """Wrap a network-output -> depth function so that every sample's depth has median 1.

    Give the result as ``SelfSupervisedLoss(depth_fn=...)``: the photometric loss is unchanged in
    form, but depth and translation are then in units of each sample's median depth, so scenes of
    very different size (corridor vs highway) produce the same numeric ranges."""
    def fn(disp):
        return normalize_depth(depth_fn(disp), None, 'scale')
    return fn


def scale_invariant_depth_loss(pred: torch.Tensor, target: torch.Tensor,
                               mask: torch.Tensor | None = None, mode: str = 'scale_shift') -> torch.Tensor:
    """Mean |n(pred) - n(target)| over valid pixels, n = :func:`normalize_depth` with ``mode``.
    Invariant to a global scale of either input (and to a shift with 'scale_shift')."""
    if pred.shape != target.shape:
        raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} differ')
    valid = torch.isfinite(target) & (target > 0) & torch.isfinite(pred) & (pred > 0)
    if mask is not None:
        valid = valid & mask.bool()
    a = normalize_depth(torch.where(valid, pred, torch.ones_like(pred)), valid, mode)
    b = normalize_depth(torch.where(valid, target, torch.ones_like(target)), valid, mode)
    diff = (a - b).abs() * valid
    return diff.sum() / valid.sum().clamp(min=1)


class SequenceDepthNormalizer:
    """One depth scale per sequence (bag / scene), a running median of the depth seen in it.

    Per-frame normalisation makes every frame median 1, which breaks the scale consistency
    between frames of one sequence; per-sequence normalisation keeps it while still bringing a
    corridor and a highway to comparable ranges. ``__call__(depth [B,1,H,W], sequence_ids (B
    hashables), mask=None, update=True)`` divides each sample by its sequence's scale (updated
    first, as an exponential moving average of log-median with ``momentum``). ``scale(seq)``
    reads it; ``state_dict``/``load_state_dict`` keep it in a checkpoint.

    Gradient: the value is ``depth / scale``, but each sample's overall scale gets no gradient
    (computed as ``depth / median * (median / scale)`` with the second factor detached), exactly
    as with per-sample normalisation. The loss cannot observe the network's overall depth scale
    (translations are learned in the same units); with a plain detached divisor that free
    direction still got gradients, the running scale chased them, and in training on a corridor
    and a highway the raw depth drifted to ``max_depth`` everywhere (a constant depth map).
    """

    def __init__(self, momentum: float = 0.1):
        if not 0 < momentum <= 1:
            raise ValueError(f'momentum must be in (0, 1], got {momentum}')
        self.momentum = float(momentum)
        self._log_scale: dict = {}

    def scale(self, sequence_id: Hashable) -> float:
        v = self._log_scale.get(sequence_id)
        return 1.0 if v is None else math.exp(v)

    def update(self, depth: torch.Tensor, sequence_ids: Sequence[Hashable], mask=None) -> None:
        """One EMA step per sequence present in the batch, toward the mean log-median of its
        samples (the first batch of a sequence sets its scale)."""
        med, _ = depth_statistics(depth.detach(), None if mask is None else mask.detach())
        logs: dict = {}
        for sid, m in zip(sequence_ids, med.flatten().tolist()):
            logs.setdefault(sid, []).append(math.log(max(m, 1e-9)))
        for sid, vals in logs.items():
            lm = sum(vals) / len(vals)
            old = self._log_scale.get(sid)
            self._log_scale[sid] = lm if old is None else (1 - self.momentum) * old + self.momentum * lm

    def __call__(self, depth: torch.Tensor, sequence_ids: Sequence[Hashable], mask=None,
                 update: bool = True) -> torch.Tensor:
        ids = list(sequence_ids)
        if len(ids) != depth.shape[0]:
            raise ValueError(f'{len(ids)} sequence ids for a batch of {depth.shape[0]}')
        if update:
            self.update(depth, ids, mask)
        s = torch.tensor([self.scale(i) for i in ids], dtype=depth.dtype, device=depth.device)
        med, _ = depth_statistics(depth, mask)
        return depth / med * (med.detach() / s.view(-1, 1, 1, 1))

    def state_dict(self) -> dict:
        return {'momentum': self.momentum, 'log_scale': {str(k): v for k, v in self._log_scale.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        self.momentum = float(state.get('momentum', self.momentum))
        self._log_scale = dict(state.get('log_scale', {}))
