"""The training package's two errors (torch-free, so the CLI can catch them without torch).

:class:`TrainConfigError` -- the configuration is unusable (a ``ValueError``; the message lists
every problem); :class:`TrainingError` -- training cannot start or continue (bad data, unusable
checkpoint, nothing to resume, a non-finite loss).
"""
from __future__ import annotations

__all__ = ['TrainConfigError', 'TrainingError']


class TrainConfigError(ValueError):
    """The training configuration is unusable; the message lists every problem."""


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad data, unusable checkpoint, nothing to resume)."""
