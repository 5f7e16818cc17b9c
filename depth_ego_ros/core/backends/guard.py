"""Accuracy guard: a runner's outputs against float32 eager torch on fixed frames.

Reduced-precision runners (bf16, int8; fp16 too) are checked at export and at first start before
they are used; a runner whose errors exceed the thresholds of its precision is refused
(:class:`AccuracyError`). Metrics, on the batch of :func:`guard_frames` (or frames given, e.g.
from a calibration bag):

* ``disparity_rel``: mean over pixels of ``|d - d_ref| / d_ref`` (d = the sigmoid disparity);
* ``depth_absrel``: AbsRel between the two depth maps, ``mean |D - D_ref| / D_ref`` with
  monodepth2's disparity -> depth (min 0.1, max 100): the depth-quality metric, between the two;
* ``pose_translation``: ``sum_i |t_i - t_ref_i| / sum_i |t_ref_i|`` over the frame pairs
  (relative: the networks' translation units are arbitrary);
* ``pose_rotation_deg``: largest angle of ``R_ref^T R`` over the pairs, degrees.

Thresholds (:data:`GUARD_THRESHOLDS`) are documented in docs/inference.md with the values
measured on a trained checkpoint.
"""
from __future__ import annotations

import math

import torch

from .graph_io import OUTPUT_NAMES, check_input

__all__ = ['GUARD_THRESHOLDS', 'AccuracyError', 'guard_frames', 'reference_outputs', 'accuracy_metrics',
           'accuracy_guard', 'require_accuracy']

GUARD_THRESHOLDS = {
    'fp32': {'disparity_rel': 1e-4, 'depth_absrel': 1e-4, 'pose_translation': 1e-3,
             'pose_rotation_deg': 1e-3},
    'fp16': {'disparity_rel': 0.01, 'depth_absrel': 0.01, 'pose_translation': 0.05,
             'pose_rotation_deg': 0.05},
    'bf16': {'disparity_rel': 0.02, 'depth_absrel': 0.02, 'pose_translation': 0.10,
             'pose_rotation_deg': 0.10},
    'int8': {'disparity_rel': 0.05, 'depth_absrel': 0.05, 'pose_translation': 0.25,
             'pose_rotation_deg': 0.25},
}


class AccuracyError(ValueError):
    """A runner's outputs differ from float32 torch by more than its precision allows."""


def guard_frames(height: int, width: int, n: int = 4) -> torch.Tensor:
    """The fixed check batch: ``n + 1`` consecutive frames ``[n+1,3,H,W]`` (deterministic)."""
    return check_input(height, width, n)


def _rotation(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle [N,3] -> rotation matrices [N,3,3] (float64, Rodrigues)."""
    aa = aa.double()
    angle = aa.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = aa / angle
    K = torch.zeros(aa.shape[0], 3, 3, dtype=torch.float64)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - K.transpose(1, 2)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    return torch.eye(3, dtype=torch.float64) + s * K + (1 - c) * (K @ K)


def _disp_to_depth(disp, min_depth=0.1, max_depth=100.0):
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (lo + (hi - lo) * disp.double())


def reference_outputs(depth_net, pose_net, frames: torch.Tensor) -> dict:
    """float32 torch outputs on ``frames`` (computed once when several runners are checked)."""
    frames = frames.float().cpu()
    images, pairs = frames[1:], torch.cat([frames[:-1], frames[1:]], dim=1)
    with torch.inference_mode():
        disp = depth_net.float().cpu().eval()(images).double()
        pose = pose_net.float().cpu().eval()(pairs) if pose_net is not None else None
    return {'frames': frames, 'disparity': disp, 'pose': pose}


def accuracy_metrics(runner, depth_net, pose_net, frames: torch.Tensor,
                     reference: dict | None = None) -> dict:
    """The guard's metrics of ``runner`` against the float32 torch ``depth_net`` / ``pose_net``
    on ``frames`` [N+1,3,H,W] (N images from frame 1 on, N pairs of consecutive frames);
    ``reference``: :func:`reference_outputs` of the same frames, if already computed."""
    if reference is None or reference['frames'] is not frames:
        reference = reference_outputs(depth_net, pose_net, frames)
    frames = reference['frames']
    images, pairs = frames[1:], torch.cat([frames[:-1], frames[1:]], dim=1)
    out = {}
    with torch.inference_mode():
        ref = reference['disparity']
        got = runner.depth(images.to(runner.device)).double().cpu()
        out['disparity_rel'] = float(((got - ref).abs() / ref.clamp_min(1e-6)).mean())
        out['disparity_max_abs'] = float((got - ref).abs().max())
        d_ref, d_got = _disp_to_depth(ref), _disp_to_depth(got)
        out['depth_absrel'] = float(((d_got - d_ref).abs() / d_ref).mean())
        if pose_net is not None and runner.has_pose:
            ref_p = reference['pose']
            got_p = [t.double().cpu() for t in runner.pose(pairs.to(runner.device))]
            aa_r, t_r, aa_g, t_g = ref_p[0].double(), ref_p[1].double(), got_p[0], got_p[1]
            out['pose_translation'] = float((t_g - t_r).norm(dim=1).sum() /
                                            t_r.norm(dim=1).sum().clamp_min(1e-12))
            rel = _rotation(aa_r).transpose(1, 2) @ _rotation(aa_g)
            cos = ((rel.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)
            out['pose_rotation_deg'] = float(torch.rad2deg(torch.acos(cos)).max())
            out['pose_max_abs'] = max(float((g - r.double()).abs().max())
                                      for g, r in zip(got_p[:2], ref_p[:2]))
            names = list(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose']))
            for n, g, r in zip(names[2:], got_p[2:], ref_p[2:]):
                out[f'{n}_max_abs'] = float((g - r.double()).abs().max())
            if not math.isfinite(out['pose_rotation_deg']):
                out['pose_rotation_deg'] = float('inf')
    return out


def accuracy_guard(runner, depth_net, pose_net, precision: str, frames: torch.Tensor | None = None,
                   thresholds: dict | None = None, height: int | None = None,
                   width: int | None = None, reference: dict | None = None) -> dict:
    """Check ``runner`` against float32 torch. Returns ``{'passed', 'precision', 'metrics',
    'thresholds', 'failed': [metric, ...], 'frames': N}``; ``thresholds`` override entries of
    :data:`GUARD_THRESHOLDS` [precision]."""
    if frames is None:
        frames = reference['frames'] if reference is not None else guard_frames(height, width)
    limits = dict(GUARD_THRESHOLDS.get(precision, GUARD_THRESHOLDS['int8']))
    limits.update(thresholds or {})
    metrics = accuracy_metrics(runner, depth_net, pose_net, frames, reference)
    failed = [k for k, lim in limits.items()
              if k in metrics and not (metrics[k] <= lim)]      # NaN fails too
    return {'passed': not failed, 'precision': precision, 'metrics': metrics,
            'thresholds': limits, 'failed': failed, 'frames': int(frames.shape[0] - 1)}


def describe_guard(report: dict) -> str:
    m, t = report['metrics'], report['thresholds']
    parts = [f'{k} {m[k]:.3g} (max {t[k]:g})' for k in t if k in m]
    return ', '.join(parts)


def require_accuracy(report: dict, what: str) -> dict:
    """Raise :class:`AccuracyError` naming the failing metrics when the guard failed."""
    if not report['passed']:
        bad = ', '.join(f'{k} {report["metrics"][k]:.3g} > {report["thresholds"][k]:g}'
                        for k in report['failed'])
        raise AccuracyError(
            f'{what} refused by the accuracy guard ({report["precision"]} vs float32 torch on '
            f'{report["frames"]} fixed frames): {bad}. Use precision fp32 or another backend '
            '(thresholds: docs/inference.md "Accuracy guard")')
    return report
