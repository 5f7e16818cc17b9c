"""Training triplets (t-1, t, t+1) from rosbag2 bags, for self-supervised depth + ego-motion.

Works on bags written by the recorder node and by ``depth-ego synth`` alike (read with
``rosbags``; MCAP or sqlite3; Image or CompressedImage camera topics).

What it does, per bag:

1. finds the camera topic (or takes the one given), its CameraInfo (sibling ``camera_info`` in
   the same or a parent namespace, or the one given) and, optionally, an odometry topic
   (nav_msgs/Odometry or geometry_msgs/TwistStamped; its twist gives the speed);
2. decodes every image and resizes it to the network resolution (PIL Lanczos, as monodepth2);
   K comes from the CameraInfo valid at the image stamp, scaled to the network resolution with
   exact pixel-centre bookkeeping (:func:`~depth_ego_ros.core.geometry.intrinsics_for_resize`);
3. splits the stream into sequences at time gaps and resolution changes, and drops static frames
   (odometry speed below ``static_speed``; without odometry, a mean grey-level change below
   ``static_diff`` since the last kept frame);
4. every kept frame with kept neighbours at all ``frame_offsets`` becomes a training sample.

Held-out split: deterministic by sequence name (sha1 order), never by random frame, so that no
validation frame has a training neighbour; a single sequence is split in time instead (its tail,
with a gap of one frame, becomes the held-out part).

A sample (``dataset[i]``) is a dict:

=================  =================  ===================================================
key                shape / type       meaning
=================  =================  ===================================================
``image``          [3,H,W] float32    target frame in [0,1] (not colour-augmented: for losses)
``sources``        [S,3,H,W] float32  frames at ``frame_offsets`` (default t-1, t+1)
``image_aug``      [3,H,W] float32    colour-augmented target (network input)
``sources_aug``    [S,3,H,W] float32  colour-augmented sources (same jitter as the target)
``K``              [3,3] float32      intrinsics at H x W (after flip); all NaN when the bag has
                                      no CameraInfo (only with ``require_camera_info=False``)
``has_K``          bool               the bag has a CameraInfo (False: ``K`` is NaN)
``distance``       [S] float32        metres travelled between target and each source from
                                      odometry (NaN without odometry) -- velocity loss
``speed``          float32            odometry speed at the target (NaN without odometry)
``dt``             [S] float32        source stamp - target stamp, seconds
``stamp``          float64            target stamp, seconds
``flipped``        bool
``sequence``       str                sequence name
``index``          int                frame index of the target in its sequence
=================  =================  ===================================================

When the bag has an instance-mask topic (``mask_topic``; auto: an ``Image`` topic whose last
name component contains ``mask``, e.g. ``/camera/instance_mask`` from ``depth-ego synth
--moving-objects N``; mono8/mono16/8UC1/16UC1, 0 = static, k = object k with the same k in every
frame) each sample also has:

==========================  ===================  ==========================================
``instance_masks``          [M,H,W] float32      {0,1} mask of each moving object in the target
                                                 (M = ``max_objects``; unused slots all 0)
``source_instance_masks``   [S,M,H,W] float32    the same objects (same slots) in each source
``instance_ids``            [M] int64            object id of each slot (0 = unused)
==========================  ===================  ==========================================

Masks are resized to the network resolution by nearest neighbour (pixel-centre exact) and
flipped with the images. Slots are filled by target-frame area, largest first; objects beyond
``max_objects`` are left out (they stay in the static part, as without masks).

Bags without CameraInfo (crowd-sourced video, learned intrinsics): by default a missing
CameraInfo is an error; with ``DatasetConfig(require_camera_info=False)`` such a bag is read
anyway, its samples have ``K`` filled with NaN and ``has_K`` False (the trainer then uses its
learned K only). A bag that has a CameraInfo is read as always.

Augmentation (``augment=True``, training) follows monodepth2: with probability 0.5 a colour
jitter (brightness, contrast, saturation 0.8-1.2, hue +-0.1, random order, same for the whole
sample) and, independently with probability 0.5, a horizontal flip (K's cx mirrored:
``cx' = W - 1 - cx``). Random draws use torch's generator, which DataLoader seeds per worker.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.geometry import intrinsics_for_resize
from .bag_reader import MessageDecodeError, camera_info_K, compressed_to_rgb8, image_to_rgb8

__all__ = ['DatasetConfig', 'BagDatasetError', 'Sequence', 'BagTripletDataset', 'load_bag_sequences',
           'split_sequences']

log = logging.getLogger(__name__)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
ODOMETRY = 'nav_msgs/msg/Odometry'
TWIST_STAMPED = 'geometry_msgs/msg/TwistStamped'


class BagDatasetError(ValueError):
    """A bag cannot serve as training data (the message says which bag and why)."""


@dataclass
class DatasetConfig:
    width: int = 640                     # network input resolution
    height: int = 192
    image_topic: str | None = None       # None: the bag's only camera topic (with a camera_info)
    camera_info_topic: str | None = None  # None: sibling 'camera_info' of the image topic
    odom_topic: str | None = None        # None: '/odom' or the only Odometry/TwistStamped topic; '' = off
    frame_offsets: tuple = (-1, 1)       # sources relative to the target, in kept frames
    skip_static: bool = True
    static_speed: float = 0.05           # m/s: below this (odometry) a frame is static
    static_diff: float = 1.0             # mean |grey change| (0-255) on a thumbnail, without odometry
    max_gap: float | None = None         # s: a larger stamp gap starts a new sequence (None: 5 x median dt)
    augment: bool = True
    flip_probability: float = 0.5
    color_probability: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    val_fraction: float = 0.1            # share of sequences held out (split='val')
    exclude_prefixes: tuple = ('/ground_truth',)  # never auto-picked as camera/odometry topics
    mask_topic: str | None = None        # instance masks: None = auto (an Image topic named *mask*), '' = off
    max_objects: int = 8                 # M: instance-mask slots per sample (padding = zero masks)
    require_camera_info: bool = True     # False: a bag without CameraInfo gives K = NaN, has_K False

    def __post_init__(self):
        errs = []
        if int(self.width) < 16 or int(self.height) < 16:
            errs.append(f'width/height must be >= 16 (got {self.width}x{self.height})')
        offs = tuple(int(o) for o in self.frame_offsets)
        if not offs or 0 in offs or len(set(offs)) != len(offs):
            errs.append(f'frame_offsets must be distinct non-zero ints (got {self.frame_offsets})')
        self.frame_offsets = offs
        if not 0.0 <= self.val_fraction < 1.0:
            errs.append(f'val_fraction must be in [0, 1) (got {self.val_fraction})')
        for n in ('flip_probability', 'color_probability'):
            if not 0.0 <= getattr(self, n) <= 1.0:
                errs.append(f'{n} must be in [0, 1]')
        if not int(self.max_objects) >= 1:
            errs.append(f'max_objects must be >= 1 (got {self.max_objects})')
        if self.max_gap is not None and not self.max_gap > 0:
            errs.append(f'max_gap must be > 0 or None (got {self.max_gap})')
        if errs:
            raise ValueError('invalid DatasetConfig: ' + '; '.join(errs))
        self.width, self.height = int(self.width), int(self.height)


@dataclass
class Sequence:
    """Consecutive usable frames of one bag at network resolution."""
    name: str
    bag: str
    images: np.ndarray           # (N,H,W,3) uint8
    stamps: np.ndarray           # (N,) float64 seconds
    K: np.ndarray                # (N,3,3) float64 at network resolution
    distance: np.ndarray         # (N,) cumulative odometry distance, metres (NaN = unknown)
    speed: np.ndarray            # (N,) odometry speed, m/s (NaN = unknown)
    dropped_static: int = 0
    masks: np.ndarray | None = None  # (N,H,W) uint16 instance ids at network res (mask topic), else None

    def __len__(self):
        return len(self.stamps)

    def subset(self, start, stop, name):
        sl = slice(start, stop)
        return Sequence(name=name, bag=self.bag, images=self.images[sl], stamps=self.stamps[sl],
                        K=self.K[sl], distance=self.distance[sl], speed=self.speed[sl],
                        masks=None if self.masks is None else self.masks[sl])


# ----------------------------------------------------------------------------------------------
# reading one bag
# ----------------------------------------------------------------------------------------------
def _bag_dir(path) -> Path:
    p = Path(path)
    if p.is_file() and (p.parent / 'metadata.yaml').exists():
        p = p.parent
    if not p.exists():
        raise BagDatasetError(f'bag {p} does not exist')
    if not (p / 'metadata.yaml').exists() and p.suffix != '.bag':
        raise BagDatasetError(f'{p} is not a rosbag2 directory (no metadata.yaml); '
                              'if its recorder was killed, run `depth-ego bag-repair` on it first')
    return p


def _is_mask_topic(topic: str) -> bool:
    parts = [p for p in topic.split('/') if p]
    return bool(parts) and 'mask' in parts[-1].lower()


def _pick_mask_topic(name, topics: dict, cfg: DatasetConfig, image_topic: str):
    """The instance-mask topic, or None (auto: the Image topic named *mask*, preferring
    *instance_mask* and the camera's namespace)."""
    listing = ', '.join(f'{t} [{m}]' for t, m in sorted(topics.items())) or '(none)'
    if cfg.mask_topic == '':
        return None
    if cfg.mask_topic:
        if topics.get(cfg.mask_topic) != IMAGE:
            raise BagDatasetError(f'bag {name}: no sensor_msgs/Image mask topic {cfg.mask_topic!r}; '
                                  f'topics: {listing}')
        return cfg.mask_topic
    cands = sorted(t for t, m in topics.items() if m == IMAGE and t != image_topic and _is_mask_topic(t))
    if len(cands) > 1:
        inst = [t for t in cands if 'instance' in t.lower()]
        cands = inst or cands
    if len(cands) > 1:
        ns = image_topic.rsplit('/', 1)[0]
        same = [t for t in cands if t.rsplit('/', 1)[0] == ns]
        cands = same or cands
    if len(cands) > 1:
        log.warning('bag %s: several mask topics %s, none used (set mask_topic)', name, cands)
        return None
    return cands[0] if cands else None


def _decode_mask(msg) -> np.ndarray:
    """Instance-id image (mono8/8UC1 or mono16/16UC1) -> (H,W) uint16."""
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if enc in ('mono8', '8uc1'):
        bpp, dt = 1, np.uint8
    elif enc in ('mono16', '16uc1'):
        bpp, dt = 2, np.dtype('>u2' if msg.is_bigendian else '<u2')
    else:
        raise MessageDecodeError(f'mask encoding {msg.encoding!r} is not mono8/mono16/8UC1/16UC1')
    if h <= 0 or w <= 0 or step < w * bpp or data.size < step * h:
        raise MessageDecodeError(f'mask image {w}x{h} step {step} with {data.size} bytes is inconsistent')
    rows = data[:step * h].reshape(h, step)[:, :w * bpp]
    return np.ascontiguousarray(rows).view(dt).reshape(h, w).astype(np.uint16)


def _resize_nearest(ids: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a label image, pixel-centre exact (never mixes ids)."""
    h, w = ids.shape
    if (w, h) == (width, height):
        return ids
    ys = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return ids[ys[:, None], xs[None, :]]


def _pick_topics(name, topics: dict, cfg: DatasetConfig):
    """topics: topic -> msgtype. Returns (image_topic, camera_info_topic, odom_topic|None)."""
    listing = ', '.join(f'{t} [{m}]' for t, m in sorted(topics.items())) or '(none)'
    excluded = tuple(cfg.exclude_prefixes)
    infos = {t for t, m in topics.items() if m == CAMERA_INFO}
    if cfg.image_topic:
        if cfg.image_topic not in topics:
            raise BagDatasetError(f'bag {name}: no camera topic {cfg.image_topic!r}; topics: {listing}')
        if topics[cfg.image_topic] not in (IMAGE, COMPRESSED):
            raise BagDatasetError(f'bag {name}: topic {cfg.image_topic!r} is {topics[cfg.image_topic]}, '
                                  'not sensor_msgs/Image or CompressedImage')
        image = cfg.image_topic
    else:
        cands = [t for t, m in topics.items() if m in (IMAGE, COMPRESSED)
                 and not t.startswith(excluded) and 'depth' not in t.split('/')
                 and not _is_mask_topic(t)]
        if not cands:
            raise BagDatasetError(f'bag {name}: no camera image topic (sensor_msgs/Image or '
                                  f'CompressedImage); topics: {listing}')
        with_info = [t for t in cands if _sibling_info(t, infos)]
        if len(with_info) == 1:
            image = with_info[0]
        elif len(cands) == 1:
            image = cands[0]
        else:
            raise BagDatasetError(f'bag {name}: several camera topics {sorted(cands)}; choose one '
                                  '(image_topic / --image-topic)')
    if cfg.camera_info_topic:
        if topics.get(cfg.camera_info_topic) != CAMERA_INFO:
            raise BagDatasetError(f'bag {name}: no CameraInfo topic {cfg.camera_info_topic!r}; '
                                  f'topics: {listing}')
        info = cfg.camera_info_topic
    else:
        info = _sibling_info(image, infos)
        if info is None and not infos and not cfg.require_camera_info:
            log.info('bag %s: no CameraInfo topic; K unknown (NaN): learned intrinsics only', name)
        elif info is None:
            raise BagDatasetError(
                f'bag {name}: no sensor_msgs/CameraInfo for camera topic {image} (looked for '
                f'{", ".join(_info_candidates(image))}); give camera_info_topic / --camera-info-topic. '
                f'Topics: {listing}')
    odom = None
    if cfg.odom_topic:
        if topics.get(cfg.odom_topic) not in (ODOMETRY, TWIST_STAMPED):
            raise BagDatasetError(f'bag {name}: no nav_msgs/Odometry or TwistStamped topic '
                                  f'{cfg.odom_topic!r}; topics: {listing}')
        odom = cfg.odom_topic
    elif cfg.odom_topic is None:
        cands = sorted(t for t, m in topics.items() if m in (ODOMETRY, TWIST_STAMPED)
                       and not t.startswith(excluded))
        if '/odom' in cands:
            odom = '/odom'
        elif len(cands) == 1:
            odom = cands[0]
        elif len(cands) > 1:
            log.warning('bag %s: several odometry topics %s, none used (set odom_topic)', name, cands)
    return image, info, odom


def _info_candidates(image_topic: str):
    parts = [p for p in image_topic.split('/') if p]
    out = []
    for k in range(len(parts) - 1, -1, -1):
        out.append('/' + '/'.join(parts[:k] + ['camera_info']))
    return out


def _sibling_info(image_topic, infos):
    for c in _info_candidates(image_topic):
        if c in infos:
            return c
    return None


def _stamp(msg) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    from PIL import Image
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))


def _thumb(rgb: np.ndarray) -> np.ndarray:
    """Small grey image for the static-frame test (noise averaged out)."""
    g = rgb.astype(np.float32).mean(axis=2)
    h, w = g.shape
    f = max(1, w // 64)
    h2, w2 = h // f, w // f
    return g[:h2 * f, :w2 * f].reshape(h2, f, w2, f).mean(axis=(1, 3))


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
                odo.append((_stamp(msg), v))
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
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (ov[1:] + ov[:-1]) * np.diff(ot))])
        inside = (stamps >= ot[0] - 1e-6) & (stamps <= ot[-1] + 1e-6)
        dist = np.where(inside, np.interp(stamps, ot, cum), np.nan)
        speed = np.where(inside, np.interp(stamps, ot, ov), np.nan)
    else:
        dist = np.full(len(stamps), np.nan)
        speed = np.full(len(stamps), np.nan)

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
            speed=speed[keep], dropped_static=(b - a) - len(keep), masks=seq_masks))
    if missing:
        log.warning('bag %s: %d kept frames have no instance mask on %s (treated as static)',
                    name, missing, mask_t)
    if not seqs:
        raise BagDatasetError(f'bag {name}: fewer than 2 moving frames on {image_t}; nothing to train on')
    log.info('bag %s: %d frames on %s, %d sequence(s), %d static frames dropped, odometry: %s',
             name, len(frames), image_t, len(seqs), sum(s.dropped_static for s in seqs), odom_t or 'none')
    return seqs


# ----------------------------------------------------------------------------------------------
# split
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------------------------
class BagTripletDataset(torch.utils.data.Dataset):
    """Training samples from one or many bags (see the module docstring for the sample layout).

    Args:
        bags: bag directories (or a single one).
        config: :class:`DatasetConfig`.
        split: 'all', 'train' or 'val' (deterministic; see :func:`split_sequences`).
        augment: overrides ``config.augment`` (default: augment only the 'train' and 'all' splits
            when config.augment is True; 'val' is never augmented).
    """

    def __init__(self, bags, config: DatasetConfig | None = None, split: str = 'all',
                 augment: bool | None = None):
        self.config = cfg = config or DatasetConfig()
        if split not in ('all', 'train', 'val'):
            raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
        if isinstance(bags, (str, Path)):
            bags = [bags]
        bags = list(bags)
        if not bags:
            raise BagDatasetError('no bags given')
        seqs: list[Sequence] = []
        for b in bags:
            seqs.extend(load_bag_sequences(b, cfg))
        names = [s.name for s in seqs]
        if len(set(names)) != len(names):  # two bags with the same directory name
            for i, s in enumerate(seqs):
                s.name = f'{s.name}@{i}'
        self.all_sequences = seqs
        if split == 'all':
            self.sequences = seqs
        else:
            train, val = split_sequences(seqs, cfg.val_fraction)
            self.sequences = train if split == 'train' else val
        self.split = split
        self.augment = (cfg.augment and split != 'val') if augment is None else bool(augment)
        offs = cfg.frame_offsets
        lo, hi = -min(0, min(offs)), max(0, max(offs))
        self.index = [(si, t) for si, s in enumerate(self.sequences) for t in range(lo, len(s) - hi)]
        if not self.index:
            raise BagDatasetError(f'no training samples in split {split!r}: sequences too short for '
                                  f'frame_offsets {offs}')

    def __len__(self):
        return len(self.index)

    @property
    def has_odometry(self) -> bool:
        return any(np.isfinite(s.distance).any() for s in self.sequences)

    @property
    def missing_camera_info(self) -> list[str]:
        """Bags (of this split) read without a CameraInfo (K unknown: NaN)."""
        return sorted({s.bag for s in self.sequences if not np.isfinite(s.K).all()})

    @property
    def has_instance_masks(self) -> bool:
        """Every sequence of this split has an instance-mask topic."""
        return all(s.masks is not None for s in self.sequences)

    def __getitem__(self, i):
        si, t = self.index[i]
        s = self.sequences[si]
        cfg = self.config
        idx = [t] + [t + o for o in cfg.frame_offsets]
        imgs = torch.from_numpy(s.images[idx]).permute(0, 3, 1, 2).float().div_(255.0)  # [1+S,3,H,W]
        K = torch.from_numpy(s.K[t]).float()
        has_K = bool(torch.isfinite(K).all())
        flipped = False
        aug = imgs
        if self.augment:
            if torch.rand(()) < cfg.flip_probability:
                imgs = imgs.flip(-1)
                K = K.clone()
                K[0, 2] = cfg.width - 1 - K[0, 2]
                flipped = True
            aug = imgs
            if torch.rand(()) < cfg.color_probability:
                aug = _color_jitter(imgs, cfg)
        dist = np.abs(s.distance[idx[1:]] - s.distance[t])
        extra = {}
        if s.masks is not None:
            extra = _instance_slots(s.masks[idx], cfg.max_objects, flipped)
        return {**extra,
            'image': imgs[0], 'sources': imgs[1:], 'image_aug': aug[0], 'sources_aug': aug[1:],
            'K': K, 'has_K': has_K, 'distance': torch.from_numpy(dist.astype(np.float32)),
            'speed': torch.tensor(float(s.speed[t]), dtype=torch.float32),
            'dt': torch.from_numpy((s.stamps[idx[1:]] - s.stamps[t]).astype(np.float32)),
            'stamp': torch.tensor(s.stamps[t], dtype=torch.float64), 'flipped': flipped,
            'sequence': s.name, 'index': t,
        }


def _instance_slots(ids: np.ndarray, max_objects: int, flipped: bool) -> dict:
    """ids (1+S,H,W) uint16 (target first) -> per-slot binary masks of the target's objects
    (largest first, up to max_objects), the same objects in the sources, and their ids."""
    obj, area = np.unique(ids[0], return_counts=True)
    keep = obj != 0
    obj, area = obj[keep], area[keep]
    order = np.argsort(-area, kind='stable')[:max_objects]
    slot_ids = np.zeros(max_objects, np.int64)
    slot_ids[:len(order)] = obj[order]
    m = torch.from_numpy(ids.astype(np.int64))                                     # [1+S,H,W]
    sid = torch.from_numpy(slot_ids)
    masks = ((m[:, None] == sid[None, :, None, None]) & (sid[None, :, None, None] > 0)).float()  # [1+S,M,H,W]
    if flipped:
        masks = masks.flip(-1)
    return {'instance_masks': masks[0], 'source_instance_masks': masks[1:], 'instance_ids': sid}


def _color_jitter(imgs: torch.Tensor, cfg: DatasetConfig) -> torch.Tensor:
    """Same random brightness/contrast/saturation/hue for every frame, random order (monodepth2's
    ColorJitter use)."""
    import torchvision.transforms.functional as TF

    def u(a, b):
        return float(a + (b - a) * torch.rand(()))

    ops = []
    if cfg.brightness > 0:
        f = u(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)
        ops.append(lambda x, f=f: TF.adjust_brightness(x, f))
    if cfg.contrast > 0:
        f = u(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)
        ops.append(lambda x, f=f: TF.adjust_contrast(x, f))
    if cfg.saturation > 0:
        f = u(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)
        ops.append(lambda x, f=f: TF.adjust_saturation(x, f))
    if cfg.hue > 0:
        f = u(-cfg.hue, cfg.hue)
        ops.append(lambda x, f=f: TF.adjust_hue(x, f))
    out = imgs
    for k in torch.randperm(len(ops)).tolist():
        out = ops[k](out)
    return out.clamp(0.0, 1.0)
