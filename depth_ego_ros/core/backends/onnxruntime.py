"""ONNX Runtime runner: CUDA or CPU execution provider by device, I/O bound to torch tensors (no
host round trip on CUDA), worker-thread spinning off."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .base import Runner
from .graph_io import INPUT_NAMES, OUTPUT_NAMES, cached_onnx, pose_output_shapes

log = logging.getLogger(__name__)

__all__ = ['OrtRunner', 'onnxruntime_available']


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


class OrtRunner(Runner):
    """ONNX Runtime sessions (CUDA execution provider on a CUDA device, else CPU). Inputs and
    outputs are bound to torch tensors on the device (IOBinding), so CUDA frames never visit the
    host. ``providers``: what the sessions actually use (``session.get_providers()``)."""
    name = 'onnxruntime'

    def __init__(self, depth_path, pose_path, device, num_threads: int = 0,
                 precision: str = 'fp32'):
        import onnxruntime as ort  # optional dependency: only this backend needs it
        self.ort = ort
        self.device = torch.device(device)
        self.precision = precision
        self.paths = {'depth': Path(depth_path), 'pose': Path(pose_path) if pose_path else None}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads > 0:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        # Two sessions run back to back: with spinning worker threads (ORT's default) the idle
        # pool of one keeps the cores busy while the other runs (measured ~2x slower here).
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
        providers = ['CPUExecutionProvider']
        if self.device.type == 'cuda':
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise ValueError("backend 'onnxruntime' on CUDA needs onnxruntime-gpu "
                                 '(CUDAExecutionProvider not available); use device=cpu or '
                                 "backend 'torch'")
            providers = [('CUDAExecutionProvider', {'device_id': self.device.index or 0}),
                         'CPUExecutionProvider']
        self.depth_sess = ort.InferenceSession(str(depth_path), opts, providers=providers)
        self.pose_sess = (ort.InferenceSession(str(pose_path), opts, providers=providers)
                          if pose_path else None)
        self.pose_outputs = ([o.name for o in self.pose_sess.get_outputs()]
                             if self.pose_sess is not None else [])
        self.providers = list(self.depth_sess.get_providers())
        if self.device.type == 'cuda' and self.providers[0] != 'CUDAExecutionProvider':
            log.warning('ONNX Runtime did not take the CUDA provider (using %s)', self.providers)
        self._io_device = 'cuda' if self.providers[0] == 'CUDAExecutionProvider' else 'cpu'
        self.info = {'backend': self.name, 'device': str(self.device), 'precision': precision,
                     'providers': self.providers, 'onnxruntime': ort.__version__,
                     'files': {k: str(v) if v else None for k, v in self.paths.items()}}
        self.depth_net = self.pose_net = None

    @classmethod
    def from_nets(cls, depth_net, pose_net, device, width: int, height: int, model: str,
                  cache_dir=None, num_threads: int = 0):
        """Export the nets (float32) to ONNX in ``cache_dir`` once per weights/resolution/opset/
        torch version and open them."""
        depth_path, pose_path, depth_net, pose_net = cached_onnx(
            depth_net, pose_net, width, height, model, cache_dir)
        runner = cls(depth_path, pose_path, device, num_threads)
        runner.depth_net, runner.pose_net = depth_net, pose_net     # the torch reference
        return runner

    @property
    def has_pose(self) -> bool:
        return self.pose_sess is not None

    def describe(self) -> str:
        return f'onnxruntime {self.ort.__version__} on {self.device} {self.precision} ' \
               f'[{", ".join(self.providers)}]'

    def _run(self, sess, name: str, x: torch.Tensor, out_shapes: list[tuple]):
        import numpy as np
        target = self.device if self._io_device == 'cuda' else torch.device('cpu')
        x = x.to(target, torch.float32).contiguous()
        dev_id = (x.device.index or 0) if x.device.type == 'cuda' else 0
        binding = sess.io_binding()
        binding.bind_input(name, self._io_device, dev_id, np.float32, tuple(x.shape), x.data_ptr())
        outs = []
        for out_name, shape in out_shapes:
            t = torch.empty(shape, dtype=torch.float32, device=x.device)
            binding.bind_output(out_name, self._io_device, dev_id, np.float32, shape, t.data_ptr())
            outs.append(t)
        if x.device.type == 'cuda':
            torch.cuda.current_stream(x.device).synchronize()   # ORT runs on its own stream
        sess.run_with_iobinding(binding)
        if x.device.type == 'cuda':
            binding.synchronize_outputs()
        return outs

    def depth(self, image):
        b, _, h, w = image.shape
        (disp,) = self._run(self.depth_sess, INPUT_NAMES['depth'][0], image,
                            [(OUTPUT_NAMES['depth'][0], (b, 1, h, w))])
        return disp

    def pose(self, pair):
        b, _, h, w = pair.shape
        return tuple(self._run(self.pose_sess, INPUT_NAMES['pose'][0], pair,
                               pose_output_shapes(self.pose_outputs, b, h, w)))
