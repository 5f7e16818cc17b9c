"""TorchScript runner: traced modules (traced at start, or ``.pt`` files from ``depth-ego
export``), frozen; ``optimize_for_inference`` on the CPU."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .base import Runner, amp_dtype
from .graph_io import ExportWrapperDepth, ExportWrapperPose
from .torch import optimize_module

__all__ = ['TorchScriptRunner']


class TorchScriptRunner(Runner):
    """TorchScript modules (float32 I/O): frozen; on the CPU also ``optimize_for_inference``.

    Build with :meth:`from_nets` (trace at start; ``precision`` fp16/bf16 traces low-precision
    weights with the pose decoder in float32) or :meth:`from_files` (``depth-ego export``)."""
    name = 'torchscript'

    def __init__(self, depth_module, pose_module, device, precision: str, optimize: bool = True,
                 source: str = 'traced at start'):
        self.device = torch.device(device)
        self.precision = precision
        mods = []
        for m in (depth_module, pose_module):
            if m is not None:
                m = m.to(self.device).eval()
                if optimize:
                    with torch.no_grad(), warnings.catch_warnings():
                        warnings.simplefilter('ignore')
                        m = torch.jit.freeze(m)
                        if self.device.type == 'cpu' and precision == 'fp32':
                            m = torch.jit.optimize_for_inference(m)
            mods.append(m)
        self.depth_module, self.pose_module = mods
        self.info = {'backend': self.name, 'device': str(self.device), 'precision': precision,
                     'source': source, 'optimize': bool(optimize)}

    @classmethod
    def from_nets(cls, depth_net, pose_net, device, precision: str = 'fp32', optimize: bool = True,
                  example_hw: tuple[int, int] = (192, 640)):
        device = torch.device(device)
        dtype = amp_dtype(precision) or torch.float32
        traced = []
        for net, wrapper, ch in ((depth_net, ExportWrapperDepth, 3), (pose_net, ExportWrapperPose, 6)):
            if net is None:
                traced.append(None)
                continue
            net = net.to(device).eval()
            if optimize:   # (FastELU trips optimize_for_inference's MKLDNN pass: keep nn.ELU)
                optimize_module(net, device, fast_elu=False)
            example = torch.zeros(1, ch, *example_hw, device=device)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter('ignore')
                traced.append(torch.jit.trace(wrapper(net, dtype), example, check_trace=False))
        runner = cls(traced[0], traced[1], device, precision, optimize)
        runner.depth_net, runner.pose_net = depth_net, pose_net
        return runner

    @classmethod
    def from_files(cls, depth_path, pose_path, device, precision: str, optimize: bool = True):
        device = torch.device(device)
        def load(p):
            if not p:
                return None
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', FutureWarning)   # "torch.jit is deprecated"
                return torch.jit.load(str(p), map_location=device)
        runner = cls(load(depth_path), load(pose_path), device, precision, optimize,
                     source=str(Path(depth_path).parent))
        runner.depth_net = runner.pose_net = None
        return runner

    @property
    def has_pose(self) -> bool:
        return self.pose_module is not None

    def describe(self) -> str:
        return f'torchscript (torch {torch.__version__}) on {self.device} {self.precision}'

    def depth(self, image):
        return self.depth_module(image.to(self.device, torch.float32).contiguous())

    def pose(self, pair):
        return self.pose_module(pair.to(self.device, torch.float32).contiguous())
