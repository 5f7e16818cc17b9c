"""TensorRT runner (serialised engines from ``depth-ego export --format tensorrt``, run on the
current torch CUDA stream) and the engine builder."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import Runner
from .graph_io import OUTPUT_NAMES, POSE_OUTPUT_NAMES, atomic_tmp

__all__ = ['TensorRTRunner', 'tensorrt_unavailable_reason', 'build_tensorrt_engine']


def tensorrt_unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when TensorRT engines can be built/run here, else the reason why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return (f'the tensorrt Python package is not installed ({exc}); install TensorRT '
                '(pip install tensorrt, or torch-tensorrt which brings it) on a machine with an '
                'NVIDIA GPU')
    if not torch.cuda.is_available():
        return 'TensorRT needs a CUDA device and none is available'
    if device is not None and torch.device(device).type != 'cuda':
        return f'TensorRT runs on CUDA devices only, not {device}'
    return None


def build_tensorrt_engine(onnx_path: Path, engine_path: Path, input_name: str,
                          channels: int, height: int, width: int, fp16: bool, max_batch: int,
                          fp32_layer_prefixes: tuple[str, ...] = ()) -> Path:
    """Build and serialise a TensorRT engine from an ONNX file (batch profile 1..max_batch).

    With fp16 the FP16 builder flag is set and layers whose name starts with one of
    ``fp32_layer_prefixes`` are constrained to float32 (precision-sensitive tails)."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, 'NetworkDefinitionCreationFlag') and \
            hasattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH') and \
            int(trt.__version__.split('.')[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        if fp32_layer_prefixes:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.name.startswith(fp32_layer_prefixes):
                    layer.precision = trt.float32
                    for j in range(layer.num_outputs):
                        layer.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    opt = max(1, min(max_batch, 4))
    profile.set_shape(input_name, (1, channels, height, width), (opt, channels, height, width),
                      (max_batch, channels, height, width))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path}')
    tmp = atomic_tmp(engine_path)
    with open(tmp, 'wb') as f:
        f.write(bytes(serialized))
    os.replace(tmp, engine_path)
    return engine_path


class TensorRTRunner(Runner):
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
