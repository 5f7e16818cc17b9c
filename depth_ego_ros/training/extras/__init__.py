"""The methods' optional parts, registered in one place.

Each entry of :data:`REGISTRY` is an :class:`~.base.Extra` that contributes its sub-networks,
parameter groups, forward arguments, loss terms, logged statistics and checkpoint entries to a
run when the TrainConfig enables it (see :mod:`.base` for the hooks). The order is the order in
which their terms are added to the loss and their keys logged: a new extra goes at the end.
"""
from __future__ import annotations

from .alignment import Alignment
from .base import Extra, Extras, LossInputs
from .explainability import Explainability
from .intrinsics import LearnedIntrinsics
from .normalization import DepthNormalization
from .object_motion import OBJECT_SIZE_LR_FACTOR, ObjectMotion, ObjectSize
from .yaw_rate import YawRate

__all__ = ['REGISTRY', 'enabled_extras', 'Extra', 'Extras', 'LossInputs', 'DepthNormalization',
           'Explainability', 'Alignment', 'LearnedIntrinsics', 'ObjectMotion', 'ObjectSize',
           'YawRate', 'OBJECT_SIZE_LR_FACTOR']

REGISTRY = (DepthNormalization, Explainability, Alignment, LearnedIntrinsics, ObjectMotion,
            ObjectSize, YawRate)


def enabled_extras(config) -> Extras:
    """The extras ``config`` switches on, in registry order."""
    return Extras([cls(config) for cls in REGISTRY if cls.enabled(config)])
