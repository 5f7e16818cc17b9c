"""The Estimator: one RGB frame (+ K) -> depth at the camera resolution and the pose to the
previous frame.

It owns everything between a decoded camera image and metric outputs: preprocessing (resize to
the network resolution with antialiasing, [0, 1] scaling; the encoders apply monodepth2's
``(x - 0.45) / 0.225``), the networks and their backend (torch eager, optionally channels_last;
ONNX Runtime), device and precision, disparity -> depth, upsampling back to the input size and
the metric scale (none / fixed / camera height above the ground / speed).

Networks are monodepth2's: a ResNet depth encoder + depth decoder, and a separate ResNet pose
encoder fed the stacked pair [previous, current] + pose decoder. Checkpoints use monodepth2's
directory layout (see :mod:`depth_ego_ros.core.checkpoints`).

Backends are small "runner" objects with ``depth(image) -> disparity`` and
``pose(pair) -> (axisangle, translation)`` on torch tensors, so faster paths (torch.compile,
CUDA graphs, TensorRT, ONNX Runtime CUDA) can be added as further runners without touching the
pre/post-processing or the scale logic.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from . import checkpoints as ckpt
from .geometry import backproject, intrinsics_for_resize, pose_vec_to_mat
from .networks.depth_decoder import DepthDecoder, disp_to_depth
from .networks.pose_decoder import PoseDecoder
from .networks.resnet_encoder import ResnetEncoder, parse_num_layers

__all__ = ['EstimatorConfig', 'Estimator', 'EstimatorOutput', 'DepthNet', 'PoseNet',
           'build_networks', 'fit_ground_plane', 'colorize_disparity', 'default_intrinsics',
           'MONODEPTH2_KITTI_K']

log = logging.getLogger(__name__)

_MODELS = ('resnet18', 'resnet50')
_PRECISIONS = ('fp32', 'fp16')
_BACKENDS = ('torch', 'onnxruntime')
_SCALE_MODES = ('none', 'fixed', 'camera_height', 'speed')

#: monodepth2's KITTI intrinsics, normalised by the image size (fx/W, fy/H, cx/W, cy/H)
MONODEPTH2_KITTI_K = np.array([[0.58, 0.0, 0.5],
                               [0.0, 1.92, 0.5],
                               [0.0, 0.0, 1.0]])
#: below this speed (m/s) a frame does not update the speed-based scale
MIN_SPEED = 0.05
ONNX_OPSET = 17


# ----------------------------------------------------------------------------------------------
# configuration and output
# ----------------------------------------------------------------------------------------------
@dataclass
class EstimatorConfig:
    """Estimator settings (validated on construction; ValueError says what is wrong).

    model: 'resnet18' | 'resnet50' (encoders of both nets).
    width, height: network input resolution (multiples of 32). Images of any size are resized
        to it; depth is returned at the input size.
    device: 'auto' (CUDA when available, else CPU) | 'cpu' | 'cuda' | 'cuda:N'.
    precision: 'fp32' | 'fp16' (fp16 only on CUDA; on CPU it falls back to fp32 with a warning).
    backend: 'torch' | 'onnxruntime' (nets exported to ONNX in ``cache_dir`` at construction).
    min_depth, max_depth: disparity -> depth bounds (monodepth2: 0.1, 100).
    scale_mode: 'none' (relative depth) | 'fixed' (times ``scale_factor``) | 'camera_height'
        (ground plane fitted in the lower image part lies ``camera_height`` metres below the
        camera) | 'speed' (|translation| = speed * dt, speed and stamp given to ``infer``).
    num_threads: CPU threads for torch (process-wide) / ONNX Runtime; 0 = library default.
    channels_last: torch backend only: run the nets in channels_last memory format.
    scale_smoothing: weight of the previous scale in the running (log-domain) average used by
        'camera_height' and 'speed' (0 = use each frame's estimate as is).
    cache_dir: where the onnxruntime backend keeps exported models (default
        ``$XDG_CACHE_HOME/depth_ego_ros/onnx`` or ``~/.cache/depth_ego_ros/onnx``).
    """
    model: str = 'resnet18'
    width: int = 640
    height: int = 192
    device: str = 'auto'
    precision: str = 'fp32'
    backend: str = 'torch'
    min_depth: float = 0.1
    max_depth: float = 100.0
    scale_mode: str = 'none'
    scale_factor: float = 1.0
    camera_height: float = 1.0
    num_threads: int = 0
    channels_last: bool = False
    scale_smoothing: float = 0.8
    cache_dir: str | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> 'EstimatorConfig':
        if self.model not in _MODELS:
            raise ValueError(f'model must be one of {_MODELS}, got {self.model!r}')
        for name in ('width', 'height'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % 32:
                raise ValueError(f'{name} must be a positive multiple of 32 (the encoder '
                                 f'downsamples by 32), got {v!r}')
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
        if not (_finite(self.scale_factor) and self.scale_factor > 0):
            raise ValueError(f'scale_factor must be finite and > 0, got {self.scale_factor!r}')
        if not (_finite(self.camera_height) and self.camera_height > 0):
            raise ValueError(f'camera_height must be finite and > 0 (metres), got {self.camera_height!r}')
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, (int, np.integer)) \
                or self.num_threads < 0:
            raise ValueError(f'num_threads must be an int >= 0, got {self.num_threads!r}')
        if not (_finite(self.scale_smoothing) and 0 <= self.scale_smoothing < 1):
            raise ValueError(f'scale_smoothing must be in [0, 1), got {self.scale_smoothing!r}')
        return self


@dataclass
class EstimatorOutput:
    """depth: float32 HxW at the input resolution; metres, or relative when scale_mode='none'.
    disparity: float32 at network resolution, ``1 / depth`` before the metric scale
        (monodepth2's scaled disparity).
    relative_pose: float64 4x4 ``T_prev_curr`` (maps current-camera points into the previous
        camera frame = pose of the current camera in the previous one), translation in depth
        units; None on the first frame, after reset() and when the checkpoint has no pose net.
    scale: the factor applied to depth and translation.
    timings: milliseconds per stage: preprocess, depth, pose, postprocess, total.
    """
    depth: np.ndarray
    disparity: np.ndarray
    relative_pose: np.ndarray | None
    scale: float
    timings: dict = field(default_factory=dict)


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


class PoseNet(nn.Module):
    """Pose encoder (2 stacked frames) + decoder: pair [B,6,H,W] = [frame_a, frame_b] in [0,1]
    -> (axisangle [B,3], translation [B,3]) of ``T_b_a`` (monodepth2's first prediction)."""

    def __init__(self, encoder: ResnetEncoder, decoder: PoseDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, pair):
        axisangle, translation = self.decoder([self.encoder(pair)])
        return axisangle[:, 0, 0], translation[:, 0, 0]


def build_networks(model: str = 'resnet18', checkpoint: str | os.PathLike | None = None,
                   with_pose: bool = True, seed: int = 0):
    """Create (DepthNet, PoseNet | None, meta) in eval mode on the CPU.

    With a checkpoint directory the weights are loaded from it (CheckpointError if they do not
    fit; PoseNet is None when the directory has no pose files). Without one the weights are
    random but reproducible (seeded, without touching the global RNG state).
    meta: encoder.pth's {'height', 'width', 'use_stereo'} (empty without a checkpoint).
    """
    n = parse_num_layers(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = ResnetEncoder(n, num_input_images=1)
        dec = DepthDecoder(enc.num_ch_enc)
        penc = pdec = None
        if with_pose:
            penc = ResnetEncoder(n, num_input_images=2)
            pdec = PoseDecoder(penc.num_ch_enc, num_input_features=1, num_frames_to_predict_for=2)
    meta = {}
    if checkpoint is not None:
        if with_pose and not ckpt.has_pose(checkpoint):
            penc = pdec = None
        meta = ckpt.load_monodepth2(checkpoint, enc, dec, penc, pdec)
    depth_net = DepthNet(enc, dec).eval()
    pose_net = PoseNet(penc, pdec).eval() if penc is not None else None
    return depth_net, pose_net, meta


# ----------------------------------------------------------------------------------------------
# backends ("runners")
# ----------------------------------------------------------------------------------------------
class _TorchRunner:
    """Eager torch on the estimator's device and dtype (optionally channels_last)."""
    name = 'torch'

    def __init__(self, depth_net, pose_net, device, dtype, channels_last):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.memory_format = fmt
        self.depth_net = depth_net.to(device=device, dtype=dtype, memory_format=fmt)
        self.pose_net = (pose_net.to(device=device, dtype=dtype, memory_format=fmt)
                         if pose_net is not None else None)

    def depth(self, image):
        return self.depth_net(image.contiguous(memory_format=self.memory_format))

    def pose(self, pair):
        return self.pose_net(pair.contiguous(memory_format=self.memory_format))


def default_cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'depth_ego_ros' / 'onnx'


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: list[str]) -> Path:
    """Export ``net`` (fp32, CPU) to ONNX at ``path`` (batch axis dynamic); atomic write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    dyn = {input_name: {0: 'batch'}, **{o: {0: 'batch'} for o in output_names}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[input_name], output_names=output_names,
                          dynamic_axes=dyn, do_constant_folding=True)
    os.replace(tmp, path)
    return path


class _OrtRunner:
    """ONNX Runtime sessions for both nets (exported once per weights/resolution, cached)."""
    name = 'onnxruntime'

    def __init__(self, depth_net, pose_net, config: EstimatorConfig, device: torch.device):
        import onnxruntime as ort  # optional dependency: only this backend needs it
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        tag = f'{config.model}_{config.width}x{config.height}_op{ONNX_OPSET}_' \
              f'torch{torch.__version__.split("+")[0]}'
        depth_net = depth_net.float().cpu()
        ex = torch.zeros(1, 3, config.height, config.width)
        depth_path = cache / f'depth_{tag}_{ckpt.state_dict_digest(depth_net)}.onnx'
        if not depth_path.is_file():
            log.info('exporting the depth net to %s', depth_path)
            export_onnx(depth_net, ex, depth_path, 'image', ['disparity'])
        pose_path = None
        if pose_net is not None:
            pose_net = pose_net.float().cpu()
            pose_path = cache / f'pose_{tag}_{ckpt.state_dict_digest(pose_net)}.onnx'
            if not pose_path.is_file():
                log.info('exporting the pose net to %s', pose_path)
                export_onnx(pose_net, torch.zeros(1, 6, config.height, config.width), pose_path,
                            'pair', ['axisangle', 'translation'])
        self.paths = {'depth': depth_path, 'pose': pose_path}

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if config.num_threads > 0:
            opts.intra_op_num_threads = int(config.num_threads)
            opts.inter_op_num_threads = 1
        # Two sessions run back to back: with spinning worker threads (ORT's default) the idle
        # pool of one keeps the cores busy while the other runs (measured ~2x slower here).
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
        providers = ['CPUExecutionProvider']
        if device.type == 'cuda':
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise ValueError("backend='onnxruntime' on CUDA needs onnxruntime-gpu "
                                 '(CUDAExecutionProvider not available); use device=cpu')
            providers = [('CUDAExecutionProvider', {'device_id': device.index or 0}),
                         'CPUExecutionProvider']
        self.providers = providers
        self.depth_sess = ort.InferenceSession(str(depth_path), opts, providers=providers)
        self.pose_sess = (ort.InferenceSession(str(pose_path), opts, providers=providers)
                          if pose_path is not None else None)

    @staticmethod
    def _np(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().to('cpu', torch.float32).numpy())

    def depth(self, image):
        (disp,) = self.depth_sess.run(None, {'image': self._np(image)})
        return torch.from_numpy(disp)

    def pose(self, pair):
        aa, t = self.pose_sess.run(None, {'pair': self._np(pair)})
        return torch.from_numpy(aa), torch.from_numpy(t)


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
def _resolve_device(name: str) -> torch.device:
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


class Estimator:
    """Depth + ego-motion from a monocular RGB stream.

    ``Estimator(config, checkpoint=None)``: checkpoint is a monodepth2-layout directory; None
    gives randomly initialised (seeded) networks and logs a warning. ``infer`` keeps the
    previous frame for the pose net; ``reset`` forgets it; ``depth_only`` changes no state.
    Not thread-safe: use one Estimator per worker thread.
    """

    def __init__(self, config: EstimatorConfig | None = None, checkpoint: str | os.PathLike | None = None):
        config = dataclasses.replace(config) if config is not None else EstimatorConfig()
        config.validate()
        self.device = _resolve_device(config.device)
        if config.precision == 'fp16' and self.device.type != 'cuda':
            warnings.warn('precision fp16 is only supported on CUDA; using fp32 on the CPU',
                          RuntimeWarning, stacklevel=2)
            log.warning('precision fp16 is only supported on CUDA; using fp32 on the CPU')
            config.precision = 'fp32'
        if config.backend == 'onnxruntime' and config.precision == 'fp16':
            log.warning('the onnxruntime backend runs fp32 models; ignoring precision fp16')
            config.precision = 'fp32'
        self.config = config
        self.dtype = torch.float16 if config.precision == 'fp16' else torch.float32
        if config.num_threads > 0:
            torch.set_num_threads(int(config.num_threads))

        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if self.checkpoint is None:
            log.warning('Estimator: no checkpoint given, the networks have RANDOM weights: '
                        'depth and poses are meaningless (give a monodepth2 checkpoint directory)')
        depth_net, pose_net, meta = build_networks(config.model, self.checkpoint)
        self.checkpoint_meta = meta
        if self.checkpoint is not None and pose_net is None:
            log.warning('checkpoint %s has no pose networks (%s, %s): relative poses will be None',
                        self.checkpoint, ckpt.POSE_ENCODER_FILE, ckpt.POSE_FILE)
        if meta.get('width') and (meta['width'], meta['height']) != (config.width, config.height):
            log.info('checkpoint was trained at %sx%s; running at %sx%s',
                     meta['width'], meta['height'], config.width, config.height)
        self.has_pose = pose_net is not None

        if config.backend == 'onnxruntime':
            self.runner = _OrtRunner(depth_net, pose_net, config, self.device)
            self._pre_device = torch.device('cpu') if self.device.type != 'cuda' else self.device
        else:
            self.runner = _TorchRunner(depth_net, pose_net, self.device, self.dtype, config.channels_last)
            self._pre_device = self.device
        self._rng = np.random.default_rng(0)
        self._scale: float | None = None
        self.reset()

    # -- state ---------------------------------------------------------------------------
    def reset(self):
        """Forget the previous frame (the next infer() returns relative_pose None). The metric
        scale estimate is kept: it belongs to the camera/network, not to the sequence."""
        self._prev: torch.Tensor | None = None
        self._prev_stamp: float | None = None

    @property
    def scale(self) -> float:
        """The current metric scale (1.0 until estimated)."""
        if self.config.scale_mode == 'none':
            return 1.0
        if self.config.scale_mode == 'fixed':
            return float(self.config.scale_factor)
        return float(self._scale) if self._scale is not None else 1.0

    # -- validation ----------------------------------------------------------------------
    @staticmethod
    def _check_image(image) -> None:
        if not isinstance(image, np.ndarray):
            raise ValueError(f'image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}')
        if image.dtype != np.uint8:
            raise ValueError(f'image must be uint8 RGB (HxWx3), got dtype {image.dtype}')
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'image must be HxWx3 (RGB), got shape {image.shape}'
                             + (' (a 2-D grey image? convert it to RGB)' if image.ndim == 2 else ''))
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f'image has zero size: shape {image.shape}')

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

    # -- stages --------------------------------------------------------------------------
    def _sync(self):
        if self._pre_device.type == 'cuda':
            torch.cuda.synchronize(self._pre_device)

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 -> [1,3,h,w] in [0,1] at network resolution, on the compute device."""
        cfg = self.config
        if not image.flags.writeable or not image.flags.c_contiguous:
            image = np.array(image, order='C')   # torch wants a writable, contiguous buffer
        t = torch.from_numpy(image)
        if self._pre_device.type == 'cuda':
            t = t.pin_memory().to(self._pre_device, non_blocking=True)   # upload uint8
        x = t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        if x.shape[-2:] != (cfg.height, cfg.width):
            x = F.interpolate(x, size=(cfg.height, cfg.width), mode='bilinear',
                              align_corners=False, antialias=True)
        return x.to(self.dtype)

    def _depth(self, x: torch.Tensor, out_hw) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (scaled disparity [1,1,h,w] fp32, relative depth [1,1,H,W] fp32 at out_hw)."""
        disp = self.runner.depth(x).float()
        scaled, _ = disp_to_depth(disp, self.config.min_depth, self.config.max_depth)
        full = scaled
        if tuple(out_hw) != tuple(scaled.shape[-2:]):
            full = F.interpolate(scaled, size=tuple(out_hw), mode='bilinear', align_corners=False)
        return scaled, 1.0 / full

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

    def _smooth(self, raw: float | None) -> float:
        if raw is not None:
            if self._scale is None:
                self._scale = raw
            else:
                s = self.config.scale_smoothing
                self._scale = math.exp(s * math.log(self._scale) + (1.0 - s) * math.log(raw))
        return self.scale

    # -- public API ----------------------------------------------------------------------
    def infer(self, image: np.ndarray, K: np.ndarray, stamp: float | None = None,
              speed: float | None = None) -> EstimatorOutput:
        """One frame -> depth at the input resolution + T_prev_curr (None on the first frame).

        image: HxWx3 uint8 RGB; K: 3x3 intrinsics of this image (pixels); stamp: seconds
        (needed by scale_mode 'speed'); speed: metres/second of the camera at this frame
        (scale_mode 'speed'; None or below MIN_SPEED keeps the previous scale).
        """
        self._check_image(image)
        K = self._check_K(K)
        stamp = self._check_number('stamp', stamp)
        speed = self._check_number('speed', speed)
        cfg = self.config
        H, W = image.shape[:2]
        timings = {}
        with torch.inference_mode():
            t0 = time.perf_counter()
            x = self._preprocess(image)
            self._sync()
            t1 = time.perf_counter()
            scaled_disp, depth = self._depth(x, (H, W))
            self._sync()
            t2 = time.perf_counter()
            T = None
            if self.has_pose and self._prev is not None:
                aa, tr = self.runner.pose(torch.cat([self._prev, x], dim=1))
                # the net predicts T_curr_prev for [prev, curr]; invert -> T_prev_curr
                T = pose_vec_to_mat(aa.float().cpu().double(), tr.float().cpu().double(),
                                    invert=True)[0].numpy()
            self._sync()
            t3 = time.perf_counter()

            if cfg.scale_mode == 'camera_height':
                scale = self._smooth(self._ground_scale(scaled_disp, K, (W, H), self._rng))
            elif cfg.scale_mode == 'speed':
                raw = None
                if T is not None and speed is not None and stamp is not None \
                        and self._prev_stamp is not None:
                    dt = stamp - self._prev_stamp
                    norm_t = float(np.linalg.norm(T[:3, 3]))
                    if dt > 0 and abs(speed) >= MIN_SPEED and norm_t > 1e-9:
                        raw = abs(speed) * dt / norm_t
                    elif dt <= 0:
                        log.debug('speed scale: non-increasing stamp (dt=%.6f), scale kept', dt)
                scale = self._smooth(raw)
            else:
                scale = self.scale
            depth_np = (depth[0, 0] * scale).cpu().numpy().astype(np.float32, copy=False)
            disp_np = scaled_disp[0, 0].cpu().numpy().astype(np.float32, copy=False)
            if T is not None:
                T[:3, 3] *= scale
            self._prev = x
            self._prev_stamp = stamp
            t4 = time.perf_counter()
        timings.update(preprocess=(t1 - t0) * 1e3, depth=(t2 - t1) * 1e3, pose=(t3 - t2) * 1e3,
                       postprocess=(t4 - t3) * 1e3, total=(t4 - t0) * 1e3)
        return EstimatorOutput(depth=depth_np, disparity=disp_np, relative_pose=T,
                               scale=float(scale), timings=timings)

    def depth_only(self, image: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Depth (float32 HxW of the input) for one image; no pose, no state change. The scale
        is the current one ('camera_height' without an estimate yet fits this frame)."""
        self._check_image(image)
        K = self._check_K(K)
        H, W = image.shape[:2]
        with torch.inference_mode():
            x = self._preprocess(image)
            scaled_disp, depth = self._depth(x, (H, W))
            scale = self.scale
            if self.config.scale_mode == 'camera_height' and self._scale is None:
                raw = self._ground_scale(scaled_disp, K, (W, H), np.random.default_rng(0))
                scale = raw if raw is not None else 1.0
            return (depth[0, 0] * scale).cpu().numpy().astype(np.float32, copy=False)
