"""Photometric terms: how different a warped source looks from the target.

* :func:`ssim` / :func:`dssim` -- structural similarity over 3x3 windows with reflection padding
  (monodepth2);
* :func:`photometric_error` -- per pixel ``alpha * (1 - SSIM)/2 + (1 - alpha) * |a - b|`` (alpha
  0.85), averaged over colour channels;
* :func:`min_reprojection` -- per-pixel minimum over source frames (occlusion handling), with
  auto-masking: identity (un-warped) errors with tiny noise compete in the minimum, so pixels
  that look the same without warping (static camera, objects moving with it) carry no gradient;
* :func:`masked_photometric_loss` / :func:`explainability_photometric_loss` -- the errors
  weighted by SfMLearner's explainability masks (Zhou et al. 2017; the regulariser that keeps
  the masks from switching every pixel off is in :mod:`.regularizers`).

Conventions as in :mod:`depth_ego_ros.core.losses`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .warping import warp_image

__all__ = ['ssim', 'dssim', 'photometric_error', 'min_reprojection', 'masked_photometric_loss',
           'explainability_photometric_loss']


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Structural similarity index per pixel and channel.

    Local statistics over 3x3 windows (box filter) with reflection padding, as monodepth2.
    Args: x, y [B,C,H,W] in [0,1] (H, W >= 2). Returns [B,C,H,W], 1 where x == y.
    """
    _check_pair(x, y)
    xp = F.pad(x, (1, 1, 1, 1), mode='reflect')
    yp = F.pad(y, (1, 1, 1, 1), mode='reflect')
    mu_x = F.avg_pool2d(xp, 3, 1)
    mu_y = F.avg_pool2d(yp, 3, 1)
    sigma_x = F.avg_pool2d(xp * xp, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(yp * yp, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(xp * yp, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return num / den


def dssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural dissimilarity ``clamp((1 - SSIM) / 2, 0, 1)`` per pixel and channel."""
    return torch.clamp((1 - ssim(x, y)) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Per-pixel photometric error [B,1,H,W]: ``alpha * DSSIM + (1 - alpha) * L1``, channel mean."""
    _check_pair(pred, target)
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    return alpha * dssim(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


def min_reprojection(reprojection: torch.Tensor, identity: torch.Tensor | None = None,
                     noise: float = 1e-5, average: bool = False):
    """Minimum reprojection over sources, with optional auto-masking (monodepth2).

    Args:
        reprojection: [B,S,H,W] photometric error of each warped source vs the target.
        identity: [B,S,H,W] error of each *un-warped* source vs the target, or None (no auto-mask).
        noise: std of the tiny noise added to the identity errors (breaks ties towards the warped
            sources where both are equal, e.g. on texture-less regions).
        average: use the mean over sources instead of the minimum (monodepth2's --avg_reprojection).
    Returns:
        loss_map [B,1,H,W] (the per-pixel value to average), automask [B,1,H,W] bool (True =
        pixel uses a warped source, i.e. is *kept*), source_index [B,1,H,W] (which source won;
        -1 where an identity term won).
    """
    if reprojection.dim() != 4:
        raise ValueError(f'reprojection must be [B,S,H,W], got {tuple(reprojection.shape)}')
    rep = reprojection.mean(1, keepdim=True) if average else reprojection
    if identity is None:
        loss, idx = rep.min(dim=1, keepdim=True)
        return loss, torch.ones_like(loss, dtype=torch.bool), idx
    if identity.shape[0] != reprojection.shape[0] or identity.shape[-2:] != reprojection.shape[-2:]:
        raise ValueError(f'identity {tuple(identity.shape)} does not match reprojection '
                         f'{tuple(reprojection.shape)}')
    ident = identity + torch.randn_like(identity) * noise if noise > 0 else identity
    combined = torch.cat([ident, rep], dim=1)
    loss, idx = combined.min(dim=1, keepdim=True)
    n_id = ident.shape[1]
    keep = idx >= n_id
    src = torch.where(keep, idx - n_id, torch.full_like(idx, -1))
    return loss, keep, src


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


def _check_pair(x, y):
    if not (torch.is_tensor(x) and torch.is_tensor(y)) or x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f'expected two [B,C,H,W] tensors of the same shape, got '
                         f'{tuple(getattr(x, "shape", ()))} and {tuple(getattr(y, "shape", ()))}')
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f'images must be at least 2x2, got {tuple(x.shape)}')
