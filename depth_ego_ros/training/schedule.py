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
same torch build and the same thread count give the same losses step by step, and so does a run
resumed from one of its epoch checkpoints (the generators' states are saved in adam.pth by
:func:`rng_state`; under torchrun each rank reseeds instead, as only rank 0 saves). What is not
pinned: float reductions inside torch ops may group differently with another *number of threads*
or another CPU/GPU kind (last-bit differences that grow over a long run), and CUDA kernels that
are not deterministic (the trainer does not force ``torch.use_deterministic_algorithms``).

:class:`Schedule` applies it to a run's optimiser (with monodepth2's step schedule, x lr_gamma every
lr_step epochs, under it) and says when a budget stops the run (every rank at the same step);
:class:`Progress` is where the run is (saved in adam.pth, restored on resume). torch is imported
only when a Schedule is made, so the config checks stay torch-free.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ['ANNEAL_SHAPES', 'Progress', 'Schedule', 'budget_progress', 'lr_factor', 'seed_everything',
           'rng_state', 'restore_rng_state']

ANNEAL_SHAPES = ('step', 'cosine')


def seed_everything(seed: int):
    """Seed Python's, NumPy's and torch's global random generators."""
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state(loader_generator=None) -> dict:
    """Python's, NumPy's, torch's (and CUDA's) global generators and the DataLoader's shuffling
    generator, in a form ``torch.load(weights_only=True)`` reads back (saved in adam.pth: a run
    resumed from an epoch's checkpoint draws the same numbers as the run that went on)."""
    import random

    import numpy as np
    import torch
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                       int(has_gauss), float(gauss)],
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state['loader'] = loader_generator.get_state()
    return state


def restore_rng_state(state: dict, loader_generator=None):
    """Put back what :func:`rng_state` saved (parts it did not save are left as they are)."""
    import random

    import numpy as np
    import torch
    if 'python' in state:
        version, internal, gauss = state['python']
        random.setstate((version, tuple(internal), gauss))
    if 'numpy' in state:
        name, keys, pos, has_gauss, gauss = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if 'torch' in state:
        torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    if 'loader' in state and loader_generator is not None:
        loader_generator.set_state(state['loader'])


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


@dataclass
class Progress:
    epoch: int = 0               # next epoch to run
    step: int = 0                # optimiser steps done
    annealed: bool = False       # the anneal_fraction drop happened
    train_seconds: float = 0.0   # training time of earlier sessions (resume)

    def state_dict(self, epoch: int, complete: bool, elapsed: float) -> dict:
        return {'epoch': int(epoch), 'step': int(self.step), 'epoch_complete': bool(complete),
                'annealed': bool(self.annealed), 'train_seconds': float(elapsed)}

    def load_state_dict(self, state: dict):
        self.epoch = int(state['epoch']) + 1
        self.step = int(state['step'])
        self.annealed = bool(state.get('annealed', False))
        self.train_seconds = float(state.get('train_seconds', 0.0))


class Schedule:
    """``scheduler`` (StepLR over epochs), :meth:`maybe_anneal` before every step,
    :meth:`stop_reason` after it."""

    def __init__(self, config, optimizer, ctx, log):
        self.config = config
        self.optimizer = optimizer
        self.ctx = ctx
        self.log = log
        import torch
        self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)

    def resumed(self):
        for g in self.optimizer.param_groups:     # the schedule decides the learning rate
            g.setdefault('initial_lr', self.config.lr)

    def epoch_end(self):
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]['lr']

    def maybe_anneal(self, progress: Progress, t_start: float, hook_s: float = 0.0):
        """Set the learning rate of the next step from the budget's schedule (:func:`lr_factor`):
        warm-up, then the anneal over the last anneal_fraction of the budget, whose progress is
        counted in steps when max_steps is set (time_budget is then only a safety cap), else in
        seconds of training (``hook_s``: time spent in step hooks, not training)."""
        cfg = self.config
        if not (cfg.anneal_fraction or cfg.warmup_steps):
            return
        elapsed = 0.0
        if cfg.time_budget and not cfg.max_steps:
            elapsed = time.perf_counter() - t_start - hook_s
            if self.ctx.distributed:     # every rank drops at the same step
                import torch
                elapsed = float(self.ctx.all_reduce_mean(torch.tensor([elapsed]))[0])
        frac = budget_progress(progress.step, cfg.max_steps, elapsed, cfg.time_budget)
        was = progress.annealed
        if cfg.anneal == 'step' and not cfg.warmup_steps:
            if not was and frac >= 1.0 - cfg.anneal_fraction:   # one-off drop
                for g in self.optimizer.param_groups:
                    g['lr'] *= cfg.lr_gamma
                progress.annealed = True
        else:
            f = lr_factor(progress.step, frac, warmup_steps=cfg.warmup_steps,
                          anneal_fraction=cfg.anneal_fraction, anneal=cfg.anneal, gamma=cfg.lr_gamma)
            epoch_f = cfg.lr_gamma ** (progress.epoch // cfg.lr_step)   # the epoch schedule's part
            for g in self.optimizer.param_groups:
                g['lr'] = g['initial_lr'] * epoch_f * f
            progress.annealed = bool(cfg.anneal_fraction) and frac >= 1.0 - cfg.anneal_fraction
        if progress.annealed and not was:
            self.log(f'step {progress.step}: learning-rate anneal ({cfg.anneal}, to x{cfg.lr_gamma:g}) '
                     f'for the last {cfg.anneal_fraction:.0%} of the budget')

    def stop_reason(self, step: int, t_start: float, hook_s: float = 0.0) -> str | None:
        """Why the run stops after ``step`` optimiser steps (None: it goes on). With a time
        budget every rank agrees (any rank over it stops them all); ``hook_s``: time spent in
        step hooks, which does not count against it."""
        cfg = self.config
        over = (cfg.max_steps and step >= cfg.max_steps)
        if cfg.time_budget:
            over = self.ctx.any(bool(over) or time.perf_counter() - t_start - hook_s
                                >= cfg.time_budget)
        if not over:
            return None
        return (f'max_steps {cfg.max_steps} reached' if cfg.max_steps and step >= cfg.max_steps
                else f'time budget {cfg.time_budget:g} s used')
