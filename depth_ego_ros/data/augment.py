"""Training-time sample augmentation of the bag dataset (monodepth2's recipe): the colour jitter
shared by all frames of a sample, and instance-mask slots (flipped with the images)."""
from __future__ import annotations

import numpy as np
import torch

from .dataset_config import DatasetConfig


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

