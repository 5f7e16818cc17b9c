"""Pass A of an evaluation: which topics play which role, a first read of the bags (stamps of the
big streams, the small messages whole, /tf_static), the camera intrinsics and frame, the frames
to evaluate and their ground-truth depth association. Ground-truth poses and recorded odometry are
set up from here by :mod:`.trajectory_results`; pass B (decoding per frame) is :mod:`.stream`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.geometry import intrinsics_for_resize
from ..data import bag_reader as br
from .bag_inputs import (BagTopics, EvaluationError, StampedTopic, auto_camera_info, auto_camera_topic,
                         dt_stats, nearest_stamp, parse_extrinsic, stamp_span)

__all__ = ['Inputs', 'resolve_roles']

STAMP_ROLES = ('camera', 'gt_depth', 'gt_cloud', 'pred_depth')     # big: stamps only in pass A
FULL_ROLES = ('camera_info', 'gt_poses', 'pred_odom', 'speed')      # small: decoded whole


def resolve_roles(cfg, bag: BagTopics, pbag: BagTopics, mode: str, notes: list, warnings: list):
    """Topic of every role (checked against the bags, auto-detected where possible) -> (roles,
    gt_file); roles: role -> (bag, topic, msgtype); gt_file: GT poses given as a file, or None."""
    roles = {}   # role -> (bag, topic, msgtype)

    if cfg.pred_depth:
        roles['pred_depth'] = (pbag, cfg.pred_depth,
                               pbag.require(cfg.pred_depth, 'predicted depth', br.IMAGE_TYPES))
    if cfg.pred_odom:
        roles['pred_odom'] = (pbag, cfg.pred_odom,
                              pbag.require(cfg.pred_odom, 'predicted odometry', br.POSE_TYPES))
    if cfg.gt_depth:
        roles['gt_depth'] = (bag, cfg.gt_depth,
                             bag.require(cfg.gt_depth, 'ground-truth depth', br.IMAGE_TYPES))
    if cfg.gt_cloud:
        roles['gt_cloud'] = (bag, cfg.gt_cloud,
                             bag.require(cfg.gt_cloud, 'ground-truth point cloud', (br.POINT_CLOUD2,)))
    # camera
    cam = cfg.camera_topic
    if cam:
        roles['camera'] = (bag, cam, bag.require(cam, 'camera', br.IMAGE_TYPES))
    else:
        cam = auto_camera_topic(bag, {cfg.gt_depth, cfg.pred_depth})
        if cam:
            roles['camera'] = (bag, cam, bag.topics[cam]['type'])
            notes.append(f'camera topic auto-detected: {cam}')
        elif mode == 'estimator':
            imgs = bag.of_type(br.IMAGE_TYPES)
            raise EvaluationError(
                'cannot tell the camera topic: ' + (f'candidates {imgs}' if imgs else
                                                    f'no Image/CompressedImage topic in {bag.path}')
                + '; give --camera-topic')
    info = cfg.camera_info_topic
    if info:
        roles['camera_info'] = (bag, info, bag.require(info, 'camera info', (br.CAMERA_INFO,)))
    else:
        info = auto_camera_info(bag, cam)
        if info:
            roles['camera_info'] = (bag, info, br.CAMERA_INFO)
    if cfg.gt_cloud and 'camera_info' not in roles:
        raise EvaluationError('projecting the LiDAR cloud needs the camera intrinsics: no '
                              f'CameraInfo topic found in {bag.path}; give --camera-info-topic')
    if mode == 'estimator' and 'camera_info' not in roles:
        warnings.append('no camera_info topic: monodepth2\'s KITTI intrinsics scaled to '
                        'the image are used (only metric scale modes depend on them)')
    # GT poses: topic or file
    gt_file = None
    if cfg.gt_poses:
        if cfg.gt_poses in bag.topics:
            roles['gt_poses'] = (bag, cfg.gt_poses,
                                 bag.require(cfg.gt_poses, 'ground-truth poses', br.POSE_TYPES))
        elif Path(cfg.gt_poses).is_file():
            gt_file = Path(cfg.gt_poses)
        else:
            raise EvaluationError(f"--gt-poses '{cfg.gt_poses}' is neither a topic of {bag.path} "
                                  f'nor a trajectory file; its topics: {bag.listing()}')
    if cfg.speed_topic:
        roles['speed'] = (bag, cfg.speed_topic,
                          bag.require(cfg.speed_topic, 'speed', (br.ODOMETRY, 'geometry_msgs/msg/TwistStamped')))
    elif mode == 'estimator' and cfg.estimator.get('scale_mode') == 'speed':
        raise EvaluationError("estimator scale mode 'speed' needs --speed-topic (Odometry or TwistStamped)")
    return roles, gt_file


class Inputs:
    """What pass A learns about the bags (read-only afterwards, except ``assoc`` which the
    trajectory set-up completes). ``notes`` and ``warnings`` are the run's lists (appended to)."""

    def __init__(self, cfg, notes: list, warnings: list):
        self.cfg = cfg
        self.notes = notes
        self.warnings = warnings
        from ..data.bags import TypeCatalog
        self.catalog = TypeCatalog()

    def index(self) -> 'Inputs':
        cfg = self.cfg
        self.bag = BagTopics(cfg.bag, 'bag')
        self.pbag = BagTopics(cfg.pred_bag, 'prediction bag') if cfg.pred_bag else self.bag
        self.mode = 'recorded' if cfg.recorded_mode else 'estimator'
        self.roles, self.gt_file = resolve_roles(cfg, self.bag, self.pbag, self.mode, self.notes,
                                                 self.warnings)
        self._read_first_pass()
        self._setup_camera()
        self._select_frames()
        self._associate_depth()
        return self

    def _read_first_pass(self):
        """Stamps (and a few frame ids) of the big streams, the small messages decoded, /tf_static."""
        roles = self.roles
        same = self.pbag is self.bag
        # which topics: stamps only (big) / full messages (small)
        stamp_roles = [r for r in STAMP_ROLES if r in roles]
        full_roles = [r for r in FULL_ROLES if r in roles]
        per_bag = {}
        for r in stamp_roles + full_roles:
            b, topic, _ = roles[r]
            per_bag.setdefault(id(b), (b, set()))[1].add(topic)
        for b, _ in list(per_bag.values()):
            for t in ('/tf_static',):
                if t in b.topics:
                    per_bag[id(b)][1].add(t)
        stamped: dict[tuple, StampedTopic] = {}
        full: dict[tuple, list] = {}
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
                        s = stamped.setdefault(k, StampedTopic(m.topic, m.msgtype))
                        try:
                            s.stamps.append(br.header_stamp(m.data))
                            if len(s.frame_ids) < 4:
                                s.frame_ids.add(br.header_frame_id(m.data))
                        except br.MessageDecodeError as exc:
                            raise EvaluationError(f"'{m.topic}': {exc}") from None
                    if k in full_topics:
                        full.setdefault(k, []).append(self.decode(m))
                    if m.topic == '/tf_static' and m.msgtype == br.TF_MESSAGE:
                        static.add_message(self.decode(m))
            except BagError as exc:
                raise EvaluationError(str(exc)) from None
        self.roles_full = {r: full.get((id(roles[r][0]), roles[r][1]), []) for r in full_roles}
        self.roles_stamped = {r: stamped.get((id(roles[r][0]), roles[r][1])) for r in stamp_roles}

    def decode(self, m):
        try:
            return self.catalog.deserialize(m.data, m.msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types
            raise EvaluationError(f"cannot decode a {m.msgtype} message on '{m.topic}': {exc}") from None

    def samples(self, role):
        """The pose samples of a full-message role (GT poses, recorded odometry)."""
        msgs = self.roles_full.get(role) or []
        msgtype = self.roles[role][2]
        out = []
        for m in msgs:
            out.extend(br.pose_message(m, msgtype))
        return out

    # -- camera ------------------------------------------------------------------------------
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

    def K_at(self, wh):
        """The camera matrix for images of size ``wh`` (camera_info's, resized; else the default)."""
        if self.K is None:
            from ..core.cameras import default_intrinsics
            return default_intrinsics(*wh)
        if self.info_wh and tuple(self.info_wh) != tuple(wh):
            return intrinsics_for_resize(self.K, self.info_wh, wh)
        return self.K

    # -- frames and depth association --------------------------------------------------------
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
            st = np.array(sorted({s[0] for s in self.samples('pred_odom')}))
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
