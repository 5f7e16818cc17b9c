"""The trajectory part of an evaluation: ground-truth poses (topic or file) and recorded odometry
brought to the frame stamps in pass A (:class:`PoseInputs`), then, after the run, association,
alignment, ATE / RPE / snippet ATE (:func:`trajectory_results`) and the trajectory files
(:func:`write_trajectories`). The metrics themselves are :mod:`.trajectory_metrics`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.geometry import relative_poses
from . import trajectory as tr
from .bag_inputs import (EvaluationError, dt_stats, nearest_stamp, poses_from_samples, stamp_span,
                         to_camera_frame)

__all__ = ['PoseInputs', 'AlignedTrajectories', 'trajectory_results', 'write_trajectories']


class PoseInputs:
    """Ground truth and (recorded mode) the estimated poses at the frame stamps; ``enabled`` says
    whether the trajectory is evaluated (the estimator set-up may still turn it off)."""

    def __init__(self, cfg, inputs):
        self.cfg = cfg
        self.inputs = inputs
        self.gt_traj = None
        self.gt_source = None
        self.pred_traj = None
        self.enabled = False

    def setup(self) -> 'PoseInputs':
        cfg, inp = self.cfg, self.inputs
        self.enabled = bool(cfg.gt_poses) and (inp.mode == 'estimator' or cfg.pred_odom)
        if cfg.gt_poses and not self.enabled:
            inp.warnings.append('ground-truth poses given but no estimated trajectory (recorded '
                                'mode without --pred-odom): the trajectory is not evaluated')
        if cfg.pred_odom and not cfg.gt_poses:
            inp.warnings.append('--pred-odom given without --gt-poses: the trajectory is not evaluated')
        if not self.enabled:
            return self
        self._ground_truth()
        self._check_association()
        if cfg.pred_odom:
            self._recorded_odometry()
        return self

    def _ground_truth(self):
        cfg, inp = self.cfg, self.inputs
        if inp.gt_file is not None:
            try:
                gt = tr.read_trajectory(inp.gt_file, cfg.gt_poses_format, stamps=cfg.gt_times)
            except (tr.TrajectoryError, OSError, ValueError) as exc:
                raise EvaluationError(f'ground-truth poses: {exc}') from None
            if gt.stamps is None:
                if len(gt) != inp.frames_in_bag:
                    raise EvaluationError(
                        f'{inp.gt_file} has no timestamps and {len(gt)} poses for '
                        f'{inp.frames_in_bag} frames in the bag: give --gt-times (KITTI times.txt) '
                        'or a trajectory with stamps (TUM)')
                gt = tr.Trajectory(gt.poses, inp.all_frame_stamps)
                inp.notes.append(f'ground truth {inp.gt_file.name} has no stamps: pose i = frame i '
                                 'of the bag')
            inp.notes.append(f'ground-truth poses from {inp.gt_file} (camera->world, taken as the '
                             'camera poses)')
            self.gt_traj = gt
            self.gt_source = str(inp.gt_file)
        else:
            samples = inp.samples('gt_poses')
            if not samples:
                raise EvaluationError(f"no poses on '{cfg.gt_poses}'")
            p = poses_from_samples(samples, inp.roles['gt_poses'][2], cfg.gt_poses, inp.static,
                                   inp.camera_frame, cfg.gt_tf_parent, cfg.gt_tf_child)
            self.gt_traj = to_camera_frame(p, inp.camera_frame, inp.static, inp.notes,
                                           inp.warnings, 'ground truth')
            self.gt_source = cfg.gt_poses

    def _check_association(self):
        """The estimate is sampled at the frame stamps: check association before the long part."""
        cfg, inp = self.cfg, self.inputs
        est_st = inp.frame_stamps
        gst = self.gt_traj.stamps
        if cfg.pose_association == 'interpolate':
            inside = (est_st >= gst.min()) & (est_st <= gst.max())
            n_ok = int(inside.sum())
        else:
            ia, _ = tr.associate(gst, est_st, cfg.pose_max_dt)
            n_ok = int(ia.size)
        if n_ok == 0:
            raise EvaluationError(
                f'no ground-truth pose ({self.gt_source}) within {cfg.pose_max_dt} s of any of the '
                f'{inp.n_frames} frames (frames {stamp_span(est_st)}, ground truth {stamp_span(gst)}): the '
                'clocks differ or the tolerance is too small (--pose-max-dt)')
        if n_ok < 3:
            raise EvaluationError(f'only {n_ok} frame(s) have a ground-truth pose: the trajectory '
                                  'alignment needs at least 3 (more frames, or a larger --pose-max-dt)')

    def _recorded_odometry(self):
        """Recorded odometry: the poses at the frame stamps."""
        cfg, inp = self.cfg, self.inputs
        samples = inp.samples('pred_odom')
        if not samples:
            raise EvaluationError(f"no poses on '{cfg.pred_odom}'")
        p = poses_from_samples(samples, inp.roles['pred_odom'][2], cfg.pred_odom, inp.pstatic,
                               inp.camera_frame)
        est = to_camera_frame(p, inp.camera_frame, inp.pstatic, inp.notes, inp.warnings, 'estimate')
        ids, dts = [], []
        for t in inp.frame_stamps:
            j, dt = nearest_stamp(est.stamps, float(t))
            if j is not None and dt <= cfg.pose_max_dt:
                ids.append(j)
                dts.append(dt)
        if len(ids) < 3:
            raise EvaluationError(f"only {len(ids)} frame(s) have a pose on '{cfg.pred_odom}' "
                                  f'within {cfg.pose_max_dt} s (odometry {stamp_span(est.stamps)}, '
                                  f'frames {stamp_span(inp.frame_stamps)})')
        self.pred_traj = est.subset(ids)
        inp.assoc['pred_odom'] = {'topic': cfg.pred_odom, 'tolerance_s': cfg.pose_max_dt,
                                  'matched': len(ids), 'unmatched': inp.n_frames - len(ids),
                                  'dt': dt_stats(dts)}


@dataclass
class AlignedTrajectories:
    """What the trajectory files and plots need: the associated GT and estimate, the aligned
    estimate, the whole estimate, and the ATE / translational RPE results."""
    gt: tr.Trajectory
    est: tr.Trajectory
    est_aligned: tr.Trajectory
    est_full: tr.Trajectory
    ate: tr.ErrorResult
    rpe_t: tr.ErrorResult


def trajectory_results(cfg, est: tr.Trajectory, gt: tr.Trajectory, gt_source: str,
                       estimate_name: str) -> tuple[dict, AlignedTrajectories]:
    """The report's ``trajectory`` section for the estimate ``est`` against ``gt``."""
    try:
        if cfg.pose_association == 'interpolate':
            keep = (est.stamps >= gt.stamps.min()) & (est.stamps <= gt.stamps.max())
            est_a = est.subset(np.nonzero(keep)[0])
            gt_a = tr.interpolate_trajectory(gt, est_a.stamps)
            dts = np.zeros(len(est_a))
        else:
            ia, ib = tr.associate(gt.stamps, est.stamps, cfg.pose_max_dt)
            gt_a, est_a = gt.subset(ia), est.subset(ib)
            dts = np.abs(gt_a.stamps - est_a.stamps)
        if len(est_a) < 3:
            raise tr.TrajectoryError(f'only {len(est_a)} associated poses (need 3)')
        ate = tr.ape(gt_a, est_a, align_mode=cfg.align, relation='translation')
        ate_rot = tr.ape(gt_a, est_a, align_mode=cfg.align, relation='rotation_deg')
        rpe_align = 'scale' if cfg.align in ('sim3', 'scale') else 'none'
        rpe_t = tr.rpe(gt_a, est_a, delta=cfg.rpe_delta, delta_unit=cfg.rpe_unit,
                       relation='translation', align_mode=rpe_align,
                       pairs_from_reference=cfg.rpe_unit == 'm')
        rpe_r = tr.rpe(gt_a, est_a, delta=cfg.rpe_delta, delta_unit=cfg.rpe_unit,
                       relation='rotation_deg', pairs_from_reference=cfg.rpe_unit == 'm')
        snip = tr.snippet_ate(gt_a.poses, relative_poses(est_a.poses)) if len(est_a) >= 2 else None
    except tr.TrajectoryError as exc:
        raise EvaluationError(f'trajectory: {exc}') from None
    est_aligned, _ = tr.align(est_a, gt_a, cfg.align)
    arrays = AlignedTrajectories(gt=gt_a, est=est_a, est_aligned=est_aligned, est_full=est, ate=ate,
                                 rpe_t=rpe_t)
    out = {
        'ground_truth': gt_source,
        'estimate': estimate_name,
        'association': {'method': ('GT interpolated at the frame stamps' if cfg.pose_association == 'interpolate'
                                   else 'nearest stamp (evo associate)'),
                        'tolerance_s': cfg.pose_max_dt, 'n_estimate': len(est), 'n_ground_truth': len(gt),
                        'n_associated': len(est_a), 'dt': dt_stats(dts)},
        'alignment': ate.alignment.as_dict(),
        'ate': ate.as_dict(),
        'ate_rotation_deg': ate_rot.as_dict(),
        'rpe_translation': rpe_t.as_dict(),
        'rpe_rotation_deg': rpe_r.as_dict(),
        'snippet_ate_5': None if snip is None else {k: v for k, v in snip.items() if k != 'per_snippet'},
        'path_length_gt_m': tr.path_length(gt_a),
        'path_length_est_aligned': tr.path_length(est_aligned),
        'per_pose': [{'stamp': float(s), 'ate': float(e)} for s, e in zip(gt_a.stamps, ate.errors)],
    }
    out['rpe_translation']['note'] = ('the estimate is scaled by the Sim(3) scale before RPE'
                                      if rpe_align == 'scale' else 'no scale correction')
    return out, arrays


def write_trajectories(out: Path, t: AlignedTrajectories) -> dict:
    """TUM and KITTI files of the estimate, the aligned estimate and the GT under
    ``out/trajectories``; returns {name: path relative to out}."""
    files = {}
    tdir = Path(out) / 'trajectories'
    tdir.mkdir(exist_ok=True)
    for name, trj in (('estimate', t.est_full), ('estimate_aligned', t.est_aligned),
                      ('ground_truth', t.gt)):
        tr.write_tum(tdir / f'{name}.tum', trj)
        tr.write_kitti(tdir / f'{name}.kitti', trj)
        files[f'{name}_tum'] = f'trajectories/{name}.tum'
        files[f'{name}_kitti'] = f'trajectories/{name}.kitti'
    return files
