"""The optimiser of a training run: Adam over the model's trainable parameters, with the
parameter groups the extras ask for (their own learning rates), and the float16 GradScaler
(on CUDA with amp; a no-op otherwise)."""
from __future__ import annotations

import torch

__all__ = ['build_optimizer', 'build_scaler']


def build_optimizer(model, config, extras) -> torch.optim.Adam:
    groups = [{'params': model.trainable_parameters()}]
    groups = extras.param_groups(groups, model)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def build_scaler(amp: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler('cuda', enabled=amp)
