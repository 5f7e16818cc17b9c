"""Inference backends ("runners") for the depth and pose networks.

Every runner has the same small interface, on torch tensors on the runner's device:

* ``depth(image [B,3,H,W] float32 in [0,1]) -> disparity [B,1,H,W] float32`` (sigmoid output)
* ``pose(pair [B,6,H,W] = [previous, current]) -> (axisangle [B,3], translation [B,3], ...)``
  float32: monodepth2's first prediction (``T_curr_prev``), or for the PoseExpNet adapter
  ``T_prev_curr``; then the optional outputs the pose module lists in ``output_names``
  (``intrinsics`` [B,4], ``explainability`` [B,1,H,W]; see export.POSE_OUTPUT_NAMES)
* ``has_pose``, ``describe()`` (one line: backend, device, precision, providers), ``info`` (dict)

so the Estimator's pre/post-processing, batching and scale logic do not depend on the backend.

Runners:

* :class:`TorchRunner` - eager torch (optionally torch.compile, CUDA graphs), autocast
  fp16/bf16 with the pose decoder and the disparity in float32, channels_last, and inference
  rewrites that keep the maths (BatchNorm folded into the convolutions; on the CPU a vectorised
  ELU: torch's CPU ELU kernel is ~5x slower than exp).
* :class:`TorchScriptRunner` - traced modules (traced at start, or ``.pt`` files from
  ``depth-ego export``), frozen; ``optimize_for_inference`` on the CPU.
* :class:`OrtRunner` - ONNX Runtime, CUDA or CPU execution provider by device, I/O bound to
  torch tensors (no host round trip on CUDA), worker-thread spinning off.
* :class:`TensorRTRunner` - serialised TensorRT engines from ``depth-ego export``.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .export import (ExportWrapperDepth, ExportWrapperPose, INPUT_NAMES, ONNX_OPSET, OUTPUT_NAMES,
                     POSE_OUTPUT_NAMES, export_onnx, pose_output_shapes, tensorrt_unavailable_reason)

log = logging.getLogger(__name__)

__all__ = ['BACKENDS', 'PRECISIONS', 'resolve_device', 'resolve_backend', 'amp_dtype', 'FastELU',
           'optimize_module', 'TorchRunner', 'TorchScriptRunner', 'OrtRunner', 'TensorRTRunner',
           'CudaGraphCache', 'load_exported_runner', 'default_cache_dir', 'onnxruntime_available']

BACKENDS = ('auto', 'torch', 'torchscript', 'onnxruntime', 'tensorrt')
PRECISIONS = ('fp32', 'fp16', 'bf16')
#: exported format -> the backend that runs it
FORMAT_BACKEND = {'onnx': 'onnxruntime', 'torchscript': 'torchscript', 'tensorrt': 'tensorrt'}


# ----------------------------------------------------------------------------------------------
# device / precision / backend resolution
# ----------------------------------------------------------------------------------------------
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
    """Autocast dtype of a precision name (None for fp32)."""
    return {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def resolve_backend(requested: str, device: torch.device, exported_format: str | None = None,
                    torch_only_options: bool = False) -> tuple[str, str]:
    """-> (backend, why). 'auto' picks the fastest measured for the device (docs/inference.md):
    ONNX Runtime on the CPU, torch on CUDA; with an exported model directory the runtime of its
    format; torch when a torch-only option (channels_last / compile / cuda_graphs / bf16) was
    asked for. An explicit backend must fit the exported format (ValueError otherwise)."""
    if exported_format is not None:
        needed = FORMAT_BACKEND[exported_format]
        if requested == 'auto':
            return needed, f'exported model directory holds {exported_format} models'
        if requested != needed:
            raise ValueError(f'backend {requested!r} cannot run the exported {exported_format} '
                             f'models (use backend {needed!r} or "auto")')
        return requested, 'requested'
    if requested == 'tensorrt':
        raise ValueError("backend 'tensorrt' runs exported engines: create them with "
                         '`depth-ego export --format tensorrt` and set exported_model_dir')
    if requested != 'auto':
        return requested, 'requested'
    if device.type == 'cuda':
        return 'torch', 'auto: torch on CUDA'
    if torch_only_options:
        return 'torch', 'auto: a torch-only option was requested'
    if onnxruntime_available():
        return 'onnxruntime', 'auto: ONNX Runtime is the fastest measured CPU backend'
    return 'torch', 'auto: onnxruntime is not installed'


def default_cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'depth_ego_ros' / 'onnx'


# ----------------------------------------------------------------------------------------------
# torch inference rewrites (same maths)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# runners
# ----------------------------------------------------------------------------------------------
class TorchRunner:
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


class TorchScriptRunner:
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


class OrtRunner:
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
        from .checkpoints import state_dict_digest
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        tag = f'{model}_{width}x{height}_op{ONNX_OPSET}_torch{torch.__version__.split("+")[0]}'
        depth_net = depth_net.float().cpu().eval()
        depth_path = cache / f'depth_{tag}_{state_dict_digest(depth_net)}.onnx'
        if not depth_path.is_file():
            log.info('exporting the depth net to %s', depth_path)
            export_onnx(ExportWrapperDepth(depth_net), torch.zeros(1, 3, height, width), depth_path,
                        INPUT_NAMES['depth'][0], OUTPUT_NAMES['depth'])
        pose_path = None
        if pose_net is not None:
            pose_net = pose_net.float().cpu().eval()
            pose_path = cache / f'pose_{tag}_{state_dict_digest(pose_net)}.onnx'
            if not pose_path.is_file():
                log.info('exporting the pose net to %s', pose_path)
                export_onnx(ExportWrapperPose(pose_net), torch.zeros(1, 6, height, width),
                            pose_path, INPUT_NAMES['pose'][0],
                            list(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose'])))
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


class TensorRTRunner:
    """Serialised TensorRT engines (``depth-ego export --format tensorrt``) run on the current
    torch CUDA stream with torch tensors as I/O; batches above the engine's profile are split."""
    name = 'tensorrt'

    def __init__(self, depth_path, pose_path, device, precision: str, max_batch: int):
        reason = tensorrt_unavailable_reason(device)
        if reason:
            raise ValueError(f"backend 'tensorrt' unavailable: {reason}")
        import tensorrt as trt
        self.trt = trt
        self.device = torch.device(device)
        self.precision = precision
        self.max_batch = int(max_batch or 1)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._depth = self._load(depth_path)
        self._pose = self._load(pose_path) if pose_path else None
        self.pose_outputs = ([n for n in POSE_OUTPUT_NAMES if n in self._pose[3]]
                             if self._pose is not None else [])
        self.info = {'backend': self.name, 'device': str(self.device), 'precision': precision,
                     'tensorrt': trt.__version__, 'max_batch': self.max_batch}
        self.depth_net = self.pose_net = None

    def _load(self, path):
        trt = self.trt
        with torch.cuda.device(self.device):
            engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise ValueError(f'{path}: TensorRT could not deserialise the engine (built with '
                             'another TensorRT version or GPU?)')
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        return engine, context, inputs[0], outputs

    @property
    def has_pose(self) -> bool:
        return self._pose is not None

    def describe(self) -> str:
        return f'tensorrt {self.trt.__version__} on {self.device} {self.precision}'

    def _run(self, entry, x, output_names):
        if x.shape[0] > self.max_batch:
            parts = [self._run(entry, c, output_names) for c in x.split(self.max_batch)]
            return [torch.cat(p, 0) for p in zip(*parts)]
        _, context, input_name, outputs = entry
        x = x.to(self.device, torch.float32).contiguous()
        context.set_input_shape(input_name, tuple(x.shape))
        context.set_tensor_address(input_name, x.data_ptr())
        results = {}
        for n in outputs:
            t = torch.empty(tuple(context.get_tensor_shape(n)), dtype=torch.float32,
                            device=self.device)
            context.set_tensor_address(n, t.data_ptr())
            results[n] = t
        if not context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError('TensorRT execution failed')
        return [results[n] for n in output_names]

    def depth(self, image):
        return self._run(self._depth, image, OUTPUT_NAMES['depth'])[0]

    def pose(self, pair):
        return tuple(self._run(self._pose, pair, self.pose_outputs))


def load_exported_runner(manifest: dict, device: torch.device, num_threads: int = 0,
                         optimize: bool = True):
    """The runner for an exported model directory (``export.read_manifest`` result)."""
    d = Path(manifest['directory'])
    files = manifest['files']
    depth_path = d / files['depth']
    pose_path = d / files['pose'] if files.get('pose') else None
    fmt, precision = manifest['format'], manifest['precision']
    if fmt == 'onnx':
        return OrtRunner(depth_path, pose_path, device, num_threads, precision)
    if fmt == 'torchscript':
        return TorchScriptRunner.from_files(depth_path, pose_path, device, precision, optimize)
    return TensorRTRunner(depth_path, pose_path, device, precision, manifest.get('max_batch') or 1)
