"""The runner interface every backend implements, and device / precision helpers.

A runner runs the depth and pose networks on torch tensors on its device:

* ``depth(image [B,3,H,W] float32 in [0,1]) -> disparity [B,1,H,W] float32`` (sigmoid output)
* ``pose(pair [B,6,H,W] = [previous, current]) -> (axisangle [B,3], translation [B,3], ...)``
  float32: monodepth2's first prediction (``T_curr_prev``), or for the PoseExpNet adapter
  ``T_prev_curr``; then the optional outputs the pose module lists in ``output_names``
  (``intrinsics`` [B,4], ``explainability`` [B,1,H,W]; see graph_io.POSE_OUTPUT_NAMES)
* ``has_pose``, ``describe()`` (one line: backend, device, precision, providers), ``info`` (dict)

so the Estimator's pre/post-processing, batching and scale logic do not depend on the backend.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ['Runner', 'BACKENDS', 'PRECISIONS', 'FORMAT_BACKEND', 'resolve_device', 'amp_dtype',
           'default_cache_dir']

BACKENDS = ('auto', 'torch', 'torchscript', 'onnxruntime', 'openvino', 'tensorrt')
#: int8 is the OpenVINO backend's (NNCF post-training quantization of an export); 'auto' lets
#: backend auto / openvino pick the fastest precision that passes the accuracy guard
PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8', 'auto')
#: exported format -> the backend that runs it
FORMAT_BACKEND = {'onnx': 'onnxruntime', 'torchscript': 'torchscript', 'tensorrt': 'tensorrt',
                  'openvino': 'openvino'}


class Runner:
    """Base class of the backends: ``name`` (the backend), ``device``, ``precision``, ``info``;
    ``depth_net`` / ``pose_net`` are the float32 torch modules it was built from when it has
    them (the reference of the accuracy guard and of online refinement), else None."""
    name = 'runner'
    device: torch.device
    precision: str = 'fp32'
    info: dict
    depth_net = None
    pose_net = None

    @property
    def has_pose(self) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def depth(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pose(self, pair: torch.Tensor) -> tuple:
        raise NotImplementedError


def resolve_device(name) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' (or a torch.device) -> torch.device; ValueError when
    CUDA is asked for but absent."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(name)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available "
                             "(use device='cpu' or 'auto')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {name!r}: only {torch.cuda.device_count()} CUDA device(s)')
    return dev


def amp_dtype(precision: str) -> torch.dtype | None:
    """Autocast dtype of a precision name (None for fp32; int8 is not a torch precision)."""
    return {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]


def default_cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'depth_ego_ros' / 'onnx'
