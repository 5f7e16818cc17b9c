"""The networks as runtime graphs: the float32 I/O wrappers, the ONNX writer, the I/O names
every exported or cached model uses, the start-time ONNX cache, and the fixed check frames.

Shared by the backends (ONNX Runtime and OpenVINO export the nets at start) and by
:mod:`depth_ego_ros.core.export` (the ``depth-ego export`` directories), which sits above the
backends: it verifies what it writes with their runners.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ['ONNX_OPSET', 'INPUT_NAMES', 'OUTPUT_NAMES', 'POSE_OUTPUT_NAMES', 'ExportWrapperDepth',
           'ExportWrapperPose', 'pose_output_shapes', 'export_onnx', 'atomic_tmp', 'check_input',
           'cached_onnx']

ONNX_OPSET = 17
INPUT_NAMES = {'depth': ['image'], 'pose': ['pair']}
OUTPUT_NAMES = {'depth': ['disparity'], 'pose': ['axisangle', 'translation']}
#: every pose output a pose network may have, in this order: axisangle, translation [B,3];
#: intrinsics [B,4] = (fx/W, fy/H, principal-point offsets ox, oy) of a learned-intrinsics head;
#: explainability [B,1,H,W] (PoseExpNet's mask of the current frame)
POSE_OUTPUT_NAMES = ('axisangle', 'translation', 'intrinsics', 'explainability')



class ExportWrapperDepth(nn.Module):
    """DepthNet with float32 input/output; the network itself in ``dtype``."""

    def __init__(self, depth_net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        self.net = depth_net if dtype == torch.float32 else copy.deepcopy(depth_net).to(dtype)
        self.eval()     # exporters restore the wrapper's mode afterwards: never leave nets in train

    def forward(self, image):
        return self.net(image.to(self.dtype)).float()


class ExportWrapperPose(nn.Module):
    """PoseNet with float32 input/output.

    monodepth2's PoseNet (``encoder`` + ``decoder`` [+ ``intrinsics`` head]): the encoder in
    ``dtype``, the decoder and the intrinsics head in float32. Any other pose module (e.g. the
    Estimator's PoseExpNet adapter) runs whole in ``dtype`` with float32 outputs. Outputs are
    ``pose_net.output_names`` (default ``('axisangle', 'translation')``; optionally
    ``'intrinsics'`` [B,4] and ``'explainability'`` [B,1,H,W], see :data:`POSE_OUTPUT_NAMES`)."""

    def __init__(self, pose_net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        self.output_names = tuple(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose']))
        self.split = hasattr(pose_net, 'encoder') and hasattr(pose_net, 'decoder')
        if self.split:
            self.encoder = (pose_net.encoder if dtype == torch.float32
                            else copy.deepcopy(pose_net.encoder).to(dtype))
            self.decoder = pose_net.decoder
            self.intrinsics = getattr(pose_net, 'intrinsics', None)
        else:
            self.net = pose_net if dtype == torch.float32 else copy.deepcopy(pose_net).to(dtype)
        self.eval()

    def forward(self, pair):
        if not self.split:
            return tuple(o.float() for o in self.net(pair.to(self.dtype)))
        last = self.encoder(pair.to(self.dtype))[-1].float()
        axisangle, translation = self.decoder([[last]])
        outs = (axisangle[:, 0, 0], translation[:, 0, 0])
        if self.intrinsics is not None:
            outs = outs + (torch.cat(self.intrinsics.normalized(last), 1),)
        return outs


def pose_output_shapes(names, batch: int, height: int, width: int) -> list[tuple]:
    """``[(name, shape)]`` of a pose network's outputs for a batch of ``height x width`` pairs."""
    shapes = {'axisangle': (batch, 3), 'translation': (batch, 3), 'intrinsics': (batch, 4),
              'explainability': (batch, 1, height, width)}
    return [(n, shapes[n]) for n in names]


def atomic_tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f'.{path.name}.{os.getpid()}.tmp')


def export_onnx(net: nn.Module, example: torch.Tensor, path, input_name: str,
                output_names: list[str], opset: int = ONNX_OPSET) -> Path:
    """Export ``net`` (on the CPU) to ONNX at ``path`` with a dynamic batch axis; atomic write."""
    path = Path(path)
    tmp = atomic_tmp(path)
    net.eval()
    dyn = {input_name: {0: 'batch'}, **{o: {0: 'batch'} for o in output_names}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=int(opset),
                          input_names=[input_name], output_names=output_names,
                          dynamic_axes=dyn, do_constant_folding=True)
    os.replace(tmp, path)
    return path


def check_input(height: int, width: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A deterministic smooth test batch ``[batch+1,3,H,W]`` in [0,1] (consecutive frames of a
    moving pattern: frames i, i+1 make the pose pairs)."""
    rng = np.random.default_rng(seed)
    base = rng.random((3, height // 8 + 2, width // 8 + batch + 2))
    big = np.kron(base, np.ones((1, 8, 8)))
    frames = [big[:, :height, 8 * i // 2: 8 * i // 2 + width] for i in range(batch + 1)]
    return torch.from_numpy(np.stack(frames)).float()




def cached_onnx(depth_net, pose_net, width: int, height: int, model: str, cache_dir=None):
    """Export the nets (float32, CPU) to ONNX in ``cache_dir`` (default
    :func:`~.base.default_cache_dir`) once per weights / resolution / opset / torch version.
    Returns ``(depth_path, pose_path or None, depth_net, pose_net)`` (the float32 CPU nets)."""
    from ..checkpoints import state_dict_digest
    from .base import default_cache_dir
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    tag = f'{model}_{width}x{height}_op{ONNX_OPSET}_torch{torch.__version__.split("+")[0]}'
    depth_net = depth_net.float().cpu().eval()
    depth_path = cache / f'depth_{tag}_{state_dict_digest(depth_net)}.onnx'
    if not depth_path.is_file():
        log.info('exporting the depth net to %s', depth_path)
        export_onnx(ExportWrapperDepth(depth_net), torch.zeros(1, 3, height, width), depth_path,
                    INPUT_NAMES['depth'][0], OUTPUT_NAMES['depth'])
    pose_path = None
    if pose_net is not None:
        pose_net = pose_net.float().cpu().eval()
        pose_path = cache / f'pose_{tag}_{state_dict_digest(pose_net)}.onnx'
        if not pose_path.is_file():
            log.info('exporting the pose net to %s', pose_path)
            export_onnx(ExportWrapperPose(pose_net), torch.zeros(1, 6, height, width),
                        pose_path, INPUT_NAMES['pose'][0],
                        list(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose'])))
    return depth_path, pose_path, depth_net, pose_net
