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
``yaw``            [S] float32        radians the body turned (odometry twist.angular.z, REP 103
                                      z up, integrated) from the target to each source time;
                                      negated for a flipped sample (NaN without odometry)
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

from pathlib import Path

import numpy as np
import torch

from .augment import _color_jitter, _instance_slots
from .bag_sequences import load_bag_sequences, split_sequences
from .dataset_config import BagDatasetError, DatasetConfig, Sequence

# Where each piece lives: dataset_config (DatasetConfig, Sequence, BagDatasetError, message types),
# bag_topics (which topics), bag_frames (per-message decode/resize), bag_sequences (one bag ->
# sequences, held-out split), augment (colour jitter, mask slots); this module is the Dataset.
__all__ = ['DatasetConfig', 'BagDatasetError', 'Sequence', 'BagTripletDataset', 'load_bag_sequences',
           'split_sequences']


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
        if s.heading is not None:        # body yaw from the target to each source time
            yaw = (s.heading[idx[1:]] - s.heading[t]) * (-1.0 if flipped else 1.0)
        else:
            yaw = np.full(len(idx) - 1, np.nan)
        extra = {}
        if s.masks is not None:
            extra = _instance_slots(s.masks[idx], cfg.max_objects, flipped)
        return {**extra,
            'image': imgs[0], 'sources': imgs[1:], 'image_aug': aug[0], 'sources_aug': aug[1:],
            'K': K, 'has_K': has_K, 'distance': torch.from_numpy(dist.astype(np.float32)),
            'yaw': torch.from_numpy(yaw.astype(np.float32)),
            'speed': torch.tensor(float(s.speed[t]), dtype=torch.float32),
            'dt': torch.from_numpy((s.stamps[idx[1:]] - s.stamps[t]).astype(np.float32)),
            'stamp': torch.tensor(s.stamps[t], dtype=torch.float64), 'flipped': flipped,
            'sequence': s.name, 'index': t,
        }
