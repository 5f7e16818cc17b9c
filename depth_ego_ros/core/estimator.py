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
from .estimator_types import (_SCALE_MODES, EstimatorConfig, EstimatorOutput, Frame, _finite,
                              check_K, check_number)
from .scale import MIN_SPEED, ScaleRecovery, fit_ground_plane
from .cameras import MONODEPTH2_KITTI_K, _CameraState, _K_from_normalized, default_intrinsics
from .visualize import colorize_disparity
from .models import (DepthNet, PackNetDepth, PoseExpPose, PoseNet, build_networks,
                     export_estimator_models, save_networks)
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




# ----------------------------------------------------------------------------------------------
# the estimator
# ----------------------------------------------------------------------------------------------
_resolve_device = resolve_device          # the old private name (kept for callers)
_ALL = object()                           # reset(): every camera


class Estimator(ScaleRecovery):
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
