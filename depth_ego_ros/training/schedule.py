"""The learning-rate schedule of a budgeted run, and what makes a run repeatable.

A budgeted run (``max_steps`` and/or ``time_budget``) has a *progress* in [0, 1]:

* with ``max_steps`` > 0 it is ``step / max_steps`` only. ``time_budget`` is then a safety cap
  that stops a run on a machine far slower than expected (and is reported when it does), never
  what the schedule follows: the same steps give the same result on a fast and a slow machine.
* with ``time_budget`` alone (``max_steps`` 0) it is elapsed / budget: the result then depends on
  the machine's speed (kept for "train as long as I can afford" use; the demo never does this).

The multiplier of the base learning rate at a step (:func:`lr_factor`):

* linear warm-up over the first ``warmup_steps`` steps (from 1/warmup_steps to 1);
* then, over the last ``anneal_fraction`` of the budget, ``anneal`` = 'step': one drop to
  ``lr_gamma`` (the original recipe), or 'cosine': a half cosine from 1 down to ``lr_gamma``.

Repeatability (:func:`seed_everything`): Python's, NumPy's and torch's global generators are
seeded from ``seed``; the DataLoader shuffles with its own generator seeded from ``seed``;
the colour jitter draws from torch's global generator in the main process (``num_workers`` 0) and
network initialisation is seeded by ``build_model``. Two runs with the same configuration, the
same torch build and the same thread count give the same losses step by step. What is not
pinned: float reductions inside torch ops may group differently with another *number of threads*
or another CPU/GPU kind (last-bit differences that grow over a long run), and CUDA kernels that
are not deterministic (the trainer does not force ``torch.use_deterministic_algorithms``).
"""
from __future__ import annotations

import math

__all__ = ['ANNEAL_SHAPES', 'budget_progress', 'lr_factor', 'seed_everything']

ANNEAL_SHAPES = ('step', 'cosine')


def seed_everything(seed: int):
    """Seed Python's, NumPy's and torch's global random generators."""
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def budget_progress(step: int, max_steps: int, elapsed_s: float, time_budget: float) -> float:
    """Share of the budget used: steps when there is a step budget, else time (see above)."""
    if max_steps:
        return step / max_steps
    if time_budget:
        return elapsed_s / time_budget
    return 0.0


def lr_factor(step: int, progress: float, *, warmup_steps: int = 0, anneal_fraction: float = 0.0,
              anneal: str = 'step', gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate for the optimiser step that follows ``step`` steps
    done, at ``progress`` of the budget."""
    f = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if not anneal_fraction:
        return f
    start = 1.0 - anneal_fraction
    if progress < start:
        return f
    if anneal == 'step':
        return f * gamma
    x = min(1.0, (progress - start) / anneal_fraction)
    return f * (gamma + (1.0 - gamma) * 0.5 * (1.0 + math.cos(math.pi * x)))
