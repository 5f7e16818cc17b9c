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

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.geometry import intrinsics_for_resize, relative_poses
from ..data import bag_reader as br
from . import trajectory as tr
from .bag_inputs import (BagTopics, EvaluationError, StampedTopic, auto_camera_info, auto_camera_topic,
                         cloud_depth_image, dt_stats, nearest_stamp, parse_extrinsic,
                         poses_from_samples, resize_depth, stamp_span, to_camera_frame)
from .metrics import DepthEvalConfig, DepthMetricsAccumulator

__all__ = ['EvaluateConfig', 'EvaluationError', 'evaluate', 'resize_depth', 'parse_extrinsic',
           'cloud_depth_image']

log = logging.getLogger(__name__)

SCALINGS = ('median', 'none', 'fixed')
ALIGNS = ('se3', 'sim3', 'scale', 'none')
POSE_ASSOCIATIONS = ('nearest', 'interpolate')



@dataclass
class EvaluateConfig:
    """Everything that defines an evaluation run (all of it goes into report.json)."""
    bag: str
    out: str
    pred_bag: str | None = None            # bag with recorded node outputs (default: ``bag``)
    checkpoint: str | None = None
    # topics (None = auto-detect where possible)
    camera_topic: str | None = None
    camera_info_topic: str | None = None
    camera_frame: str | None = None        # optical frame id (default: from the image headers)
    gt_depth: str | None = None
    gt_cloud: str | None = None
    gt_poses: str | None = None            # topic or TUM/KITTI/EuRoC file
    gt_poses_format: str = 'auto'
    gt_times: str | None = None            # KITTI times.txt for a GT file without stamps
    gt_tf_parent: str | None = None        # TF GT: parent frame (default: auto)
    gt_tf_child: str | None = None         # TF GT: child frame (default: camera frame)
    pred_depth: str | None = None
    pred_odom: str | None = None
    lidar_to_camera: list | None = None    # T_cam_lidar override: 7 (x y z qx qy qz qw) or 16 numbers
    speed_topic: str | None = None         # estimator scale_mode 'speed'
    # frame selection
    max_frames: int = 0                    # 0 = all
    stride: int = 1
    # depth metrics
    min_depth: float = 1e-3
    max_depth: float = 80.0
    garg_crop: bool = False
    scaling: str = 'median'                # median | none | fixed
    scale_factor: float = 1.0              # for scaling 'fixed'
    # trajectory metrics
    align: str = 'sim3'
    rpe_delta: float = 1.0
    rpe_unit: str = 'frames'
    pose_association: str = 'nearest'
    # association tolerances (seconds)
    depth_max_dt: float = 0.05
    pose_max_dt: float = 0.02
    # report
    n_examples: int = 4
    progress: bool = True
    plots: bool = True
    # estimator (used in estimator mode only)
    estimator: dict = field(default_factory=dict)   # EstimatorConfig fields
    # online refinement (estimator mode only): RefinerConfig fields, None = off. The refiner is
    # driven synchronously: one round after every ``refine_every`` frames, so the figures do
    # not depend on the machine's speed (the node runs rounds in a background thread)
    online_refinement: dict | None = None
    refine_every: int = 1

    def validate(self) -> 'EvaluateConfig':
        if self.gt_depth and self.gt_cloud:
            raise EvaluationError('give either gt_depth or gt_cloud, not both')
        if not (self.gt_depth or self.gt_cloud or self.gt_poses):
            raise EvaluationError('nothing to compare with: give ground truth (--gt-depth TOPIC, '
                                  '--gt-cloud TOPIC and/or --gt-poses TOPIC|FILE)')
        if self.scaling not in SCALINGS:
            raise EvaluationError(f'scaling must be one of {SCALINGS}, got {self.scaling!r}')
        if self.align not in ALIGNS:
            raise EvaluationError(f'align must be one of {ALIGNS}, got {self.align!r}')
        if self.pose_association not in POSE_ASSOCIATIONS:
            raise EvaluationError(f'pose_association must be one of {POSE_ASSOCIATIONS}')
        if self.stride < 1:
            raise EvaluationError(f'stride must be >= 1, got {self.stride}')
        if self.max_frames < 0:
            raise EvaluationError(f'max_frames must be >= 0 (0 = all), got {self.max_frames}')
        for name in ('depth_max_dt', 'pose_max_dt'):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise EvaluationError(f'{name} must be a finite number >= 0, got {v}')
        if self.scaling == 'fixed' and not (math.isfinite(self.scale_factor) and self.scale_factor > 0):
            raise EvaluationError(f'scale_factor must be > 0, got {self.scale_factor}')
        if self.rpe_unit not in ('frames', 'm'):
            raise EvaluationError(f"rpe_unit must be 'frames' or 'm', got {self.rpe_unit!r}")
        if self.lidar_to_camera is not None:
            parse_extrinsic(self.lidar_to_camera)
        if self.online_refinement is not None:
            if self.pred_depth or self.pred_odom:
                raise EvaluationError('online refinement adapts the estimator: it cannot be used '
                                      'with recorded outputs (--pred-depth/--pred-odom)')
            if not isinstance(self.refine_every, int) or self.refine_every < 1:
                raise EvaluationError(f'refine_every must be an integer >= 1, got {self.refine_every!r}')
            from ..core.online_refinement import RefinerConfig
            try:
                RefinerConfig(**self.online_refinement)
            except (TypeError, ValueError) as exc:
                raise EvaluationError(f'online refinement: {exc}') from None
        try:
            DepthEvalConfig(self.min_depth, self.max_depth)
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
        return self

    @property
    def recorded_mode(self) -> bool:
        return bool(self.pred_depth or self.pred_odom)

def _versions() -> dict:
    import platform
    out = {'python': platform.python_version(), 'numpy': np.__version__}
    try:
        from .. import __version__
        out['depth_ego_ros'] = __version__
    except ImportError:
        pass
    from importlib import metadata
    for name in ('torch', 'rosbags', 'matplotlib', 'onnxruntime', 'pillow'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:   # optional packages
            continue
    return out


# ----------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------
class _Run:
    """State of one evaluation (the pieces of :func:`evaluate`)."""

    def __init__(self, cfg: EvaluateConfig, log_fn):
        self.cfg = cfg
        self.log = log_fn
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()
        from ..data.bags import TypeCatalog
        self.catalog = TypeCatalog()

    # -- pass A ------------------------------------------------------------------------------
    def index(self):
        cfg = self.cfg
        self.bag = BagTopics(cfg.bag, 'bag')
        self.pbag = BagTopics(cfg.pred_bag, 'prediction bag') if cfg.pred_bag else self.bag
        same = self.pbag is self.bag
        self.mode = 'recorded' if cfg.recorded_mode else 'estimator'
        roles = {}   # role -> (bag, topic, msgtype)

        if cfg.pred_depth:
            roles['pred_depth'] = (self.pbag, cfg.pred_depth,
                                   self.pbag.require(cfg.pred_depth, 'predicted depth', br.IMAGE_TYPES))
        if cfg.pred_odom:
            roles['pred_odom'] = (self.pbag, cfg.pred_odom,
                                  self.pbag.require(cfg.pred_odom, 'predicted odometry', br.POSE_TYPES))
        if cfg.gt_depth:
            roles['gt_depth'] = (self.bag, cfg.gt_depth,
                                 self.bag.require(cfg.gt_depth, 'ground-truth depth', br.IMAGE_TYPES))
        if cfg.gt_cloud:
            roles['gt_cloud'] = (self.bag, cfg.gt_cloud,
                                 self.bag.require(cfg.gt_cloud, 'ground-truth point cloud', (br.POINT_CLOUD2,)))
        # camera
        cam = cfg.camera_topic
        if cam:
            roles['camera'] = (self.bag, cam, self.bag.require(cam, 'camera', br.IMAGE_TYPES))
        else:
            cam = auto_camera_topic(self.bag, {cfg.gt_depth, cfg.pred_depth})
            if cam:
                roles['camera'] = (self.bag, cam, self.bag.topics[cam]['type'])
                self.notes.append(f'camera topic auto-detected: {cam}')
            elif self.mode == 'estimator':
                imgs = self.bag.of_type(br.IMAGE_TYPES)
                raise EvaluationError(
                    'cannot tell the camera topic: ' + (f'candidates {imgs}' if imgs else
                                                        f'no Image/CompressedImage topic in {self.bag.path}')
                    + '; give --camera-topic')
        info = cfg.camera_info_topic
        if info:
            roles['camera_info'] = (self.bag, info, self.bag.require(info, 'camera info', (br.CAMERA_INFO,)))
        else:
            info = auto_camera_info(self.bag, cam)
            if info:
                roles['camera_info'] = (self.bag, info, br.CAMERA_INFO)
        if cfg.gt_cloud and 'camera_info' not in roles:
            raise EvaluationError('projecting the LiDAR cloud needs the camera intrinsics: no '
                                  f'CameraInfo topic found in {self.bag.path}; give --camera-info-topic')
        if self.mode == 'estimator' and 'camera_info' not in roles:
            self.warnings.append('no camera_info topic: monodepth2\'s KITTI intrinsics scaled to '
                                 'the image are used (only metric scale modes depend on them)')
        # GT poses: topic or file
        self.gt_file = None
        if cfg.gt_poses:
            if cfg.gt_poses in self.bag.topics:
                roles['gt_poses'] = (self.bag, cfg.gt_poses,
                                     self.bag.require(cfg.gt_poses, 'ground-truth poses', br.POSE_TYPES))
            elif Path(cfg.gt_poses).is_file():
                self.gt_file = Path(cfg.gt_poses)
            else:
                raise EvaluationError(f"--gt-poses '{cfg.gt_poses}' is neither a topic of {self.bag.path} "
                                      f'nor a trajectory file; its topics: {self.bag.listing()}')
        if cfg.speed_topic:
            roles['speed'] = (self.bag, cfg.speed_topic,
                              self.bag.require(cfg.speed_topic, 'speed', (br.ODOMETRY, 'geometry_msgs/msg/TwistStamped')))
        elif self.mode == 'estimator' and cfg.estimator.get('scale_mode') == 'speed':
            raise EvaluationError("estimator scale mode 'speed' needs --speed-topic (Odometry or TwistStamped)")
        self.roles = roles

        # which topics: stamps only (big) / full messages (small)
        stamp_roles = [r for r in ('camera', 'gt_depth', 'gt_cloud', 'pred_depth') if r in roles]
        full_roles = [r for r in ('camera_info', 'gt_poses', 'pred_odom', 'speed') if r in roles]
        per_bag = {}
        for r in stamp_roles + full_roles:
            b, topic, _ = roles[r]
            per_bag.setdefault(id(b), (b, set()))[1].add(topic)
        for b, _ in list(per_bag.values()):
            for t in ('/tf_static',):
                if t in b.topics:
                    per_bag[id(b)][1].add(t)
        self.stamped: dict[tuple, StampedTopic] = {}
        self.full: dict[tuple, list] = {}
        self.static = br.StaticTransforms()
        self.pstatic = br.StaticTransforms() if not same else self.static
        stamp_topics = {(id(roles[r][0]), roles[r][1]) for r in stamp_roles}
        full_topics = {(id(roles[r][0]), roles[r][1]) for r in full_roles}
        from ..data.bags import BagError, read_messages
        for key, (b, topics) in per_bag.items():
            static = self.static if b is self.bag else self.pstatic
            try:
                for m in read_messages(b.path, topics=topics):
                    k = (key, m.topic)
                    if k in stamp_topics:
                        s = self.stamped.setdefault(k, StampedTopic(m.topic, m.msgtype))
                        try:
                            s.stamps.append(br.header_stamp(m.data))
                            if len(s.frame_ids) < 4:
                                s.frame_ids.add(br.header_frame_id(m.data))
                        except br.MessageDecodeError as exc:
                            raise EvaluationError(f"'{m.topic}': {exc}") from None
                    if k in full_topics:
                        self.full.setdefault(k, []).append(self._decode(m))
                    if m.topic == '/tf_static' and m.msgtype == br.TF_MESSAGE:
                        static.add_message(self._decode(m))
            except BagError as exc:
                raise EvaluationError(str(exc)) from None
        self.roles_full = {r: self.full.get((id(roles[r][0]), roles[r][1]), []) for r in full_roles}
        self.roles_stamped = {r: self.stamped.get((id(roles[r][0]), roles[r][1])) for r in stamp_roles}
        self._setup_camera()
        self._select_frames()
        self._associate_depth()
        self._setup_poses()
        if not self.depth_enabled and not self.pose_enabled:
            raise EvaluationError('nothing to evaluate: depth needs ground truth (--gt-depth/--gt-cloud) '
                                  'and a prediction (the network, or --pred-depth); the trajectory '
                                  'needs --gt-poses and an estimate (the network, or --pred-odom)')

    def _decode(self, m):
        try:
            return self.catalog.deserialize(m.data, m.msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types
            raise EvaluationError(f"cannot decode a {m.msgtype} message on '{m.topic}': {exc}") from None

    def _setup_camera(self):
        cfg = self.cfg
        self.K = None
        self.info_wh = None
        infos = self.roles_full.get('camera_info') or []
        if infos:
            Ks = []
            for msg in infos:
                try:
                    Ks.append(br.camera_info_K(msg))
                except br.MessageDecodeError as exc:
                    self.warnings.append(f'camera_info: {exc}')
            if not Ks:
                raise EvaluationError(f"camera_info topic '{self.roles['camera_info'][1]}' has no usable K")
            K, w, h, frame = Ks[0]
            if any(not np.allclose(k[0], K) or (k[1], k[2]) != (w, h) for k in Ks[1:]):
                self.warnings.append('camera_info changes during the bag: the first one is used')
            self.K = K
            self.info_wh = (w, h) if w > 0 and h > 0 else None
            self.info_frame = frame
        # camera (optical) frame
        frame = cfg.camera_frame
        if not frame:
            cam = self.roles_stamped.get('camera')
            pred = self.roles_stamped.get('pred_depth')
            for s in (cam, pred):
                if s is not None and s.frame_ids - {''}:
                    frame = sorted(s.frame_ids - {''})[0]
                    break
        if not frame and infos:
            frame = self.info_frame or None
        self.camera_frame = frame.lstrip('/') if frame else None

    def _select_frames(self):
        cfg = self.cfg
        if self.mode == 'estimator':
            src = self.roles_stamped['camera']
            self.frame_role = 'camera'
            st, order = src.sorted()
        elif cfg.pred_depth:
            src = self.roles_stamped['pred_depth']
            self.frame_role = 'pred_depth'
            st, order = src.sorted()
        else:
            self.frame_role = 'pred_odom'
            st = np.array(sorted({s[0] for s in self._samples('pred_odom')}))
            order = np.arange(st.size)
        self.frames_in_bag = int(st.size)
        sel = np.arange(0, st.size, cfg.stride)
        if cfg.max_frames:
            sel = sel[:cfg.max_frames]
        if sel.size == 0:
            raise EvaluationError(f"no frames on '{self.roles[self.frame_role][1]}'")
        self.all_frame_stamps = st
        self.frame_stamps = st[sel]
        self.frame_ordinals = order[sel]          # ordinal within the topic (bag order)
        self.n_frames = int(sel.size)

    def _match(self, role, max_dt):
        """Per selected frame: ordinal of the nearest message of ``role`` within max_dt, or None."""
        s = self.roles_stamped.get(role)
        if s is None:
            return [None] * self.n_frames, []
        st, order = s.sorted()
        out, dts = [], []
        for t in self.frame_stamps:
            j, dt = nearest_stamp(st, float(t))
            if j is not None and dt <= max_dt:
                out.append(int(order[j]))
                dts.append(dt)
            else:
                out.append(None)
        return out, dts

    def _associate_depth(self):
        cfg = self.cfg
        self.assoc = {'method': 'nearest header stamp (std_msgs/Header.stamp, not bag receive time)'}
        self.match = {}
        if self.frame_role in ('camera', 'pred_depth'):
            self.match[self.frame_role] = [int(o) for o in self.frame_ordinals]
        for role in ('gt_depth', 'gt_cloud', 'camera', 'pred_depth'):
            if role in self.roles and role != self.frame_role and role in self.roles_stamped:
                m, dts = self._match(role, cfg.depth_max_dt)
                self.match[role] = m
                if role != 'camera':
                    self.assoc[role] = {'topic': self.roles[role][1], 'tolerance_s': cfg.depth_max_dt,
                                        'matched': len(dts), 'unmatched': self.n_frames - len(dts),
                                        'dt': dt_stats(dts)}
        self.gt_role = 'gt_depth' if cfg.gt_depth else ('gt_cloud' if cfg.gt_cloud else None)
        self.pred_role = None
        if self.mode == 'estimator':
            self.pred_role = 'estimator'
        elif cfg.pred_depth:
            self.pred_role = 'pred_depth'
            if self.frame_role != 'pred_depth':
                raise AssertionError('pred_depth must be the frame stream')
        self.depth_enabled = self.gt_role is not None and self.pred_role is not None
        if self.gt_role and not self.pred_role:
            self.warnings.append('ground-truth depth given but no predicted depth (recorded mode '
                                 'without --pred-depth): depth is not evaluated')
        if self.depth_enabled:
            n = sum(m is not None for m in self.match[self.gt_role])
            if n == 0:
                gst = self.roles_stamped[self.gt_role]
                raise EvaluationError(
                    f"no ground-truth {('depth', 'cloud')[self.gt_role == 'gt_cloud']} on "
                    f"'{self.roles[self.gt_role][1]}' within {cfg.depth_max_dt} s of any of the "
                    f'{self.n_frames} frames (frames {stamp_span(self.frame_stamps)}, ground truth '
                    f'{stamp_span(gst.stamps)}): the clocks differ or the tolerance is too small '
                    '(--depth-max-dt)')
            if self.gt_role == 'gt_cloud':
                self._setup_extrinsic()

    def _setup_extrinsic(self):
        cfg = self.cfg
        clouds = self.roles_stamped['gt_cloud']
        cloud_frames = sorted(clouds.frame_ids - {''}) or ['']
        self.cloud_frame = cloud_frames[0].lstrip('/')
        if cfg.lidar_to_camera is not None:
            self.T_cam_cloud = parse_extrinsic(cfg.lidar_to_camera)
            self.extrinsic_source = 'given (--lidar-to-camera)'
            return
        if not self.camera_frame:
            raise EvaluationError('the camera frame is unknown (images without frame_id): give '
                                  '--camera-frame or --lidar-to-camera')
        T = self.static.lookup(self.camera_frame, self.cloud_frame)
        if T is None:
            raise EvaluationError(
                f"no static transform from the cloud frame '{self.cloud_frame}' to the camera frame "
                f"'{self.camera_frame}' in /tf_static of {self.bag.path} (frames there: "
                f'{sorted(self.static.frames) or "none"}); give --lidar-to-camera x y z qx qy qz qw')
        self.T_cam_cloud = T
        self.extrinsic_source = f'/tf_static: {self.cloud_frame} -> {self.camera_frame}'

    def _samples(self, role):
        msgs = self.roles_full.get(role) or []
        msgtype = self.roles[role][2]
        out = []
        for m in msgs:
            out.extend(br.pose_message(m, msgtype))
        return out

    def _setup_poses(self):
        cfg = self.cfg
        self.gt_traj = None
        self.pose_enabled = bool(cfg.gt_poses) and (self.mode == 'estimator' or cfg.pred_odom)
        if cfg.gt_poses and not self.pose_enabled:
            self.warnings.append('ground-truth poses given but no estimated trajectory (recorded '
                                 'mode without --pred-odom): the trajectory is not evaluated')
        if cfg.pred_odom and not cfg.gt_poses:
            self.warnings.append('--pred-odom given without --gt-poses: the trajectory is not evaluated')
        if not self.pose_enabled:
            return
        if self.gt_file is not None:
            try:
                gt = tr.read_trajectory(self.gt_file, cfg.gt_poses_format, stamps=cfg.gt_times)
            except (tr.TrajectoryError, OSError, ValueError) as exc:
                raise EvaluationError(f'ground-truth poses: {exc}') from None
            if gt.stamps is None:
                if len(gt) != self.frames_in_bag:
                    raise EvaluationError(
                        f'{self.gt_file} has no timestamps and {len(gt)} poses for '
                        f'{self.frames_in_bag} frames in the bag: give --gt-times (KITTI times.txt) '
                        'or a trajectory with stamps (TUM)')
                gt = tr.Trajectory(gt.poses, self.all_frame_stamps)
                self.notes.append(f'ground truth {self.gt_file.name} has no stamps: pose i = frame i '
                                  'of the bag')
            self.notes.append(f'ground-truth poses from {self.gt_file} (camera->world, taken as the '
                              'camera poses)')
            self.gt_traj = gt
            self.gt_source = str(self.gt_file)
        else:
            samples = self._samples('gt_poses')
            if not samples:
                raise EvaluationError(f"no poses on '{cfg.gt_poses}'")
            p = poses_from_samples(samples, self.roles['gt_poses'][2], cfg.gt_poses, self.static,
                                   self.camera_frame, cfg.gt_tf_parent, cfg.gt_tf_child)
            self.gt_traj = to_camera_frame(p, self.camera_frame, self.static, self.notes,
                                           self.warnings, 'ground truth')
            self.gt_source = cfg.gt_poses
        # the estimate is sampled at the frame stamps: check association before the long part
        est_st = self.frame_stamps
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
                f'{self.n_frames} frames (frames {stamp_span(est_st)}, ground truth {stamp_span(gst)}): the '
                'clocks differ or the tolerance is too small (--pose-max-dt)')
        if n_ok < 3:
            raise EvaluationError(f'only {n_ok} frame(s) have a ground-truth pose: the trajectory '
                                  'alignment needs at least 3 (more frames, or a larger --pose-max-dt)')
        # recorded odometry: poses at the frame stamps
        self.pred_traj = None
        if cfg.pred_odom:
            samples = self._samples('pred_odom')
            if not samples:
                raise EvaluationError(f"no poses on '{cfg.pred_odom}'")
            p = poses_from_samples(samples, self.roles['pred_odom'][2], cfg.pred_odom, self.pstatic,
                                   self.camera_frame)
            est = to_camera_frame(p, self.camera_frame, self.pstatic, self.notes, self.warnings,
                                  'estimate')
            ids, dts = [], []
            for t in self.frame_stamps:
                j, dt = nearest_stamp(est.stamps, float(t))
                if j is not None and dt <= cfg.pose_max_dt:
                    ids.append(j)
                    dts.append(dt)
            if len(ids) < 3:
                raise EvaluationError(f"only {len(ids)} frame(s) have a pose on '{cfg.pred_odom}' "
                                      f'within {cfg.pose_max_dt} s (odometry {stamp_span(est.stamps)}, '
                                      f'frames {stamp_span(self.frame_stamps)})')
            self.pred_traj = est.subset(ids)
            self.assoc['pred_odom'] = {'topic': cfg.pred_odom, 'tolerance_s': cfg.pose_max_dt,
                                       'matched': len(ids), 'unmatched': self.n_frames - len(ids),
                                       'dt': dt_stats(dts)}

    # -- estimator ---------------------------------------------------------------------------
    def build_estimator(self):
        from ..core import checkpoints as ckpt
        from ..core.estimator import Estimator, EstimatorConfig
        cfg = self.cfg
        e = dict(cfg.estimator)
        try:     # which networks the checkpoint holds: the defaults of the options not given
            opts, meta = ckpt.network_options(cfg.checkpoint, *(e.get(k) for k in (
                'model', 'pose_model', 'learned_intrinsics', 'width', 'height')))
        except ckpt.CheckpointError as exc:
            raise EvaluationError(str(exc)) from None
        e.update(opts)
        self.checkpoint_meta = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))}
        if not cfg.checkpoint:
            self.warnings.append('no checkpoint: the networks have RANDOM weights, the figures only '
                                 'test the pipeline')
        e = {k: v for k, v in e.items() if v is not None}
        try:
            self.est_config = EstimatorConfig(**e)
            self.estimator = Estimator(self.est_config, cfg.checkpoint)
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
        self.refiner = None
        self.refine_log = []
        if cfg.online_refinement is not None:
            from ..core.online_refinement import OnlineRefiner, RefinerConfig
            try:
                self.refiner = OnlineRefiner(self.estimator, RefinerConfig(**cfg.online_refinement))
            except ValueError as exc:
                raise EvaluationError(f'online refinement: {exc}') from None
        if self.est_config.learned_intrinsics and 'camera_info' not in self.roles:
            self.warnings = [w for w in self.warnings if not w.startswith('no camera_info topic')]
            self.warnings.append('no camera_info topic: the learned intrinsics are used '
                                 '(report inputs.learned_K)')
        if not self.estimator.has_pose and self.pose_enabled:
            self.warnings.append('the checkpoint has no pose network: the trajectory is not evaluated')
            self.pose_enabled = False
        if self.est_config.scale_mode in ('none', 'relative') and self.cfg.scaling == 'none' and self.depth_enabled:
            self.warnings.append("the estimator gives relative depth (scale mode 'none') but "
                                 "--scaling none: the depth figures include the unknown scale")
        if self.est_config.scale_mode in ('none', 'relative') and self.cfg.align in ('se3', 'none') and self.pose_enabled:
            self.warnings.append(f"relative (scale-free) trajectory with --align {self.cfg.align}: "
                                 'the ATE includes the unknown scale (use sim3)')

    def _K_at(self, wh):
        if self.K is None:
            from ..core.estimator import default_intrinsics
            return default_intrinsics(*wh)
        if self.info_wh and tuple(self.info_wh) != tuple(wh):
            return intrinsics_for_resize(self.K, self.info_wh, wh)
        return self.K

    def _speed_at(self, t):
        if not hasattr(self, '_speeds'):
            st, sp = [], []
            for m in self.roles_full.get('speed') or []:
                tw = m.twist.twist if hasattr(m.twist, 'twist') else m.twist
                st.append(br.stamp_to_sec(m.header.stamp))
                sp.append(math.sqrt(tw.linear.x ** 2 + tw.linear.y ** 2 + tw.linear.z ** 2))
            order = np.argsort(st)
            self._speeds = (np.asarray(st)[order], np.asarray(sp)[order])
        st, sp = self._speeds
        j, dt = nearest_stamp(st, t)
        return float(sp[j]) if j is not None and dt <= max(self.cfg.depth_max_dt, 0.1) else None

    # -- pass B ------------------------------------------------------------------------------
    def run(self):
        cfg = self.cfg
        depth_cfg = DepthEvalConfig(min_depth=cfg.min_depth, max_depth=cfg.max_depth,
                                    garg_crop=cfg.garg_crop, median_scaling=cfg.scaling == 'median',
                                    pred_scale_factor=cfg.scale_factor if cfg.scaling == 'fixed' else 1.0)
        self.depth_cfg = depth_cfg
        self.acc = DepthMetricsAccumulator(depth_cfg)
        self.frame_records = []
        self.frame_skips = []
        self.timings = []
        self.est_rel = {}                 # frame index -> T_prev_curr (estimator mode)
        self.est_processed = []           # frame indices the estimator saw, in order
        self.sizes = {}
        # which frames become examples
        gt_ok = [i for i in range(self.n_frames)
                 if self.gt_role is None or self.match.get(self.gt_role, [None] * self.n_frames)[i] is not None]
        k = min(cfg.n_examples, len(gt_ok)) if self.depth_enabled else 0
        self.example_ids = set(gt_ok[j] for j in np.linspace(0, len(gt_ok) - 1, k).round().astype(int)) if k else set()
        self.examples = []

        # messages each frame needs: (role, ordinal)
        needs = []
        for i in range(self.n_frames):
            keys = []
            if self.mode == 'estimator':
                keys.append(('camera', self.match['camera'][i]))
            else:
                if self.frame_role == 'pred_depth':
                    keys.append(('pred_depth', self.match['pred_depth'][i]))
                cam = self.match.get('camera', [None] * self.n_frames)[i]
                if i in self.example_ids and cam is not None:
                    keys.append(('camera', cam))
            if self.depth_enabled and self.match[self.gt_role][i] is not None:
                keys.append((self.gt_role, self.match[self.gt_role][i]))
            needs.append(keys)
        self.setup_s = 0.0
        if self.mode == 'estimator':
            t0 = time.perf_counter()
            self.build_estimator()
            self.setup_s = time.perf_counter() - t0
        refcount = {}
        for keys in needs:
            for kk in keys:
                refcount[kk] = refcount.get(kk, 0) + 1
        topic_role = {}
        for role in ('camera', 'gt_depth', 'gt_cloud', 'pred_depth'):
            if role in self.roles and any(kk[0] == role for kk in refcount):
                b, topic, msgtype = self.roles[role]
                topic_role.setdefault((id(b), topic), []).append(role)
        if not topic_role:   # recorded odometry only: nothing to decode
            self.frame_records = [{'frame': i, 'stamp': float(t)} for i, t in enumerate(self.frame_stamps)]
            return
        bar = None
        if cfg.progress and self.n_frames > 1:
            try:
                from tqdm import tqdm
                bar = tqdm(total=self.n_frames, unit='frame', desc='evaluate', file=sys.stderr,
                           dynamic_ncols=True)
            except ImportError:
                bar = None
        store = {}
        counters = {}
        nxt = 0
        try:
            for bid, m in self._merged_messages(topic_role):
                key = (bid, m.topic)
                ordinal = counters.get(key, 0)
                counters[key] = ordinal + 1
                for role in topic_role.get(key, ()):
                    if (role, ordinal) in refcount:
                        store[(role, ordinal)] = self._decode_data(role, m)
                while nxt < self.n_frames and all(kk in store for kk in needs[nxt]):
                    self._process(nxt, {kk[0]: store[kk] for kk in needs[nxt]})
                    for kk in needs[nxt]:
                        refcount[kk] -= 1
                        if refcount[kk] == 0:
                            del store[kk]
                            del refcount[kk]
                    nxt += 1
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if nxt < self.n_frames:
            raise EvaluationError(f'{self.n_frames - nxt} frame(s) could not be assembled from the bag '
                                  '(messages missing on the second read)')

    def _merged_messages(self, topic_role):
        """(bag id, BagMessage) of the needed topics; with a separate prediction bag both bags are
        read side by side, merged by header stamp (their receive times are unrelated)."""
        import heapq
        from ..data.bags import BagError, read_messages
        bags = {}
        for bid, topic in topic_role:
            b = self.bag if id(self.bag) == bid else self.pbag
            bags.setdefault(bid, (b, set()))[1].add(topic)

        def stream(bid, b, topics):
            for m in read_messages(b.path, topics=topics):
                yield br.header_stamp(m.data), bid, m

        streams = [stream(bid, b, topics) for bid, (b, topics) in bags.items()]
        try:
            if len(streams) == 1:
                for _, bid, m in streams[0]:
                    yield bid, m
            else:
                for _, bid, m in heapq.merge(*streams, key=lambda x: x[0]):
                    yield bid, m
        except BagError as exc:
            raise EvaluationError(str(exc)) from None

    def _decode_data(self, role, m):
        """Raw message -> (header stamp, payload); payload is an Exception instance when the
        message cannot be decoded (reported as a skipped frame, the evaluation goes on)."""
        stamp = None
        try:
            stamp = br.header_stamp(m.data)
            msg = self.catalog.deserialize(m.data, m.msgtype)
            if role == 'camera':
                return stamp, br.rgb_from_message(msg, m.msgtype)
            if role in ('gt_depth', 'pred_depth'):
                return stamp, br.depth_from_message(msg, m.msgtype)
            return stamp, (br.cloud_to_xyz(msg), str(msg.header.frame_id))
        except Exception as exc:  # noqa: BLE001 - a broken message must not stop the evaluation
            return stamp, exc

    def _refine(self, rgb, K, stamp, speed, rec):
        """Online refinement: offer the frame, run a round every ``refine_every`` frames; the
        next frames are predicted with whatever the round left (accepted or not)."""
        self.refiner.add_frame(rgb, K, stamp, speed)
        n = len(self.est_processed)
        if n % self.cfg.refine_every:
            return
        r = self.refiner.refine_round()
        if r is not None:
            rec['refinement'] = {'accepted': bool(r.accepted), 'loss_before': r.loss_before,
                                 'loss_after': r.loss_after}
            self.refine_log.append(rec['refinement'])

    def _skip(self, i, reason):
        self.frame_skips.append({'frame': i, 'stamp': float(self.frame_stamps[i]), 'reason': reason})

    def _process(self, i, data):
        cfg = self.cfg
        stamp = float(self.frame_stamps[i])
        rec = {'frame': i, 'stamp': stamp}
        for role, (_, payload) in data.items():
            if isinstance(payload, Exception):
                self._skip(i, f"{self.roles[role][1]}: {payload}")
                if role == 'camera' and self.mode == 'estimator':
                    return
                data = {r: v for r, v in data.items() if r != role}
        rgb = data['camera'][1] if 'camera' in data else None
        pred = None
        if self.mode == 'estimator':
            H, W = rgb.shape[:2]
            self.sizes.setdefault('image', [W, H])
            # learned intrinsics: the learned K is used when the bag has no camera_info (the
            # perception node's rule); a camera_info K always wins
            learned = self.est_config.learned_intrinsics and self.K is None
            K = None if learned else self._K_at((W, H))
            speed = self._speed_at(stamp) if self.cfg.speed_topic else None
            try:
                out = self.estimator.infer(rgb, K, stamp=stamp, speed=speed)
            except ValueError as exc:
                self._skip(i, f'estimator: {exc}')
                return
            self.timings.append(out.timings)
            self.est_processed.append(i)
            if out.relative_pose is not None:
                self.est_rel[i] = out.relative_pose
            pred = out.depth
            rec['scale'] = out.scale
            if self.refiner is not None:
                self._refine(rgb, out.K if out.K is not None else K, stamp, speed, rec)
            if learned and out.K is not None:
                self.learned_K = (np.asarray(out.K, dtype=np.float64).tolist(), [W, H])
        elif 'pred_depth' in data:
            pred = data['pred_depth'][1]
            self.sizes.setdefault('pred_depth', [pred.shape[1], pred.shape[0]])
        if not self.depth_enabled or self.gt_role not in data:
            if self.depth_enabled:
                rec['gt'] = None
            self.frame_records.append(rec)
            return
        gt_stamp, gt_payload = data[self.gt_role]
        rec['gt_dt'] = abs(gt_stamp - stamp) if gt_stamp is not None else None
        H, W = pred.shape
        if self.gt_role == 'gt_depth':
            gt = gt_payload
        else:
            points, _frame = gt_payload
            gt, stats = cloud_depth_image(points, self.T_cam_cloud, self._K_at((W, H)), W, H)
            rec['cloud'] = stats
        self.sizes.setdefault('gt_depth', [gt.shape[1], gt.shape[0]])
        if pred.shape != gt.shape:
            if 'resize' not in self.sizes:
                self.sizes['resize'] = (f'prediction {pred.shape[1]}x{pred.shape[0]} resized to the '
                                        f'ground truth {gt.shape[1]}x{gt.shape[0]} (inverse depth, bilinear)')
            pred = resize_depth(pred, gt.shape)
        with np.errstate(invalid='ignore'):
            gvalid = np.isfinite(gt) & (gt > cfg.min_depth) & (gt < cfg.max_depth)
        rec['gt_valid_fraction'] = float(gvalid.mean())
        rec['gt_median'] = float(np.median(gt[gvalid])) if gvalid.any() else None
        try:
            m = self.acc.add(gt, pred, frame_id=i)
        except ValueError as exc:
            self._skip(i, f'depth metrics: {exc}')
            self.frame_records.append(rec)
            return
        if m is not None:
            rec.update(m.values())
            rec['n_valid'] = m.n_valid
            rec['ratio'] = m.ratio
        if i in self.example_ids:
            factor = self.depth_cfg.pred_scale_factor * (m.ratio if m is not None and m.ratio else 1.0)
            shown = np.clip(pred * factor, cfg.min_depth, cfg.max_depth)
            self.examples.append({'frame': i, 'stamp': stamp, 'rgb': rgb, 'gt': gt, 'pred': shown,
                                  'valid': gvalid & np.isfinite(pred),
                                  'abs_rel': None if m is None else m.abs_rel})
        self.frame_records.append(rec)

    # -- results -----------------------------------------------------------------------------
    def trajectory_results(self) -> dict | None:
        cfg = self.cfg
        if not self.pose_enabled:
            return None
        if self.mode == 'estimator':
            ids = self.est_processed
            # chain: a frame after a skipped one continues from the last processed frame
            if not ids:
                raise EvaluationError('no frame was processed: no trajectory')
            poses, st = [np.eye(4)], [float(self.frame_stamps[ids[0]])]
            for i in ids[1:]:
                rel = self.est_rel.get(i, np.eye(4))
                poses.append(poses[-1] @ rel)
                st.append(float(self.frame_stamps[i]))
            if len(poses) < 3:
                raise EvaluationError(f'only {len(poses)} frame(s) were processed: the trajectory '
                                      'needs at least 3')
            est = tr.Trajectory(np.stack(poses), np.asarray(st))
        else:
            est = self.pred_traj
        gt = self.gt_traj
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
        self._traj = {'gt': gt_a, 'est': est_a, 'est_aligned': est_aligned, 'est_full': est,
                      'ate': ate, 'rpe_t': rpe_t}
        out = {
            'ground_truth': self.gt_source,
            'estimate': 'estimator (chained relative poses)' if self.mode == 'estimator' else self.cfg.pred_odom,
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
        return out

    def depth_results(self) -> dict | None:
        if not self.depth_enabled:
            return None
        if not self.acc.frames:
            reasons = [s['reason'] for s in self.frame_skips] + [r for _, r in self.acc.skipped]
            raise EvaluationError('no frame could be evaluated for depth'
                                  + (f': {reasons[0]}' if reasons else ''))
        rep = self.acc.report()
        gvf = [r['gt_valid_fraction'] for r in self.frame_records if r.get('gt_valid_fraction') is not None]
        rep['gt_valid_fraction_mean'] = float(np.mean(gvf)) if gvf else None
        rep['scaling'] = self.cfg.scaling
        return rep


def _clean(obj):
    """JSON-safe copy: numpy -> python, non-finite floats -> None, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def evaluate(cfg: EvaluateConfig, log_fn=None, argv=None) -> dict:
    """Run the evaluation described by ``cfg``; write report.json, plots and trajectories into
    ``cfg.out``; return the report (as written). Raises :class:`EvaluationError`."""
    from . import report as rp
    cfg.validate()
    log_fn = log_fn or (lambda text: print(text, file=sys.stderr, flush=True))
    run = _Run(cfg, log_fn)
    t0 = time.perf_counter()
    run.index()
    t_index = time.perf_counter() - t0
    run.run()
    t_run = time.perf_counter() - t0 - t_index
    depth = run.depth_results()
    traj = run.trajectory_results()

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if traj is not None:
        tdir = out / 'trajectories'
        tdir.mkdir(exist_ok=True)
        t = run._traj
        for name, trj in (('estimate', t['est_full']), ('estimate_aligned', t['est_aligned']),
                          ('ground_truth', t['gt'])):
            tr.write_tum(tdir / f'{name}.tum', trj)
            tr.write_kitti(tdir / f'{name}.kitti', trj)
            files[f'{name}_tum'] = f'trajectories/{name}.tum'
            files[f'{name}_kitti'] = f'trajectories/{name}.kitti'

    est_timing = None
    if run.timings:
        keys = run.timings[0].keys()
        est_timing = {f'{k}_ms_mean': float(np.mean([t[k] for t in run.timings])) for k in keys}
        est_timing['frames'] = len(run.timings)
    sizes = dict(run.sizes)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != 'estimator'}
    settings['depth_metrics'] = dataclasses.asdict(run.depth_cfg)
    if run.mode == 'estimator':
        settings['estimator'] = dataclasses.asdict(run.est_config)
        sizes['network'] = [run.est_config.width, run.est_config.height]
        settings['checkpoint'] = {'path': cfg.checkpoint, 'encoder_meta': run.checkpoint_meta}
    else:
        settings['estimator'] = None
        settings['checkpoint'] = {'path': cfg.checkpoint} if cfg.checkpoint else None
    if cfg.gt_cloud and run.depth_enabled:
        settings['lidar_to_camera'] = {'T_cam_lidar': run.T_cam_cloud, 'source': run.extrinsic_source,
                                       'cloud_frame': run.cloud_frame, 'camera_frame': run.camera_frame}
    topics = {}
    for role, (b, topic, msgtype) in run.roles.items():
        topics[role] = {'topic': topic, 'type': msgtype, 'count': b.topics[topic]['count'],
                        'bag': str(b.path)}
    n_depth = len(run.acc.frames) if run.depth_enabled else 0
    report = {
        'tool': {'command': 'depth-ego evaluate', 'argv': argv, 'versions': _versions()},
        'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'mode': run.mode,
        'inputs': {'bag': str(run.bag.path), 'pred_bag': str(run.pbag.path), 'topics': topics,
                   'camera_frame': run.camera_frame,
                   'camera_info': None if run.K is None else {'K': run.K, 'size': run.info_wh},
                   'learned_K': (None if getattr(run, 'learned_K', None) is None else
                                 {'K': run.learned_K[0], 'size': run.learned_K[1],
                                  'note': 'the last frame\'s K (the running estimate)'})},
        'settings': settings,
        'sizes': sizes,
        'association': run.assoc,
        'frames': {'stream': run.roles.get(run.frame_role, (None, run.frame_role))[1],
                   'in_bag': run.frames_in_bag, 'selected': run.n_frames,
                   'stride': cfg.stride, 'max_frames': cfg.max_frames,
                   'processed': len(run.frame_records), 'depth_evaluated': n_depth,
                   'skipped': run.frame_skips},
        'depth': depth,
        'trajectory': traj,
        'per_frame': run.frame_records,
        'timings': {'index_s': t_index, 'estimator_setup_s': run.setup_s, 'run_s': t_run,
                    'frames_per_s': (len(run.frame_records) / (t_run - run.setup_s)
                                     if t_run - run.setup_s > 0 else None),
                    'estimator': est_timing},
        'notes': run.notes,
        'warnings': run.warnings,
        'files': files,
    }
    refiner = getattr(run, 'refiner', None)
    if refiner is not None:
        report['online_refinement'] = {'config': dataclasses.asdict(refiner.config),
                                       'refine_every': cfg.refine_every, 'stats': refiner.stats()}
        refiner.close()
    if cfg.plots:
        files.update(rp.make_plots(out, run, depth, traj))
    report['timings']['total_s'] = time.perf_counter() - t0
    report = _clean(report)
    rp.write_json(out / 'report.json', report)
    return report
