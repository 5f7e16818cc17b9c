"""The depth part of an evaluation: per frame, the ground truth (depth image, or LiDAR cloud
rendered into the camera) against the prediction, accumulated into the Eigen / monodepth2 metrics
(:mod:`.metrics`), with a few example frames kept for the plots; then the report's ``depth``
section (:meth:`DepthResults.results`)."""
from __future__ import annotations

import numpy as np

from .bag_inputs import EvaluationError, cloud_depth_image, resize_depth
from .metrics import DepthEvalConfig, DepthMetricsAccumulator

__all__ = ['DepthResults', 'depth_eval_config']


def depth_eval_config(cfg) -> DepthEvalConfig:
    """The metric settings of an :class:`~.config.EvaluateConfig`."""
    return DepthEvalConfig(min_depth=cfg.min_depth, max_depth=cfg.max_depth,
                           garg_crop=cfg.garg_crop, median_scaling=cfg.scaling == 'median',
                           pred_scale_factor=cfg.scale_factor if cfg.scaling == 'fixed' else 1.0)


class DepthResults:
    """Depth metrics over the run (``enabled``: there is ground truth and a prediction)."""

    def __init__(self, cfg, inputs):
        self.cfg = cfg
        self.inputs = inputs
        self.enabled = inputs.depth_enabled
        self.gt_role = inputs.gt_role
        self.config = depth_eval_config(cfg)
        self.acc = DepthMetricsAccumulator(self.config)
        self.examples = []
        # which frames become examples: evenly spread over those with ground truth
        n = inputs.n_frames
        gt_ok = [i for i in range(n)
                 if self.gt_role is None or inputs.match.get(self.gt_role, [None] * n)[i] is not None]
        k = min(cfg.n_examples, len(gt_ok)) if self.enabled else 0
        self.example_ids = set(gt_ok[j] for j in np.linspace(0, len(gt_ok) - 1, k).round().astype(int)) if k else set()

    @property
    def n_evaluated(self) -> int:
        return len(self.acc.frames) if self.enabled else 0

    def add(self, i: int, stamp: float, rgb, pred, data: dict, rec: dict, sizes: dict) -> str | None:
        """Evaluate frame ``i`` (``data``: role -> (stamp, payload)); fills ``rec`` and ``sizes``;
        returns a skip reason when the metrics refuse the frame."""
        cfg = self.cfg
        if not self.enabled:
            return None
        if self.gt_role not in data:
            rec['gt'] = None
            return None
        gt_stamp, gt_payload = data[self.gt_role]
        rec['gt_dt'] = abs(gt_stamp - stamp) if gt_stamp is not None else None
        H, W = pred.shape
        if self.gt_role == 'gt_depth':
            gt = gt_payload
        else:
            points, _frame = gt_payload
            gt, stats = cloud_depth_image(points, self.inputs.T_cam_cloud, self.inputs.K_at((W, H)), W, H)
            rec['cloud'] = stats
        sizes.setdefault('gt_depth', [gt.shape[1], gt.shape[0]])
        if pred.shape != gt.shape:
            if 'resize' not in sizes:
                sizes['resize'] = (f'prediction {pred.shape[1]}x{pred.shape[0]} resized to the '
                                   f'ground truth {gt.shape[1]}x{gt.shape[0]} (inverse depth, bilinear)')
            pred = resize_depth(pred, gt.shape)
        with np.errstate(invalid='ignore'):
            gvalid = np.isfinite(gt) & (gt > cfg.min_depth) & (gt < cfg.max_depth)
        rec['gt_valid_fraction'] = float(gvalid.mean())
        rec['gt_median'] = float(np.median(gt[gvalid])) if gvalid.any() else None
        try:
            m = self.acc.add(gt, pred, frame_id=i)
        except ValueError as exc:
            return f'depth metrics: {exc}'
        if m is not None:
            rec.update(m.values())
            rec['n_valid'] = m.n_valid
            rec['ratio'] = m.ratio
        if i in self.example_ids:
            factor = self.config.pred_scale_factor * (m.ratio if m is not None and m.ratio else 1.0)
            shown = np.clip(pred * factor, cfg.min_depth, cfg.max_depth)
            self.examples.append({'frame': i, 'stamp': stamp, 'rgb': rgb, 'gt': gt, 'pred': shown,
                                  'valid': gvalid & np.isfinite(pred),
                                  'abs_rel': None if m is None else m.abs_rel})
        return None

    def results(self, frame_records: list, frame_skips: list) -> dict | None:
        """The report's ``depth`` section (None when depth is not evaluated)."""
        if not self.enabled:
            return None
        if not self.acc.frames:
            reasons = [s['reason'] for s in frame_skips] + [r for _, r in self.acc.skipped]
            raise EvaluationError('no frame could be evaluated for depth'
                                  + (f': {reasons[0]}' if reasons else ''))
        rep = self.acc.report()
        gvf = [r['gt_valid_fraction'] for r in frame_records if r.get('gt_valid_fraction') is not None]
        rep['gt_valid_fraction_mean'] = float(np.mean(gvf)) if gvf else None
        rep['scaling'] = self.cfg.scaling
        return rep
