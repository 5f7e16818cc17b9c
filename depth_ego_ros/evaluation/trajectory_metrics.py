"""Trajectory alignment and the field's trajectory metrics, with the semantics of ``evo``
(checked against evo 1.38.1 reference values in the test suite) unless a function says otherwise:

* :func:`umeyama` / :func:`align` — least-squares SE(3), Sim(3) or scale-only alignment of the
  estimate's positions onto the reference's (Umeyama 1991; ``evo`` ``traj.align``).
* :func:`ape` — absolute pose error after alignment; the translation part is the ATE.
* :func:`rpe` — relative pose error ``E = inv(inv(Q_i) Q_j) inv(P_i) P_j`` over index pairs (i, j)
  picked by a delta in frames or metres (path length), consecutive or all pairs.
* :func:`snippet_ate` — monodepth2's 5-frame-snippet ATE (a different, local metric).
* :func:`error_stats` — rmse, mean, median, std (population), min, max, sse.

Formulas and conventions are documented in docs/evaluation_metrics.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.geometry import invert_pose, matrix_to_axis_angle_np
from .trajectory_io import Trajectory, TrajectoryError, associate_trajectories

__all__ = [
    'umeyama', 'align', 'Alignment', 'error_stats', 'ErrorResult', 'ape', 'rpe', 'pair_indices',
    'snippet_ate', 'compute_ate_snippet',
]


# ----------------------------------------------------------------------------------------------
# alignment
# ----------------------------------------------------------------------------------------------
def umeyama(src, dst, with_scale: bool = False):
    """Least-squares similarity ``dst ~= s R src + t`` (Umeyama 1991).

    Args:
        src, dst: (N,3) corresponding points (e.g. estimated and reference positions).
        with_scale: estimate s (Sim(3)); otherwise s = 1 (SE(3)).
    Returns:
        R (3,3), t (3,), s (float).
    """
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise TrajectoryError(f'umeyama needs two (N,3) arrays of equal shape, got {x.shape} and {y.shape}')
    n = x.shape[0]
    if n < 3:
        raise TrajectoryError(f'alignment needs at least 3 poses, got {n}')
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    var_x = np.sum(xc * xc) / n
    cov = yc.T @ xc / n                       # sum_i (y_i - my)(x_i - mx)^T / n
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    if with_scale:
        if var_x <= 0:
            raise TrajectoryError('cannot estimate a scale: the estimated positions do not move')
        s = float(np.trace(np.diag(D) @ S) / var_x)
    else:
        s = 1.0
    t = my - s * R @ mx
    return R, t, s


@dataclass
class Alignment:
    """Applied alignment: ``p_aligned = scale * R @ p + t`` (translation of each pose; the
    orientation is rotated by R)."""
    mode: str
    R: np.ndarray
    t: np.ndarray
    scale: float

    def as_dict(self):
        return {'mode': self.mode, 'rotation': self.R.tolist(), 'translation': self.t.tolist(),
                'scale': self.scale}


_ALIGN_MODES = ('none', 'se3', 'sim3', 'scale')


def align(est: Trajectory, ref: Trajectory, mode: str = 'se3', n: int = -1) -> tuple[Trajectory, Alignment]:
    """Align ``est`` onto ``ref`` (same length, already associated).

    mode: 'se3' (rotation + translation), 'sim3' (+ scale), 'scale' (scale only: the Sim(3)
    Umeyama scale applied about the origin, as evo's ``correct_scale`` without ``align``), 'none'.
    n: use only the first n poses to estimate the alignment (-1: all).
    """
    if mode not in _ALIGN_MODES:
        raise TrajectoryError(f'alignment mode must be one of {_ALIGN_MODES}, got {mode!r}')
    if len(est) != len(ref):
        raise TrajectoryError(f'align needs associated trajectories of equal length ({len(est)} vs {len(ref)})')
    if mode == 'none':
        return est.copy(), Alignment('none', np.eye(3), np.zeros(3), 1.0)
    k = len(est) if n == -1 else int(n)
    R, t, s = umeyama(est.positions[:k], ref.positions[:k], with_scale=mode in ('sim3', 'scale'))
    if mode == 'scale':
        return est.scaled(s), Alignment('scale', np.eye(3), np.zeros(3), s)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    out = est.scaled(s) if mode == 'sim3' else est.copy()
    return out.transformed(T), Alignment(mode, R, t, s)


# ----------------------------------------------------------------------------------------------
# statistics and metrics
# ----------------------------------------------------------------------------------------------
def error_stats(errors) -> dict:
    """rmse, mean, median, std (population, ddof=0), min, max, sse of an error array."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise TrajectoryError('no errors to summarise')
    return {'rmse': float(math.sqrt(np.mean(e * e))), 'mean': float(np.mean(e)),
            'median': float(np.median(e)), 'std': float(np.std(e)), 'min': float(np.min(e)),
            'max': float(np.max(e)), 'sse': float(np.sum(e * e))}


@dataclass
class ErrorResult:
    """Per-pose (APE) or per-pair (RPE) errors with their statistics and the settings used."""
    errors: np.ndarray
    stats: dict
    settings: dict
    pairs: np.ndarray | None = None          # RPE: (M,2) index pairs into the associated trajectories
    stamps: np.ndarray | None = None         # stamps of the errors (APE: pose; RPE: first of pair)
    alignment: Alignment | None = None

    def as_dict(self) -> dict:
        return {'stats': self.stats, 'settings': self.settings, 'n': int(self.errors.size),
                'alignment': None if self.alignment is None else self.alignment.as_dict()}


_RELATIONS = ('translation', 'rotation_deg', 'rotation_rad', 'full')


def _rotation_angles(R) -> np.ndarray:
    return np.linalg.norm(matrix_to_axis_angle_np(np.asarray(R).reshape(-1, 3, 3)), axis=1)


def _relation_errors(E: np.ndarray, relation: str) -> np.ndarray:
    if relation == 'translation':
        return np.linalg.norm(E[:, :3, 3], axis=1)
    if relation == 'rotation_rad':
        return _rotation_angles(E[:, :3, :3])
    if relation == 'rotation_deg':
        return np.degrees(_rotation_angles(E[:, :3, :3]))
    if relation == 'full':
        return np.linalg.norm((E - np.eye(4)).reshape(len(E), -1), axis=1)
    raise TrajectoryError(f'relation must be one of {_RELATIONS}, got {relation!r}')


def _prepare(ref: Trajectory, est: Trajectory, max_diff: float | None, offset_est: float):
    if len(ref) == 0 or len(est) == 0:
        raise TrajectoryError('empty trajectory')
    if max_diff is not None:
        return associate_trajectories(ref, est, max_diff, offset_est)
    if len(ref) != len(est):
        raise TrajectoryError(f'trajectories differ in length ({len(ref)} vs {len(est)}); '
                              'give max_diff to associate them by timestamp')
    return ref, est


def ape(ref: Trajectory, est: Trajectory, align_mode: str = 'se3', relation: str = 'translation',
        max_diff: float | None = None, offset_est: float = 0.0, n_align: int = -1) -> ErrorResult:
    """Absolute pose error (evo ``ape``). With ``relation='translation'`` this is the ATE:
    ``|p_ref_i - p_est_aligned_i|``; rotation relations use the angle of ``inv(Q_i) P_i``.

    max_diff: associate by timestamps first (seconds); None: pose i of est goes with pose i of ref.
    """
    ref, est = _prepare(ref, est, max_diff, offset_est)
    est_al, al = align(est, ref, align_mode, n_align)
    if relation == 'translation':
        err = np.linalg.norm(est_al.positions - ref.positions, axis=1)
    else:
        E = invert_pose(ref.poses) @ est_al.poses
        err = _relation_errors(E, relation)
    settings = {'metric': 'ape', 'align': align_mode, 'relation': relation, 'max_diff': max_diff,
                'offset_est': offset_est, 'n_align': n_align, 'n_pairs': int(err.size)}
    return ErrorResult(err, error_stats(err), settings, stamps=ref.stamps, alignment=al)


def pair_indices(poses: np.ndarray, delta: float, delta_unit: str = 'frames', all_pairs: bool = False,
                 rel_delta_tol: float = 0.1) -> np.ndarray:
    """Index pairs (i, j) for RPE (evo ``id_pairs_from_delta``).

    * frames, consecutive: i = 0, d, 2d, ...; pairs of neighbours in that list.
    * frames, all pairs: (i, i+d) for every i.
    * metres ('m'), consecutive: start at index 0, walk the path and keep index k whenever the
      path length since the last kept index reaches delta; pairs of neighbours in that list
      (evo 1.38: the first pair starts at pose 0; some older evo versions dropped it).
    * metres, all pairs: for every i the j > i whose path length from i is closest to delta,
      kept if within ``delta * rel_delta_tol``.
    """
    poses = np.asarray(poses)
    n = poses.shape[0]
    if delta <= 0:
        raise TrajectoryError(f'delta must be > 0, got {delta}')
    if delta_unit == 'frames':
        d = int(delta)
        if d != delta:
            raise TrajectoryError(f'a delta in frames must be an integer, got {delta}')
        if all_pairs:
            pairs = [(i, i + d) for i in range(n - d)]
        else:
            ids = np.arange(0, n, d)
            pairs = list(zip(ids[:-1], ids[1:]))
    elif delta_unit in ('m', 'meters', 'metres'):
        steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
        if all_pairs:
            cum = np.concatenate([[0.0], np.cumsum(steps)])
            tol = delta * rel_delta_tol
            pairs = []
            for i in range(n - 1):
                from_here = cum[i + 1:] - cum[i]
                k = int(np.argmin(np.abs(from_here - delta)))
                if abs(from_here[k] - delta) <= tol:
                    pairs.append((i, i + 1 + k))
        else:
            ids = [0]
            current = 0.0
            for k in range(1, n):
                current += float(steps[k - 1])
                if current >= delta:
                    ids.append(k)
                    current = 0.0
            pairs = list(zip(ids[:-1], ids[1:]))
    else:
        raise TrajectoryError(f"delta_unit must be 'frames' or 'm', got {delta_unit!r}")
    if not pairs:
        raise TrajectoryError(f'delta {delta} {delta_unit} gives no pose pairs for {n} poses')
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def rpe(ref: Trajectory, est: Trajectory, delta: float = 1, delta_unit: str = 'frames',
        relation: str = 'translation', all_pairs: bool = False, rel_delta_tol: float = 0.1,
        pairs_from_reference: bool = False, align_mode: str = 'none',
        max_diff: float | None = None, offset_est: float = 0.0) -> ErrorResult:
    """Relative pose error (evo ``rpe``): for each pair (i, j)
    ``E = inv(inv(Q_i) Q_j) @ inv(P_i) P_j`` (Q reference, P estimate); the error is |t(E)|
    (translation) or the rotation angle of E. Pairs are chosen on the estimate unless
    ``pairs_from_reference``. ``align_mode`` is applied to the whole estimate first (rarely useful:
    RPE is invariant to SE(3) alignment, not to scale)."""
    ref, est = _prepare(ref, est, max_diff, offset_est)
    al = None
    if align_mode != 'none':
        est, al = align(est, ref, align_mode)
    pairs = pair_indices(ref.poses if pairs_from_reference else est.poses, delta, delta_unit,
                         all_pairs, rel_delta_tol)
    i, j = pairs[:, 0], pairs[:, 1]
    Q_rel = invert_pose(ref.poses[i]) @ ref.poses[j]
    P_rel = invert_pose(est.poses[i]) @ est.poses[j]
    E = invert_pose(Q_rel) @ P_rel
    err = _relation_errors(E, relation)
    settings = {'metric': 'rpe', 'delta': delta, 'delta_unit': delta_unit, 'relation': relation,
                'all_pairs': all_pairs, 'rel_delta_tol': rel_delta_tol,
                'pairs_from_reference': pairs_from_reference, 'align': align_mode,
                'max_diff': max_diff, 'offset_est': offset_est, 'n_pairs': int(err.size)}
    stamps = None if ref.stamps is None else ref.stamps[i]
    return ErrorResult(err, error_stats(err), settings, pairs=pairs, stamps=stamps, alignment=al)


# ----------------------------------------------------------------------------------------------
# monodepth2's snippet ATE
# ----------------------------------------------------------------------------------------------
def compute_ate_snippet(gt_xyz, pred_xyz) -> float:
    """monodepth2 / SfMLearner ``compute_ate`` for one snippet: shift pred so its first point is
    gt's first point, optimal scale ``sum(gt*pred)/sum(pred^2)``, then
    ``sqrt(sum |scale*pred - gt|^2) / N`` (note: divided by N outside the root, as published)."""
    gt = np.asarray(gt_xyz, dtype=np.float64)
    pred = np.asarray(pred_xyz, dtype=np.float64)
    pred = pred + (gt[0] - pred[0])
    denom = np.sum(pred ** 2)
    scale = np.sum(gt * pred) / denom if denom > 0 else 0.0
    err = pred * scale - gt
    return float(np.sqrt(np.sum(err ** 2)) / gt.shape[0])


def _dump_xyz(transforms) -> np.ndarray:
    acc = np.eye(4)
    xyz = [acc[:3, 3].copy()]
    for T in transforms:
        acc = acc @ T
        xyz.append(acc[:3, 3].copy())
    return np.array(xyz)


def snippet_ate(gt_poses, pred_rel, track_length: int = 5) -> dict:
    """monodepth2's KITTI-odometry pose metric: mean/std of :func:`compute_ate_snippet` over the
    snippets of ``track_length`` frames starting at every frame (the last ones are shorter, as in
    monodepth2's evaluate_pose.py).

    Args:
        gt_poses: (N,4,4) ground-truth camera->world poses.
        pred_rel: (N-1,4,4) predicted relative poses in this project's convention
            ``T_i_(i+1)`` (pose of frame i+1 in frame i, the Estimator's ``relative_pose``).
    Both are converted to monodepth2's convention (``inv(T_i_(i+1))``, what its pose net outputs
    for the frame pair (i, i+1) and what it derives from the ground truth) before chaining, so the
    numbers are comparable with published ones.
    Returns {'mean', 'std', 'per_snippet' (list), 'track_length', 'n_snippets'}.
    """
    gt = np.asarray(gt_poses, dtype=np.float64)
    pr = np.asarray(pred_rel, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (4, 4) or pr.ndim != 3 or pr.shape[1:] != (4, 4):
        raise TrajectoryError('snippet_ate needs (N,4,4) gt poses and (N-1,4,4) relative poses')
    if pr.shape[0] != gt.shape[0] - 1:
        raise TrajectoryError(f'{gt.shape[0]} gt poses need {gt.shape[0] - 1} relative poses, got {pr.shape[0]}')
    if track_length < 2 or gt.shape[0] < 2:
        raise TrajectoryError('snippet_ate needs track_length >= 2 and at least 2 poses')
    gt_local = invert_pose(invert_pose(gt[:-1]) @ gt[1:])     # monodepth2: inv(inv(G[i-1]) G[i])
    pred_local = invert_pose(pr)
    ates = []
    for i in range(gt.shape[0] - 1):
        g_xyz = _dump_xyz(gt_local[i:i + track_length - 1])
        p_xyz = _dump_xyz(pred_local[i:i + track_length - 1])
        ates.append(compute_ate_snippet(g_xyz, p_xyz))
    ates = np.array(ates)
    return {'mean': float(np.mean(ates)), 'std': float(np.std(ates)), 'per_snippet': ates.tolist(),
            'track_length': track_length, 'n_snippets': int(ates.size)}
