"""Depth metrics computed the way the self-supervised depth literature computes them.

Follows Eigen et al. (2014) as implemented in monodepth2's ``evaluate_depth.py`` (also used by
SfMLearner, PackNet-SfM, ...), per image:

1. valid pixels: ``min_depth < gt < max_depth`` (defaults 1e-3 and 80 m), optionally inside the
   Garg/Eigen crop (rows 40.81 %..99.19 %, columns 3.59 %..96.41 % of the image, as int32),
   and where the prediction is finite;
2. ``pred *= pred_scale_factor`` (1 by default); with median scaling
   ``ratio = median(gt) / median(pred)`` over the valid pixels and ``pred *= ratio``;
3. ``pred`` clipped to ``[min_depth, max_depth]``;
4. AbsRel = mean(|gt-pred|/gt), SqRel = mean((gt-pred)^2/gt), RMSE = sqrt(mean((gt-pred)^2)),
   RMSE log = sqrt(mean((ln gt - ln pred)^2)), delta<t = mean(max(gt/pred, pred/gt) < t) for
   t = 1.25, 1.25^2, 1.25^3.

A sequence reports per-frame values and their unweighted mean over frames (each image counts once,
whatever its number of valid pixels), plus the median-scaling ratios' median and
``std(ratios / median)`` (monodepth2's printout). Formulas: docs/evaluation_metrics.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict

import numpy as np

__all__ = ['METRIC_NAMES', 'DepthEvalConfig', 'garg_crop_mask', 'compute_depth_errors',
           'depth_metrics', 'FrameDepthMetrics', 'DepthMetricsAccumulator', 'evaluate_depth_frames']

METRIC_NAMES = ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1', 'a2', 'a3')

# Garg et al. crop as fractions of (height, height, width, width), monodepth2 / SfMLearner values.
_GARG = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


@dataclass
class DepthEvalConfig:
    """Settings of a depth evaluation (all of them go into reports)."""
    min_depth: float = 1e-3
    max_depth: float = 80.0
    garg_crop: bool = False
    median_scaling: bool = True
    pred_scale_factor: float = 1.0

    def __post_init__(self):
        if not (0 < self.min_depth < self.max_depth):
            raise ValueError(f'need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}')
        if not np.isfinite(self.pred_scale_factor) or self.pred_scale_factor <= 0:
            raise ValueError(f'pred_scale_factor must be > 0, got {self.pred_scale_factor}')


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean (H,W) mask of the Garg/Eigen crop used for KITTI (monodepth2's integer bounds)."""
    top, bottom, left, right = (np.array(_GARG) * [height, height, width, width]).astype(np.int32)
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def compute_depth_errors(gt, pred) -> dict:
    """The seven metrics over already-selected pixels (1-D arrays of positive depths)."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        'abs_rel': float(np.mean(np.abs(diff) / gt)),
        'sq_rel': float(np.mean(diff ** 2 / gt)),
        'rmse': float(np.sqrt(np.mean(diff ** 2))),
        'rmse_log': float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        'a1': float(np.mean(thresh < 1.25)),
        'a2': float(np.mean(thresh < 1.25 ** 2)),
        'a3': float(np.mean(thresh < 1.25 ** 3)),
    }


@dataclass
class FrameDepthMetrics:
    """Metrics of one image."""
    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    a1: float
    a2: float
    a3: float
    n_valid: int
    ratio: float | None = None      # median-scaling ratio applied (None without median scaling)

    def values(self) -> dict:
        return {k: getattr(self, k) for k in METRIC_NAMES}


def depth_metrics(gt, pred, config: DepthEvalConfig | None = None, mask=None) -> FrameDepthMetrics:
    """Metrics of one predicted depth map against ground truth of the same (H,W) size.

    Args:
        gt: (H,W) ground-truth depth in metres; 0, negative or non-finite = no measurement.
        pred: (H,W) predicted depth (metres, or relative when median scaling).
        config: :class:`DepthEvalConfig` (defaults: 1e-3..80 m, no crop, median scaling).
        mask: optional extra (H,W) boolean mask of pixels to evaluate.
    Raises ValueError for mismatched shapes or when no pixel is valid.
    """
    cfg = config or DepthEvalConfig()
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.ndim != 2:
        raise ValueError(f'ground-truth depth must be (H,W), got {gt.shape}')
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in size '
                         '(resize the prediction to the ground-truth resolution first)')
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(gt) & (gt > cfg.min_depth) & (gt < cfg.max_depth) & np.isfinite(pred)
    if cfg.garg_crop:
        valid &= garg_crop_mask(*gt.shape)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise ValueError(f'mask {mask.shape} does not match depth {gt.shape}')
        valid &= mask
    n = int(valid.sum())
    if n == 0:
        raise ValueError(f'no valid ground-truth pixels (depth range {cfg.min_depth}..{cfg.max_depth} m'
                         f'{", Garg crop" if cfg.garg_crop else ""})')
    g = gt[valid]
    p = pred[valid] * cfg.pred_scale_factor
    ratio = None
    if cfg.median_scaling:
        med_p = float(np.median(p))
        if not med_p > 0:
            raise ValueError(f'median of the prediction is {med_p}: cannot median-scale')
        ratio = float(np.median(g) / med_p)
        p = p * ratio
    p = np.clip(p, cfg.min_depth, cfg.max_depth)
    return FrameDepthMetrics(**compute_depth_errors(g, p), n_valid=n, ratio=ratio)


@dataclass
class DepthMetricsAccumulator:
    """Collects per-frame metrics and summarises them (mean over frames, ratio statistics)."""
    config: DepthEvalConfig = field(default_factory=DepthEvalConfig)
    frames: list = field(default_factory=list)        # list[FrameDepthMetrics]
    frame_ids: list = field(default_factory=list)
    skipped: list = field(default_factory=list)       # (frame_id, reason)

    def add(self, gt, pred, frame_id=None, mask=None) -> FrameDepthMetrics | None:
        fid = len(self.frames) + len(self.skipped) if frame_id is None else frame_id
        try:
            m = depth_metrics(gt, pred, self.config, mask)
        except ValueError as exc:
            if 'no valid ground-truth pixels' in str(exc):
                self.skipped.append((fid, str(exc)))
                return None
            raise
        self.frames.append(m)
        self.frame_ids.append(fid)
        return m

    def summary(self) -> dict:
        if not self.frames:
            raise ValueError('no frame could be evaluated'
                             + (f' ({len(self.skipped)} skipped: {self.skipped[0][1]})' if self.skipped else ''))
        out = {k: float(np.mean([getattr(f, k) for f in self.frames])) for k in METRIC_NAMES}
        out['n_frames'] = len(self.frames)
        out['n_skipped'] = len(self.skipped)
        if self.config.median_scaling:
            ratios = np.array([f.ratio for f in self.frames])
            med = float(np.median(ratios))
            out['ratio_median'] = med
            out['ratio_std'] = float(np.std(ratios / med))        # monodepth2: std(ratios / median)
            out['ratio_std_abs'] = float(np.std(ratios))
        return out

    def per_frame(self) -> list[dict]:
        return [{'frame': fid, **asdict(f)} for fid, f in zip(self.frame_ids, self.frames)]

    def report(self) -> dict:
        return {'settings': asdict(self.config), 'mean': self.summary(), 'per_frame': self.per_frame(),
                'skipped': [{'frame': f, 'reason': r} for f, r in self.skipped]}


def evaluate_depth_frames(gts, preds, config: DepthEvalConfig | None = None) -> dict:
    """Evaluate pairs of (gt, pred) maps; returns :meth:`DepthMetricsAccumulator.report`."""
    acc = DepthMetricsAccumulator(config or DepthEvalConfig())
    gts, preds = list(gts), list(preds)
    if len(gts) != len(preds):
        raise ValueError(f'{len(gts)} ground-truth maps for {len(preds)} predictions')
    for i, (g, p) in enumerate(zip(gts, preds)):
        acc.add(g, p, frame_id=i)
    return acc.report()
