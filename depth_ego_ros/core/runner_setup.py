"""Choosing and building the Estimator's backend runner, and swapping weights while it runs.

:class:`RunnerSetup` holds the Estimator's runner methods (a mixin of
:class:`~depth_ego_ros.core.estimator.Estimator`; they use its ``config``, ``device``,
``checkpoint`` and ``runner``): ``_make_runner`` builds the runner of the configured backend at
start (``core/backends/``: torch, TorchScript, ONNX Runtime, OpenVINO, auto; falling back to torch when a
PackNet/PoseExpNet/intrinsics network cannot be exported), and online refinement's
``trainable_networks`` -> ``build_runner`` -> ``swap_runner`` (``set_networks`` = both) replace
the weights with one reference assignment, never blocking inference.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings

import torch

from . import checkpoints as ckpt
from .backends import (OpenVINORunner, OrtRunner, TorchRunner, TorchScriptRunner, accuracy_guard,
                       auto_cpu_runner, load_exported_runner, require_accuracy, resolve_backend)
from .export import read_manifest
from .models import PackNetDepth, build_networks

__all__ = ['RunnerSetup']

# moved out of core/estimator.py: keeps that logger name so log filters/levels still match
log = logging.getLogger('depth_ego_ros.core.estimator')


class RunnerSetup:
    """The Estimator's runner methods (a mixin of :class:`~depth_ego_ros.core.estimator.Estimator`)."""

    def _choose_backend(self, config, requested_backend: str):
        """At start: the exported models' manifest (None without ``exported_model_dir``), which
        overrides model, resolution and precision, then the device's limits (fp16/bf16/CUDA
        graphs) applied to ``config`` (changed in place) and the backend chosen.
        -> (manifest | None, backend, why it was chosen)."""
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
                          RuntimeWarning, stacklevel=3)
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
        elif backend in ('torch', 'torchscript') and config.precision in ('int8', 'auto'):
            if config.precision == 'int8':
                log.warning('precision int8 needs an OpenVINO export; backend %s runs fp32', backend)
            config.precision = 'fp32'
        elif backend == 'openvino' and config.precision == 'auto':
            config.precision = 'bf16'         # checked by the accuracy guard at start
            self._precision_auto = True       # (fp32 when it fails)
        elif backend == 'onnxruntime' and config.precision != 'fp32':
            log.warning('the onnxruntime backend exports fp32 models at start; ignoring precision '
                        '%s (export with `depth-ego export --fp16` and set exported_model_dir)',
                        config.precision)
            config.precision = 'fp32'
        config.backend = backend
        return manifest, backend, why

    def _load_runner(self, config, manifest, backend: str):
        """At start: sets ``runner`` (from the exported models, else networks built from the
        checkpoint run on ``backend``), ``checkpoint_meta`` and ``_pose_outputs``; returns the
        PackNet min_depth of the depth network (None for monodepth2's disparity convention)."""
        self.checkpoint_meta = {}
        if manifest is not None:
            if self.checkpoint is not None:
                log.warning('checkpoint %s ignored: the weights come from the exported models in %s',
                            self.checkpoint, manifest['directory'])
            if manifest.get('random_weights'):
                log.warning('Estimator: the exported models in %s have RANDOM weights: depth and '
                            'poses are meaningless', manifest['directory'])
            self.runner = load_exported_runner(manifest, self.device, config.num_threads,
                                               config.optimize, auto=self._requested_backend == 'auto')
            config.precision = self.runner.precision
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
        return net_min_depth

    def _make_runner(self, backend, depth_net, pose_net, net_min_depth=None):
        cfg = self.config
        tag = cfg.model + ('' if cfg.pose_model == 'monodepth2' else f'-{cfg.pose_model}') + \
            ('-K' if cfg.learned_intrinsics else '')
        if backend == 'auto':     # CPU: measured choice (backends.select), cached per machine
            try:
                runner, _ = auto_cpu_runner(
                    depth_net, pose_net, self.device, cfg.width, cfg.height, tag, cfg.cache_dir,
                    cfg.num_threads, ('fp32', 'bf16') if cfg.precision == 'auto' else ('fp32',))
                cfg.backend, cfg.precision = runner.name, runner.precision
                return runner
            except RuntimeError as exc:      # no CPU runtime could run these nets
                log.warning('%s; falling back to torch', exc)
                self._fallback_reason = str(exc)
                cfg.backend, cfg.precision = 'torch', 'fp32'
        if backend == 'openvino':   # the accuracy guard refuses a reduced precision that fails
            runner = OpenVINORunner.from_nets(depth_net, pose_net, self.device, cfg.width,
                                              cfg.height, tag, cfg.cache_dir, cfg.num_threads,
                                              cfg.precision)
            if cfg.precision != 'fp32':
                report = accuracy_guard(runner, runner.depth_net, runner.pose_net, cfg.precision,
                                        height=cfg.height, width=cfg.width)
                if not report['passed'] and getattr(self, '_precision_auto', False):
                    log.warning('precision auto: openvino bf16 failed the accuracy guard (%s); '
                                'using fp32', ', '.join(report['failed']))
                    self._guard_note = 'precision auto: bf16 failed the accuracy guard, fp32'
                    cfg.precision = 'fp32'
                    return self._make_runner(backend, depth_net, pose_net, net_min_depth)
                runner.guard = require_accuracy(report, f'backend openvino {cfg.precision}')
            return runner
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

    # -- online refinement (core/online_refinement/) -----------------------------------
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
        elif cfg.backend == 'openvino':
            tag = cfg.model + ('' if cfg.pose_model == 'monodepth2' else f'-{cfg.pose_model}') + \
                ('-K' if cfg.learned_intrinsics else '')
            runner = OpenVINORunner.from_nets(depth_net, pose_net, self.device, cfg.width,
                                              cfg.height, tag, cache_dir or cfg.cache_dir,
                                              cfg.num_threads, cfg.precision)
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
