"""SfMLearner's explainability masks (PoseExpNet with explainability_weight > 0): every source's
photometric error is weighted by its mask, and the masks' regulariser is added to the loss."""
from __future__ import annotations

from ...core.losses import explainability_regularization
from .base import Extra, LossInputs

__all__ = ['Explainability']


class Explainability(Extra):
    name = 'explainability'
    val_keys = ('explainability', 'mask_mean')

    @classmethod
    def enabled(cls, config) -> bool:
        return config.pose_model == 'posexp' and config.explainability_weight > 0

    def loss_kwargs(self, li: LossInputs) -> dict:
        return {'source_weights': [li.fwd['masks'][s].float() for s in self.config.scales]}

    def add_terms(self, out, li: LossInputs) -> None:
        cfg = self.config
        reg = explainability_regularization({s: li.fwd['mask_logits'][s].float() for s in cfg.scales})
        out.total = out.total + cfg.explainability_weight * reg
        out.terms['explainability'] = reg.detach()
        out.terms['mask_mean'] = li.fwd['masks'][0].detach().float().mean()
