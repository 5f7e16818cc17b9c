"""struct2depth's object motion (object_motion) and object size prior (object_size_weight > 0).

ObjectMotion: ``model.extras['object_motion']`` = ObjectMotionNet (object_motion.pth in
save_object_motion's format; from the start checkpoint when it has one, else fresh, seeded); the
instance masks go into the model's forward and the per-object motions into the photometric warp
(no loss term of its own; its statistics are logged). ObjectSize: ``model.extras['object_size']``
= ObjectSizePrior (one class, at object_height_init; object_size.pth), its own learning rate, and
the size constraint as a loss term."""
from __future__ import annotations

import torch

from ...core.losses import object_size_loss
from ...core.object_motion import (ObjectMotionNet, ObjectSizePrior, mask_centroids,
                                   object_motion_matrices)
from .base import Extra, LossInputs

__all__ = ['ObjectMotion', 'ObjectSize', 'OBJECT_SIZE_LR_FACTOR']

OBJECT_SIZE_LR_FACTOR = 10.0     # the object height prior (one number) learns at lr x this


class ObjectMotion(Extra):
    name = 'object_motion'
    val_keys = ('object_translation', 'object_rotation')

    @classmethod
    def enabled(cls, config) -> bool:
        return bool(config.object_motion)

    def attach(self, model) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 2)
            model.extras['object_motion'] = ObjectMotionNet()

    def attached_notes(self, model, source, loaded: list) -> list:
        return ['object-motion net ' + (f'from {source}' if 'object_motion' in loaded
                                        else 'from random weights')]

    def forward_kwargs(self, batch: dict) -> dict:
        return dict(instance_masks=batch['instance_masks'],
                    source_instance_masks=batch['source_instance_masks'])

    def loss_kwargs(self, li: LossInputs) -> dict:
        """The loss's object_masks / object_poses: per source ``T_obj`` [B,M,4,4] from the
        object-motion net's outputs, rotating about each object's centre. The centres come from
        the depth and K the loss warps with (normalised depth, learned/flipped K), detached:
        they are only pivots. Flipped samples: images, masks and K are all mirrored, so the net
        simply sees (and predicts) the mirrored motion; nothing here assumes unflipped input."""
        masks = li.batch['instance_masks']
        with torch.no_grad():
            centres = mask_centroids(li.depth_fn(li.disps[0].detach()), li.K.detach(), masks)
        aa, tr = li.fwd['object_axisangle'], li.fwd['object_translation']
        T_obj = [object_motion_matrices(aa[:, k], tr[:, k], centres) for k in range(aa.shape[1])]
        return {'object_masks': masks, 'object_poses': T_obj}

    def add_terms(self, out, li: LossInputs) -> None:
        """Mean |t_obj| (loss depth units) and |r_obj| (rad) over the slots holding an object,
        all sources; and the mean number of objects per sample (statistics, not loss terms)."""
        present = li.batch['instance_masks'].flatten(2).amax(2) > 0                 # [B,M]
        tr = li.fwd['object_translation'].detach().norm(dim=-1)                      # [B,S,M]
        aa = li.fwd['object_axisangle'].detach().norm(dim=-1)
        w = present.unsqueeze(1).expand_as(tr).to(tr)
        n = w.sum().clamp_min(1.0)
        out.terms.update({'object_translation': (tr * w).sum() / n,
                          'object_rotation': (aa * w).sum() / n,
                          'objects': present.float().sum(1).mean()})


class ObjectSize(Extra):
    name = 'object_size'
    val_keys = ('object_size', 'object_height')

    @classmethod
    def enabled(cls, config) -> bool:
        return config.object_size_weight > 0

    def attach(self, model) -> None:
        model.extras['object_size'] = ObjectSizePrior(init_height=self.config.object_height_init)

    def attached_notes(self, model, source, loaded: list) -> list:
        h = float(model.extras['object_size'].height[0])
        return [f'object height prior {h:.3g} ' + (f'from {source}' if 'object_size' in loaded
                                                   else '(start)')]

    def param_groups(self, groups: list, model) -> list:
        # one number per class: at the networks' lr it would move ~lr per step (in log)
        prior = list(model.extras['object_size'].parameters())
        ids = {id(p) for p in prior}
        groups = [{**g, 'params': [p for p in g['params'] if id(p) not in ids]} for g in groups]
        return groups + [{'params': prior, 'lr': self.config.lr * OBJECT_SIZE_LR_FACTOR,
                          'weight_decay': 0.0}]

    def add_terms(self, out, li: LossInputs) -> None:
        # struct2depth's size constraint on the loss's own depth and K (K detached: the
        # prior must not drive the learned intrinsics)
        lh = li.fwd['object_log_height'].float()
        sz = object_size_loss(li.depth_fn(li.disps[0]), li.batch['instance_masks'], li.K.detach(), lh)
        out.total = out.total + self.config.object_size_weight * sz
        out.terms['object_size'] = sz.detach()
        out.terms['object_height'] = lh.detach()[0].exp()
