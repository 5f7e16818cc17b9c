"""The inputs of an evaluation, read from bags: which topics hold what (with errors that name
what is missing), header-stamp association, ground-truth depth from a LiDAR cloud, and
ground-truth poses brought into the camera frame. Used by :mod:`.evaluate`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.geometry import points_to_depth_image, pose_from_tq_xyzw, project_points_to_image
from ..data import bag_reader as br
from . import trajectory as tr

__all__ = ['EvaluationError', 'parse_extrinsic', 'resize_depth', 'cloud_depth_image', 'nearest_stamp',
           'dt_stats', 'stamp_span', 'StampedTopic', 'BagTopics', 'auto_camera_topic',
           'auto_camera_info', 'StampedPoses', 'select_tf_pair', 'poses_from_samples',
           'to_camera_frame']


class EvaluationError(ValueError):
    """The evaluation cannot run as asked (missing topic, nothing associated, bad option...).
    The message says what is wrong and, where possible, what to do."""


def parse_extrinsic(values) -> np.ndarray:
    """7 numbers ``x y z qx qy qz qw`` or 16 numbers (row-major 4x4) -> 4x4 ``T_cam_lidar``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 7:
        return pose_from_tq_xyzw(v[:3], v[3:])
    if v.size == 16:
        T = v.reshape(4, 4)
        if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-4):
            raise EvaluationError('the 4x4 LiDAR->camera extrinsic must be a rigid transform '
                                  '(orthonormal rotation, last row 0 0 0 1)')
        return T
    raise EvaluationError(f'a LiDAR->camera extrinsic needs 7 numbers (x y z qx qy qz qw) or 16 '
                          f'(4x4 row-major), got {v.size}')


def resize_depth(depth: np.ndarray, hw) -> np.ndarray:
    """Resize a depth map to (H, W) by bilinear interpolation of its inverse (monodepth2's
    practice: interpolate disparity, then invert); invalid (non-finite, <= 0) stays invalid."""
    import torch
    import torch.nn.functional as F
    d = np.asarray(depth, dtype=np.float32)
    if d.shape == tuple(hw):
        return d
    valid = np.isfinite(d) & (d > 0)
    disp = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0).astype(np.float32)
    t = torch.from_numpy(np.stack([disp, valid.astype(np.float32)]))[None]
    r = F.interpolate(t, size=tuple(hw), mode='bilinear', align_corners=False)[0].numpy()
    out = np.full(tuple(hw), np.nan, np.float32)
    ok = r[1] > 0.999           # every contributing source pixel valid
    out[ok] = 1.0 / np.maximum(r[0][ok], 1e-12)
    return out


def cloud_depth_image(points: np.ndarray, T_cam_cloud: np.ndarray, K: np.ndarray, width: int,
                      height: int) -> tuple[np.ndarray, dict]:
    """Sparse GT depth image (float32, NaN = no point) from a cloud, plus projection figures."""
    uv, z, mask = project_points_to_image(points, T_cam_cloud, K, width, height)
    depth = points_to_depth_image(points, T_cam_cloud, K, width, height)
    depth[depth <= 0] = np.nan
    filled = np.isfinite(depth)
    stats = {'n_points': int(len(points)), 'n_in_image': int(mask.sum()),
             'n_pixels': int(filled.sum()),
             'z_median_in_image': float(np.median(z[mask])) if mask.any() else None}
    return depth, stats


def nearest_stamp(sorted_stamps: np.ndarray, t: float):
    """(index, |dt|) of the stamp nearest to t in an ascending array (None, inf when empty)."""
    n = sorted_stamps.size
    if n == 0:
        return None, math.inf
    j = int(np.searchsorted(sorted_stamps, t))
    best, best_dt = None, math.inf
    for k in (j - 1, j):
        if 0 <= k < n:
            dt = abs(float(sorted_stamps[k]) - t)
            if dt < best_dt:
                best, best_dt = k, dt
    return best, best_dt


def dt_stats(dts) -> dict:
    d = np.asarray(dts, dtype=np.float64)
    if d.size == 0:
        return {'n': 0}
    return {'n': int(d.size), 'max_s': float(d.max()), 'mean_s': float(d.mean()),
            'median_s': float(np.median(d))}


def stamp_span(st) -> str:
    st = np.asarray(st, dtype=np.float64)
    return f'{st.min():.3f}..{st.max():.3f} s' if st.size else 'none'


@dataclass
class StampedTopic:
    """Header stamps (and frame ids) of one topic's messages, by ordinal in bag order."""
    topic: str
    msgtype: str
    stamps: list = field(default_factory=list)
    frame_ids: set = field(default_factory=set)

    def sorted(self):
        st = np.asarray(self.stamps, dtype=np.float64)
        order = np.argsort(st, kind='stable')
        return st[order], order


class BagTopics:
    """Topics of one bag, with checks that name what is missing."""

    def __init__(self, path, what='bag'):
        from ..data.bags import BagError, bag_topics
        self.path = Path(path)
        self.what = what
        try:
            self.topics = bag_topics(self.path)
        except (BagError, OSError, ValueError) as exc:
            raise EvaluationError(f'cannot read {what} {self.path}: {exc}') from None
        if not self.topics:
            raise EvaluationError(f'{what} {self.path} has no topics (empty bag)')
        if not any(t['count'] for t in self.topics.values()):
            raise EvaluationError(f'{what} {self.path} has no messages (empty bag)')

    def listing(self) -> str:
        return ', '.join(f'{t} ({v["type"].split("/")[-1]}, {v["count"]})'
                         for t, v in sorted(self.topics.items()))

    def require(self, topic: str, role: str, types) -> str:
        if topic not in self.topics:
            raise EvaluationError(f"topic '{topic}' ({role}) is not in {self.what} {self.path}; "
                                  f'its topics: {self.listing()}')
        msgtype = self.topics[topic]['type']
        if msgtype not in types:
            raise EvaluationError(f"topic '{topic}' ({role}) has type {msgtype}; expected "
                                  f"{' or '.join(types)}")
        if self.topics[topic]['count'] == 0:
            raise EvaluationError(f"topic '{topic}' ({role}) has no messages in {self.path}")
        return msgtype

    def of_type(self, types) -> list[str]:
        return sorted(t for t, v in self.topics.items() if v['type'] in types and v['count'])


def auto_camera_topic(bag: BagTopics, exclude) -> str | None:
    cands = [t for t in bag.of_type(br.IMAGE_TYPES) if t not in exclude]
    # not a depth image, not an instance/segmentation mask (the last name part says so)
    colour = [t for t in cands if 'depth' not in t.lower()
              and 'mask' not in t.rstrip('/').rsplit('/', 1)[-1].lower()]
    if len(colour) == 1:
        return colour[0]
    if len(cands) == 1:
        return cands[0]
    return None


def auto_camera_info(bag: BagTopics, camera_topic: str | None) -> str | None:
    infos = bag.of_type((br.CAMERA_INFO,))
    if camera_topic:
        ns = camera_topic.rstrip('/').rsplit('/', 1)[0]
        if camera_topic.endswith('/compressed'):
            ns = ns.rsplit('/', 1)[0]
        sib = f'{ns}/camera_info'
        if sib in infos:
            return sib
        infos = [i for i in infos if 'depth' not in i.lower()] or infos
    return infos[0] if len(infos) == 1 else None




# ----------------------------------------------------------------------------------------------
# ground-truth poses
# ----------------------------------------------------------------------------------------------
@dataclass
class StampedPoses:
    """Stamped poses of one frame (child) in a fixed frame (parent), as read."""
    stamps: np.ndarray
    poses: np.ndarray
    parent: str
    child: str
    source: str

    def trajectory(self) -> tr.Trajectory:
        return tr.Trajectory(self.poses, self.stamps)


def select_tf_pair(samples, child_wanted, parent_wanted, static: br.StaticTransforms, what: str):
    pairs = {}
    for st, T, parent, child in samples:
        pairs.setdefault((parent.lstrip('/'), child.lstrip('/')), []).append((st, T))
    if not pairs:
        raise EvaluationError(f'{what}: no transforms')
    cands = list(pairs)
    if parent_wanted:
        cands = [p for p in cands if p[0] == parent_wanted.lstrip('/')]
    if child_wanted:
        exact = [p for p in cands if p[1] == child_wanted.lstrip('/')]
        if exact:
            cands = exact
        else:   # a child connected to the wanted one through /tf_static
            cands = [p for p in cands if static.lookup(p[1], child_wanted) is not None]
    if len(cands) != 1:
        raise EvaluationError(f'{what}: cannot tell which transform is the ground truth '
                              f'(candidates {cands or sorted(pairs)}); give the parent/child frames '
                              '(--gt-tf-parent / --gt-tf-child)')
    return cands[0], pairs[cands[0]]


def poses_from_samples(samples, msgtype: str, topic: str, static, camera_frame, tf_parent=None,
                       tf_child=None) -> StampedPoses:
    what = f"poses on '{topic}'"
    if msgtype == br.TF_MESSAGE or any(s[3] for s in samples) and len({(s[2], s[3]) for s in samples}) > 1:
        (parent, child), items = select_tf_pair(samples, tf_child or camera_frame, tf_parent, static, what)
    else:
        parent, child = (samples[0][2], samples[0][3]) if samples else ('', '')
        items = [(s[0], s[1]) for s in samples]
    if not items:
        raise EvaluationError(f'{what}: no poses')
    st = np.array([i[0] for i in items])
    P = np.stack([i[1] for i in items])
    order = np.argsort(st, kind='stable')
    return StampedPoses(st[order], P[order], parent, child, topic)


def to_camera_frame(p: StampedPoses, camera_frame: str | None, static: br.StaticTransforms,
                    notes: list, warnings_: list, label: str) -> tr.Trajectory:
    """Poses of ``p.child`` -> poses of the camera frame (right-multiplied by the static
    ``T_child_camera``) when the child is another frame."""
    traj = p.trajectory()
    child = p.child.lstrip('/')
    if not child:
        notes.append(f'{label}: {p.source} gives no child frame; its poses are taken as the '
                     f'camera ({camera_frame or "optical frame"}) poses')
        return traj
    if not camera_frame or child == camera_frame.lstrip('/'):
        notes.append(f'{label}: poses of {child} in {p.parent or "?"} (the camera frame)')
        return traj
    T = static.lookup(child, camera_frame)
    if T is None:
        warnings_.append(f'{label}: poses are of frame {child!r}, but no static transform links it '
                         f'to the camera frame {camera_frame!r}: compared as if they were the '
                         'camera poses (add /tf_static to the bag)')
        return traj
    notes.append(f'{label}: poses of {child} converted to the camera frame {camera_frame} with the '
                 f'static transform {child} -> {camera_frame}')
    return tr.Trajectory(traj.poses @ T, traj.stamps)


