"""What goes in and out of the Estimator: :class:`EstimatorConfig` (the settings, validated),
:class:`Frame` (one camera frame for ``infer_batch``), :class:`EstimatorOutput` (depth, pose,
scale, K used, timings) and the checks of the numbers a frame carries (:func:`check_K`,
:func:`check_number`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Hashable, NamedTuple

import numpy as np

from .backends import BACKENDS as _BACKENDS, PRECISIONS as _PRECISIONS
from .names import MODELS, POSE_MODELS

__all__ = ['EstimatorConfig', 'EstimatorOutput', 'Frame', 'check_K', 'check_number']

# EstimatorConfig.model / .pose_model choices: core/names.py
_SCALE_MODES = ('none', 'relative', 'fixed', 'camera_height', 'speed')


@dataclass
class EstimatorConfig:
    """Estimator settings (validated on construction; ValueError says what is wrong).

    model: depth network: 'resnet18' | 'resnet50' (monodepth2; also the pose encoder) |
        'packnet01' | 'packnet01-w0.5' | 'packnet01-w0.25' (PackNet01 at that channel width; the
        pose net is then monodepth2's ResNet-18 one, or PoseExpNet with pose_model='posexp').
    pose_model: 'monodepth2' (ResNet pose encoder + decoder) | 'posexp' (SfMLearner's PoseExpNet:
        also gives the explainability mask of each frame in ``EstimatorOutput.explainability``).
    learned_intrinsics: an intrinsics head on the pose network's bottleneck predicts K; infer /
        infer_batch / depth_only then accept ``K=None`` and use the camera's running average of
        the learned K (``EstimatorOutput.K`` says which K was used).
    width, height: network input resolution (multiples of 32). Images of any size are resized
        to it; depth is returned at the input size. With ``exported_model_dir`` the exported
        resolution is used (a different value here is logged and replaced).
    device: 'auto' (CUDA when available, else CPU) | 'cpu' | 'cuda' | 'cuda:N'.
    precision: 'fp32' | 'fp16' | 'bf16' | 'int8' | 'auto': autocast dtype of the torch backends
        (int8: OpenVINO exports only; 'auto': backend auto / openvino on the CPU pick the fastest
        precision that passes the accuracy guard, fp32 elsewhere; docs/inference.md) (pose decoder and
        disparity->depth stay float32). fp16 needs CUDA (on the CPU it falls back to fp32 with a
        warning); bf16 works on both (slow on CPUs without bf16 units). Exported models run in
        the precision they were exported with.
    backend: 'auto' (default: on the CPU the fastest of ONNX Runtime / OpenVINO that passes the
        accuracy guard, measured once and cached; torch on CUDA; the format's runtime for an
        exported directory) | 'torch' | 'torchscript' | 'onnxruntime' | 'openvino' (CPU; falls
        back to ONNX Runtime where OpenVINO is absent) | 'tensorrt' (exported engines only). The
        one used, and why, is in ``Estimator.backend_info``.
    min_depth, max_depth: disparity -> depth bounds (monodepth2: 0.1, 100).
    scale_mode: 'none' (the network's own units) | 'relative' (every depth map divided by its
        median: median depth 1, the relative-depth output mode for networks trained with depth
        normalisation; the frame's translation is divided by the same median) | 'fixed' (times
        ``scale_factor``; None = the factor the checkpoint's model_info.json records, 5.4 for
        monodepth2's stereo / mono+stereo zoo models, else 1) | 'camera_height' (ground plane fitted in the lower image part lies
        ``camera_height`` metres below the camera) | 'speed' (|translation| = speed * dt,
        speed and stamp given to ``infer``).
    num_threads: CPU threads for torch (process-wide) and ONNX Runtime (intra-op);
        0 = library default. With backend onnxruntime on the CPU torch runs at 1 thread (it
        only pre/post-processes there) and num_threads goes to ORT. Applied at construction and
        on the thread that calls infer/infer_batch/depth_only.
    channels_last: torch backend: channels_last memory format; None = on (measured faster on the
        development CPU; the usual layout for fp16 convolutions on CUDA, unmeasured here).
        An explicit True makes backend 'auto' pick torch on the CPU.
    scale_smoothing: weight of the previous scale in the running (log-domain) average used by
        'camera_height' and 'speed' (0 = use each frame's estimate as is).
    cache_dir: where the onnxruntime backend keeps the models it exports at start (default
        ``$XDG_CACHE_HOME/depth_ego_ros/onnx`` or ``~/.cache/depth_ego_ros/onnx``).
    exported_model_dir: a directory written by ``depth-ego export`` to load instead of a
        checkpoint (no export at start).
    optimize: torch/torchscript: inference rewrites with the same maths (BatchNorm folded into
        the convolutions, vectorised ELU on the CPU, TorchScript freezing). False = the
        networks exactly as built.
    compile: torch backend: ``torch.compile`` the networks (slow first frames; needs a C++
        compiler on the CPU, Triton on CUDA). Off by default.
    cuda_graphs: torch backend on CUDA: capture a CUDA graph per input shape and replay it
        (fixed shapes: the network resolution and the batch size). Ignored on the CPU.
    """
    model: str = 'resnet18'
    pose_model: str = 'monodepth2'
    learned_intrinsics: bool = False
    width: int = 640
    height: int = 192
    device: str = 'auto'
    precision: str = 'fp32'
    backend: str = 'auto'
    min_depth: float = 0.1
    max_depth: float = 100.0
    scale_mode: str = 'none'
    scale_factor: float | None = None
    camera_height: float = 1.0
    num_threads: int = 0
    channels_last: bool | None = None
    scale_smoothing: float = 0.8
    cache_dir: str | None = None
    exported_model_dir: str | None = None
    optimize: bool = True
    compile: bool = False
    cuda_graphs: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> 'EstimatorConfig':
        if self.model not in MODELS:
            raise ValueError(f'model must be one of {", ".join(MODELS)}; got {self.model!r}')
        if self.pose_model not in POSE_MODELS:
            raise ValueError(f'pose_model must be one of {", ".join(POSE_MODELS)}; got {self.pose_model!r}')
        if not isinstance(self.learned_intrinsics, bool):
            raise ValueError(f'learned_intrinsics must be a bool, got {self.learned_intrinsics!r}')
        for name in ('width', 'height'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % 32:
                raise ValueError(f'{name} must be a positive multiple of 32 (the encoder '
                                 f'downsamples by 32), got {v!r}')
            if v < 64:
                raise ValueError(f'{name} must be >= 64 (the decoder reflection-pads the 1/32 '
                                 f'scale features, which needs 2 pixels there), got {v!r}')
        if not isinstance(self.device, str) or not (
                self.device in ('auto', 'cpu', 'cuda') or
                (self.device.startswith('cuda:') and self.device[5:].isdigit())):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f'precision must be one of {_PRECISIONS}, got {self.precision!r}')
        if self.backend not in _BACKENDS:
            raise ValueError(f'backend must be one of {_BACKENDS}, got {self.backend!r}')
        if not (_finite(self.min_depth) and _finite(self.max_depth) and 0 < self.min_depth < self.max_depth):
            raise ValueError(f'need 0 < min_depth < max_depth, got {self.min_depth!r}, {self.max_depth!r}')
        if self.scale_mode not in _SCALE_MODES:
            raise ValueError(f'scale_mode must be one of {_SCALE_MODES}, got {self.scale_mode!r}')
        if self.scale_factor is not None and not (_finite(self.scale_factor) and self.scale_factor > 0):
            raise ValueError(f'scale_factor must be finite and > 0 (or None: the checkpoint\'s '
                             f'published factor, else 1), got {self.scale_factor!r}')
        if not (_finite(self.camera_height) and self.camera_height > 0):
            raise ValueError(f'camera_height must be finite and > 0 (metres), got {self.camera_height!r}')
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, (int, np.integer)) \
                or self.num_threads < 0:
            raise ValueError(f'num_threads must be an int >= 0, got {self.num_threads!r}')
        if not (_finite(self.scale_smoothing) and 0 <= self.scale_smoothing < 1):
            raise ValueError(f'scale_smoothing must be in [0, 1), got {self.scale_smoothing!r}')
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ValueError(f'channels_last must be True, False or None (auto), got {self.channels_last!r}')
        for name in ('optimize', 'compile', 'cuda_graphs'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be a bool, got {getattr(self, name)!r}')
        for name in ('cache_dir', 'exported_model_dir'):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise ValueError(f'{name} must be a path or None, got {v!r}')
            if v is not None and not str(v):
                raise ValueError(f'{name} must not be empty (use None)')
        return self


@dataclass
class EstimatorOutput:
    """depth: float32 HxW at the input resolution; metres, or relative when scale_mode='none'.
    disparity: float32 at network resolution, ``1 / depth`` before the metric scale
        (monodepth2's scaled disparity).
    relative_pose: float64 4x4 ``T_prev_curr`` (maps current-camera points into the previous
        camera frame = pose of the current camera in the previous one), translation in depth
        units; None on the first frame of a camera, after reset() and when the checkpoint has no
        pose net.
    scale: the factor applied to depth and translation.
    timings: milliseconds per stage: preprocess, depth, pose, postprocess, total (for
        ``infer_batch``: of the whole batch).
    camera_id, stamp: as given with the frame.
    K: float64 3x3, the intrinsics actually used for this frame at the input resolution (the
        given K, or with ``learned_intrinsics`` and K=None the learned one).
    explainability: float32 HxW at network resolution in [0,1] (pose_model 'posexp': the mask
        of the current frame w.r.t. the previous one, 1 = explained by the rigid warp), or None
        (other pose models, first frame of a camera, depth_only).
    """
    depth: np.ndarray
    disparity: np.ndarray
    relative_pose: np.ndarray | None
    scale: float
    timings: dict = field(default_factory=dict)
    camera_id: Hashable = None
    stamp: float | None = None
    K: np.ndarray | None = None
    explainability: np.ndarray | None = None


class Frame(NamedTuple):
    """One camera frame for :meth:`Estimator.infer_batch` (a plain tuple
    ``(image, K, stamp, speed, camera_id)`` works the same)."""
    image: np.ndarray
    K: np.ndarray | None = None
    stamp: float | None = None
    speed: float | None = None
    camera_id: Hashable = None
    encoding: str = 'rgb8'


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def check_K(K) -> np.ndarray:
    """-> K as float64 3x3 camera intrinsics (pixels); ValueError saying what is wrong."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'K must be a 3x3 float array, got {type(K).__name__}') from exc
    if K.shape != (3, 3):
        raise ValueError(f'K must be 3x3 (camera pixels), got shape {K.shape}')
    if not np.all(np.isfinite(K)):
        raise ValueError(f'K must be finite, got {K.tolist()}')
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f'K must have positive focal lengths fx, fy, got {K[0, 0]}, {K[1, 1]}')
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f'K last row must be [0, 0, 1], got {K[2].tolist()}')
    return K


def check_number(name, value):
    """None, or ``value`` as a finite float (ValueError naming ``name`` otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not _finite(value):
        raise ValueError(f'{name} must be a finite number or None, got {value!r}')
    return float(value)
