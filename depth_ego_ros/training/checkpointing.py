"""Checkpoints of a training run: finding them, writing them, resuming from them.

Layout (one per saved epoch)::

    out/weights_N/      the networks in the layouts the Estimator loads (SfMModel.save)
    out/weights_N/adam.pth          optimiser, schedule, scaler, progress, output scales, the
                                    config and the extras' state -- for --resume; kept in the
                                    newest checkpoint only
    out/weights_N/train_config.json
    out/latest -> weights_N         (replaced atomically)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..core import checkpoints as ckpt
from ..core.object_motion import ObjectMotionNet
from .config import CONFIG_FILE
from .errors import TrainingError

__all__ = ['STATE_FILE', 'LATEST', 'checkpoint_dir_name', 'find_checkpoint', 'ResumeSource',
           'output_heads', 'load_output_heads',
           'write_checkpoint']

STATE_FILE = 'adam.pth'          # monodepth2 keeps its optimiser state under this name
LATEST = 'latest'


def checkpoint_dir_name(epoch: int) -> str:
    return f'weights_{epoch}'


def _is_checkpoint(d: Path) -> bool:
    """monodepth2 layout (encoder.pth) or the project's PackNet layout (depth.pth, no encoder)."""
    return (d / ckpt.ENCODER_FILE).is_file() or (d / ckpt.DEPTH_FILE).is_file()


def find_checkpoint(path) -> Path:
    """A checkpoint directory from ``path``: itself when it holds encoder.pth (or, PackNet,
    depth.pth), else its ``latest`` link, else its newest weights_N."""
    p = Path(path)
    if _is_checkpoint(p):
        return p
    if _is_checkpoint(p / LATEST):
        return (p / LATEST).resolve()
    numbered = sorted((int(d.name.split('_', 1)[1]), d) for d in p.glob('weights_*')
                      if d.is_dir() and d.name.split('_', 1)[1].isdigit() and _is_checkpoint(d))
    if numbered:
        return numbered[-1][1]
    raise TrainingError(f'no checkpoint in {p} (no encoder.pth/depth.pth, no {LATEST} link, '
                        'no weights_N)')


class ResumeSource:
    """The checkpoint a run resumes from: its directory and its adam.pth, read once (it is
    twice the networks' size) and dropped once the optimiser state is restored."""

    def __init__(self, path):
        self.directory = find_checkpoint(path)
        self._state = None

    def value(self, key, default):
        """A value of the saved adam.pth (``default`` when there is none or it is unreadable:
        :meth:`restore` reports that properly)."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return default
        if self._state is None:
            try:
                self._state = torch.load(path, map_location='cpu', weights_only=True)
            except Exception:  # noqa: BLE001 - reported properly by restore
                return default
        return self._state.get(key, default)

    def saved(self) -> dict:
        """The saved adam.pth as a dict ({} when there is none or it is unreadable)."""
        self.value('config', None)
        return self._state or {}

    def restore(self, optimizer, scheduler, scaler, amp: bool) -> dict:
        """Load the optimiser, schedule and scaler states -> the whole saved state."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            raise TrainingError(f'cannot resume from {self.directory}: no {STATE_FILE} (optimiser '
                                'state); to start from its weights with a fresh optimiser use --init')
        try:
            state = self._state or torch.load(path, map_location='cpu', weights_only=True)
            self._state = None
            optimizer.load_state_dict(state['optimizer'])
            scheduler.load_state_dict(state['scheduler'])
            if state.get('scaler') and amp:
                scaler.load_state_dict(state['scaler'])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise TrainingError(f'cannot resume from {path}: {exc}') from exc
        return state


def write_checkpoint(out: Path, epoch: int, model, config, state: dict,
                     save_kwargs: dict | None = None) -> Path:
    """Write out/weights_<epoch>/ (the networks, ``state`` as adam.pth, train_config.json),
    point out/latest at it and prune the older ones -> the directory."""
    d = out / checkpoint_dir_name(epoch)
    model.save(d, height=config.height, width=config.width, **(save_kwargs or {}))
    tmp = d / f'.{STATE_FILE}.{os.getpid()}.tmp'
    torch.save(state, tmp)
    os.replace(tmp, d / STATE_FILE)
    config.save(d / CONFIG_FILE)
    link = out / LATEST
    tmp_link = out / f'.{LATEST}.{os.getpid()}.tmp'
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(d.name, tmp_link)
    os.replace(tmp_link, link)
    _prune(out, d, config.keep_checkpoints)
    return d


def _prune(out: Path, newest: Path, keep: int):
    """Optimiser state only in the newest checkpoint; at most ``keep`` weights_N (0 = all)."""
    dirs = sorted((int(p.name.split('_', 1)[1]), p) for p in out.glob('weights_*')
                  if p.is_dir() and p.name.split('_', 1)[1].isdigit())
    for _, p in dirs:
        if p != newest and (p / STATE_FILE).is_file():
            (p / STATE_FILE).unlink()
    if keep:
        for _, p in dirs[:-keep]:
            if p != newest:
                shutil.rmtree(p, ignore_errors=True)


def output_heads(model) -> dict:
    """The raw (unfolded) weights of the layers whose output scales a checkpoint folds in: the
    model's last pose convolution and each object-motion net's head. Folding multiplies and
    loading divides, which rounds; kept in adam.pth, they make a resume bit-exact."""
    last = model._last_pose_conv()
    heads = {'pose.weight': last.weight, 'pose.bias': last.bias}
    for name, net in model.extras.items():
        if isinstance(net, ObjectMotionNet):
            heads[f'{name}.weight'], heads[f'{name}.bias'] = net.head.weight, net.head.bias
    return {k: v.detach().cpu().clone() for k, v in heads.items()}


def load_output_heads(model, heads: dict):
    """Put back what :func:`output_heads` returned (same shapes; missing entries skipped)."""
    targets = {'pose': model._last_pose_conv()}
    targets.update({n: net.head for n, net in model.extras.items() if isinstance(net, ObjectMotionNet)})
    with torch.no_grad():
        for key, value in heads.items():
            name, _, attr = key.rpartition('.')
            layer = targets.get(name)
            if layer is not None and getattr(layer, attr).shape == value.shape:
                getattr(layer, attr).copy_(value)
