"""vid2depth's 3-D alignment loss (alignment_weight > 0): the model also predicts every
source's depth, and the target's and each source's point clouds are aligned at scale 0."""
from __future__ import annotations

import torch

from ...core.losses import alignment_loss_3d
from .base import Extra, LossInputs

__all__ = ['Alignment']


class Alignment(Extra):
    name = 'alignment'
    val_keys = ('alignment',)

    @classmethod
    def enabled(cls, config) -> bool:
        return config.alignment_weight > 0

    def forward_kwargs(self, batch: dict) -> dict:
        return {'source_depth': True}

    def add_terms(self, out, li: LossInputs) -> None:
        al = self.loss(li.disps[0], li.fwd['source_disps'], li.poses, li.K, li.depth_fn,
                       li.base_depth)
        out.total = out.total + self.config.alignment_weight * al
        out.terms['alignment'] = al.detach()

    @staticmethod
    def loss(disp0, src_disps, poses, K, depth_fn, base_depth):
        """Mean over sources of vid2depth's 3-D alignment loss at scale 0. Source depths are
        brought into the target's units (the same normalisation factor as the target's)."""
        base_t = base_depth(disp0)
        depth_t = depth_fn(disp0)
        factor = (depth_t / base_t).flatten(1).median(1).values.view(-1, 1, 1, 1)
        terms = []
        for k in range(src_disps.shape[1]):
            depth_s = base_depth(src_disps[:, k].float()) * factor
            terms.append(alignment_loss_3d(depth_t, depth_s, poses[:, k], K).loss)
        return torch.stack(terms).mean()
