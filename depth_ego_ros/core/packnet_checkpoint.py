"""Load (and write) PackNet-SfM checkpoints for :class:`~.networks.packnet.PackNet01`.

A released PackNet-SfM model is one ``.ckpt`` file saved with ``torch.save`` holding a dict with

* ``state_dict``: the whole model's parameters; the depth network's keys start with
  ``model.depth_net.`` (older ``.pth.tar`` files: ``disp_network.`` and residual shortcuts named
  ``conv3.0.*``), the pose network's with ``model.pose_net.``;
* ``config``: the training configuration (a yacs ``CfgNode``, i.e. a nested dict) whose
  ``model.depth_net.name`` is ``'PackNet01'`` and ``model.depth_net.version`` e.g. ``'1A'``;
* bookkeeping such as ``epoch`` (and optimiser state in training snapshots).

Key map: the depth-network prefix is stripped and ``conv3.0.`` becomes ``conv3.``; the remaining
names are those of :class:`PackNet01` unchanged. Everything outside the depth network (pose
network, optimiser, ...) is ignored and reported in the returned info.

Safe reading: the file is first read with ``torch.load(weights_only=True)``. Released files also
pickle the yacs config object, which that loader refuses; they are then read with a *restricted
unpickler*: torch's own weights-only allow-list (tensor rebuild functions, OrderedDict, dtypes,
...) is honoured and every other global the file names is replaced by an inert placeholder
(a plain dict/record that only stores what the pickle gives it). No function or class named by
the file is ever imported or called, so no code from the file runs; the config comes back as
plain nested dicts. yacs does not need to be installed.

Errors raise :class:`~.state_dicts.CheckpointError` (a ``ValueError``) naming the file and listing
the missing keys, unexpected keys and shape mismatches, with a hint where the width or version
differs.
"""
from __future__ import annotations

import os
import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .state_dicts import CheckpointError, listing, state_dict_mismatches
from .networks.packnet import PackNet01

__all__ = ['read_packnet_ckpt', 'extract_depth_state_dict', 'infer_packnet_args',
           'load_packnet_checkpoint', 'save_packnet_checkpoint', 'DEPTH_PREFIXES']

#: prefixes of the depth network's keys, tried in this order
DEPTH_PREFIXES = ('model.depth_net.', 'depth_net.', 'model.disp_network.', 'disp_network.')


# ----------------------------------------------------------------------------------------------
# restricted unpickling
# ----------------------------------------------------------------------------------------------
class _Placeholder(dict):
    """Inert stand-in for a class or function a checkpoint names but we do not trust.

    Created by NEWOBJ/REDUCE with whatever arguments the pickle gives; dict items (a pickled
    dict subclass such as yacs' CfgNode) land in the dict, BUILD state in ``_state``."""
    _pickle_name = '?'

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._args = args

    def __setstate__(self, state):
        self._state = state


def _placeholder_class(full_name: str):
    return type('Placeholder', (_Placeholder,), {'_pickle_name': full_name})


#: plain data types a pickle may construct (never functions such as eval/getattr/exec)
_SAFE_BUILTINS = {t.__name__: t for t in (set, frozenset, list, dict, tuple, bytearray, bytes, int,
                                          float, complex, str, bool, slice, range)}


def _allowed_globals() -> dict:
    """torch's weights-only allow-list (tensor rebuild functions, dtypes, OrderedDict, ...)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        return dict(_get_allowed_globals())
    except Exception:  # private API moved: the minimum needed for state dicts
        import collections
        import torch._utils as tu
        return {'collections.OrderedDict': collections.OrderedDict,
                'torch._utils._rebuild_tensor_v2': tu._rebuild_tensor_v2,
                'torch._utils._rebuild_parameter': tu._rebuild_parameter}


def _restricted_pickle_module():
    """A ``pickle``-like module for ``torch.load(pickle_module=...)`` whose unpickler only
    resolves allow-listed globals and turns every other one into an inert placeholder class."""
    allowed = _allowed_globals()
    placeholders: dict = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            full = f'{module}.{name}'
            if full in allowed:
                return allowed[full]
            if module == 'builtins' and name in _SAFE_BUILTINS:
                return _SAFE_BUILTINS[name]
            if full not in placeholders:
                placeholders[full] = _placeholder_class(full)
            return placeholders[full]

    def load(file, **kwargs):   # legacy (non-zip) files unpickle their headers with this
        return RestrictedUnpickler(file, **kwargs).load()

    mod = types.ModuleType('depth_ego_restricted_pickle')
    mod.Unpickler = RestrictedUnpickler
    mod.load = load
    return mod


def _plain(obj, depth: int = 0):
    """Placeholders / mappings / sequences -> plain Python containers (for the config)."""
    if depth > 50:
        return None
    if isinstance(obj, _Placeholder) and not len(obj):
        return f'<{obj._pickle_name}>'          # an object we did not rebuild (e.g. numpy data)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(map(repr, obj))
    if torch.is_tensor(obj):
        return obj.tolist() if obj.numel() <= 16 else f'<tensor {tuple(obj.shape)}>'
    return obj


def read_packnet_ckpt(path: str | os.PathLike) -> dict:
    """Read a PackNet-SfM ``.ckpt`` safely (see the module docstring) onto the CPU.

    Returns the file's top-level dict with ``config`` turned into plain nested dicts (None when
    absent) and ``state_dict`` a dict of tensors. A bare state dict (a mapping of names to
    tensors) is accepted too and returned as ``{'state_dict': ..., 'config': None}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint file not found')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
        restricted = False
    except pickle.UnpicklingError:
        restricted = True
    except Exception as exc:
        raise CheckpointError(f'{path}: cannot be read as a torch file ({type(exc).__name__}: '
                              f'{_first_line(exc)})') from exc
    if restricted:
        try:
            data = torch.load(path, map_location='cpu', weights_only=False,
                              pickle_module=_restricted_pickle_module())
        except Exception as exc:
            raise CheckpointError(f'{path}: cannot be read as a torch file ({type(exc).__name__}: '
                                  f'{_first_line(exc)})') from exc
    if not isinstance(data, Mapping):
        raise CheckpointError(f'{path}: expected a dict with a state_dict, got {type(data).__name__}')
    data = dict(data)
    if 'state_dict' not in data:
        if data and all(torch.is_tensor(v) for v in data.values()):
            data = {'state_dict': data}
        else:
            raise CheckpointError(f'{path}: no "state_dict" entry (keys: {listing(map(str, data))})')
    sd = data['state_dict']
    if not isinstance(sd, Mapping):
        raise CheckpointError(f'{path}: "state_dict" is a {type(sd).__name__}, not a mapping')
    data['state_dict'] = {str(k): v for k, v in sd.items() if torch.is_tensor(v)}
    cfg = data.get('config')
    data['config'] = _plain(cfg) if cfg is not None else None
    return data


def _first_line(exc) -> str:
    s = str(exc)
    return s.splitlines()[0] if s else ''


# ----------------------------------------------------------------------------------------------
# key map
# ----------------------------------------------------------------------------------------------
def extract_depth_state_dict(state_dict: Mapping) -> tuple[dict, str, list]:
    """Depth-network entries of a whole-model state dict, renamed to PackNet01's names.

    Returns ``(depth_state_dict, prefix_used, ignored_keys)``. A state dict whose keys already are
    PackNet01 names (no prefix) is returned unchanged with prefix ''."""
    keys = list(state_dict)
    prefix = next((p for p in DEPTH_PREFIXES if any(k.startswith(p) for k in keys)), None)
    if prefix is None:
        if any(k.startswith('pre_calc.') for k in keys):
            prefix = ''
        else:
            raise CheckpointError('no depth-network keys found (expected keys starting with one of '
                                  f'{", ".join(DEPTH_PREFIXES)}); first keys: {listing(keys)}')
    out, ignored = {}, []
    for k in keys:
        if not k.startswith(prefix):
            ignored.append(k)
            continue
        name = k[len(prefix):]
        name = re.sub(r'\.conv3\.0\.(weight|bias)$', r'.conv3.\1', name)
        out[name] = state_dict[k]
    return out, prefix, ignored


def _get(cfg, *path):
    for p in path:
        if not isinstance(cfg, Mapping) or p not in cfg:
            return None
        cfg = cfg[p]
    return cfg


def infer_packnet_args(depth_sd: Mapping, config: Mapping | None = None) -> dict:
    """PackNet01 constructor arguments (version, width, d) for a depth state dict.

    Width from ``pre_calc.conv_base.weight`` (64 x width output channels), d from
    ``pack1.conv3d.weight``, version from the config (``model.depth_net.version``) or else from
    ``iconv5``'s input channels (A: concatenation n5+n4, B: addition n5/2)."""
    args = {}
    w = depth_sd.get('pre_calc.conv_base.weight')
    if torch.is_tensor(w) and w.dim() == 4:
        args['width'] = w.shape[0] / 64.0
    c3 = depth_sd.get('pack1.conv3d.weight')
    if torch.is_tensor(c3) and c3.dim() == 5:
        args['d'] = int(c3.shape[0])
    md = _get(config, 'model', 'depth_net', 'min_depth')
    if isinstance(md, (int, float)) and md > 0:
        args['min_depth'] = float(md)
    version = _get(config, 'model', 'depth_net', 'version')
    if isinstance(version, str) and version:
        args['version'] = version
    else:
        i5 = depth_sd.get('iconv5.conv_base.weight')
        if torch.is_tensor(i5) and 'width' in args:
            n5 = 512 * args['width']
            args['version'] = 'A' if i5.shape[1] == n5 + 256 * args['width'] else 'B'
    return args


# ----------------------------------------------------------------------------------------------
# load / save
# ----------------------------------------------------------------------------------------------
def load_packnet_checkpoint(path: str | os.PathLike, net: PackNet01 | None = None) -> tuple[PackNet01, dict]:
    """Load a PackNet-SfM ``.ckpt`` (released layout) into ``net`` (built to fit when None).

    Returns ``(net, info)`` with info = {'config' (plain dict or None), 'prefix', 'ignored_keys',
    'args' (constructor arguments inferred), 'epoch'}. The net is returned in eval mode.
    Raises CheckpointError when the file is unreadable, holds another depth network, or its
    depth state dict does not fit exactly (all missing / unexpected / mismatched keys listed).
    """
    path = Path(path)
    data = read_packnet_ckpt(path)
    cfg = data['config']
    name = _get(cfg, 'model', 'depth_net', 'name')
    if isinstance(name, str) and name and name != 'PackNet01':
        raise CheckpointError(f"{path}: the checkpoint's depth network is {name!r}; only "
                              "'PackNet01' is supported here")
    try:
        depth_sd, prefix, ignored = extract_depth_state_dict(data['state_dict'])
    except CheckpointError as exc:
        raise CheckpointError(f'{path}: {exc}') from None
    args = infer_packnet_args(depth_sd, cfg)
    if net is None:
        try:
            net = PackNet01(version=args.get('version', 'A'), width=args.get('width', 1.0),
                            d=args.get('d', 8), min_depth=args.get('min_depth', 0.5))
        except ValueError as exc:
            raise CheckpointError(f'{path}: cannot build a PackNet01 for this state dict ({exc})') from None
    _load_exact(net, depth_sd, path, prefix, args)
    info = {'config': cfg, 'prefix': prefix, 'ignored_keys': ignored, 'args': args,
            'epoch': data.get('epoch')}
    return net.eval(), info


def _load_exact(net: nn.Module, sd: Mapping, path: Path, prefix: str, args: dict):
    mismatches = state_dict_mismatches(net.state_dict(), sd, prefix)
    if mismatches:
        parts = [f'{path}: depth state dict (prefix {prefix!r}) does not fit '
                 f'PackNet01(version={getattr(net, "version", "?")!r}, width={getattr(net, "width", "?")})',
                 *mismatches]
        want = {k: args[k] for k in ('version', 'width', 'd') if k in args}
        have = {'version': getattr(net, 'version', None), 'width': getattr(net, 'width', None),
                'd': getattr(net, 'd', None)}
        diff = {k: v for k, v in want.items()
                if have.get(k) is not None and str(v).upper().lstrip('1') != str(have[k]).upper().lstrip('1')}
        if diff:
            parts.append('the checkpoint looks like PackNet01(' +
                         ', '.join(f'{k}={v!r}' for k, v in want.items()) + ')')
        raise CheckpointError('; '.join(parts))
    with torch.no_grad():
        net.load_state_dict(dict(sd), strict=True)


def save_packnet_checkpoint(net: PackNet01, path: str | os.PathLike, config: Mapping | None = None,
                            extra_state: Mapping | None = None, epoch: int | None = None) -> Path:
    """Write ``net`` in the released PackNet-SfM layout: ``{'state_dict': {'model.depth_net.<k>':
    tensor}, 'config': {'model': {'depth_net': {'name': 'PackNet01', 'version': '1A', ...}}},
    'epoch': epoch}``. ``extra_state`` (e.g. a pose network's state dict already prefixed
    ``model.pose_net.``) is merged into ``state_dict``. The file is written atomically and loads
    with ``torch.load(weights_only=True)`` (the config is plain dicts)."""
    path = Path(path)
    sd = {f'model.depth_net.{k}': v.detach().cpu() for k, v in net.state_dict().items()}
    for k, v in (extra_state or {}).items():
        sd[str(k)] = v.detach().cpu() if torch.is_tensor(v) else v
    cfg = {'model': {'name': 'SelfSupModel', 'depth_net': {
        'name': 'PackNet01', 'version': '1' + net.version, 'dropout': None,
        'width': net.width, 'd': net.d, 'min_depth': net.min_depth}}}
    if config:
        _deep_update(cfg, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save({'config': cfg, 'epoch': epoch, 'state_dict': sd}, tmp)
    os.replace(tmp, path)
    return path


def _deep_update(dst: dict, src: Mapping):
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v
