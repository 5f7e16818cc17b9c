"""Online refinement's settings, round records and the check of what it can refine."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ['RefinerConfig', 'RoundResult', 'NETWORK_CHOICES', 'SUPPORTED_MODELS', 'check_supported']

NETWORK_CHOICES = ('both', 'depth', 'pose')
SUPPORTED_MODELS = ('resnet18', 'resnet50')


@dataclass
class RefinerConfig:
    """Online-refinement settings (validated; ValueError says what is wrong).

    window: frames kept per camera (>= 3: a triplet needs three consecutive frames).
    steps: optimiser steps per round; batch: triplets per step.
    learning_rate: Adam learning rate of the refinement (kept small: the base model is good).
    interval: seconds between the starts of two rounds (background thread); a round also waits
        for ``min_new_frames`` new frames since the previous one.
    networks: which networks adapt: 'both', 'depth' or 'pose'.
    max_share: the refiner's busy time is at most this fraction of wall time (it sleeps
        ``busy * (1 - share) / share`` after every unit of work); 1 = no limit.
    threads: torch intra-op threads of the refiner's thread (CPU).
    eval_triplets: triplets of the window the accept/reject decision is measured on (the same
        ones before and after the round, evenly spread over the window).
    reset_after_rejects: after this many rejected rounds in a row the original weights are
        restored (0 = never).
    frame_stride: keep every n-th frame offered (fast cameras move too little between frames).
    smoothness_weight, velocity_weight: loss weights (monodepth2 / PackNet-SfM defaults); the
        velocity term needs speeds (``add_frame(..., speed=)``).
    seed: of the triplet sampling (the demo drives the refiner deterministically).
    """
    window: int = 8
    steps: int = 3
    batch: int = 2
    learning_rate: float = 1e-4
    interval: float = 1.0
    min_new_frames: int = 1
    networks: str = 'both'
    max_share: float = 0.3
    threads: int = 1
    eval_triplets: int = 4
    reset_after_rejects: int = 0
    frame_stride: int = 1
    smoothness_weight: float = 1e-3
    velocity_weight: float = 0.1
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> 'RefinerConfig':
        errs = []

        def intval(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                errs.append(f'{name} must be an int >= {lo}, got {v!r}')

        intval('window', 3)
        intval('steps', 1)
        intval('batch', 1)
        intval('min_new_frames', 0)
        intval('threads', 1)
        intval('eval_triplets', 1)
        intval('reset_after_rejects', 0)
        intval('frame_stride', 1)
        intval('seed', 0)
        if not (_finite(self.learning_rate) and 0 < self.learning_rate <= 1):
            errs.append(f'learning_rate must be in (0, 1], got {self.learning_rate!r}')
        if not (_finite(self.interval) and self.interval >= 0):
            errs.append(f'interval must be >= 0 seconds, got {self.interval!r}')
        if not (_finite(self.max_share) and 0 < self.max_share <= 1):
            errs.append(f'max_share must be in (0, 1], got {self.max_share!r}')
        if self.networks not in NETWORK_CHOICES:
            errs.append(f'networks must be one of {NETWORK_CHOICES}, got {self.networks!r}')
        for name in ('smoothness_weight', 'velocity_weight'):
            if not (_finite(getattr(self, name)) and getattr(self, name) >= 0):
                errs.append(f'{name} must be >= 0, got {getattr(self, name)!r}')
        if errs:
            raise ValueError('invalid RefinerConfig: ' + '; '.join(errs))
        return self


@dataclass
class RoundResult:
    """What one round did. ``accepted``: its weights now run in the estimator; ``reason`` says
    why not otherwise ('loss did not decrease', 'non-finite loss', ...). Losses are on the
    round's evaluation triplets; times in ms (busy = work, excluding the pacing sleeps)."""
    index: int
    accepted: bool
    reason: str
    loss_before: float
    loss_after: float
    triplets: int
    busy_ms: float
    wall_ms: float
    build_ms: float = 0.0
    swap_ms: float = 0.0
    reset: bool = False


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def check_supported(estimator) -> None:
    """ValueError with the reason when ``estimator`` runs networks the refiner cannot adapt."""
    cfg = estimator.config
    if cfg.exported_model_dir is not None:
        raise ValueError('online refinement needs torch weights: the estimator runs exported '
                         'models (exported_model_dir); give it the checkpoint instead')
    if cfg.model not in SUPPORTED_MODELS or cfg.pose_model != 'monodepth2' or cfg.learned_intrinsics:
        raise ValueError(
            f'online refinement supports the monodepth2 ResNet networks (model resnet18/resnet50, '
            f'pose_model monodepth2, no learned intrinsics); got model={cfg.model!r}, '
            f'pose_model={cfg.pose_model!r}, learned_intrinsics={cfg.learned_intrinsics}')
    if not estimator.has_pose:
        raise ValueError('online refinement needs a pose network (the checkpoint has no '
                         'pose_encoder.pth / pose.pth): the photometric loss warps with it')
    if cfg.compile or cfg.cuda_graphs or cfg.backend == 'tensorrt':
        raise ValueError('online refinement rebuilds the runner after every accepted round: '
                         "turn off compile / cuda_graphs (backend 'tensorrt' runs exported engines "
                         'only)')
