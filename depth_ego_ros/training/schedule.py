"""The learning-rate schedule and the budgets of a training run.

monodepth2's step schedule (x lr_gamma every lr_step epochs), the one-off anneal for the last
anneal_fraction of a step or time budget, and the budget checks that stop a run early
(max_steps, time_budget; every rank stops at the same step). :class:`Progress` is where the run
is (saved in adam.pth, restored on resume).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

__all__ = ['Progress', 'Schedule']


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
        self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)

    def resumed(self):
        for g in self.optimizer.param_groups:     # the schedule decides the learning rate
            g.setdefault('initial_lr', self.config.lr)

    def epoch_end(self):
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]['lr']

    def maybe_anneal(self, progress: Progress, t_start: float):
        """Drop the learning rate once when the last anneal_fraction of the budget starts."""
        cfg = self.config
        if progress.annealed or not cfg.anneal_fraction:
            return
        frac = 0.0
        if cfg.max_steps:
            frac = progress.step / cfg.max_steps
        if cfg.time_budget:
            elapsed = time.perf_counter() - t_start
            if self.ctx.distributed:     # every rank drops at the same step
                elapsed = float(self.ctx.all_reduce_mean(torch.tensor([elapsed]))[0])
            frac = max(frac, elapsed / cfg.time_budget)
        if frac >= 1.0 - cfg.anneal_fraction:
            for g in self.optimizer.param_groups:
                g['lr'] *= cfg.lr_gamma
            progress.annealed = True
            self.log(f'step {progress.step}: learning rate x{cfg.lr_gamma:g} for the last '
                     f'{cfg.anneal_fraction:.0%} of the budget')

    def stop_reason(self, step: int, t_start: float) -> str | None:
        """Why the run stops after ``step`` optimiser steps (None: it goes on). With a time
        budget every rank agrees (any rank over it stops them all)."""
        cfg = self.config
        over = (cfg.max_steps and step >= cfg.max_steps)
        if cfg.time_budget:
            over = self.ctx.any(bool(over) or time.perf_counter() - t_start >= cfg.time_budget)
        if not over:
            return None
        return (f'max_steps {cfg.max_steps} reached' if cfg.max_steps and step >= cfg.max_steps
                else f'time budget {cfg.time_budget:g} s used')
