"""What a method's extra contributes to a training run, and the ordered set of them.

An :class:`Extra` is one optional part of a method (explainability masks, learned intrinsics,
the 3-D alignment loss, object motion, the object size prior, depth normalisation). Every hook
has a do-nothing default, so an extra implements only what it adds:

==========================  ===================================================================
networks                    :meth:`~Extra.attach` adds sub-networks to ``model.extras`` (saved
                            as ``<name>.pth`` in every checkpoint, loaded back from the start
                            checkpoint); :meth:`~Extra.network_notes` /
                            :meth:`~Extra.attached_notes` say how they started;
                            :meth:`~Extra.prepare` adjusts the assembled model once
parameters                  :meth:`~Extra.param_groups`: its own Adam groups / learning rates
forward                     :meth:`~Extra.forward_kwargs`: what the model's forward needs
loss                        :meth:`~Extra.loss_K`, :meth:`~Extra.depth_fn` (what the loss warps
                            with), :meth:`~Extra.loss_kwargs` (arguments of the loss),
                            :meth:`~Extra.add_terms` (weighted terms added to the total, logged
                            statistics), :meth:`~Extra.stats`, :attr:`~Extra.val_keys`
epochs                      :meth:`~Extra.epoch_start`, :meth:`~Extra.after_step`,
                            :meth:`~Extra.epoch_record` (logged per epoch)
checkpoints                 :meth:`~Extra.save_kwargs` (for ``SfMModel.save``),
                            :meth:`~Extra.state_dict` / :meth:`~Extra.load_state_dict` (entries
                            of adam.pth, restored on resume)
==========================  ===================================================================

:class:`Extras` holds the enabled ones in the registry's order and runs each hook over all of
them; the trainer only ever talks to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ['Extra', 'Extras', 'LossInputs']


@dataclass
class LossInputs:
    """What the loss of one batch is computed from, as the hooks see it."""
    batch: dict
    fwd: dict                 # the model's whole output (return_dict=True)
    disps: list               # float32 disparities per scale
    poses: torch.Tensor       # float32 [B,S,4,4]
    K: torch.Tensor           # the K the loss warps with
    depth_fn: object          # disparity -> depth as the loss measures it
    base_depth: object        # disparity -> depth, the network's own convention
    train: bool


class Extra:
    """One optional part of a method; see the module docstring for the hooks."""
    name = ''
    val_keys: tuple = ()

    def __init__(self, config):
        self.config = config

    @classmethod
    def enabled(cls, config) -> bool:
        return False

    # -- networks --------------------------------------------------------------------------------
    def network_notes(self, info: dict) -> list:
        return []

    def attach(self, model) -> None:
        pass

    def attached_notes(self, model, source, loaded: list) -> list:
        return []

    def prepare(self, model, source, data, resumed: bool) -> list:
        return []

    def param_groups(self, groups: list, model) -> list:
        return groups

    # -- one step --------------------------------------------------------------------------------
    def forward_kwargs(self, batch: dict) -> dict:
        return {}

    def loss_K(self, batch: dict, fwd: dict):
        return None

    def depth_fn(self, batch: dict, disp0: torch.Tensor, train: bool, base_depth):
        return None

    def loss_kwargs(self, li: LossInputs) -> dict:
        return {}

    def add_terms(self, out, li: LossInputs) -> None:
        pass

    def stats(self, fwd: dict, batch: dict) -> dict:
        return {}

    # -- epochs and checkpoints --------------------------------------------------------------------
    def epoch_start(self) -> None:
        pass

    def after_step(self, fwd: dict) -> None:
        pass

    def epoch_record(self, rec: dict) -> dict:
        """{section: {name: value}} to log for the epoch (``rec``: its record so far)."""
        return {}

    def save_kwargs(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, saved: dict) -> None:
        pass


class Extras:
    """The enabled extras of a run, in the registry's order (which is the order their terms
    are added to the loss and their keys logged)."""

    def __init__(self, extras: list):
        self._extras = list(extras)

    def __iter__(self):
        return iter(self._extras)

    def __contains__(self, name: str) -> bool:
        return any(e.name == name for e in self._extras)

    def __getitem__(self, name: str) -> Extra:
        for e in self._extras:
            if e.name == name:
                return e
        raise KeyError(name)

    def get(self, name: str):
        return self[name] if name in self else None

    def collect(self, hook: str, *args) -> list:
        """The concatenated lists of ``hook(*args)`` over the extras."""
        res = []
        for e in self._extras:
            res.extend(getattr(e, hook)(*args))
        return res

    def merged(self, hook: str, *args) -> dict:
        """The merged dicts of ``hook(*args)`` over the extras."""
        res = {}
        for e in self._extras:
            res.update(getattr(e, hook)(*args))
        return res

    def first(self, hook: str, *args):
        """The first result of ``hook(*args)`` that is not None (None when there is none)."""
        for e in self._extras:
            r = getattr(e, hook)(*args)
            if r is not None:
                return r
        return None

    def each(self, hook: str, *args) -> None:
        for e in self._extras:
            getattr(e, hook)(*args)

    def param_groups(self, groups: list, model) -> list:
        for e in self._extras:
            groups = e.param_groups(groups, model)
        return groups

    @property
    def val_keys(self) -> tuple:
        return tuple(k for e in self._extras for k in e.val_keys)
