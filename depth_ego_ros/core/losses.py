"""Self-supervised losses for monocular depth and ego-motion (monodepth2 / PackNet-SfM family).

Pure functions (torch, batched, differentiable) plus :class:`SelfSupervisedLoss`, a small object
that composes them the way monodepth2 trains, with PackNet-SfM's velocity-scaling term.

Conventions (shared with :mod:`depth_ego_ros.core.geometry`):

* images are float tensors [B,3,H,W] in [0, 1];
* ``T_src_tgt`` ([B,4,4]) maps points of the *target* camera into a *source* camera, i.e. the pose
  of the target camera in the source camera's frame -- what monodepth2's
  ``transformation_from_parameters`` / our ``pose_vec_to_mat`` give for each source;
* depth is z-depth along the optical axis; K are the intrinsics at the image resolution used.

Terms
-----
* :func:`ssim`: structural similarity over 3x3 windows with reflection padding (monodepth2).
* :func:`photometric_error`: per pixel ``alpha * (1 - SSIM)/2 + (1 - alpha) * |a - b|`` (alpha 0.85),
  averaged over colour channels.
* :func:`min_reprojection`: per-pixel minimum over source frames (occlusion handling), with
  auto-masking: identity (un-warped) errors with tiny noise compete in the minimum, so pixels that
  look the same without warping (static camera, objects moving with it) carry no gradient.
* :func:`smoothness_loss`: edge-aware first-order smoothness of mean-normalised disparity.
* :func:`velocity_loss`: | ||t_hat|| - distance | where distance = speed * dt from odometry
  (PackNet-SfM), which ties the pose network -- and through the photometric loss the depth
  network -- to metric scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .geometry import backproject, pixels_to_grid, project

__all__ = ['ssim', 'dssim', 'photometric_error', 'warp_image', 'min_reprojection',
           'smoothness_loss', 'velocity_loss', 'LossConfig', 'LossOutput', 'SelfSupervisedLoss',
           'disp_to_depth']


# ----------------------------------------------------------------------------------------------
# photometric terms
# ----------------------------------------------------------------------------------------------
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
    valid [B,1,H,W] bool) as :func:`warp_image` (the rigid warp and the object-motion warp of
    :mod:`depth_ego_ros.core.object_motion` share it)."""
    B, _, H, W = points.shape
    uv, z = project(points, K_source, T_src_tgt)                           # [B,2,H,W], [B,1,H,W]
    grid = pixels_to_grid(uv, H, W, align_corners=False)
    # A diverged pose or depth gives NaN/inf sampling positions; torch's CPU grid_sample backward
    # with border padding crashes the process on NaN. Clamp far outside [-1, 1] instead: the
    # sample is then out of the image (invalid below) and the loss stays finite.
    grid = torch.nan_to_num(grid, nan=-2.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)
    warped = F.grid_sample(source, grid.to(source.dtype), mode='bilinear', padding_mode=padding_mode,
                           align_corners=False)
    u, v = uv[:, 0:1], uv[:, 1:2]
    valid = (z > 1e-3) & (u > -0.5) & (u < W - 0.5) & (v > -0.5) & (v < H - 0.5)
    return warped, valid


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


def smoothness_loss(disp: torch.Tensor, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Edge-aware smoothness: mean of ``|d_x disp| exp(-|d_x I|) + |d_y disp| exp(-|d_y I|)``.

    Args:
        disp: [B,1,H,W] disparity (any positive scale; mean-normalised per image when normalize).
        image: [B,3,H,W] colour image at the same resolution (gradients averaged over channels).
    Returns: scalar tensor (0 for a constant disparity).
    """
    if disp.dim() != 4 or disp.shape[1] != 1:
        raise ValueError(f'disp must be [B,1,H,W], got {tuple(disp.shape)}')
    if image.shape[0] != disp.shape[0] or image.shape[-2:] != disp.shape[-2:]:
        raise ValueError(f'image {tuple(image.shape)} must match disp {tuple(disp.shape)} in B, H, W')
    if normalize:
        disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    gdx = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
    gdy = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
    gix = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    giy = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (gdx * torch.exp(-gix)).mean() + (gdy * torch.exp(-giy)).mean()


def velocity_loss(translation: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """PackNet-SfM velocity supervision: mean of ``| ||t_hat|| - distance |``.

    Args:
        translation: [..., 3] predicted translations between target and sources (e.g. [B,S,3]; the
            translation of T_src_tgt -- its norm is the distance between the two camera centres).
        distance: [...] travelled distance for each pair (speed * dt from odometry, metres); NaN
            entries (no odometry) are ignored.
    Returns: scalar tensor (0 with a gradient path when no entry is valid).
    """
    if translation.shape[-1] != 3 or translation.shape[:-1] != distance.shape:
        raise ValueError(f'translation {tuple(translation.shape)} must be distance '
                         f'{tuple(distance.shape)} + (3,)')
    norm = translation.norm(dim=-1)
    d = distance.to(norm)
    valid = torch.isfinite(d)
    if not bool(valid.any()):
        return norm.sum() * 0.0
    return (norm[valid] - d[valid]).abs().mean()


def disp_to_depth(disp, min_depth: float = 0.1, max_depth: float = 100.0):
    """Sigmoid disparity -> (scaled disparity, depth) as monodepth2 (see the depth decoder)."""
    from .networks.depth_decoder import disp_to_depth as _d2d
    return _d2d(disp, min_depth, max_depth)


# ----------------------------------------------------------------------------------------------
# the composed loss
# ----------------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    """Weights and switches of :class:`SelfSupervisedLoss` (defaults = monodepth2 + PackNet-SfM)."""
    alpha: float = 0.85                 # SSIM weight in the photometric error
    smoothness_weight: float = 1e-3     # edge-aware smoothness (divided by 2**scale)
    velocity_weight: float = 0.1        # PackNet-SfM velocity-scaling loss (when distances given)
    automask: bool = True               # auto-masking of stationary pixels
    average_reprojection: bool = False  # mean over sources instead of the per-pixel minimum
    min_depth: float = 0.1
    max_depth: float = 100.0
    identity_noise: float = 1e-5
    padding_mode: str = 'border'

    def __post_init__(self):
        errs = []
        if not 0 <= self.alpha <= 1:
            errs.append(f'alpha must be in [0,1] (got {self.alpha})')
        for n in ('smoothness_weight', 'velocity_weight', 'identity_noise'):
            v = getattr(self, n)
            if not (math.isfinite(v) and v >= 0):
                errs.append(f'{n} must be >= 0 (got {v})')
        if not 0 < self.min_depth < self.max_depth:
            errs.append(f'need 0 < min_depth < max_depth (got {self.min_depth}, {self.max_depth})')
        if self.padding_mode not in ('border', 'zeros', 'reflection'):
            errs.append(f"padding_mode must be 'border', 'zeros' or 'reflection' (got {self.padding_mode!r})")
        if errs:
            raise ValueError('invalid LossConfig: ' + '; '.join(errs))


@dataclass
class LossOutput:
    total: torch.Tensor                       # scalar to back-propagate
    terms: dict = field(default_factory=dict)  # detached scalars: photometric, smoothness, velocity, ...
    automask: torch.Tensor | None = None      # [B,1,H,W] bool at scale 0 (True = pixel kept)
    warped: list | None = None                # scale-0 warped sources, [B,3,H,W] each
    depth: torch.Tensor | None = None         # scale-0 depth [B,1,H,W]


class SelfSupervisedLoss:
    """monodepth2's multi-scale loss with automask + PackNet-SfM's velocity term.

    For each scale s the network's disparity is upsampled to the input resolution, turned into
    depth, every source is warped into the target, and the per-pixel minimum reprojection (with
    auto-masking) is averaged; the edge-aware smoothness of the scale-s disparity against the
    target resized to that scale is added with weight ``smoothness_weight / 2**s``. The sum is
    divided by the number of scales. The velocity term is added once, with its weight, when
    travelled distances are given.

    ``depth_fn`` maps a network disparity to depth; default: monodepth2's sigmoid mapping with
    ``min_depth``/``max_depth`` (give e.g. ``lambda d: 1 / d`` for an inverse-depth network).
    """

    def __init__(self, config: LossConfig | None = None, depth_fn: Callable | None = None):
        self.config = config or LossConfig()
        cfg = self.config
        self.depth_fn = depth_fn or (lambda d: disp_to_depth(d, cfg.min_depth, cfg.max_depth)[1])

    def __call__(self, target: torch.Tensor, sources: Sequence[torch.Tensor] | torch.Tensor,
                 disps: Sequence[torch.Tensor] | torch.Tensor,
                 poses: Sequence[torch.Tensor] | torch.Tensor, K: torch.Tensor,
                 distances: torch.Tensor | None = None, *,
                 source_weights=None, object_masks: torch.Tensor | None = None,
                 object_poses=None) -> LossOutput:
        """
        Args:
            target: [B,3,H,W] target frame (not colour-augmented).
            sources: S tensors [B,3,H,W] or one [B,S,3,H,W] (e.g. frames t-1, t+1).
            disps: per scale [B,1,h_s,w_s] network disparity, finest first (or one tensor).
            poses: S tensors [B,4,4] or one [B,S,4,4]: T_src_tgt for each source.
            K: [B,3,3] (or [B,4,4]) intrinsics at H x W.
            distances: optional [B,S] metres travelled between target and each source (NaN =
                unknown) for the velocity loss.
            source_weights: optional per-source weights of the photometric error (e.g.
                PoseExpNet's explainability masks): one [B,S,h,w] tensor for every scale, or a
                list with one per scale in ``disps``; resized bilinearly to H x W. Each source's
                reprojection error is multiplied by its weight *before* the per-pixel minimum
                (and the auto-mask comparison); None = weight 1.
            object_masks: optional [B,M,H,W] instance masks of moving objects in the target
                (0/1; empty slots allowed), with object_poses: per-source list of [B,M,4,4] (or
                one [B,S,M,4,4]) ``T_obj`` -- each object's motion from the target to that
                source time in the target camera frame. Pixels of object m are then warped with
                ``T_src_tgt @ T_obj_m`` (:mod:`depth_ego_ros.core.object_motion`); None = rigid.
        """
        cfg = self.config
        srcs = _as_list(sources, 'sources')
        Ts = _as_list(poses, 'poses')
        disps = [disps] if torch.is_tensor(disps) else list(disps)
        if len(srcs) != len(Ts) or not srcs:
            raise ValueError(f'need one pose per source, got {len(srcs)} sources and {len(Ts)} poses')
        if not disps:
            raise ValueError('need at least one disparity scale')
        B, _, H, W = target.shape
        for s in srcs:
            if s.shape != target.shape:
                raise ValueError(f'source {tuple(s.shape)} does not match target {tuple(target.shape)}')

        obj_Ts = None
        if object_masks is not None or object_poses is not None:
            if object_masks is None or object_poses is None:
                raise ValueError('object_masks and object_poses go together (give both or neither)')
            obj_Ts = (list(object_poses.unbind(1)) if torch.is_tensor(object_poses)
                      and object_poses.dim() == 5 else list(object_poses))
            if len(obj_Ts) != len(srcs):
                raise ValueError(f'object_poses: need one [B,M,4,4] per source ({len(srcs)}), got {len(obj_Ts)}')
        identity = None
        if cfg.automask:
            identity = torch.cat([photometric_error(s, target, cfg.alpha) for s in srcs], 1)
        total = target.new_zeros(())
        photo_sum = target.new_zeros(())
        smooth_sum = target.new_zeros(())
        out = LossOutput(total=total)
        for scale, disp in enumerate(disps):
            if disp.dim() != 4 or disp.shape[0] != B or disp.shape[1] != 1:
                raise ValueError(f'disparity at scale {scale} must be [B,1,h,w], got {tuple(disp.shape)}')
            disp_full = disp if disp.shape[-2:] == (H, W) else F.interpolate(
                disp, size=(H, W), mode='bilinear', align_corners=False)
            depth = self.depth_fn(disp_full)
            warped = []
            reproj = []
            for k, (s, T) in enumerate(zip(srcs, Ts)):
                if obj_Ts is None:
                    w, _ = warp_image(s, depth, K, T, padding_mode=cfg.padding_mode)
                else:
                    from .object_motion import warp_image_with_objects
                    w, _ = warp_image_with_objects(s, depth, K, T, object_masks, obj_Ts[k],
                                                   padding_mode=cfg.padding_mode)
                warped.append(w)
                reproj.append(photometric_error(w, target, cfg.alpha))
            if source_weights is not None:
                reproj = _weighted(reproj, source_weights, scale, H, W)
            loss_map, keep, _ = min_reprojection(torch.cat(reproj, 1), identity, cfg.identity_noise,
                                                 cfg.average_reprojection)
            photo = loss_map.mean()
            img_s = target if disp.shape[-2:] == (H, W) else _resize(target, disp.shape[-2:])
            smooth = smoothness_loss(disp, img_s)
            total = total + photo + cfg.smoothness_weight * smooth / (2 ** scale)
            photo_sum = photo_sum + photo.detach()
            smooth_sum = smooth_sum + smooth.detach()
            if scale == 0:
                out.automask, out.warped, out.depth = keep, warped, depth.detach()
        n = len(disps)
        total = total / n
        out.terms['photometric'] = photo_sum / n
        out.terms['smoothness'] = smooth_sum / n
        if distances is not None and cfg.velocity_weight > 0:
            trans = torch.stack([T[:, :3, 3] for T in Ts], 1)            # [B,S,3]
            v = velocity_loss(trans, distances.to(trans))
            total = total + cfg.velocity_weight * v
            out.terms['velocity'] = v.detach()
        if out.automask is not None:
            out.terms['automask_fraction'] = out.automask.float().mean().detach()
        out.total = total
        out.terms['total'] = total.detach()
        return out


# ----------------------------------------------------------------------------------------------
def _check_pair(x, y):
    if not (torch.is_tensor(x) and torch.is_tensor(y)) or x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f'expected two [B,C,H,W] tensors of the same shape, got '
                         f'{tuple(getattr(x, "shape", ()))} and {tuple(getattr(y, "shape", ()))}')
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f'images must be at least 2x2, got {tuple(x.shape)}')


def _as_list(x, what):
    """A list of per-source tensors from a list or a stacked tensor ([B,S,...])."""
    if torch.is_tensor(x):
        single_dim = 3 if what == 'poses' else 4
        if x.dim() == single_dim:
            return [x]
        if x.dim() == single_dim + 1:
            return list(x.unbind(1))
        raise ValueError(f'{what}: unexpected shape {tuple(x.shape)}')
    return list(x)


def _weighted(reproj, source_weights, scale, H, W):
    """Multiply each source's error map [B,1,H,W] by its weight (see SelfSupervisedLoss)."""
    wts = source_weights if torch.is_tensor(source_weights) else source_weights[scale]
    if wts.dim() != 4 or wts.shape[1] != len(reproj):
        raise ValueError(f'source_weights must be [B,S,h,w] with S = {len(reproj)}, got {tuple(wts.shape)}')
    if wts.shape[-2:] != (H, W):
        wts = F.interpolate(wts, size=(H, W), mode='bilinear', align_corners=False)
    return [r * wts[:, k:k + 1].to(r.dtype) for k, r in enumerate(reproj)]


def _resize(img, size):
    h, w = img.shape[-2:]
    if h % size[0] == 0 and w % size[1] == 0:
        return F.interpolate(img, size=size, mode='area')
    return F.interpolate(img, size=size, mode='bilinear', align_corners=False, antialias=True)
