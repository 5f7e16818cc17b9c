"""Offline evaluation of a bag: camera stream -> Estimator (or recorded outputs) -> metrics -> report.

Two modes, one pipeline:

* **estimator** (default): the camera images of the bag go through the same
  :class:`~depth_ego_ros.core.estimator.Estimator` the perception node runs (no DDS, as fast as the
  machine allows). The estimated trajectory is the chain of its relative poses.
* **recorded**: ``pred_depth`` / ``pred_odom`` name depth images and odometry that were recorded
  from the node (live replay, see launch/replay_eval.launch.py), in the same bag or in
  ``pred_bag``. No network runs.

Ground truth: a depth image topic (REP 118: 16UC1 mm or 32FC1 m) or a LiDAR PointCloud2 rendered
into the camera (z-buffer, :func:`~depth_ego_ros.core.geometry.points_to_depth_image`) with the
extrinsic from /tf_static (or given), and poses from an Odometry / PoseStamped /
PoseWithCovarianceStamped / TF topic or a TUM / KITTI / EuRoC file.

Time association (stated in the report): every message is identified by its **header stamp**
(not the bag's receive time, which a recorder changes). Each evaluated frame takes the ground-truth
message with the nearest stamp, accepted when ``|dt| <= depth_max_dt``; trajectories are associated
evo-style (nearest within ``pose_max_dt``) or the GT is interpolated at the frame stamps.

The bag is read twice: a first pass collects stamps, camera_info, /tf_static and poses (small); the
second decodes only the messages the selected frames need, in bag order, and evaluates each frame
as soon as its messages are there, so memory stays bounded whatever the bag length.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from . import report as rp
from .bag_inputs import EvaluationError, cloud_depth_image, parse_extrinsic, resize_depth
from .config import EvaluateConfig
from .depth_results import DepthResults
from .inputs import Inputs
from .plots import make_plots
from .prediction import Prediction
from .stream import FrameStream
from .trajectory_results import PoseInputs, trajectory_results, write_trajectories

__all__ = ['EvaluateConfig', 'EvaluationError', 'evaluate', 'resize_depth', 'parse_extrinsic',
           'cloud_depth_image', 'EvaluationRun']

_clean = rp.clean      # the JSON-safe copy, under its old name here


class EvaluationRun:
    """One evaluation as a pipeline of its pieces: :meth:`index` (pass A: :class:`~.inputs.Inputs`,
    :class:`~.trajectory_results.PoseInputs`), :meth:`run` (pass B: :class:`~.stream.FrameStream`
    feeding :meth:`_process`: :class:`~.prediction.Prediction` then
    :class:`~.depth_results.DepthResults`), then :meth:`depth_results` / :meth:`trajectory_results`
    for the report (:mod:`.report`)."""

    def __init__(self, cfg: EvaluateConfig, log_fn=None):
        self.cfg = cfg
        self.log = log_fn
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.frame_records: list[dict] = []
        self.frame_skips: list[dict] = []
        self.sizes: dict = {}
        self.prediction_setup_s = 0.0
        self.trajectories = None          # AlignedTrajectories once trajectory_results() ran

    def index(self):
        """Pass A: topics, stamps, camera, frames, depth association, poses."""
        self.inputs = Inputs(self.cfg, self.notes, self.warnings).index()
        self.poses = PoseInputs(self.cfg, self.inputs).setup()
        if not self.inputs.depth_enabled and not self.poses.enabled:
            raise EvaluationError('nothing to evaluate: depth needs ground truth (--gt-depth/--gt-cloud) '
                                  'and a prediction (the network, or --pred-depth); the trajectory '
                                  'needs --gt-poses and an estimate (the network, or --pred-odom)')

    def run(self):
        """Pass B: every selected frame through the prediction and the depth metrics."""
        self.depth = DepthResults(self.cfg, self.inputs)
        self.prediction = Prediction(self.cfg, self.inputs)
        stream = FrameStream(self.inputs, self.depth.example_ids)
        if self.inputs.mode == 'estimator':
            t0 = time.perf_counter()
            self.poses.enabled = self.prediction.build_estimator(self.poses.enabled, self.depth.enabled)
            self.prediction_setup_s = time.perf_counter() - t0
        if stream.empty:   # recorded odometry only: nothing to decode
            self.frame_records = [{'frame': i, 'stamp': float(t)}
                                  for i, t in enumerate(self.inputs.frame_stamps)]
            return
        stream.for_each(self._process, progress=self.cfg.progress)

    def _skip(self, i, reason):
        self.frame_skips.append({'frame': i, 'stamp': float(self.inputs.frame_stamps[i]), 'reason': reason})

    def _process(self, i, data):
        inp = self.inputs
        stamp = float(inp.frame_stamps[i])
        rec = {'frame': i, 'stamp': stamp}
        for role, (_, payload) in data.items():
            if isinstance(payload, Exception):
                self._skip(i, f"{inp.roles[role][1]}: {payload}")
                if role == 'camera' and inp.mode == 'estimator':
                    return
                data = {r: v for r, v in data.items() if r != role}
        rgb = data['camera'][1] if 'camera' in data else None
        pred, reason = self.prediction.predict(i, stamp, rgb, data, rec, self.sizes)
        if reason is not None:
            self._skip(i, reason)
            return
        reason = self.depth.add(i, stamp, rgb, pred, data, rec, self.sizes)
        if reason is not None:
            self._skip(i, reason)
        self.frame_records.append(rec)

    # -- results -----------------------------------------------------------------------------
    def depth_results(self) -> dict | None:
        return self.depth.results(self.frame_records, self.frame_skips)

    def trajectory_results(self) -> dict | None:
        if not self.poses.enabled:
            return None
        if self.inputs.mode == 'estimator':
            est = self.prediction.estimated_trajectory(self.inputs.frame_stamps)
            name = 'estimator (chained relative poses)'
        else:
            est, name = self.poses.pred_traj, self.cfg.pred_odom
        out, self.trajectories = trajectory_results(self.cfg, est, self.poses.gt_traj,
                                                    self.poses.gt_source, name)
        return out


def evaluate(cfg: EvaluateConfig, log_fn=None, argv=None) -> dict:
    """Run the evaluation described by ``cfg``; write report.json, plots and trajectories into
    ``cfg.out``; return the report (as written). Raises :class:`EvaluationError`."""
    cfg.validate()
    log_fn = log_fn or (lambda text: print(text, file=sys.stderr, flush=True))
    run = EvaluationRun(cfg, log_fn)
    t0 = time.perf_counter()
    run.index()
    t_index = time.perf_counter() - t0
    run.run()
    t_run = time.perf_counter() - t0 - t_index
    depth = run.depth_results()
    traj = run.trajectory_results()

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = write_trajectories(out, run.trajectories) if traj is not None else {}
    report = rp.build_report(run, depth, traj, files, argv, t_index, t_run)
    if run.prediction.refiner is not None:
        run.prediction.refiner.close()
    if cfg.plots:
        files.update(make_plots(out, depth, traj, run.trajectories, run.frame_records,
                                run.depth.examples))
    report['timings']['total_s'] = time.perf_counter() - t0
    report = rp.clean(report)
    rp.write_json(out / 'report.json', report)
    return report
