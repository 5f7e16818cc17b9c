"""The composed self-supervised loss: monodepth2's multi-scale photometric loss with auto-masking
and smoothness, PackNet-SfM's velocity term, and the hooks the other methods plug into
(per-source weights for explainability masks, object masks and motions for the object-aware
warp, a depth function for depth normalisation).

:class:`SelfSupervisedLoss` only composes the terms of the sibling modules; a new term is a
function in the module of its subject plus a weight in :class:`LossConfig` and one line here
(or, for the methods' extras, a term added by the trainer beside this loss).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .depth_scale import velocity_loss
from .photometric import min_reprojection, photometric_error
from .regularizers import smoothness_loss
from .warping import warp_image, warp_image_with_objects

__all__ = ['LossConfig', 'LossOutput', 'SelfSupervisedLoss', 'disp_to_depth']


def disp_to_depth(disp, min_depth: float = 0.1, max_depth: float = 100.0):
    """Sigmoid disparity -> (scaled disparity, depth) as monodepth2 (see the depth decoder)."""
    from ..networks.depth_decoder import disp_to_depth as _d2d
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
# helpers
# ----------------------------------------------------------------------------------------------
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
