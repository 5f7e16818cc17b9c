"""Regularisers: priors on what the networks output, not comparisons of images.

* :func:`smoothness_loss` -- edge-aware first-order smoothness of mean-normalised disparity
  (monodepth2);
* :func:`explainability_regularization` -- cross-entropy of SfMLearner's explainability masks
  toward "explainable" (label 1), which keeps the network from switching every pixel off (the
  masks weight the photometric error in :mod:`.photometric`).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

__all__ = ['smoothness_loss', 'explainability_regularization']


def smoothness_loss(disp: torch.Tensor, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Edge-aware smoothness: mean of ``|d_x disp| exp(-|d_x I|) + |d_y disp| exp(-|d_y I|)``.

    Args:
        disp: [B,1,H,W] disparity (any positive scale; mean-normalised per image when normalize).
        image: [B,3,H,W] colour image at the same resolution (gradients averaged over channels).
    Returns: scalar tensor (0 for a constant disparity).
    """
    if disp.dim() != 4 or disp.shape[1] != 1:
        raise ValueError(f'disp must be [B,1,H,W], got {tuple(disp.shape)}')
    if image.shape[0] != disp.shape[0] or image.shape[-2:] != disp.shape[-2:]:
        raise ValueError(f'image {tuple(image.shape)} must match disp {tuple(disp.shape)} in B, H, W')
    if normalize:
        disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    gdx = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
    gdy = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
    gix = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    giy = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (gdx * torch.exp(-gix)).mean() + (gdy * torch.exp(-giy)).mean()


def _scales(masks) -> list:
    if torch.is_tensor(masks):
        return [masks]
    if isinstance(masks, Mapping):
        return [masks[k] for k in sorted(masks)]
    return list(masks)


def explainability_regularization(masks, eps: float = 1e-6) -> torch.Tensor:
    """Cross-entropy of explainability masks toward label 1 ("explainable"), mean over pixels
    and sources, averaged over scales.

    Args:
        masks: per scale (dict {s: ...}, list, or one tensor) either probabilities [B,N,h,w] in
            [0,1] (loss ``-log p``, p clamped to >= eps) or the 2-way logits [B,N,2,h,w] of
            :class:`~.networks.posexp_net.PoseExpNet` (loss ``-log_softmax(logits)[:, :, 1]``,
            numerically exact).
    Returns: scalar >= 0; 0 exactly when every probability is 1.
    """
    terms = []
    for m in _scales(masks):
        if m.dim() == 5 and m.shape[2] == 2:
            terms.append(-F.log_softmax(m, dim=2)[:, :, 1].mean())
        elif m.dim() == 4:
            terms.append(-torch.log(m.clamp(min=eps, max=1.0)).mean())
        else:
            raise ValueError(f'masks must be [B,N,h,w] probabilities or [B,N,2,h,w] logits, got '
                             f'{tuple(m.shape)}')
    if not terms:
        raise ValueError('no masks given')
    return torch.stack(terms).mean()
