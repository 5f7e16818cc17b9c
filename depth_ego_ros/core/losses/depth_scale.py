"""The scale of depth and motion: tie it to metres, or take it out.

Metric scale (PackNet-SfM, Guizilini et al. 2020)
    :func:`velocity_loss` -- ``| ||t_hat|| - distance |`` with distance = speed * dt from
    odometry, which ties the pose network -- and through the photometric loss the depth network
    -- to metric scale.

Mixed depth ranges (after RealMonoDepth, Mertan et al. 2020)
    :func:`depth_statistics`, :func:`normalize_depth`, :func:`relative_depth` -- per-sample
    median / mean-absolute-deviation normalisation; :func:`scale_invariant_depth_loss` compares
    depth maps after it; :func:`relative_depth_fn` wraps a disparity->depth function so that the
    photometric loss sees depth with median 1 in every sample (a corridor and a highway give the
    networks the same numeric ranges; translations come out in units of the scene's median depth);
    :class:`SequenceDepthNormalizer` keeps one running scale per sequence instead of per frame.

Conventions as in :mod:`depth_ego_ros.core.losses`.
"""
from __future__ import annotations

import math
from typing import Callable, Hashable, Mapping, Sequence

import torch

__all__ = ['velocity_loss', 'masked_median', 'depth_statistics', 'normalize_depth',
           'relative_depth', 'relative_depth_fn', 'scale_invariant_depth_loss',
           'SequenceDepthNormalizer']


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


def camera_yaw(T: torch.Tensor) -> torch.Tensor:
    """The rotation angle about the camera's y axis (optical frame: y down) of poses [..., 4, 4]
    (or [..., 3, 3]): ``atan2(R02 - R20, R00 + R22)``, exact for a pure rotation about y and
    differentiable everywhere a turn is small."""
    R = T[..., :3, :3]
    return torch.atan2(R[..., 0, 2] - R[..., 2, 0], R[..., 0, 0] + R[..., 2, 2])


def yaw_rate_loss(poses: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Rotation supervision from odometry's (or an IMU's) yaw rate: mean ``|yaw_hat - yaw|``.

    Args:
        poses: [B,S,4,4] ``T_src_tgt`` (target camera -> source camera).
        yaw: [B,S] radians the body turned (about its up axis, REP 103) from the target to the
            source time; NaN entries (no odometry) are ignored.
    An upright camera (optical y = body down) that turned by +a (left) sees the world turned
    by +a about its y axis in T_src_tgt, so ``camera_yaw(T_src_tgt)`` is compared with ``yaw``
    directly; a camera pitched by p sees cos(p) of it. Returns a scalar (0 with a gradient path
    when no entry is valid).
    """
    if poses.shape[-2:] != (4, 4) or poses.shape[:-2] != yaw.shape:
        raise ValueError(f'poses {tuple(poses.shape)} must be yaw {tuple(yaw.shape)} + (4, 4)')
    pred = camera_yaw(poses)
    y = yaw.to(pred)
    valid = torch.isfinite(y)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    return (pred[valid] - y[valid]).abs().mean()


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
