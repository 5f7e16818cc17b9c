"""Where an evaluation's predictions come from: the :class:`~depth_ego_ros.core.estimator.Estimator`
run on the bag's camera images (estimator mode, with optional online refinement driven
synchronously) or the depth images the node recorded (recorded mode; recorded odometry is read in
pass A by :mod:`.trajectory_results`)."""
from __future__ import annotations

import math

import numpy as np

from ..data import bag_reader as br
from . import trajectory as tr
from .bag_inputs import EvaluationError, nearest_stamp

__all__ = ['Prediction']


class Prediction:
    """Per frame: the predicted depth (and, from the estimator, the relative pose, the scale and
    the timings). ``inputs`` is the run's :class:`~.inputs.Inputs`."""

    def __init__(self, cfg, inputs):
        self.cfg = cfg
        self.inputs = inputs
        self.mode = inputs.mode
        self.timings = []                 # the estimator's per-frame timings
        self.est_rel = {}                 # frame index -> T_prev_curr (estimator mode)
        self.processed = []               # frame indices the estimator saw, in order
        self.estimator = None
        self.est_config = None
        self.checkpoint_meta = None
        self.refiner = None
        self.refine_log = []
        self.learned_K = None             # (K, [W, H]) of the last frame with learned intrinsics
        self._speeds = None

    # -- set-up ------------------------------------------------------------------------------
    def build_estimator(self, pose_enabled, depth_enabled: bool) -> bool:
        """Networks (and refiner) from the checkpoint; adds the warnings that depend on them and
        returns whether the trajectory is still evaluated (not without a pose network)."""
        from ..core import checkpoints as ckpt
        from ..core.estimator import Estimator, EstimatorConfig
        cfg = self.cfg
        warnings = self.inputs.warnings
        e = dict(cfg.estimator)
        try:     # which networks the checkpoint holds: the defaults of the options not given
            opts, meta = ckpt.network_options(cfg.checkpoint, *(e.get(k) for k in (
                'model', 'pose_model', 'learned_intrinsics', 'width', 'height')))
        except ckpt.CheckpointError as exc:
            raise EvaluationError(str(exc)) from None
        e.update(opts)
        self.checkpoint_meta = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))}
        if not cfg.checkpoint:
            warnings.append('no checkpoint: the networks have RANDOM weights, the figures only '
                            'test the pipeline')
        e = {k: v for k, v in e.items() if v is not None}
        try:
            self.est_config = EstimatorConfig(**e)
            self.estimator = Estimator(self.est_config, cfg.checkpoint)
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
        if cfg.online_refinement is not None:
            from ..core.online_refinement import OnlineRefiner, RefinerConfig
            try:
                self.refiner = OnlineRefiner(self.estimator, RefinerConfig(**cfg.online_refinement))
            except ValueError as exc:
                raise EvaluationError(f'online refinement: {exc}') from None
        if self.est_config.learned_intrinsics and 'camera_info' not in self.inputs.roles:
            warnings[:] = [w for w in warnings if not w.startswith('no camera_info topic')]
            warnings.append('no camera_info topic: the learned intrinsics are used '
                            '(report inputs.learned_K)')
        if not self.estimator.has_pose and pose_enabled:
            warnings.append('the checkpoint has no pose network: the trajectory is not evaluated')
            pose_enabled = False
        if self.est_config.scale_mode in ('none', 'relative') and cfg.scaling == 'none' and depth_enabled:
            warnings.append("the estimator gives relative depth (scale mode 'none') but "
                            "--scaling none: the depth figures include the unknown scale")
        if self.est_config.scale_mode in ('none', 'relative') and cfg.align in ('se3', 'none') and pose_enabled:
            warnings.append(f"relative (scale-free) trajectory with --align {cfg.align}: "
                            'the ATE includes the unknown scale (use sim3)')
        return pose_enabled

    def _speed_at(self, t):
        if self._speeds is None:
            st, sp = [], []
            for m in self.inputs.roles_full.get('speed') or []:
                tw = m.twist.twist if hasattr(m.twist, 'twist') else m.twist
                st.append(br.stamp_to_sec(m.header.stamp))
                sp.append(math.sqrt(tw.linear.x ** 2 + tw.linear.y ** 2 + tw.linear.z ** 2))
            order = np.argsort(st)
            self._speeds = (np.asarray(st)[order], np.asarray(sp)[order])
        st, sp = self._speeds
        j, dt = nearest_stamp(st, t)
        return float(sp[j]) if j is not None and dt <= max(self.cfg.depth_max_dt, 0.1) else None

    # -- per frame ---------------------------------------------------------------------------
    def predict(self, i: int, stamp: float, rgb, data: dict, rec: dict, sizes: dict):
        """-> (depth or None, skip reason or None) for frame ``i``; fills ``rec`` (scale,
        refinement) and ``sizes`` (image / pred_depth)."""
        if self.mode == 'estimator':
            H, W = rgb.shape[:2]
            sizes.setdefault('image', [W, H])
            # learned intrinsics: the learned K is used when the bag has no camera_info (the
            # perception node's rule); a camera_info K always wins
            learned = self.est_config.learned_intrinsics and self.inputs.K is None
            K = None if learned else self.inputs.K_at((W, H))
            speed = self._speed_at(stamp) if self.cfg.speed_topic else None
            try:
                out = self.estimator.infer(rgb, K, stamp=stamp, speed=speed)
            except ValueError as exc:
                return None, f'estimator: {exc}'
            self.timings.append(out.timings)
            self.processed.append(i)
            if out.relative_pose is not None:
                self.est_rel[i] = out.relative_pose
            rec['scale'] = out.scale
            if self.refiner is not None:
                self._refine(rgb, out.K if out.K is not None else K, stamp, speed, rec)
            if learned and out.K is not None:
                self.learned_K = (np.asarray(out.K, dtype=np.float64).tolist(), [W, H])
            return out.depth, None
        if 'pred_depth' in data:
            pred = data['pred_depth'][1]
            sizes.setdefault('pred_depth', [pred.shape[1], pred.shape[0]])
            return pred, None
        return None, None

    def _refine(self, rgb, K, stamp, speed, rec):
        """Online refinement: offer the frame, run a round every ``refine_every`` frames; the
        next frames are predicted with whatever the round left (accepted or not)."""
        self.refiner.add_frame(rgb, K, stamp, speed)
        n = len(self.processed)
        if n % self.cfg.refine_every:
            return
        r = self.refiner.refine_round()
        if r is not None:
            rec['refinement'] = {'accepted': bool(r.accepted), 'loss_before': r.loss_before,
                                 'loss_after': r.loss_after}
            self.refine_log.append(rec['refinement'])

    # -- results -----------------------------------------------------------------------------
    def estimated_trajectory(self, frame_stamps) -> tr.Trajectory:
        """Estimator mode: the chain of the relative poses; a frame after a skipped one continues
        from the last processed frame."""
        ids = self.processed
        if not ids:
            raise EvaluationError('no frame was processed: no trajectory')
        poses, st = [np.eye(4)], [float(frame_stamps[ids[0]])]
        for i in ids[1:]:
            rel = self.est_rel.get(i, np.eye(4))
            poses.append(poses[-1] @ rel)
            st.append(float(frame_stamps[i]))
        if len(poses) < 3:
            raise EvaluationError(f'only {len(poses)} frame(s) were processed: the trajectory '
                                  'needs at least 3')
        return tr.Trajectory(np.stack(poses), np.asarray(st))

    def timing_summary(self) -> dict | None:
        """Mean per-frame estimator timings (ms) for the report."""
        if not self.timings:
            return None
        keys = self.timings[0].keys()
        est_timing = {f'{k}_ms_mean': float(np.mean([t[k] for t in self.timings])) for k in keys}
        est_timing['frames'] = len(self.timings)
        return est_timing
