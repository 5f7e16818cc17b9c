"""Depth normalisation (RealMonoDepth-style relative depth): the loss measures depth divided by
each sample's median ('sample') or by its sequence's running median ('sequence').

Contributes the loss's disparity -> depth function, the per-sequence medians in adam.pth (so a
resumed run keeps them), and the relative translation start of a run initialised from a metric
checkpoint."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ...core.losses import SequenceDepthNormalizer, relative_depth_fn
from ..config import CONFIG_FILE
from .base import Extra

__all__ = ['DepthNormalization']


class DepthNormalization(Extra):
    name = 'depth_normalization'

    def __init__(self, config):
        super().__init__(config)
        self.mode = config.depth_normalization
        self.normalizer = SequenceDepthNormalizer() if self.mode == 'sequence' else None

    @classmethod
    def enabled(cls, config) -> bool:
        return config.depth_normalization != 'none'

    def depth_fn(self, batch: dict, disp0: torch.Tensor, train: bool, base_depth):
        """disparity -> depth used by the loss: the network's own convention, divided by the
        sample's median depth ('sample') or its sequence's running median ('sequence')."""
        if self.mode == 'sample':
            return relative_depth_fn(base_depth)
        ids = list(batch['sequence'])
        known = self.normalizer.state_dict()['log_scale']
        if train or any(str(i) not in known for i in ids):
            with torch.no_grad():
                self.normalizer.update(base_depth(disp0.detach()), ids)
        norm = self.normalizer
        return lambda d: norm(base_depth(d), ids, update=False)

    def prepare(self, model, source, data, resumed: bool) -> list:
        if source is None or resumed:
            return []
        return self._relative_translation_start(model, source, data)

    def _relative_translation_start(self, model, source, data, samples: int = 8) -> list:
        """A depth-normalised run started from a checkpoint that was not (--init with a metric
        model, or released weights): its pose net predicts translations in the checkpoint's
        units (metres), while the loss now measures depth in units of the scene's median depth.
        Left alone, the warps would start with motions median-depth times too long (x10 on a
        street) and training collapsed to a constant depth. So the translation outputs are
        divided by the start model's median depth on a few training samples. A checkpoint whose
        train_config.json says it was trained normalised is left as it is."""
        cfg = self.config
        saved = Path(source) / CONFIG_FILE
        try:
            if json.loads(saved.read_text()).get('depth_normalization', 'none') != 'none':
                return []
        except (OSError, ValueError, AttributeError):
            pass                                  # no config: not one of ours, treat as metric
        images = data.samples(samples)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            disp = model.depth_disps(images)[0]
            depth = model.disp_to_depth(disp, cfg.min_depth, cfg.max_depth)[1]
        model.train(was_training)
        med = float(depth.flatten(1).median(1).values.median())
        if math.isfinite(med) and med > 0:
            model.rescale_translation(1.0 / med)
            return [f'pose translation divided by the start model\'s median depth '
                    f'{med:.3g} (depth normalisation: relative units)']
        return []

    def state_dict(self) -> dict:
        return {'depth_normalizer': self.normalizer.state_dict()} if self.normalizer is not None else {}

    def load_state_dict(self, saved: dict) -> None:
        st = saved.get('depth_normalizer')
        if self.normalizer is not None and st:
            self.normalizer.load_state_dict(st)
