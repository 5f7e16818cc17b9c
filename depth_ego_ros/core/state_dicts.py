"""One state-dict file: read it safely, check it fits a network, say exactly what differs.

The shared ground of every checkpoint format of the project: the monodepth2 layout and the
project's own files (:mod:`.checkpoints`), PackNet-SfM ``.ckpt`` files (:mod:`.packnet_checkpoint`)
and the object-motion files (:mod:`.object_motion`) all read through here. Files are read with
``torch.load(weights_only=True)`` (no pickled code runs) onto the CPU; every problem raises
:class:`CheckpointError` (a ``ValueError``) naming the file and listing the missing keys,
unexpected keys and shape mismatches (all of them, not just the first).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

__all__ = ['CheckpointError', 'listing', 'state_dict_mismatches', 'read_state_dict', 'load_into',
           'detect_num_layers']

# keys a checkpoint may lack without harm: the ResNet classification head is never run, and
# BatchNorm's step counter is absent from very old torch versions' files.
_OPTIONAL_SUFFIXES = ('num_batches_tracked',)
_OPTIONAL_PREFIXES = ('encoder.fc.',)

_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


def listing(items) -> str:
    """``a, b, c, ... (N more)``: the first names of a long list for an error message."""
    items = list(items)
    shown = ', '.join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f', ... ({more} more)' if more > 0 else '')


def state_dict_mismatches(own: Mapping, tensors: Mapping, prefix: str = '',
                          required=lambda key: True) -> list[str]:
    """How the tensors of a checkpoint differ from a network's own state dict, as message parts
    (missing keys, unexpected keys, shape mismatches, every one of them); empty when it fits.
    ``prefix`` is put back in front of the names shown (the checkpoint's own spelling);
    ``required(key)`` says whether a key the checkpoint lacks counts as missing."""
    missing = [prefix + k for k in own if k not in tensors and required(k)]
    unexpected = [prefix + k for k in tensors if k not in own]
    mismatched = [f'{prefix}{k}: checkpoint {tuple(tensors[k].shape)} vs network {tuple(own[k].shape)}'
                  for k in tensors if k in own and tuple(tensors[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f'missing keys ({len(missing)}): {listing(missing)}')
    if unexpected:
        parts.append(f'unexpected keys ({len(unexpected)}): {listing(unexpected)}')
    if mismatched:
        parts.append(f'shape mismatches ({len(mismatched)}): {listing(mismatched)}')
    return parts


def read_state_dict(path: str | os.PathLike) -> dict:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint file not found')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # unpickling error, truncated file, not a torch file ...
        raise CheckpointError(f'{path}: cannot be read as a weights-only torch file '
                              f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""})') from exc
    if not isinstance(data, Mapping):
        raise CheckpointError(f'{path}: expected a state dict (mapping of names to tensors), '
                              f'got {type(data).__name__}')
    return dict(data)


def load_into(module: nn.Module, path: str | os.PathLike,
              state_dict: Mapping | None = None) -> dict:
    """Load the state dict in ``path`` into ``module`` after checking it fits exactly.

    Non-tensor entries (e.g. encoder.pth's height/width/use_stereo) are ignored and returned.
    Raises CheckpointError naming ``path`` with the missing keys, unexpected keys and
    mismatched shapes (all of them, not just the first).
    """
    path = Path(path)
    data = read_state_dict(path) if state_dict is None else dict(state_dict)
    tensors = {k: v for k, v in data.items() if torch.is_tensor(v)}
    extras = {k: v for k, v in data.items() if not torch.is_tensor(v)}
    own = module.state_dict()

    mismatches = state_dict_mismatches(
        own, tensors, required=lambda k: not (k.endswith(_OPTIONAL_SUFFIXES)
                                              or k.startswith(_OPTIONAL_PREFIXES)))
    if mismatches:
        parts = [f'{path}: state dict does not fit {type(module).__name__}'
                 f'{_describe(module)}', *mismatches]
        hint = _hint(tensors, module)
        if hint:
            parts.append(hint)
        raise CheckpointError('; '.join(parts))

    with torch.no_grad():
        # strict=False only lets the optional keys above be absent; everything else was checked
        module.load_state_dict(tensors, strict=False)
    return extras


def _describe(module: nn.Module) -> str:
    n = getattr(module, 'num_layers', None)
    k = getattr(module, 'num_input_images', None)
    if n is None:
        return ''
    return f' (resnet{n}, {k} input image{"s" if k != 1 else ""})'


def _hint(tensors: Mapping, module: nn.Module) -> str:
    found = detect_num_layers(tensors)
    want = getattr(module, 'num_layers', None)
    if found is not None and want is not None and found != want:
        return f"the checkpoint holds a resnet{found} encoder: use model='resnet{found}'"
    w = tensors.get('encoder.conv1.weight')
    k = getattr(module, 'num_input_images', None)
    if w is not None and k is not None and w.dim() == 4 and w.shape[1] != 3 * k:
        return (f'the checkpoint encoder takes {w.shape[1] // 3} stacked image(s), '
                f'the network {k}')
    return ''


def detect_num_layers(state_dict: Mapping) -> int | None:
    """18 or 50 for a ResnetEncoder state dict (bottleneck blocks have a conv3), else None."""
    if 'encoder.layer1.0.conv1.weight' not in state_dict:
        return None
    if 'encoder.layer1.0.conv3.weight' in state_dict:
        return 50
    return 18
