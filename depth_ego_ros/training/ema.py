"""An exponential moving average of the networks' weights (Polyak averaging), ``ema_decay``.

A short run on a small batch wanders: the held-out error of the raw weights jumps from one
hundred steps to the next (demo: 0.25 -> 0.43 -> 0.26 AbsRel), so where a run ends decides its
result. The average of the last few hundred steps' weights sits inside the region the raw
weights wander around and is both better and steadier (docs/training.md, *Weight averaging*).

``WeightAverage(model, decay)``: ``update()`` after every optimiser step folds the model's
floating-point parameters **and buffers** (BatchNorm running statistics, so the averaged network
is normalised consistently) into the average; integer buffers are copied. The decay warms up as
``min(decay, (1 + n) / (10 + n))`` after n updates, so the random initialisation does not linger
in the average of a short run. ``swapped()`` is a context manager that puts the averaged weights
into the model (to save, validate or evaluate them) and restores the raw ones on exit.
Checkpoints hold the averaged networks (what is deployed); adam.pth keeps the raw weights and
the update count, so ``--resume`` continues the very same run.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ['WeightAverage']


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f'ema decay must be in (0, 1), got {decay}')
        self.model, self.decay = model, float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self):
        d = self.current_decay()
        for k, v in self.model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.mul_(d).add_(v.detach().to(s.dtype), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    @contextmanager
    def swapped(self):
        """The averaged weights in the model for the duration of the block."""
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.shadow)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(raw)

    def state_dict(self) -> dict:
        """What a resume needs beyond the saved (averaged) networks: the raw weights, the
        update count and the decay."""
        return {'raw_weights': {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                'updates': self.updates, 'decay': self.decay}

    def load_state_dict(self, state: dict):
        """On resume: the model holds the checkpoint's networks (the averaged weights) -> they
        become the average, and the saved raw weights go back into the model."""
        self.shadow = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(state['raw_weights'])
        self.updates = int(state['updates'])
