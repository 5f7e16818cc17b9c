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

Where the parts live: this module is the Estimator itself (frames in, depth/pose out: upload,
depth, post-processing, state, point cloud); its settings and records are in
:mod:`~depth_ego_ros.core.estimator_types`, the networks and their loading in
:mod:`~depth_ego_ros.core.models`, the backend runner's choice/construction and weight swaps in
:mod:`~depth_ego_ros.core.runner_setup`, the pose-network stage in
:mod:`~depth_ego_ros.core.pose_stage`, scale recovery in :mod:`~depth_ego_ros.core.scale`,
per-camera state and default intrinsics in :mod:`~depth_ego_ros.core.cameras`, and the
colour-mapped depth in :mod:`~depth_ego_ros.core.visualize`. runner_setup, pose_stage and
scale hold Estimator methods as mixins (RunnerSetup, PoseStage, ScaleRecovery), so each
concern reads in its own file while the Estimator's API stays one class.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np
import torch

from . import checkpoints as ckpt
from .backends import resolve_device
from .cameras import _CameraState
from .device_ops import Uploader, check_image, depth_to_cloud, pixel_rays, to_network_input, to_rgb, \
    upsample_disparity
from .estimator_types import EstimatorConfig, EstimatorOutput, Frame, _finite, check_K, check_number
from .networks.depth_decoder import disp_to_depth
from .networks.packnet import packnet_disp_to_depth
from .pose_stage import PoseStage
from .runner_setup import RunnerSetup
from .scale import ScaleRecovery
# re-exported: the names outside code imports from here (docs, training, scripts loading
# checkpoints); inside the package import them from where they live
from .cameras import default_intrinsics
from .device_ops import ENCODINGS, split_cloud
from .models import build_networks, export_estimator_models, save_networks
from .names import MODELS, POSE_MODELS
from .visualize import colorize_disparity

__all__ = ['Estimator', 'EstimatorConfig', 'EstimatorOutput', 'Frame',
           # re-exports (see above)
           'build_networks', 'save_networks', 'export_estimator_models', 'default_intrinsics',
           'colorize_disparity', 'split_cloud', 'ENCODINGS', 'MODELS', 'POSE_MODELS']

log = logging.getLogger(__name__)

_ALL = object()                           # reset(): every camera


class Estimator(PoseStage, ScaleRecovery, RunnerSetup):
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
        self._requested_backend = requested_backend

        manifest, backend, why = self._choose_backend(config, requested_backend)
        self.config = config
        self.dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(config.precision, torch.float32)
        # torch's intra-op threads, applied on the thread that runs inference (OpenMP keeps the
        # count per thread: a worker thread does not see a later change made by another one).
        self._torch_threads = int(config.num_threads) if config.num_threads > 0 else None
        if backend in ('onnxruntime', 'openvino', 'auto') and self.device.type == 'cpu':
            # torch only runs the small pre/post-processing ops here (~1 ms at 640x480); with
            # more threads its OpenMP pool busy-waits next to ONNX Runtime's threads and made
            # both ~1.5x slower on 2 shared cores (docs/inference.md). num_threads -> ORT only.
            self._torch_threads = 1
            log.info('backend %s on the CPU: torch runs at 1 thread', backend)
        self._apply_threads()

        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if config.scale_factor is None:    # zoo models record their published factor (stereo: 5.4)
            config.scale_factor = ckpt.published_scale_factor(self.checkpoint)
        net_min_depth = self._load_runner(config, manifest, backend)
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
        if getattr(self, '_guard_note', None):
            why = f'{why}; {self._guard_note}'
        if getattr(self.runner, 'selection', None):     # backend auto's measured choice
            why = self.runner.selection['reason'] + (' (cached)' if self.runner.selection.get('cached') else '')
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

    # -- validation ----------------------------------------------------------------------
    @staticmethod
    def _check_image(image, encoding: str = 'rgb8') -> np.ndarray:
        return check_image(image, encoding)

    _check_K = staticmethod(check_K)
    _check_number = staticmethod(check_number)

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
