"""Reading one bag into :class:`~depth_ego_ros.data.dataset_config.Sequence` s (split at time gaps
and resolution changes, static frames dropped) and the deterministic held-out split."""
from __future__ import annotations

import hashlib
import logging
import math

import numpy as np

from ..core.geometry import intrinsics_for_resize
from .bag_frames import _decode_mask, _resize, _resize_nearest, _stamp, _thumb
from .bag_reader import MessageDecodeError, camera_info_K, compressed_to_rgb8, image_to_rgb8
from .bag_topics import _bag_dir, _pick_mask_topic, _pick_topics
from .dataset_config import IMAGE, ODOMETRY, BagDatasetError, DatasetConfig, Sequence

log = logging.getLogger('depth_ego_ros.data.dataset')


def load_bag_sequences(path, cfg: DatasetConfig | None = None) -> list[Sequence]:
    """Read one bag into sequences (split at gaps / resolution changes, static frames removed)."""
    from rosbags.highlevel import AnyReader

    cfg = cfg or DatasetConfig()
    bag = _bag_dir(path)
    name = bag.name
    try:
        reader_cm = AnyReader([bag])
        reader = reader_cm.__enter__()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types
        raise BagDatasetError(f'cannot open bag {bag}: {exc}. If its recorder was killed, run '
                              f'`depth-ego bag-repair {bag}` first.') from exc
    try:
        topics = {}
        for c in reader.connections:
            topics.setdefault(c.topic, c.msgtype)
        image_t, info_t, odom_t = _pick_topics(name, topics, cfg)
        mask_t = _pick_mask_topic(name, topics, cfg, image_t)
        conns = [c for c in reader.connections if c.topic in (image_t, info_t, odom_t, mask_t)]
        infos, odo, frames, masks = [], [], [], {}
        bad = 0
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == info_t:
                try:
                    K, w, h, _ = camera_info_K(msg)
                except MessageDecodeError as exc:
                    log.warning('bag %s: skipping CameraInfo: %s', name, exc)
                    continue
                infos.append((_stamp(msg), K, w, h, np.any(np.asarray(msg.d) != 0)))
            elif conn.topic == odom_t:
                tw = msg.twist.twist if conn.msgtype == ODOMETRY else msg.twist
                v = math.sqrt(tw.linear.x ** 2 + tw.linear.y ** 2 + tw.linear.z ** 2)
                odo.append((_stamp(msg), v, float(tw.angular.z)))   # REP 103 body: z up = yaw
            elif conn.topic == mask_t:
                try:
                    ids = _decode_mask(msg)
                except MessageDecodeError as exc:
                    log.warning('bag %s: skipping an instance mask: %s', name, exc)
                    continue
                st = msg.header.stamp
                masks[int(st.sec) * 1_000_000_000 + int(st.nanosec)] = _resize_nearest(ids, cfg.width, cfg.height)
            else:
                try:
                    rgb = image_to_rgb8(msg) if conn.msgtype == IMAGE else compressed_to_rgb8(msg)
                except MessageDecodeError as exc:
                    bad += 1
                    if bad <= 3:
                        log.warning('bag %s: skipping a camera frame: %s', name, exc)
                    continue
                frames.append((_stamp(msg), rgb.shape[1], rgb.shape[0],
                               _resize(rgb, cfg.width, cfg.height), _thumb(rgb),
                               int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)))
    finally:
        reader_cm.__exit__(None, None, None)
    if not frames:
        raise BagDatasetError(f'bag {name}: camera topic {image_t} has no decodable frames')
    if not infos and info_t is not None:
        if cfg.require_camera_info:
            raise BagDatasetError(f'bag {name}: CameraInfo topic {info_t} has no (usable) messages')
        log.warning('bag %s: CameraInfo topic %s has no usable messages; K unknown (NaN)', name, info_t)
    if any(i[4] for i in infos):
        log.warning('bag %s: CameraInfo has non-zero distortion; frames are used as they are '
                    '(rectify them first, e.g. with image_proc, for best results)', name)
    frames.sort(key=lambda f: f[0])
    infos.sort(key=lambda i: i[0])
    info_stamps = np.array([i[0] for i in infos])
    nan_K = np.full((3, 3), np.nan)

    stamps = np.array([f[0] for f in frames])
    # odometry: cumulative distance (trapezoid) and speed, interpolated at frame stamps
    if len(odo) >= 2:
        odo.sort()
        ot = np.array([o[0] for o in odo])
        ov = np.array([o[1] for o in odo])
        ow = np.array([o[2] for o in odo])
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (ov[1:] + ov[:-1]) * np.diff(ot))])
        # heading: the yaw rate (twist.angular.z) integrated the same way, radians
        cum_yaw = np.concatenate([[0.0], np.cumsum(0.5 * (ow[1:] + ow[:-1]) * np.diff(ot))])
        inside = (stamps >= ot[0] - 1e-6) & (stamps <= ot[-1] + 1e-6)
        dist = np.where(inside, np.interp(stamps, ot, cum), np.nan)
        speed = np.where(inside, np.interp(stamps, ot, ov), np.nan)
        heading = np.where(inside, np.interp(stamps, ot, cum_yaw), np.nan)
    else:
        dist = np.full(len(stamps), np.nan)
        speed = np.full(len(stamps), np.nan)
        heading = np.full(len(stamps), np.nan)

    # K per frame (latest CameraInfo at or before the stamp; the first one before that)
    Ks, sizes = [], []
    for st, w, h, _img, _th, _ns in frames:
        sizes.append((w, h))
        if not infos:
            Ks.append(nan_K)
            continue
        j = max(0, int(np.searchsorted(info_stamps, st + 1e-9, side='right')) - 1)
        _, K, iw, ih, _ = infos[j]
        if (iw, ih) != (w, h) and iw > 0 and ih > 0:
            K = intrinsics_for_resize(K, (iw, ih), (w, h))  # binned / resized camera_info
        Ks.append(intrinsics_for_resize(K, (w, h), (cfg.width, cfg.height)))

    # split into raw segments at gaps and resolution changes
    dts = np.diff(stamps)
    max_gap = cfg.max_gap or (5.0 * float(np.median(dts)) if len(dts) else 1.0)
    breaks = [0]
    for i in range(1, len(frames)):
        if dts[i - 1] > max_gap or dts[i - 1] <= 0 or sizes[i] != sizes[i - 1]:
            breaks.append(i)
    breaks.append(len(frames))

    seqs = []
    zero_mask = np.zeros((cfg.height, cfg.width), np.uint16)
    missing = 0
    for a, b in zip(breaks[:-1], breaks[1:]):
        keep = []
        last = None
        for i in range(a, b):
            if cfg.skip_static and last is not None:
                if np.isfinite(speed[i]):
                    moving = speed[i] >= cfg.static_speed
                else:
                    moving = float(np.abs(frames[i][4] - frames[last][4]).mean()) >= cfg.static_diff
                if not moving:
                    continue
            keep.append(i)
            last = i
        if len(keep) < 2:
            continue
        sname = name if len(breaks) == 2 else f'{name}#{len(seqs)}'
        seq_masks = None
        if mask_t is not None:  # matched to frames by exact header stamp; none for a frame: all static
            seq_masks = np.stack([masks.get(frames[i][5], zero_mask) for i in keep])
            missing += sum(frames[i][5] not in masks for i in keep)
        seqs.append(Sequence(
            name=sname, bag=str(bag), images=np.stack([frames[i][3] for i in keep]),
            stamps=stamps[keep], K=np.stack([Ks[i] for i in keep]), distance=dist[keep],
            speed=speed[keep], dropped_static=(b - a) - len(keep), masks=seq_masks,
            heading=heading[keep]))
    if missing:
        log.warning('bag %s: %d kept frames have no instance mask on %s (treated as static)',
                    name, missing, mask_t)
    if not seqs:
        raise BagDatasetError(f'bag {name}: fewer than 2 moving frames on {image_t}; nothing to train on')
    log.info('bag %s: %d frames on %s, %d sequence(s), %d static frames dropped, odometry: %s',
             name, len(frames), image_t, len(seqs), sum(s.dropped_static for s in seqs), odom_t or 'none')
    return seqs


def split_sequences(seqs: list[Sequence], val_fraction: float, gap: int = 1):
    """Deterministic held-out split -> (train, val).

    Several sequences: the ``ceil(n * val_fraction)`` sequences that come first in sha1(name)
    order are held out (independent of the order the bags were given in). One sequence: its last
    ``val_fraction`` of frames are held out, ``gap`` frames between the parts are dropped so no
    triplet straddles them.
    """
    if val_fraction <= 0:
        return list(seqs), []
    if len(seqs) >= 2:
        order = sorted(seqs, key=lambda s: hashlib.sha1(s.name.encode()).hexdigest())
        n_val = min(len(seqs) - 1, max(1, math.ceil(len(seqs) * val_fraction)))
        val_names = {s.name for s in order[:n_val]}
        return [s for s in seqs if s.name not in val_names], [s for s in seqs if s.name in val_names]
    (s,) = seqs
    n = len(s)
    n_val = max(3, int(round(n * val_fraction)))
    cut = n - n_val
    if cut - gap < 3:
        raise BagDatasetError(f'sequence {s.name} has only {n} frames: too short to hold out '
                              f'{val_fraction:.0%} of it; give several bags or val_fraction=0')
    return [s.subset(0, cut - gap, s.name + '[train]')], [s.subset(cut, n, s.name + '[val]')]

