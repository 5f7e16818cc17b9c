"""Instance masks of moving objects: [B,M,H,W] in {0,1}, one slot per object (empty slots, the
padding of a batch, are all-zero). The shape check and the nearest-neighbour resize shared by
the object-motion network (:mod:`.object_motion`), the object-aware warp
(:mod:`.losses.warping`) and the object size loss (:mod:`.losses.object_size`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ['resize_masks', 'check_masks']


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B,M,h,w] -> [B,M,height,width] by nearest neighbour (identity when the size matches)."""
    if masks.dim() != 4:
        raise ValueError(f'masks must be [B,M,H,W], got {tuple(masks.shape)}')
    if masks.shape[-2:] == (height, width) or masks.shape[1] == 0:
        return masks
    return F.interpolate(masks.float(), size=(height, width), mode='nearest-exact').to(masks.dtype)


def check_masks(masks, B, H, W, what):
    if not torch.is_tensor(masks) or masks.dim() != 4 or masks.shape[0] != B:
        raise ValueError(f'{what} must be [B,M,H,W] with B={B}, got {tuple(getattr(masks, "shape", ()))}')
    if masks.shape[-2:] != (H, W):
        masks = resize_masks(masks, H, W)
    return masks
