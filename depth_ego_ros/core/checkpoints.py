"""Read and write checkpoints in monodepth2's layout.

A checkpoint is a directory with one ``torch.save``'d state dict per network::

    encoder.pth        depth encoder (ResnetEncoder, 1 image) + 'height', 'width', 'use_stereo'
    depth.pth          DepthDecoder
    pose_encoder.pth   pose encoder (ResnetEncoder, 2 stacked images)      [optional]
    pose.pth           PoseDecoder                                          [optional]

This is exactly what monodepth2's trainer writes (``models/weights_N/``) and what its released
models contain, so those directories load unchanged. Files are read with
``torch.load(weights_only=True)`` (no pickled code runs) onto the CPU.

Every problem raises :class:`CheckpointError` (a ``ValueError``) naming the file and listing the
missing keys, unexpected keys and shape mismatches. Extra non-tensor entries (the
``height``/``width``/``use_stereo`` metadata of encoder.pth) are ignored when loading into a net.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .state_dicts import (CheckpointError, detect_num_layers, listing, load_into,  # noqa: F401
                          read_state_dict, state_dict_mismatches)

__all__ = [
    'CheckpointError', 'ENCODER_FILE', 'DEPTH_FILE', 'POSE_ENCODER_FILE', 'POSE_FILE',
    'read_state_dict', 'load_into', 'save_monodepth2', 'load_monodepth2', 'read_encoder_meta',
    'detect_num_layers', 'has_pose', 'state_dict_digest', 'INTRINSICS_FILE', 'save_packnet_depth',
    'save_posexp', 'save_intrinsics_head', 'load_intrinsics_head', 'read_checkpoint_meta',
    'network_options', 'packnet_model_name', 'state_dict_mismatches', 'listing',
    'MODEL_INFO_FILE', 'read_model_info', 'published_scale_factor',
]

ENCODER_FILE = 'encoder.pth'
DEPTH_FILE = 'depth.pth'
POSE_ENCODER_FILE = 'pose_encoder.pth'
POSE_FILE = 'pose.pth'
META_KEYS = ('height', 'width', 'use_stereo')
#: optional JSON beside the weights describing where they came from (written by the model zoo,
#: depth_ego_ros.zoo): name, url, checksum, licence and ``stereo_scale_factor``
MODEL_INFO_FILE = 'model_info.json'


def read_model_info(checkpoint: str | os.PathLike | None) -> dict:
    """``checkpoint/model_info.json`` as a dict ({} when there is none or it is unreadable)."""
    if checkpoint is None:
        return {}
    p = Path(checkpoint) / MODEL_INFO_FILE
    try:
        import json
        data = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def published_scale_factor(checkpoint: str | os.PathLike | None) -> float:
    """The factor that makes the checkpoint's depth metric as its authors publish it (5.4 for
    monodepth2's stereo and mono+stereo models, recorded in model_info.json by the model zoo);
    1.0 when none is recorded."""
    v = read_model_info(checkpoint).get('stereo_scale_factor')
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 1.0
    return v if v > 0 and v == v and v != float('inf') else 1.0


def read_encoder_meta(directory: str | os.PathLike) -> dict:
    """``{'height', 'width', 'use_stereo', 'num_layers'}`` stored in ``directory/encoder.pth``
    (values None where absent). For the project's PackNet checkpoints (a directory without
    encoder.pth whose depth.pth names a PackNet model, or a PackNet-SfM ``.ckpt`` file) the
    resolution comes from depth.pth (None for .ckpt) and num_layers is None: use
    :func:`read_checkpoint_meta` for the model name."""
    d = Path(directory)
    if d.is_file() or (d.is_dir() and not (d / ENCODER_FILE).is_file() and (d / DEPTH_FILE).is_file()):
        m = read_checkpoint_meta(d)
        return {'height': m['height'], 'width': m['width'], 'use_stereo': None, 'num_layers': None}
    data = read_state_dict(d / ENCODER_FILE)
    meta = {k: data.get(k) for k in META_KEYS}
    for k in ('height', 'width'):
        if meta[k] is not None:
            meta[k] = int(meta[k])
    meta['num_layers'] = detect_num_layers(data)
    return meta


def has_pose(directory: str | os.PathLike) -> bool:
    """True when the checkpoint directory holds both pose files."""
    d = Path(directory)
    return (d / POSE_ENCODER_FILE).is_file() and (d / POSE_FILE).is_file()


def _atomic_save(obj, path: Path):
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_monodepth2(directory: str | os.PathLike, encoder: nn.Module, depth_decoder: nn.Module,
                    pose_encoder: nn.Module | None = None, pose_decoder: nn.Module | None = None,
                    *, height: int, width: int, use_stereo: bool = False) -> Path:
    """Write the nets in monodepth2's layout into ``directory`` (created if needed).

    ``height``/``width`` are the training resolution stored in encoder.pth (monodepth2's
    test_simple.py resizes inputs to them). Returns the directory.
    """
    if (pose_encoder is None) != (pose_decoder is None):
        raise ValueError('give both pose_encoder and pose_decoder, or neither')
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    enc = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    enc.update(height=int(height), width=int(width), use_stereo=bool(use_stereo))
    _atomic_save(enc, d / ENCODER_FILE)
    _atomic_save({k: v.detach().cpu() for k, v in depth_decoder.state_dict().items()}, d / DEPTH_FILE)
    if pose_encoder is not None:
        _atomic_save({k: v.detach().cpu() for k, v in pose_encoder.state_dict().items()},
                     d / POSE_ENCODER_FILE)
        _atomic_save({k: v.detach().cpu() for k, v in pose_decoder.state_dict().items()},
                     d / POSE_FILE)
    return d


def load_monodepth2(directory: str | os.PathLike, encoder: nn.Module, depth_decoder: nn.Module,
                    pose_encoder: nn.Module | None = None,
                    pose_decoder: nn.Module | None = None) -> dict:
    """Load a monodepth2 checkpoint directory into the given nets.

    The pose nets are loaded when given; their files must then exist (check :func:`has_pose`
    first for depth-only checkpoints such as monodepth2's stereo-only models). Returns
    encoder.pth's metadata ``{'height', 'width', 'use_stereo'}``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f'{d}: checkpoint directory not found')
    extras = load_into(encoder, d / ENCODER_FILE)
    load_into(depth_decoder, d / DEPTH_FILE)
    if (pose_encoder is None) != (pose_decoder is None):
        raise ValueError('give both pose_encoder and pose_decoder, or neither')
    if pose_encoder is not None:
        load_into(pose_encoder, d / POSE_ENCODER_FILE)
        load_into(pose_decoder, d / POSE_FILE)
    return {k: extras.get(k) for k in META_KEYS}


def state_dict_digest(*modules: nn.Module) -> str:
    """Short content hash of the modules' parameters and buffers (for export caches)."""
    import hashlib
    h = hashlib.blake2b(digest_size=12)
    for m in modules:
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(str(v.dtype).encode())
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# the Estimator's other methods (PackNet01 depth, PoseExpNet pose, learned intrinsics)
# ----------------------------------------------------------------------------------------------
#: intrinsics head weights, beside pose.pth (optional)
INTRINSICS_FILE = 'intrinsics.pth'
#: metadata key naming the architecture in depth.pth / pose.pth / intrinsics.pth. The ResNet
#: (monodepth2) files never carry it, so monodepth2 directories stay exactly monodepth2's.
MODEL_KEY = 'model'


def _tensors(module: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_packnet_depth(directory: str | os.PathLike, net: nn.Module, *, model: str,
                       height: int, width: int) -> Path:
    """Write a PackNet01 depth network as ``directory/depth.pth``: its state dict plus
    ``model`` (e.g. 'packnet01-w0.25'), ``height``/``width`` (training resolution) and the
    constructor arguments ``packnet_version``, ``packnet_d``, ``packnet_min_depth``.
    There is no encoder.pth in such a directory (PackNet01 is one network)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _tensors(net)
    data.update({MODEL_KEY: str(model), 'height': int(height), 'width': int(width),
                 'packnet_version': str(net.version), 'packnet_d': int(net.d),
                 'packnet_min_depth': float(net.min_depth)})
    _atomic_save(data, d / DEPTH_FILE)
    return d


def save_posexp(directory: str | os.PathLike, net: nn.Module) -> Path:
    """Write a PoseExpNet as ``directory/pose.pth`` (state dict + ``model='posexp'``,
    ``num_sources``, ``output_exp``); no pose_encoder.pth."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _tensors(net)
    data.update({MODEL_KEY: 'posexp', 'num_sources': int(net.num_sources),
                 'output_exp': bool(net.output_exp)})
    _atomic_save(data, d / POSE_FILE)
    return d


def save_intrinsics_head(directory: str | os.PathLike, head: nn.Module,
                         running: dict | None = None) -> Path:
    """Write an IntrinsicsHead as ``directory/intrinsics.pth`` (state dict + ``in_channels``
    and, optionally, a RunningIntrinsics state under ``running_*`` keys)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _tensors(head)
    data.update({MODEL_KEY: 'intrinsics_head', 'in_channels': int(head.in_channels)})
    if running and running.get('value') is not None:
        data['running_value'] = [float(v) for v in running['value']]
        data['running_count'] = int(running.get('count', 0))
    _atomic_save(data, d / INTRINSICS_FILE)
    return d


def load_intrinsics_head(head: nn.Module, path: str | os.PathLike) -> dict:
    """Load ``intrinsics.pth`` into ``head`` after checking it was trained on a bottleneck of
    the same width (``in_channels``); returns the file's non-tensor entries (``running_value``
    ...)."""
    path = Path(path)
    data = read_state_dict(path)
    channels = int(head.in_channels)
    if int(data.get('in_channels', channels)) != channels:
        raise CheckpointError(f'{path}: intrinsics head for a {data.get("in_channels")}'
                              f'-channel bottleneck, the pose network has {channels}')
    return load_into(head, path, data)


def _meta_of(path: Path) -> dict:
    data = read_state_dict(path)
    return {k: v for k, v in data.items() if not torch.is_tensor(v)}


def network_options(checkpoint: str | os.PathLike | None, model: str | None = None,
                    pose_model: str | None = None, learned_intrinsics: bool | None = None,
                    width: int | None = None, height: int | None = None) -> tuple[dict, dict]:
    """The networks to build for ``checkpoint``: each option given wins, the others come from
    what the checkpoint holds (:func:`read_checkpoint_meta`), None where neither says (the
    caller's defaults apply). Returns ``(options, meta)``; ``meta`` is {} without a checkpoint.
    CheckpointError when the checkpoint is unreadable."""
    meta = read_checkpoint_meta(checkpoint) if checkpoint else {}
    if learned_intrinsics is None:
        learned_intrinsics = bool(meta.get('learned_intrinsics'))
    options = dict(model=model or meta.get('model'), pose_model=pose_model or meta.get('pose_model'),
                   learned_intrinsics=bool(learned_intrinsics),
                   width=width or meta.get('width'), height=height or meta.get('height'))
    return options, meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """What a checkpoint holds, for choosing the Estimator's configuration.

    ``path``: a checkpoint directory (monodepth2 layout, or the project's PackNet/PoseExpNet
    files) or a PackNet-SfM ``.ckpt`` file. Returns ``{'model', 'pose_model', 'height',
    'width', 'learned_intrinsics', 'kind'}`` (values None where unknown); kind is
    'monodepth2', 'packnet_dir' or 'packnet_ckpt'. CheckpointError when it is none of these.
    """
    p = Path(path)
    meta = {'model': None, 'pose_model': None, 'height': None, 'width': None,
            'learned_intrinsics': False, 'kind': None}
    if p.is_file():
        from .packnet_checkpoint import infer_packnet_args, read_packnet_ckpt, extract_depth_state_dict
        data = read_packnet_ckpt(p)
        try:
            sd, _, _ = extract_depth_state_dict(data['state_dict'])
        except CheckpointError as exc:
            raise CheckpointError(f'{p}: {exc}') from None
        w = infer_packnet_args(sd, data['config']).get('width', 1.0)
        meta.update(model=packnet_model_name(w), kind='packnet_ckpt')
        return meta
    if not p.is_dir():
        raise CheckpointError(f'{p}: checkpoint directory (or .ckpt file) not found')
    if (p / ENCODER_FILE).is_file():
        enc = read_encoder_meta(p)
        meta.update(height=enc['height'], width=enc['width'], kind='monodepth2',
                    model=f'resnet{enc["num_layers"]}' if enc['num_layers'] else None)
    elif (p / DEPTH_FILE).is_file():
        m = _meta_of(p / DEPTH_FILE)
        if not str(m.get(MODEL_KEY, '')).startswith('packnet01'):
            raise CheckpointError(f'{p}: {ENCODER_FILE} missing and {DEPTH_FILE} names no '
                                  f'PackNet model (key {MODEL_KEY!r}: {m.get(MODEL_KEY)!r})')
        meta.update(model=m[MODEL_KEY], height=m.get('height'), width=m.get('width'),
                    kind='packnet_dir')
    else:
        raise CheckpointError(f'{p}: neither {ENCODER_FILE} nor {DEPTH_FILE} found')
    if (p / POSE_FILE).is_file():
        pm = _meta_of(p / POSE_FILE)
        if pm.get(MODEL_KEY) == 'posexp':
            meta['pose_model'] = 'posexp'
        elif (p / POSE_ENCODER_FILE).is_file():
            meta['pose_model'] = 'monodepth2'
    meta['learned_intrinsics'] = (p / INTRINSICS_FILE).is_file()
    return meta


def packnet_model_name(width: float) -> str:
    """Estimator model name of a PackNet01 channel width (1.0 -> 'packnet01')."""
    w = float(width)
    return 'packnet01' if w == 1.0 else f'packnet01-w{w:g}'
