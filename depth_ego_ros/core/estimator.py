"""The Estimator: RGB frames (+ K) -> depth at the camera resolution and the pose to the previous
frame of the same camera.

It owns everything between a decoded camera image and metric outputs, on the compute device:

* upload of the uint8 frame (CUDA: pinned staging buffer, one non-blocking copy per batch of
  same-size frames), colour conversion (rgb8/bgr8/rgba8/bgra8/mono8) and resize to the network
  resolution with antialiasing (:mod:`depth_ego_ros.core.device_ops`);
* the networks through a backend "runner" (:mod:`depth_ego_ros.core.backends`: torch eager with
  autocast fp16/bf16, channels_last, torch.compile, CUDA graphs; TorchScript; ONNX Runtime with
  CUDA or CPU provider; TensorRT engines), either built from a checkpoint or loaded from an
  exported model directory (``depth-ego export``);
* disparity -> depth in float32, upsampling back to each input size, the metric scale
  (none / fixed / camera height above the ground / speed) and, on request, the coloured point
  cloud of the last frame, packed on the device and copied to the host once.

Several cameras: :meth:`Estimator.infer_batch` runs the frames of many cameras through ONE depth
network call and ONE pose network call; every camera (``camera_id``) keeps its own previous
frame (on the device) and its own scale estimate, so each camera has its own pose chain.

Networks are monodepth2's: a ResNet depth encoder + depth decoder, and a separate ResNet pose
encoder fed the stacked pair [previous, current] + pose decoder. The pose encoder sees the pair
from its first convolution on, so no encoder features of the previous frame can be reused; the
previous frame's preprocessed tensor is kept on the device instead (no re-upload or re-resize).
Checkpoints use monodepth2's directory layout (see :mod:`depth_ego_ros.core.checkpoints`).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import copy
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from . import checkpoints as ckpt
from .backends import (BACKENDS as _BACKENDS, PRECISIONS as _PRECISIONS, OrtRunner, TorchRunner,
                       TorchScriptRunner, default_cache_dir, load_exported_runner, resolve_backend,
                       resolve_device)
from .device_ops import (ENCODINGS, Uploader, check_image, depth_to_cloud, pixel_rays,
                         split_cloud, to_network_input, to_rgb, upsample_disparity)
from .export import ONNX_OPSET, export_onnx, read_manifest
from .geometry import backproject, intrinsics_for_resize, pose_vec_to_mat
from .names import MODELS, PACKNET_WIDTHS, POSE_MODELS
from .networks.depth_decoder import DepthDecoder, disp_to_depth
from .networks.pose_decoder import PoseDecoder
from .networks.intrinsics_head import IntrinsicsHead, RunningIntrinsics
from .networks.packnet import PACKNET_MIN_DEPTH, PackNet01, packnet_disp_to_depth
from .networks.posexp_net import PoseExpNet
from .networks.resnet_encoder import ResnetEncoder, parse_num_layers

__all__ = ['EstimatorConfig', 'Estimator', 'EstimatorOutput', 'Frame', 'DepthNet', 'PoseNet',
           'PackNetDepth', 'PoseExpPose', 'MODELS', 'POSE_MODELS', 'save_networks',
           'export_estimator_models',
           'build_networks', 'fit_ground_plane', 'colorize_disparity', 'default_intrinsics',
           'split_cloud', 'export_onnx', 'default_cache_dir', 'MONODEPTH2_KITTI_K', 'ENCODINGS',
           'ONNX_OPSET']

log = logging.getLogger(__name__)

# EstimatorConfig.model / .pose_model choices (core/names.py)
_SCALE_MODES = ('none', 'relative', 'fixed', 'camera_height', 'speed')

#: monodepth2's KITTI intrinsics, normalised by the image size (fx/W, fy/H, cx/W, cy/H)
MONODEPTH2_KITTI_K = np.array([[0.58, 0.0, 0.5],
                               [0.0, 1.92, 0.5],
                               [0.0, 0.0, 1.0]])
#: below this speed (m/s) a frame does not update the speed-based scale
MIN_SPEED = 0.05


# ----------------------------------------------------------------------------------------------
# configuration and output
# ----------------------------------------------------------------------------------------------
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
    precision: 'fp32' | 'fp16' | 'bf16': autocast dtype of the torch backends (pose decoder and
        disparity->depth stay float32). fp16 needs CUDA (on the CPU it falls back to fp32 with a
        warning); bf16 works on both (slow on CPUs without bf16 units). Exported models run in
        the precision they were exported with.
    backend: 'auto' (default: ONNX Runtime on the CPU, torch on CUDA, the format's runtime for
        an exported directory) | 'torch' | 'torchscript' | 'onnxruntime' | 'tensorrt'
        (exported engines only). The one used is in ``Estimator.backend_info``.
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


def _K_from_normalized(v, width: float, height: float) -> np.ndarray:
    """(fx/W, fy/H, ox, oy) (the intrinsics head's normalised output) -> 3x3 float64 K for a
    width x height image (pixel centres at integers, as IntrinsicsHead)."""
    fx, fy, ox, oy = (float(a) for a in v)
    return np.array([[fx * width, 0.0, (0.5 + ox) * width - 0.5],
                     [0.0, fy * height, (0.5 + oy) * height - 0.5],
                     [0.0, 0.0, 1.0]])


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------
class DepthNet(nn.Module):
    """Encoder + decoder: image [B,3,H,W] in [0,1] -> finest sigmoid disparity [B,1,H,W]."""

    def __init__(self, encoder: ResnetEncoder, decoder: DepthDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, image):
        return self.decoder(self.encoder(image))[0]


class PackNetDepth(nn.Module):
    """PackNet01 in the DepthNet role: image [B,3,H,W] in [0,1] -> finest sigmoid output
    [B,1,H,W] (``net(image)[0]``). Its depth convention is PackNet-SfM's (inverse depth =
    sigmoid / ``net.min_depth``): convert with :meth:`disp_to_depth`, not monodepth2's."""

    def __init__(self, net: PackNet01):
        super().__init__()
        self.net = net

    def forward(self, image):
        return self.net(image)[0]

    def disp_to_depth(self, disp, min_depth: float = 0.1, max_depth: float = 100.0):
        return self.net.disp_to_depth(disp, min_depth, max_depth)


class PoseNet(nn.Module):
    """Pose encoder (2 stacked frames) + decoder: pair [B,6,H,W] = [frame_a, frame_b] in [0,1]
    -> (axisangle [B,3], translation [B,3]) of ``T_b_a`` (monodepth2's first prediction).

    With an ``intrinsics`` head (learned intrinsics) a third output [B,4] =
    (fx/W, fy/H, ox, oy) from the encoder's last feature (IntrinsicsHead.normalized)."""

    def __init__(self, encoder: ResnetEncoder, decoder: PoseDecoder,
                 intrinsics: IntrinsicsHead | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.intrinsics = intrinsics
        self.output_names = ('axisangle', 'translation') + (('intrinsics',) if intrinsics else ())

    def forward(self, pair):
        feats = self.encoder(pair)
        axisangle, translation = self.decoder([feats])
        outs = (axisangle[:, 0, 0], translation[:, 0, 0])
        if self.intrinsics is not None:
            outs = outs + (torch.cat(self.intrinsics.normalized(feats[-1]), 1),)
        return outs


class PoseExpPose(nn.Module):
    """PoseExpNet in the pose role: pair [B,6,H,W] = [previous, current] -> target = current,
    source(s) = previous; outputs (axisangle [B,3], translation [B,3]) of ``T_prev_curr``
    (PoseExpNet's ``T_src_tgt``: NO inversion, unlike monodepth2's PoseNet), then optionally
    ``intrinsics`` [B,4] (head on the 256-channel bottleneck) and ``explainability``
    [B,1,H,W] (mask of the current frame w.r.t. the previous one, in [0,1]).
    A network trained with N > 1 sources gets the previous frame as every source; source 0's
    pose and mask are returned."""
    pose_is_prev_curr = True

    def __init__(self, net: PoseExpNet, intrinsics: IntrinsicsHead | None = None):
        super().__init__()
        self.net = net
        self.intrinsics = intrinsics
        self.output_names = ('axisangle', 'translation') + \
            (('intrinsics',) if intrinsics is not None else ()) + \
            (('explainability',) if net.output_exp else ())

    def forward(self, pair):
        prev, cur = pair[:, :3], pair[:, 3:]
        out = self.net(cur, [prev] * self.net.num_sources)
        outs = (out['axisangle'][:, 0], out['translation'][:, 0])
        if self.intrinsics is not None:
            outs = outs + (torch.cat(self.intrinsics.normalized(out['bottleneck']), 1),)
        if self.net.output_exp:
            outs = outs + (out['masks'][0][:, :1],)
        return outs


def _load_or_hint(module, path, hint):
    try:
        return ckpt.load_into(module, path)
    except ckpt.CheckpointError as exc:
        h = hint()
        raise ckpt.CheckpointError(f'{exc}; {h}' if h else str(exc)) from None


def _checkpoint_hint(checkpoint, model: str, pose_model: str) -> str:
    """'the checkpoint holds ...: use model=...' when its files say another architecture."""
    try:
        m = ckpt.read_checkpoint_meta(checkpoint)
    except (ckpt.CheckpointError, OSError):
        return ''
    hints = []
    if m['model'] and m['model'] != model:
        hints.append(f"model={m['model']!r}")
    if m['pose_model'] and m['pose_model'] != pose_model:
        hints.append(f"pose_model={m['pose_model']!r}")
    return f'the checkpoint holds other networks: use {", ".join(hints)}' if hints else ''


def build_networks(model: str = 'resnet18', checkpoint: str | os.PathLike | None = None,
                   with_pose: bool = True, seed: int = 0, pose_model: str = 'monodepth2',
                   learned_intrinsics: bool = False):
    """Create (DepthNet | PackNetDepth, PoseNet | PoseExpPose | None, meta) in eval mode on the CPU.

    model: resnet18 / resnet50 (monodepth2 depth + pose nets) or packnet01 / packnet01-w0.5 /
        packnet01-w0.25 (PackNet01 depth; the pose net stays monodepth2's ResNet-18 one unless
        ``pose_model='posexp'``).
    checkpoint: a directory (monodepth2 layout; for PackNet a depth.pth written by
        :func:`~depth_ego_ros.core.checkpoints.save_packnet_depth`; PoseExpNet in pose.pth by
        ``save_posexp``; the intrinsics head in intrinsics.pth) or, for PackNet, a PackNet-SfM
        ``.ckpt`` file (depth only). Weights are loaded from it (CheckpointError if they do not
        fit, with a hint when the files hold another architecture); the pose net is None when
        the checkpoint has none. Without one the weights are random but reproducible (seeded,
        without touching the global RNG state).
    learned_intrinsics: add an IntrinsicsHead on the pose encoder's bottleneck (loaded from
        intrinsics.pth when the checkpoint has one, else its prior: fx = W, fy = H, centred).
    meta: encoder.pth's {'height', 'width', 'use_stereo'} for ResNet checkpoints (empty without
        a checkpoint); for PackNet checkpoints what the files say ('model', 'height', 'width',
        'packnet' constructor args, 'intrinsics_running' when stored).
    """
    if model not in MODELS:
        raise ValueError(f'model must be one of {MODELS}, got {model!r}')
    if pose_model not in POSE_MODELS:
        raise ValueError(f'pose_model must be one of {POSE_MODELS}, got {pose_model!r}')
    packnet = model in PACKNET_WIDTHS
    d = Path(checkpoint) if checkpoint is not None else None
    def hint() -> str:       # only read the checkpoint's other files when something is wrong
        return _checkpoint_hint(d, model, pose_model) if d is not None else ''
    meta: dict = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if packnet:
            depth_net = PackNetDepth(PackNet01(width=PACKNET_WIDTHS[model]))
            pose_layers = 18
        else:
            enc = ResnetEncoder(parse_num_layers(model), num_input_images=1)
            depth_net = DepthNet(enc, DepthDecoder(enc.num_ch_enc))
            pose_layers = parse_num_layers(model)
        pose_net = None
        if with_pose:
            if pose_model == 'posexp':
                pose_net = PoseExpPose(PoseExpNet(num_sources=1, output_exp=True))
            else:
                penc = ResnetEncoder(pose_layers, num_input_images=2)
                pose_net = PoseNet(penc, PoseDecoder(penc.num_ch_enc, num_input_features=1,
                                                     num_frames_to_predict_for=2))

    if d is not None:
        # ---- depth
        if packnet and d.is_file():
            from .packnet_checkpoint import load_packnet_checkpoint
            net, info = load_packnet_checkpoint(d)
            if net.width != PACKNET_WIDTHS[model]:
                raise ckpt.CheckpointError(
                    f'{d}: the checkpoint holds PackNet01(width={net.width:g}): use '
                    f'model={ckpt.packnet_model_name(net.width)!r}')
            depth_net = PackNetDepth(net)
            meta = {'model': model, 'packnet': info['args'], 'source': 'packnet_ckpt'}
            pose_net = None            # a PackNet-SfM .ckpt carries no pose net of ours
            if learned_intrinsics:
                log.warning('%s: a .ckpt file has no pose network: learned intrinsics unavailable', d)
        elif d.is_file():
            raise ckpt.CheckpointError(f"{d}: a file checkpoint is a PackNet-SfM .ckpt (use model="
                                       f"'packnet01...'); {model} needs a monodepth2 checkpoint directory")
        elif not d.is_dir():
            raise ckpt.CheckpointError(f'{d}: checkpoint directory not found')
        elif packnet:
            path = d / ckpt.DEPTH_FILE
            extras = ckpt.read_state_dict(path) if path.is_file() else None
            if extras is None or not str(extras.get(ckpt.MODEL_KEY, '')).startswith('packnet01'):
                raise ckpt.CheckpointError(
                    f'{d}: no PackNet depth network ({ckpt.DEPTH_FILE} with a {ckpt.MODEL_KEY!r} '
                    f'entry naming a packnet01 model)' + (f'; {hint()}' if hint() else ''))
            if extras[ckpt.MODEL_KEY] != model:
                raise ckpt.CheckpointError(f'{path}: holds {extras[ckpt.MODEL_KEY]}: use '
                                           f'model={extras[ckpt.MODEL_KEY]!r}')
            net = PackNet01(version=extras.get('packnet_version', 'A'), width=PACKNET_WIDTHS[model],
                            d=int(extras.get('packnet_d', 8)),
                            min_depth=float(extras.get('packnet_min_depth', PACKNET_MIN_DEPTH)))
            ckpt.load_into(net, path, extras)
            depth_net = PackNetDepth(net)
            meta = {'model': model, 'height': extras.get('height'), 'width': extras.get('width'),
                    'source': 'packnet_dir'}
        else:
            if not (d / ckpt.ENCODER_FILE).is_file() and hint():
                raise ckpt.CheckpointError(f'{d}: {ckpt.ENCODER_FILE} not found; {hint()}')
            meta = ckpt.load_monodepth2(d, depth_net.encoder, depth_net.decoder)
        # ---- pose
        if pose_net is not None and d.is_dir():
            pose_path = d / ckpt.POSE_FILE
            if not pose_path.is_file():
                pose_net = None
            else:
                pdata = ckpt.read_state_dict(pose_path)
                is_posexp = pdata.get(ckpt.MODEL_KEY) == 'posexp'
                if pose_model == 'posexp':
                    if not is_posexp:
                        raise ckpt.CheckpointError(
                            f"{pose_path}: not a PoseExpNet (no {ckpt.MODEL_KEY}='posexp' entry)"
                            + (f'; {hint()}' if hint() else "; use pose_model='monodepth2'"))
                    n_src = int(pdata.get('num_sources', 1))
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        net = PoseExpNet(num_sources=n_src, output_exp=bool(pdata.get('output_exp', True)))
                    ckpt.load_into(net, pose_path, pdata)
                    if n_src > 1:
                        log.info('%s: PoseExpNet trained with %d sources: the previous frame is given '
                                 'as every source, source 0 pose/mask used', pose_path, n_src)
                    pose_net = PoseExpPose(net)
                elif is_posexp:
                    raise ckpt.CheckpointError(f"{pose_path}: holds a PoseExpNet: use pose_model='posexp'")
                elif not ckpt.has_pose(d):
                    pose_net = None
                else:
                    _load_or_hint(pose_net.encoder, d / ckpt.POSE_ENCODER_FILE, hint)
                    ckpt.load_into(pose_net.decoder, pose_path, pdata)
    # ---- learned intrinsics
    if learned_intrinsics and pose_net is not None:
        if isinstance(pose_net, PoseExpPose):
            channels = 256
        else:
            channels = int(pose_net.encoder.num_ch_enc[-1])
        head = IntrinsicsHead(channels)
        ipath = d / ckpt.INTRINSICS_FILE if d is not None and d.is_dir() else None
        if ipath is not None and ipath.is_file():
            idata = ckpt.load_intrinsics_head(head, ipath)
            if idata.get('running_value') is not None:
                meta['intrinsics_running'] = list(idata['running_value'])
        elif d is not None:
            log.warning('checkpoint %s has no %s: the intrinsics head starts from its prior '
                        '(fx = W, fy = H, centred principal point)', d, ckpt.INTRINSICS_FILE)
        if isinstance(pose_net, PoseExpPose):
            pose_net = PoseExpPose(pose_net.net, head)
        else:
            pose_net = PoseNet(pose_net.encoder, pose_net.decoder, head)
    depth_net.eval()
    if pose_net is not None:
        pose_net.eval()
    return depth_net, pose_net, meta


def save_networks(directory, depth_net, pose_net=None, *, model: str, height: int, width: int,
                  running_intrinsics: dict | None = None) -> Path:
    """Write networks built by :func:`build_networks` so that it loads them back: monodepth2
    layout for the ResNet models, ``depth.pth`` with a ``model`` entry for PackNet, ``pose.pth``
    with ``model='posexp'`` for PoseExpNet, ``intrinsics.pth`` for an intrinsics head."""
    d = Path(directory)
    if isinstance(depth_net, PackNetDepth):
        ckpt.save_packnet_depth(d, depth_net.net, model=model, height=height, width=width)
        if isinstance(pose_net, PoseNet):
            d.mkdir(parents=True, exist_ok=True)
            ckpt._atomic_save(ckpt._tensors(pose_net.encoder), d / ckpt.POSE_ENCODER_FILE)
            ckpt._atomic_save(ckpt._tensors(pose_net.decoder), d / ckpt.POSE_FILE)
    else:
        ckpt.save_monodepth2(d, depth_net.encoder, depth_net.decoder,
                             *((pose_net.encoder, pose_net.decoder) if isinstance(pose_net, PoseNet)
                               else (None, None)), height=height, width=width)
    if isinstance(pose_net, PoseExpPose):
        ckpt.save_posexp(d, pose_net.net)
    head = getattr(pose_net, 'intrinsics', None) if pose_net is not None else None
    if head is not None:
        ckpt.save_intrinsics_head(d, head, running_intrinsics)
    return d

def export_estimator_models(out_dir, fmt: str = 'onnx', *, model: str = 'resnet18',
                            pose_model: str = 'monodepth2', learned_intrinsics: bool = False,
                            checkpoint=None, width: int = 640, height: int = 192, **kwargs) -> dict:
    """Build the networks of an Estimator configuration (:func:`build_networks`) and export them
    with :func:`~depth_ego_ros.core.export.export_models` (``kwargs``: opset, fp16, max_batch,
    device, tolerances, num_threads). The manifest records ``pose_model``,
    ``learned_intrinsics`` and, for PackNet, ``packnet_min_depth``, so that
    ``EstimatorConfig(exported_model_dir=out_dir)`` runs them like the torch networks."""
    from .export import export_models
    depth_net, pose_net, _ = build_networks(model, checkpoint, pose_model=pose_model,
                                            learned_intrinsics=learned_intrinsics)
    extra = {'pose_model': pose_model,
             'learned_intrinsics': bool(learned_intrinsics and pose_net is not None)}
    if isinstance(depth_net, PackNetDepth):
        extra['packnet_min_depth'] = float(depth_net.net.min_depth)
    return export_models(depth_net, pose_net, out_dir, fmt, width, height, model=model,
                         checkpoint=checkpoint, extra=extra, **kwargs)


# ----------------------------------------------------------------------------------------------
# scale helpers
# ----------------------------------------------------------------------------------------------
def fit_ground_plane(points: np.ndarray, max_tilt_deg: float = 35.0, iterations: int = 128,
                     inlier_ratio: float = 0.05, min_inlier_fraction: float = 0.2,
                     rng: np.random.Generator | None = None):
    """RANSAC ground plane in camera (optical) coordinates.

    Args:
        points: (N,3) candidate points (the lower image part), x right, y down, z forward.
        max_tilt_deg: the plane normal must be within this angle of the camera's up axis (-y).
        inlier_ratio: a point is an inlier when its distance to the plane is below
            ``inlier_ratio * height`` (relative, so it works on depth of unknown scale).
        min_inlier_fraction: fewer inliers than this fraction of the points -> no plane.
    Returns:
        (normal (3,), height) with the normal pointing up (towards the camera side) and
        ``height`` the camera's distance above the plane (> 0), or None when no plausible
        plane is found.
    """
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    P = P[np.all(np.isfinite(P), axis=1) & (P[:, 2] > 0)]
    n_pts = P.shape[0]
    if n_pts < 20:
        return None
    rng = rng if rng is not None else np.random.default_rng(0)
    cos_tilt = math.cos(math.radians(max_tilt_deg))
    idx = rng.integers(0, n_pts, size=(iterations, 3))
    a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals = normals[ok] / norms[ok, None]
    a = a[ok]
    normals *= np.where(normals[:, 1:2] > 0, -1.0, 1.0)      # point up (-y)
    d = -np.einsum('ij,ij->i', normals, a)                      # n.p + d = 0; d = camera height
    keep = (-normals[:, 1] >= cos_tilt) & (d > 0)
    if not np.any(keep):
        return None
    normals, d = normals[keep], d[keep]
    resid = np.abs(P @ normals.T + d)                           # (N, hypotheses)
    counts = (resid < inlier_ratio * d).sum(axis=0)
    best = int(np.argmax(counts))
    if counts[best] < max(10, min_inlier_fraction * n_pts):
        return None
    n, h = normals[best], d[best]
    # refine: least squares plane through the inliers (two rounds)
    for _ in range(2):
        inl = P[np.abs(P @ n + h) < inlier_ratio * h]
        if inl.shape[0] < 10:
            break
        centroid = inl.mean(axis=0)
        _, _, vt = np.linalg.svd(inl - centroid, full_matrices=False)
        n_new = vt[-1] * (-1.0 if vt[-1][1] > 0 else 1.0)
        h_new = -float(n_new @ centroid)
        if h_new <= 0 or -n_new[1] < cos_tilt:
            break
        n, h = n_new, h_new
    return n, float(h)


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """monodepth2's KITTI intrinsics scaled to a width x height image (a stand-in when the
    camera's K is unknown; only the metric scale modes depend on it)."""
    K = MONODEPTH2_KITTI_K.copy()
    K[0] *= width
    K[1] *= height
    return K


# ----------------------------------------------------------------------------------------------
# visualisation
# ----------------------------------------------------------------------------------------------
# magma anchors (value, R, G, B): a fallback when matplotlib is not installed
_MAGMA_ANCHORS = np.array([
    [0.000, 0, 0, 4], [0.125, 28, 16, 68], [0.250, 79, 18, 123], [0.375, 129, 37, 129],
    [0.500, 181, 54, 122], [0.625, 229, 80, 100], [0.750, 251, 135, 97],
    [0.875, 254, 194, 135], [1.000, 252, 253, 191]], dtype=np.float64)
_LUT = None


def _magma_lut() -> np.ndarray:
    global _LUT
    if _LUT is None:
        x = np.linspace(0.0, 1.0, 256)
        try:
            import matplotlib
            lut = matplotlib.colormaps['magma'](x)[:, :3] * 255.0
        except Exception:  # no matplotlib: interpolate the anchors
            lut = np.stack([np.interp(x, _MAGMA_ANCHORS[:, 0], _MAGMA_ANCHORS[:, i])
                            for i in (1, 2, 3)], axis=1)
        _LUT = np.clip(np.round(lut), 0, 255).astype(np.uint8)
    return _LUT


def colorize_disparity(depth: np.ndarray, vmax_percentile: float = 95.0) -> np.ndarray:
    """Depth (HxW, any units; <=0 / non-finite = invalid) -> uint8 HxWx3 RGB magma image of the
    inverse depth, normalised like monodepth2's test_simple (min .. 95th percentile); near is
    bright, far and invalid are dark."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {depth.shape}')
    valid = np.isfinite(depth) & (depth > 0)
    disp = np.zeros_like(depth)
    disp[valid] = 1.0 / depth[valid]
    if not np.any(valid):
        return np.zeros(depth.shape + (3,), np.uint8) + _magma_lut()[0]
    vmin = float(disp[valid].min())
    vmax = float(np.percentile(disp[valid], vmax_percentile))
    norm = np.clip((disp - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    norm[~valid] = 0.0
    return _magma_lut()[np.round(norm * 255).astype(np.int64)]


# ----------------------------------------------------------------------------------------------
# the estimator
# ----------------------------------------------------------------------------------------------
_resolve_device = resolve_device          # the old private name (kept for callers)
_ALL = object()                           # reset(): every camera


class _CameraState:
    """Per-camera state: the previous frame (network input on the device) and its stamp for the
    pose net, and the running metric scale estimate."""
    __slots__ = ('prev', 'prev_stamp', 'scale', 'rng', 'intrinsics')

    def __init__(self):
        self.prev: torch.Tensor | None = None
        self.prev_stamp: float | None = None
        self.scale: float | None = None
        self.rng = np.random.default_rng(0)
        self.intrinsics: RunningIntrinsics | None = None   # learned K (plain mean of the pairs)


class Estimator:
    """Depth + ego-motion from one or more monocular RGB streams.

    ``Estimator(config, checkpoint=None)``: checkpoint is a monodepth2-layout directory; None
    gives randomly initialised (seeded) networks and logs a warning (unless
    ``config.exported_model_dir`` provides the networks). ``infer`` keeps the previous frame for
    the pose net; ``reset`` forgets it; ``depth_only`` changes no state; ``infer_batch`` serves
    several cameras in one network call; ``point_cloud`` packs the last frame's points.
    Not thread-safe: use one Estimator per worker thread. The exception is the weight swap of
    online refinement: ``build_runner`` / ``swap_runner`` / ``set_networks`` may be called from
    another thread while one thread infers (each inference call takes the runner once).
    """

    def __init__(self, config: EstimatorConfig | None = None, checkpoint: str | os.PathLike | None = None):
        config = dataclasses.replace(config) if config is not None else EstimatorConfig()
        config.validate()
        self.device = resolve_device(config.device)
        requested_backend = config.backend

        manifest = None
        if config.exported_model_dir is not None:
            manifest = read_manifest(config.exported_model_dir)
            if manifest['model'] != config.model:
                log.info('exported model is %s (config says %s)', manifest['model'], config.model)
                config.model = manifest['model']
            for key, default in (('pose_model', 'monodepth2'), ('learned_intrinsics', False)):
                value = manifest.get(key, default)
                if getattr(config, key) != value:
                    log.info('exported model has %s=%r (config says %r)', key, value,
                             getattr(config, key))
                    setattr(config, key, value)
            if (manifest['width'], manifest['height']) != (config.width, config.height):
                log.warning('exported models run at %sx%s; using that instead of %sx%s',
                            manifest['width'], manifest['height'], config.width, config.height)
                config.width, config.height = int(manifest['width']), int(manifest['height'])

        if config.precision == 'fp16' and self.device.type != 'cuda':
            warnings.warn('precision fp16 is only supported on CUDA; using fp32 on the CPU',
                          RuntimeWarning, stacklevel=2)
            log.warning('precision fp16 is only supported on CUDA; using fp32 on the CPU')
            config.precision = 'fp32'
        if config.precision == 'bf16' and self.device.type == 'cuda' and \
                not torch.cuda.is_bf16_supported():
            raise ValueError(f'precision bf16 is not supported by {torch.cuda.get_device_name(self.device)}; '
                             'use fp16')
        if config.cuda_graphs and self.device.type != 'cuda':
            log.warning('cuda_graphs is ignored on %s', self.device)
            config.cuda_graphs = False
        torch_only = (requested_backend == 'auto' and manifest is None and
                      (config.compile or config.cuda_graphs or config.precision == 'bf16' or
                       (config.channels_last is True and self.device.type != 'cuda')))
        if config.channels_last is None:    # measured faster on this CPU too (docs/inference.md)
            config.channels_last = True
        backend, why = resolve_backend(requested_backend, self.device,
                                       manifest['format'] if manifest else None, torch_only)
        if manifest is not None:
            if config.precision != manifest['precision']:
                log.info('exported models are %s; precision %s ignored', manifest['precision'],
                         config.precision)
            config.precision = manifest['precision']
        elif backend == 'onnxruntime' and config.precision != 'fp32':
            log.warning('the onnxruntime backend exports fp32 models at start; ignoring precision '
                        '%s (export with `depth-ego export --fp16` and set exported_model_dir)',
                        config.precision)
            config.precision = 'fp32'
        config.backend = backend
        self.config = config
        self.dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(config.precision, torch.float32)
        # torch's intra-op threads, applied on the thread that runs inference (OpenMP keeps the
        # count per thread: a worker thread does not see a later change made by another one).
        self._torch_threads = int(config.num_threads) if config.num_threads > 0 else None
        if backend == 'onnxruntime' and self.device.type == 'cpu':
            # torch only runs the small pre/post-processing ops here (~1 ms at 640x480); with
            # more threads its OpenMP pool busy-waits next to ONNX Runtime's threads and made
            # both ~1.5x slower on 2 shared cores (docs/inference.md). num_threads -> ORT only.
            self._torch_threads = 1
            log.info('backend onnxruntime on the CPU: torch runs at 1 thread')
        self._apply_threads()

        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_meta = {}
        if config.scale_factor is None:    # zoo models record their published factor (stereo: 5.4)
            config.scale_factor = ckpt.published_scale_factor(self.checkpoint)
        if manifest is not None:
            if self.checkpoint is not None:
                log.warning('checkpoint %s ignored: the weights come from the exported models in %s',
                            self.checkpoint, manifest['directory'])
            if manifest.get('random_weights'):
                log.warning('Estimator: the exported models in %s have RANDOM weights: depth and '
                            'poses are meaningless', manifest['directory'])
            self.runner = load_exported_runner(manifest, self.device, config.num_threads,
                                               config.optimize)
            self._pose_outputs = list(manifest.get('pose_outputs') or ('axisangle', 'translation'))
            net_min_depth = manifest.get('packnet_min_depth')
        else:
            if self.checkpoint is None:
                log.warning('Estimator: no checkpoint given, the networks have RANDOM weights: '
                            'depth and poses are meaningless (give a checkpoint directory or PackNet .ckpt)')
            depth_net, pose_net, meta = build_networks(
                config.model, self.checkpoint, pose_model=config.pose_model,
                learned_intrinsics=config.learned_intrinsics)
            self.checkpoint_meta = meta
            self._pose_outputs = list(getattr(pose_net, 'output_names', ('axisangle', 'translation')))
            net_min_depth = depth_net.net.min_depth if isinstance(depth_net, PackNetDepth) else None
            if self.checkpoint is not None and pose_net is None and self.checkpoint.is_file():
                log.warning('%s is a PackNet-SfM .ckpt (depth network only): relative poses will '
                            'be None', self.checkpoint)
            elif self.checkpoint is not None and pose_net is None:
                log.warning('checkpoint %s has no pose networks (%s, %s): relative poses will be None',
                            self.checkpoint, ckpt.POSE_ENCODER_FILE, ckpt.POSE_FILE)
            if meta.get('width') and (meta['width'], meta['height']) != (config.width, config.height):
                log.info('checkpoint was trained at %sx%s; running at %sx%s',
                         meta['width'], meta['height'], config.width, config.height)
            self.runner = self._make_runner(backend, depth_net, pose_net, net_min_depth)
        self.has_pose = bool(self.runner.has_pose)
        # disparity -> depth: monodepth2's (ResNet) or PackNet-SfM's inverse-depth convention
        self._disp_to_depth = disp_to_depth if net_min_depth is None else \
            functools.partial(packnet_disp_to_depth, net_min_depth=float(net_min_depth))
        # monodepth2's PoseNet predicts T_curr_prev for [prev, curr] (inverted below);
        # PoseExpNet (target = current, source = previous) predicts T_prev_curr directly
        self._pose_invert = config.pose_model != 'posexp'
        if config.learned_intrinsics and 'intrinsics' not in self._pose_outputs:
            raise ValueError('learned_intrinsics needs a pose network with an intrinsics head, '
                             f'but {"the exported models" if manifest else "the checkpoint"} '
                             'provide none (no pose network / exported without intrinsics)')
        self._intrinsics_prior = self.checkpoint_meta.get('intrinsics_running')
        if getattr(self, '_fallback_reason', None):
            why = f'{why}; {self._fallback_reason}; fell back to torch'
        self.backend_info = dict(self.runner.info, requested=requested_backend, reason=why)
        log.info('Estimator: %s %dx%d, %s (%s)', config.model, config.width, config.height,
                 self.runner.describe(), why)

        self._uploader = Uploader(self.device)
        self._cams: dict[Hashable, _CameraState] = {}
        self._last: dict[Hashable, tuple] = {}       # camera -> (depth [H,W], rgb [H,W,3], K)
        self._rays: dict[tuple, torch.Tensor] = {}
        self._swap_lock = threading.Lock()           # serialises swap_runner callers only
        self.weights_version = 0                     # +1 per swap_runner (online refinement)
        self.reset()

    def _make_runner(self, backend, depth_net, pose_net, net_min_depth=None):
        cfg = self.config
        tag = cfg.model + ('' if cfg.pose_model == 'monodepth2' else f'-{cfg.pose_model}') + \
            ('-K' if cfg.learned_intrinsics else '')
        if backend in ('onnxruntime', 'torchscript'):
            try:
                if backend == 'onnxruntime':
                    return OrtRunner.from_nets(depth_net, pose_net, self.device, cfg.width,
                                               cfg.height, tag, cfg.cache_dir, cfg.num_threads)
                return TorchScriptRunner.from_nets(depth_net, pose_net, self.device, cfg.precision,
                                                   cfg.optimize, (cfg.height, cfg.width))
            except Exception as exc:   # export/trace failure of a network: torch still runs it
                if cfg.model in ('resnet18', 'resnet50') and cfg.pose_model == 'monodepth2' \
                        and not cfg.learned_intrinsics:
                    raise
                log.warning('backend %s failed for %s (%s: %s); falling back to torch', backend,
                            tag, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else '')
                self._fallback_reason = f'{backend} failed: {type(exc).__name__}: {exc}'
                depth_net, pose_net, _ = build_networks(
                    cfg.model, self.checkpoint, pose_model=cfg.pose_model,
                    learned_intrinsics=cfg.learned_intrinsics)
                cfg.backend = 'torch'
        return TorchRunner(depth_net, pose_net, self.device, cfg.precision, cfg.channels_last,
                           cfg.optimize, cfg.compile, cfg.cuda_graphs)

    # -- state ---------------------------------------------------------------------------
    def reset(self, camera_id=_ALL):
        """Forget the previous frame (the next infer() returns relative_pose None): of every
        camera (no argument) or of ``camera_id``. The metric scale estimates are kept: they
        belong to the camera/network, not to the sequence."""
        states = self._cams.values() if camera_id is _ALL else \
            [self._cams[camera_id]] if camera_id in self._cams else []
        for st in states:
            st.prev = None
            st.prev_stamp = None

    def _state(self, camera_id) -> _CameraState:
        st = self._cams.get(camera_id)
        if st is None:
            st = self._cams[camera_id] = _CameraState()
        return st

    @property
    def cameras(self) -> list:
        """Camera ids seen by infer/infer_batch."""
        return list(self._cams)

    def camera_scale(self, camera_id=None) -> float:
        """The current metric scale of ``camera_id`` (1.0 until estimated)."""
        mode = self.config.scale_mode
        if mode == 'none':
            return 1.0
        if mode == 'fixed':
            return float(self.config.scale_factor)
        st = self._cams.get(camera_id)
        return float(st.scale) if st is not None and st.scale is not None else 1.0

    @property
    def scale(self) -> float:
        """The current metric scale of the default camera (1.0 until estimated)."""
        return self.camera_scale(None)

    @property
    def _scale(self):
        st = self._cams.get(None)
        return st.scale if st is not None else None

    @_scale.setter
    def _scale(self, value):
        self._state(None).scale = value

    # -- validation ----------------------------------------------------------------------
    @staticmethod
    def _check_image(image, encoding: str = 'rgb8') -> np.ndarray:
        return check_image(image, encoding)

    @staticmethod
    def _check_K(K) -> np.ndarray:
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

    @staticmethod
    def _check_number(name, value):
        if value is None:
            return None
        if isinstance(value, bool) or not _finite(value):
            raise ValueError(f'{name} must be a finite number or None, got {value!r}')
        return float(value)

    def _check_frame(self, item, index: int, count: int) -> Frame:
        where = f'frame {index}: ' if count > 1 else ''
        try:
            if isinstance(item, Frame):
                f = item
            elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 6:
                f = Frame(*item)
            else:
                raise ValueError('a frame must be a Frame or a tuple (image, K, stamp, speed, '
                                 f'camera_id[, encoding]), got {type(item).__name__}')
            try:
                hash(f.camera_id)
            except TypeError:
                raise ValueError(f'camera_id must be hashable, got {type(f.camera_id).__name__}') from None
            if f.K is None:
                if not self.config.learned_intrinsics:
                    raise ValueError('K is None: give the camera intrinsics (3x3, pixels), or '
                                     'use learned_intrinsics=True to run without them')
                K = None
            else:
                K = self._check_K(f.K)
            return Frame(self._check_image(f.image, f.encoding), K,
                         self._check_number('stamp', f.stamp), self._check_number('speed', f.speed),
                         f.camera_id, f.encoding)
        except ValueError as exc:
            if not where:
                raise
            raise ValueError(where + str(exc)) from exc

    # -- stages --------------------------------------------------------------------------
    def _apply_threads(self):
        if self._torch_threads is not None and torch.get_num_threads() != self._torch_threads:
            torch.set_num_threads(self._torch_threads)

    def _sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def _upload(self, frames: Sequence[Frame]):
        """-> (network input [N,3,h,w] float32 in input order, list of RGB uint8 [H,W,3] views),
        one upload + colour conversion + resize per group of same-size, same-encoding frames."""
        cfg = self.config
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault((f.image.shape, f.encoding), []).append(i)
        parts, order, rgbs = [], [], [None] * len(frames)
        for (_, encoding), idx in groups.items():
            rgb = to_rgb(self._uploader([frames[i].image for i in idx]), encoding)
            parts.append(to_network_input(rgb, (cfg.height, cfg.width)))
            order.extend(idx)
            for j, i in enumerate(idx):
                rgbs[i] = rgb[j]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        if order != sorted(order):
            inverse = torch.as_tensor(np.argsort(order), device=x.device)
            x = x.index_select(0, inverse)
        return x, rgbs

    def _preprocess(self, image: np.ndarray, encoding: str = 'rgb8') -> torch.Tensor:
        """uint8 HxWxC -> [1,3,h,w] float32 in [0,1] at network resolution, on the device."""
        image = self._check_image(image, encoding)
        return self._upload([Frame(image, None, encoding=encoding)])[0]

    def _ground_scale(self, scaled_disp: torch.Tensor, K: np.ndarray, in_wh,
                      rng: np.random.Generator) -> float | None:
        """Scale from the ground plane in the lower image part, or None if none found."""
        h, w = scaled_disp.shape[-2:]
        K_net = intrinsics_for_resize(K, in_wh, (w, h))
        depth = 1.0 / scaled_disp
        # lower 40 % of the image, central 80 % of the columns, subsampled to ~2000 points
        v0, u0, u1 = int(0.6 * h), int(0.1 * w), int(0.9 * w)
        step = max(1, int(math.sqrt((h - v0) * (u1 - u0) / 2000.0)))
        pts = backproject(depth, torch.as_tensor(K_net, dtype=torch.float32, device=depth.device))
        pts = pts[0, :, v0::step, u0:u1:step].reshape(3, -1).T.cpu().double().numpy()
        plane = fit_ground_plane(pts, rng=rng)
        if plane is None:
            return None
        scale = self.config.camera_height / plane[1]
        return scale if _finite(scale) and scale > 0 else None

    def _smooth(self, st: _CameraState, raw: float | None) -> float:
        if raw is not None:
            if st.scale is None:
                st.scale = raw
            else:
                s = self.config.scale_smoothing
                st.scale = math.exp(s * math.log(st.scale) + (1.0 - s) * math.log(raw))
        return float(st.scale) if st.scale is not None else 1.0

    def _scale_for(self, i: int, f: Frame, scaled: torch.Tensor, T, update: bool) -> float:
        """The metric scale of frame i (updating its camera's estimate when ``update``)."""
        cfg = self.config
        H, W = f.image.shape[:2]
        if cfg.scale_mode == 'camera_height':
            if update:
                st = self._state(f.camera_id)
                return self._smooth(st, self._ground_scale(scaled[i:i + 1], f.K, (W, H), st.rng))
            st = self._cams.get(f.camera_id)
            if st is not None and st.scale is not None:
                return float(st.scale)
            raw = self._ground_scale(scaled[i:i + 1], f.K, (W, H), np.random.default_rng(0))
            return raw if raw is not None else 1.0
        if cfg.scale_mode == 'speed':
            if not update:
                return self.camera_scale(f.camera_id)
            st = self._state(f.camera_id)
            raw = None
            if T is not None and f.speed is not None and f.stamp is not None \
                    and st.prev_stamp is not None:
                dt = f.stamp - st.prev_stamp
                norm_t = float(np.linalg.norm(T[:3, 3]))
                if dt > 0 and abs(f.speed) >= MIN_SPEED and norm_t > 1e-9:
                    raw = abs(f.speed) * dt / norm_t
                elif dt <= 0:
                    log.debug('speed scale: non-increasing stamp (dt=%.6f), scale kept', dt)
            return self._smooth(st, raw)
        if cfg.scale_mode == 'relative':
            # scaled is inverse depth: 1 / median(depth) = median(inverse depth)
            med = float(scaled[i].median())
            return med if math.isfinite(med) and med > 0 else 1.0
        return self.camera_scale(f.camera_id)

    def _run(self, items, with_pose: bool) -> list[EstimatorOutput]:
        """The one code path of infer / infer_batch (with_pose=True: pose + state updates) and
        depth_only (with_pose=False: no state change)."""
        frames = [self._check_frame(item, i, len(items)) for i, item in enumerate(items)]
        if not frames:
            return []
        cfg = self.config
        n = len(frames)
        self._apply_threads()
        # one runner for the whole call: a concurrent swap_runner (online refinement) never mixes
        # the old depth net with the new pose net within a frame
        runner = self.runner
        with torch.inference_mode():
            t0 = time.perf_counter()
            x, rgbs = self._upload(frames)
            self._sync()
            t1 = time.perf_counter()
            disp = runner.depth(x).float()                       # one network call
            scaled, _ = self._disp_to_depth(disp, cfg.min_depth, cfg.max_depth)   # float32
            self._sync()
            t2 = time.perf_counter()

            T = [None] * n
            masks = [None] * n
            K_used = [f.K for f in frames]
            if self.has_pose and (with_pose or self.config.learned_intrinsics):
                T, masks, K_used = self._pose_stage(frames, x, with_pose, runner)
            self._sync()
            t3 = time.perf_counter()

            frames = [f._replace(K=K_used[i]) for i, f in enumerate(frames)]
            scales = []
            for i, f in enumerate(frames):             # input order: a camera's frames in turn
                s = self._scale_for(i, f, scaled, T[i], update=with_pose)
                if T[i] is not None:
                    T[i][:3, 3] *= s
                if with_pose:
                    self._state(f.camera_id).prev_stamp = f.stamp
                scales.append(s)
            scale_t = torch.tensor(scales, dtype=torch.float32, device=scaled.device)
            depth_np, depth_dev = [None] * n, [None] * n
            by_size: dict[tuple, list[int]] = {}
            for i, f in enumerate(frames):
                by_size.setdefault(f.image.shape[:2], []).append(i)
            for size, idx in by_size.items():
                sel = slice(None) if len(idx) == n else torch.as_tensor(idx, device=scaled.device)
                d = upsample_disparity(scaled[sel], size) * scale_t[sel].view(-1, 1, 1, 1)
                host = d[:, 0].cpu().numpy()              # one device->host copy per size
                for j, i in enumerate(idx):
                    depth_np[i] = host[j]
                    depth_dev[i] = d[j, 0]
            disp_np = scaled[:, 0].cpu().numpy()          # one device->host copy
            for i, f in enumerate(frames):
                if with_pose:
                    self._state(f.camera_id).prev = x[i]
                rgb = rgbs[i] if self.device.type == 'cuda' else rgbs[i].clone()
                self._last[f.camera_id] = (depth_dev[i], rgb, f.K)
            t4 = time.perf_counter()
        timings = dict(preprocess=(t1 - t0) * 1e3, depth=(t2 - t1) * 1e3, pose=(t3 - t2) * 1e3,
                       postprocess=(t4 - t3) * 1e3, total=(t4 - t0) * 1e3)
        return [EstimatorOutput(depth=depth_np[i], disparity=disp_np[i], relative_pose=T[i],
                                scale=float(scales[i]), timings=dict(timings),
                                camera_id=frames[i].camera_id, stamp=frames[i].stamp,
                                K=np.array(frames[i].K, dtype=np.float64), explainability=masks[i])
                for i in range(n)]

    def _pose_stage(self, frames: list, x: torch.Tensor, with_pose: bool, runner=None):
        """One pose-network call for the batch -> (T_prev_curr per frame | None, explainability
        per frame | None, K used per frame).

        with_pose: pairs [previous, current] for every frame whose camera has a previous frame,
        and (learned intrinsics) the cameras' running K updated with each pair's prediction.
        Learned intrinsics, a frame without K whose camera has no estimate yet and no pair: the
        pair [current, current] is added to the call, only for its K (no state change)."""
        cfg = self.config
        runner = self.runner if runner is None else runner
        n = len(frames)
        learned = cfg.learned_intrinsics
        T, masks, K_used = [None] * n, [None] * n, [f.K for f in frames]
        pair_of: dict[int, int] = {}           # frame index -> row of the pose call
        rows_prev, rows_cur = [], []
        if with_pose:
            last_in_batch = {}
            for i, f in enumerate(frames):     # the previous frame: earlier in this batch, else state
                if f.camera_id in last_in_batch:
                    prev = x[last_in_batch[f.camera_id]]
                else:
                    st = self._cams.get(f.camera_id)
                    prev = st.prev if st is not None else None
                if prev is not None:
                    pair_of[i] = len(rows_prev)
                    rows_prev.append(prev)
                    rows_cur.append(x[i])
                last_in_batch[f.camera_id] = i
        self_pair: dict[int, int] = {}
        if learned:
            estimated = set()                  # cameras with an estimate before frame i
            for i, f in enumerate(frames):
                st = self._cams.get(f.camera_id)
                has = f.camera_id in estimated or (st is not None and st.intrinsics is not None) \
                    or self._intrinsics_prior is not None
                if f.K is None and i not in pair_of and not has:
                    self_pair[i] = len(rows_prev)
                    rows_prev.append(x[i])
                    rows_cur.append(x[i])
                if i in pair_of and with_pose:
                    estimated.add(f.camera_id)
        mats = intr = exp = None
        if rows_prev:
            outs = runner.pose(torch.cat([torch.stack(rows_prev), torch.stack(rows_cur)], dim=1))
            named = dict(zip(self._pose_outputs, outs))
            vec = torch.cat([named['axisangle'].float().reshape(-1, 3),
                             named['translation'].float().reshape(-1, 3)], dim=1).cpu().double()
            mats = pose_vec_to_mat(vec[:, :3], vec[:, 3:], invert=self._pose_invert).numpy()
            if 'intrinsics' in named:
                intr = named['intrinsics'].float().cpu().double().numpy()
            if 'explainability' in named:
                exp = named['explainability'].float()[:, 0].cpu().numpy()
        for i, f in enumerate(frames):         # input order: a camera's estimate grows in turn
            H, W = f.image.shape[:2]
            k = pair_of.get(i)
            if k is not None:
                T[i] = mats[k].copy()
                if exp is not None:
                    masks[i] = exp[k].copy()
                if intr is not None:
                    st = self._state(f.camera_id)
                    if st.intrinsics is None:
                        st.intrinsics = self._new_running_intrinsics()
                    st.intrinsics.update(_K_from_normalized(intr[k], cfg.width, cfg.height),
                                         cfg.width, cfg.height)
            if f.K is None:
                K = self.learned_K(f.camera_id, W, H)
                if K is None:
                    K = _K_from_normalized(intr[self_pair[i]], W, H)
                K_used[i] = K
        return T, masks, K_used

    def _new_running_intrinsics(self) -> RunningIntrinsics:
        r = RunningIntrinsics(momentum=None)
        if self._intrinsics_prior is not None:     # stored with the head: counts as one sample
            r.load_state_dict({'count': 1, 'value': self._intrinsics_prior})
        return r

    def learned_K(self, camera_id: Hashable = None, width: int | None = None,
                  height: int | None = None) -> np.ndarray | None:
        """The learned intrinsics of ``camera_id`` (running mean of the head's predictions over
        its frame pairs; the checkpoint's stored estimate before the first pair) for a
        ``width x height`` image (default: the network resolution): float64 3x3, or None when
        intrinsics are not learned or nothing is known yet."""
        if not self.config.learned_intrinsics:
            return None
        width = self.config.width if width is None else width
        height = self.config.height if height is None else height
        st = self._cams.get(camera_id)
        if st is not None and st.intrinsics is not None:
            return st.intrinsics.K(width, height)
        if self._intrinsics_prior is not None:
            return self._new_running_intrinsics().K(width, height)
        return None

    # -- online refinement (core/online_refinement.py) ---------------------------------
    def trainable_networks(self):
        """Fresh float32 CPU copies of the networks this estimator runs, as built from its
        checkpoint (``build_networks``: eval mode, BatchNorm not folded, monodepth2 layout), for
        fine-tuning. They are independent of the running networks: change them freely, then
        hand them back with :meth:`set_networks`. ValueError for exported models (no torch
        weights to train)."""
        cfg = self.config
        if cfg.exported_model_dir is not None:
            raise ValueError('the networks come from exported models (exported_model_dir): there '
                             'are no torch weights to fine-tune; use a checkpoint instead')
        depth_net, pose_net, _ = build_networks(cfg.model, self.checkpoint, pose_model=cfg.pose_model,
                                                learned_intrinsics=cfg.learned_intrinsics)
        return depth_net, pose_net

    def build_runner(self, depth_net, pose_net, cache_dir=None, warmup: bool = True):
        """A runner of this estimator's backend and device running COPIES of ``depth_net`` /
        ``pose_net`` (the given modules are left as they are; the copies are rewritten for
        inference as at start). Call it from any thread: nothing of the running estimator is
        touched. onnxruntime: the nets are exported to ``cache_dir`` (default: the estimator's
        cache) and fresh sessions opened. ``warmup``: one call of each network at the network
        resolution, so that the first frame after the swap does not pay first-run costs.
        ValueError for backends/options that cannot be rebuilt (exported models, tensorrt,
        torch.compile, CUDA graphs)."""
        cfg = self.config
        if cfg.exported_model_dir is not None or cfg.backend == 'tensorrt':
            raise ValueError('exported models cannot take new weights: run from a checkpoint '
                             "with backend 'torch', 'onnxruntime' or 'torchscript'")
        if cfg.compile or cfg.cuda_graphs:
            raise ValueError('compile / cuda_graphs would recompile / recapture the networks for '
                             'every new set of weights: turn them off to swap weights')
        if (pose_net is None) != (not self.has_pose):
            raise ValueError('the new networks must have a pose network exactly when the running '
                             'ones do')
        depth_net = copy.deepcopy(depth_net).float().cpu().eval()
        pose_net = copy.deepcopy(pose_net).float().cpu().eval() if pose_net is not None else None
        if cfg.backend == 'onnxruntime':
            tag = cfg.model + ('' if cfg.pose_model == 'monodepth2' else f'-{cfg.pose_model}') + \
                ('-K' if cfg.learned_intrinsics else '')
            runner = OrtRunner.from_nets(depth_net, pose_net, self.device, cfg.width, cfg.height,
                                         tag, cache_dir or cfg.cache_dir, cfg.num_threads)
        elif cfg.backend == 'torchscript':
            runner = TorchScriptRunner.from_nets(depth_net, pose_net, self.device, cfg.precision,
                                                 cfg.optimize, (cfg.height, cfg.width))
        else:
            runner = TorchRunner(depth_net, pose_net, self.device, cfg.precision, cfg.channels_last,
                                 cfg.optimize, False, False)
        if warmup:
            with torch.inference_mode():
                x = torch.zeros(1, 3, cfg.height, cfg.width, device=self.device)
                runner.depth(x)
                if runner.has_pose:
                    runner.pose(torch.cat([x, x], 1))
            self._sync()
        return runner

    def swap_runner(self, runner):
        """Make ``runner`` (from :meth:`build_runner`) the one every later inference call uses:
        one reference assignment. A call already running finishes with the runner it started
        with (each call takes the runner once), so no frame ever sees half-updated weights and
        inference is never blocked. Returns ``(old runner, seconds the swap took)``."""
        if bool(runner.has_pose) != self.has_pose:
            raise ValueError('the new runner must have a pose network exactly when the old one does')
        with self._swap_lock:
            t0 = time.perf_counter()
            old, self.runner = self.runner, runner
            took = time.perf_counter() - t0
            self.weights_version += 1
        return old, took

    def set_networks(self, depth_net, pose_net, cache_dir=None, warmup: bool = True) -> dict:
        """:meth:`build_runner` + :meth:`swap_runner`: run these weights from now on. Returns
        ``{'build_ms', 'swap_ms', 'version'}``."""
        t0 = time.perf_counter()
        runner = self.build_runner(depth_net, pose_net, cache_dir, warmup)
        t1 = time.perf_counter()
        _, took = self.swap_runner(runner)
        return {'build_ms': (t1 - t0) * 1e3, 'swap_ms': took * 1e3, 'version': self.weights_version}

    # -- public API ----------------------------------------------------------------------
    def infer(self, image: np.ndarray, K: np.ndarray | None = None, stamp: float | None = None,
              speed: float | None = None, *, camera_id: Hashable = None,
              encoding: str = 'rgb8') -> EstimatorOutput:
        """One frame -> depth at the input resolution + T_prev_curr (None on the first frame).

        image: HxWx3 uint8 RGB (or another ``encoding``: bgr8, rgba8, bgra8, mono8); K: 3x3
        intrinsics of this image (pixels), or None with ``learned_intrinsics`` (the learned K is
        used; ``EstimatorOutput.K`` holds the K used either way); stamp: seconds (needed by scale_mode 'speed');
        speed: metres/second of the camera at this frame (scale_mode 'speed'; None or below
        MIN_SPEED keeps the previous scale); camera_id: whose pose chain this frame continues.
        """
        return self._run([Frame(image, K, stamp, speed, camera_id, encoding)], with_pose=True)[0]

    def infer_batch(self, frames: Sequence) -> list[EstimatorOutput]:
        """Several frames (typically one per camera, taken together) in one network call each for
        depth and pose. ``frames``: :class:`Frame` s or tuples ``(image, K, stamp, speed,
        camera_id[, encoding])``. Frames of any sizes mix (each is resized to the network
        resolution; depth comes back at its own size). Every camera_id has its own previous
        frame and scale: the result equals calling ``infer`` per frame in list order (to float
        rounding), and outputs come in input order. A camera may appear more than once (its
        frames are then chained in list order). ValueError (naming the frame index) on bad
        input, before anything runs or any state changes."""
        return self._run(list(frames), with_pose=True)

    def depth_only(self, image: np.ndarray, K: np.ndarray | None = None, *, camera_id: Hashable = None,
                   encoding: str = 'rgb8') -> np.ndarray:
        """Depth (float32 HxW of the input) for one image; no pose, no state change. The scale
        is the camera's current one ('camera_height' without an estimate yet fits this frame)."""
        return self._run([Frame(image, K, None, None, camera_id, encoding)], with_pose=False)[0].depth

    def point_cloud(self, camera_id: Hashable = None, stride: int = 1, min_range: float = 0.0,
                    max_range: float | None = math.inf, with_rgb: bool = True) -> np.ndarray:
        """Points of the last frame of ``camera_id`` (from infer / infer_batch / depth_only).

        Back-projection, range filtering and packing run on the device; the result is copied
        to the host once. Every ``stride``-th pixel in both directions from (0, 0); a point is
        kept when its depth is finite and > 0 and its distance from the camera centre is in
        ``[min_range, max_range]`` (None/0/inf max_range = no limit). Returns float32 ``(N, 4)``
        rows ``x, y, z, rgb`` in the camera optical frame (depth units; rgb = float32 whose
        bits are 0x00RRGGBB: the memory of a PointCloud2 with fields x, y, z, rgb at offsets 0,
        4, 8, 12, point_step 16, row-major pixel order), or ``(N, 3)`` without rgb.
        ``split_cloud(result)`` gives (xyz float32 (N,3), rgb uint8 (N,3)).
        """
        if camera_id not in self._last:
            raise ValueError(f'no frame of camera {camera_id!r} yet: call infer/depth_only first')
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f'stride must be an int >= 1, got {stride!r}')
        if max_range is None or max_range == 0:
            max_range = math.inf
        if not (_finite(min_range) and min_range >= 0) or not (float(max_range) > min_range):
            raise ValueError(f'need 0 <= min_range < max_range, got {min_range!r}, {max_range!r}')
        depth, rgb, K = self._last[camera_id]
        H, W = depth.shape
        key = (H, W, int(stride), K.tobytes())
        rays = self._rays.get(key)
        with torch.inference_mode():
            if rays is None:
                if len(self._rays) >= 16:
                    self._rays.clear()
                rays = self._rays[key] = pixel_rays(H, W, K, int(stride), depth.device)
            packed = depth_to_cloud(depth, rgb if with_rgb else None, K, int(stride),
                                    float(min_range), float(max_range), rays)
            return packed.cpu().numpy()
