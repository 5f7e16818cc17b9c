"""struct2depth's object size constraint.

The photometric loss cannot pin a moving object's depth: a nearer object moving less and a
farther one moving more give the same image motion. struct2depth adds a size constraint: an
object of real height h whose mask spans ``p`` pixel rows lies at about ``fy * h / p``.
:func:`object_size_loss` penalises the log-ratio of the predicted object depth to that
estimate, with h a learnable prior (:class:`~depth_ego_ros.core.object_motion.ObjectSizePrior`,
a log-height per class), so gradients reach both the depth and the prior. The log-ratio is
unchanged when depth and h are scaled together, so the term has no trivial minimum at
"everything small" (struct2depth divides both depths by the image's mean depth for the same
reason); with metric training (velocity loss) h is learned in metres, with depth normalisation
in the normalised units.

Costs and use: see docs/methods.md, "Dynamic objects".
"""
from __future__ import annotations

import torch

from ..instance_masks import check_masks

__all__ = ['mask_row_extent', 'object_size_loss']


def mask_row_extent(masks: torch.Tensor):
    """Row extent of every mask [B,M,H,W] -> (top [B,M], bottom [B,M], rows [B,M] = bottom -
    top + 1, present [B,M] bool); top/bottom are 0 and rows 0 for empty masks. Every row with
    any mask pixel counts (a mask with a gap keeps its full span)."""
    if masks.dim() != 4:
        raise ValueError(f'masks must be [B,M,H,W], got {tuple(masks.shape)}')
    H = masks.shape[2]
    occupied = masks.flatten(3).amax(3) > 0                          # [B,M,H]
    present = occupied.any(-1)
    idx = torch.arange(H, device=masks.device).expand_as(occupied)
    top = torch.where(occupied, idx, torch.full_like(idx, H)).amin(-1)
    bottom = torch.where(occupied, idx, torch.full_like(idx, -1)).amax(-1)
    top = torch.where(present, top, torch.zeros_like(top))
    bottom = torch.where(present, bottom, torch.zeros_like(bottom))
    rows = torch.where(present, bottom - top + 1, torch.zeros_like(top))
    return top, bottom, rows, present


def object_size_loss(depth: torch.Tensor, masks: torch.Tensor, K: torch.Tensor,
                     log_height: torch.Tensor, classes: torch.Tensor | None = None,
                     min_rows: int = 4, depth_stat: str = 'pixel', return_count: bool = False):
    """struct2depth's object size constraint.

    For every object mask that is not empty, not cut by the image's top or bottom border and at
    least ``min_rows`` rows tall, its pixel height ``p`` (rows spanned) and the learned real
    height ``h = exp(log_height[class])`` give the depth estimate ``D_est = fy h / p``. Per
    object, ``depth_stat`` says what is compared with it:

    * ``'pixel'`` (default): the mean over the mask's pixels of ``|log d - log D_est|``: every
      pixel is pulled toward D_est, so the object's median depth is what the term pins;
    * ``'mean'`` / ``'median'``: ``|log D_obj - log D_est|`` with ``D_obj`` the mean / median
      depth in the mask (struct2depth's form). Measured in training (docs/training.md), the
      mean is *gamed*: the depth network met it with a bimodal object (some pixels far too
      near, some far too far, the mean right), which made the objects' per-pixel error worse
      than without the term; the median gives a gradient to one pixel per object only.

    The loss is the mean over those objects (zero, with a graph, when there is none). Gradients
    reach ``depth`` and ``log_height``; K is treated as given.

    Args:
        depth [B,1,H,W] (> 0); masks [B,M,H,W] in {0,1} (resized to H,W by nearest neighbour);
        K [B,3,3] at depth's resolution; log_height: scalar or [C] tensor; classes: [B,M] long
        indices into log_height (None: class 0 for all); depth_stat: 'pixel' | 'mean' | 'median'.
    Returns: scalar loss (and the number of objects used, with ``return_count``).
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be [B,1,H,W], got {tuple(depth.shape)}')
    if depth_stat not in ('pixel', 'mean', 'median'):
        raise ValueError(f"depth_stat must be 'pixel', 'mean' or 'median', got {depth_stat!r}")
    B, _, H, W = depth.shape
    masks = check_masks(masks, B, H, W, 'masks')
    if not torch.is_tensor(K) or K.shape[-2:] != (3, 3) or K.reshape(-1, 3, 3).shape[0] != B:
        raise ValueError(f'K must be [B,3,3] with B={B}, got {tuple(getattr(K, "shape", ()))}')
    lh = torch.as_tensor(log_height).to(depth.dtype).reshape(-1)
    M = masks.shape[1]
    if classes is None:
        classes = torch.zeros(B, M, dtype=torch.long, device=depth.device)
    elif tuple(classes.shape) != (B, M):
        raise ValueError(f'classes must be [B,M] = [{B},{M}], got {tuple(classes.shape)}')
    top, bottom, rows, present = mask_row_extent(masks)
    valid = present & (top > 0) & (bottom < H - 1) & (rows >= int(min_rows))
    zero = depth.sum() * 0.0 + lh.sum() * 0.0
    if not bool(valid.any()):
        return (zero, 0) if return_count else zero
    m = masks.to(depth.dtype)[valid]                                   # [N,H,W]
    b_idx = torch.arange(B, device=depth.device).view(B, 1).expand(B, M)[valid]
    d = depth[b_idx, 0]                                                # [N,H,W]
    w = m * torch.isfinite(d).to(d.dtype)
    d = torch.where(torch.isfinite(d), d, torch.ones_like(d))
    fy = K.reshape(B, 3, 3)[b_idx, 1, 1].to(depth.dtype)
    log_est = torch.log(fy) + lh[classes[valid]] - torch.log(rows[valid].to(depth.dtype))   # [N]
    if depth_stat == 'pixel':
        err = (torch.log(d.clamp_min(1e-6)) - log_est.view(-1, 1, 1)).abs()
        loss = ((err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-6)).mean()
    else:
        if depth_stat == 'mean':
            d_obj = (d * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-6)
        else:
            inside = torch.where(w > 0, d, torch.full_like(d, float('nan'))).flatten(1)
            d_obj = inside.nanmedian(1).values
        loss = (torch.log(d_obj.clamp_min(1e-6)) - log_est).abs().mean()
    return (loss, int(valid.sum())) if return_count else loss
