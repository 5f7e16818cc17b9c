"""Eager torch runner: autocast fp16/bf16 with the pose decoder and the disparity in float32,
channels_last, and inference rewrites that keep the maths (BatchNorm folded into the
convolutions; on the CPU a vectorised ELU: torch's CPU ELU kernel is ~5x slower than exp),
optionally torch.compile and CUDA graphs."""
from __future__ import annotations

import logging

import torch
from torch import nn

from .base import Runner, amp_dtype

log = logging.getLogger(__name__)

__all__ = ['FastELU', 'optimize_module', 'to_channels_last', 'CudaGraphCache', 'TorchRunner']


class FastELU(nn.Module):
    """ELU (alpha 1) as ``relu(x) + exp(min(x, 0)) - 1``: equal to float rounding (~6e-8 abs),
    built from vectorised kernels; torch's CPU ELU kernel (expm1) is several times slower."""

    def forward(self, x):
        return torch.clamp(x, max=0.0).exp_().sub_(1.0).add_(torch.relu(x))


def _fold_pairs(module: nn.Module) -> int:
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    n = 0
    for conv_name, bn_name in (('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')):
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            n += 1
    if isinstance(module, nn.Sequential):
        items = list(module)
        for i in range(len(items) - 1):
            if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(items[i], items[i + 1])
                module[i + 1] = nn.Identity()
                n += 1
    return n


def optimize_module(net: nn.Module, device: torch.device, fast_elu: bool = True) -> nn.Module:
    """In place, for inference (eval mode): BatchNorm folded into the preceding convolution
    (ResNet conv/bn pairs and downsample Sequentials); on the CPU (with ``fast_elu``) every
    nn.ELU becomes FastELU."""
    net.eval()
    folded = sum(_fold_pairs(m) for m in list(net.modules()))
    replaced = 0
    if fast_elu and torch.device(device).type == 'cpu':
        for m in list(net.modules()):
            for name, child in list(m.named_children()):
                if isinstance(child, nn.ELU) and child.alpha == 1.0:
                    setattr(m, name, FastELU())
                    replaced += 1
    log.debug('optimize_module: %d BatchNorms folded, %d ELUs replaced', folded, replaced)
    return net


class _DepthCall(nn.Module):
    """DepthNet under autocast (when ``amp`` is set); disparity returned in float32."""

    def __init__(self, net, device_type: str, amp: torch.dtype | None):
        super().__init__()
        self.net, self.device_type, self.amp = net, device_type, amp

    def forward(self, x):
        if self.amp is None:
            return self.net(x)
        with torch.autocast(self.device_type, dtype=self.amp, cache_enabled=False):
            d = self.net(x)
        return d.float()


class _PoseCall(nn.Module):
    """PoseNet: the encoder under autocast, the decoder (squeeze, 3 convs, mean, x0.01) and a
    learned-intrinsics head in float32 - their small outputs lose digits in fp16. Pose modules
    without an encoder/decoder split (PoseExpNet adapter) run whole under autocast."""

    def __init__(self, net, device_type: str, amp: torch.dtype | None):
        super().__init__()
        self.net, self.device_type, self.amp = net, device_type, amp

    def forward(self, pair):
        if self.amp is None:
            return self.net(pair)
        if not (hasattr(self.net, 'encoder') and hasattr(self.net, 'decoder')):
            with torch.autocast(self.device_type, dtype=self.amp, cache_enabled=False):
                outs = self.net(pair)
            return tuple(o.float() for o in outs)
        with torch.autocast(self.device_type, dtype=self.amp, cache_enabled=False):
            last = self.net.encoder(pair)[-1]
        with torch.autocast(self.device_type, enabled=False):
            last = last.float()
            axisangle, translation = self.net.decoder([[last]])
            outs = (axisangle[:, 0, 0], translation[:, 0, 0])
            head = getattr(self.net, 'intrinsics', None)
            if head is not None:
                outs = outs + (torch.cat(head.normalized(last), 1),)
        return outs


def to_channels_last(net: nn.Module) -> nn.Module:
    """channels_last for the 4-D parameters/buffers only (``Module.to(memory_format=)`` refuses
    the 5-D weights of PackNet's 3-D convolutions)."""
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return net


class CudaGraphCache:
    """Replays a CUDA graph of ``fn`` per input shape (captured on first use after a warm-up on a
    side stream; graphs share one memory pool). Outputs are cloned out of the static buffers.
    At most ``max_graphs`` shapes are captured; others run ``fn`` directly."""

    def __init__(self, fn, device: torch.device, max_graphs: int = 8):
        self.fn, self.device, self.max_graphs = fn, torch.device(device), max_graphs
        self.graphs = {}
        self.pool = None

    def __call__(self, x):
        key = (tuple(x.shape), x.dtype, tuple(x.stride()))
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self.fn(x)
            entry = self.graphs[key] = self._capture(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(t.clone() for t in static_out)
        return static_out.clone()

    def _capture(self, x):
        static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        static_in.copy_(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):                      # warm-up: cudnn autotuning, lazy init
                self.fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.fn(static_in)
        log.info('captured a CUDA graph for input %s', tuple(x.shape))
        return graph, static_in, static_out



class TorchRunner(Runner):
    """Eager torch on ``device``: autocast ``precision`` (fp32 | fp16 | bf16), optional
    channels_last, ``optimize`` (fold BatchNorm, fast CPU ELU), torch.compile, CUDA graphs.

    ``depth_net`` / ``pose_net`` are the (float32) modules it runs, moved and rewritten in place.
    """
    name = 'torch'

    def __init__(self, depth_net, pose_net, device, precision: str = 'fp32',
                 channels_last: bool = False, optimize: bool = True, compile: bool = False,
                 cuda_graphs: bool = False):
        self.device = torch.device(device)
        self.precision = precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True      # fixed shapes: pick the fastest kernels
        nets = []
        for net in (depth_net, pose_net):
            if net is not None:
                net = net.to(self.device).eval()
                if optimize:
                    optimize_module(net, self.device)
                if channels_last:
                    net = to_channels_last(net)
            nets.append(net)
        self.depth_net, self.pose_net = nets
        amp = amp_dtype(precision)
        depth_fn = _DepthCall(self.depth_net, self.device.type, amp)
        pose_fn = _PoseCall(self.pose_net, self.device.type, amp) if self.pose_net is not None else None
        self.compiled = bool(compile)
        if compile:
            depth_fn = torch.compile(depth_fn, dynamic=False)
            pose_fn = torch.compile(pose_fn, dynamic=False) if pose_fn is not None else None
        self.cuda_graphs = bool(cuda_graphs and self.device.type == 'cuda')
        if self.cuda_graphs:
            depth_fn = CudaGraphCache(depth_fn, self.device)
            pose_fn = CudaGraphCache(pose_fn, self.device) if pose_fn is not None else None
        self._depth_fn, self._pose_fn = depth_fn, pose_fn
        self.info = {'backend': self.name, 'device': str(self.device), 'precision': precision,
                     'channels_last': bool(channels_last), 'optimize': bool(optimize),
                     'compile': self.compiled, 'cuda_graphs': self.cuda_graphs}

    @property
    def has_pose(self) -> bool:
        return self._pose_fn is not None

    def describe(self) -> str:
        extra = [k for k in ('channels_last', 'compile', 'cuda_graphs') if self.info[k]]
        return f'torch {torch.__version__} on {self.device} {self.precision}' + \
            (f' ({", ".join(extra)})' if extra else '')

    def depth(self, image):
        return self._depth_fn(image.to(self.device).contiguous(memory_format=self.memory_format))

    def pose(self, pair):
        return self._pose_fn(pair.to(self.device).contiguous(memory_format=self.memory_format))
