"""The training run's data: the bag datasets, their loaders and samplers (DDP included).

:class:`TrainData` builds the training split (augmented) and the held-out split of
:class:`~depth_ego_ros.data.dataset.BagTripletDataset` from a TrainConfig, one DataLoader each
(a DistributedSampler per rank under torchrun; the training loader's shuffling is seeded), and
answers what the rest of the run asks of the data (odometry present, bags without camera_info,
the median odometry step between frames).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config_checks import check_object_masks
from .errors import TrainingError

__all__ = ['TrainData', 'to_device']


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on ``device`` (other entries as they are)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class TrainData:
    """``train_set`` / ``val_set`` (None without a held-out split), ``train_loader`` /
    ``val_loader``, ``train_sampler`` (None unless distributed), ``steps_per_epoch``,
    ``has_odometry``, ``missing_K`` (bags without camera_info)."""

    def __init__(self, cfg, ctx):
        from ..data.dataset import BagDatasetError, BagTripletDataset, DatasetConfig
        dcfg = DatasetConfig(width=cfg.width, height=cfg.height, image_topic=cfg.image_topic,
                             camera_info_topic=cfg.camera_info_topic, odom_topic=cfg.odom_topic,
                             frame_offsets=cfg.frame_offsets, augment=cfg.augment,
                             val_fraction=cfg.val_fraction,
                             # masks are read only for object motion; camera_info may be
                             # missing only when K is learned
                             mask_topic=cfg.mask_topic if cfg.object_motion else '',
                             require_camera_info=not cfg.learned_intrinsics)
        try:
            self.train_set = BagTripletDataset(cfg.bags, dcfg, split='train' if cfg.val_fraction > 0 else 'all')
            self.val_set = (BagTripletDataset(cfg.bags, dcfg, split='val')
                            if cfg.val_fraction > 0 else None)
        except BagDatasetError as exc:
            raise TrainingError(f'training data: {exc}') from exc
        self.has_odometry = self.train_set.has_odometry
        check_object_masks(cfg, self.train_set)
        self.missing_K = self.train_set.missing_camera_info
        sampler = None
        g = torch.Generator()
        g.manual_seed(cfg.seed)
        if ctx.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(
                self.train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                shuffle=True, seed=cfg.seed, drop_last=False)
        n_per_rank = math.ceil(len(self.train_set) / ctx.world_size)
        drop_last = n_per_rank >= cfg.batch_size
        pin = ctx.device.type == 'cuda'
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
            num_workers=cfg.num_workers, drop_last=drop_last, pin_memory=pin, generator=g,
            persistent_workers=cfg.num_workers > 0)
        self.train_sampler = sampler
        self.generator = g          # the shuffling order's generator (its state goes in adam.pth)
        self.val_loader = None
        if self.val_set is not None:
            vs = None
            if ctx.distributed:
                vs = torch.utils.data.distributed.DistributedSampler(
                    self.val_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)
            self.val_loader = torch.utils.data.DataLoader(
                self.val_set, batch_size=cfg.batch_size, shuffle=False, sampler=vs,
                num_workers=0, pin_memory=pin)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise TrainingError('no training batch: the training split is empty')

    def set_epoch(self, epoch: int):
        """Reshuffle the distributed sampler for ``epoch`` (every rank the same permutation)."""
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)

    def median_step(self) -> float | None:
        """Median odometry distance between consecutive kept frames of the training split."""
        steps = []
        for s in self.train_set.sequences:
            d = np.abs(np.diff(s.distance))
            steps.extend(d[np.isfinite(d)].tolist())
        if not steps:
            return None
        return float(np.median(steps))

    def samples(self, n: int, held_out: bool = False) -> torch.Tensor:
        """``n`` target images evenly spread over the training split (``held_out``: the
        held-out split when there is one), stacked [n,3,H,W]."""
        data = self.val_set if held_out and self.val_set is not None else self.train_set
        idx = np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int)
        return torch.stack([data[int(i)]['image'] for i in idx])
