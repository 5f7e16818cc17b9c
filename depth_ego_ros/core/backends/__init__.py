"""Inference backends ("runners") for the depth and pose networks, one class per backend behind
one small interface (:class:`~.base.Runner`: ``depth``, ``pose``, ``has_pose``, ``describe``,
``info``), so the Estimator's pre/post-processing, batching and scale logic do not depend on the
backend.

* :mod:`.base` - the interface, device / precision names;
* :mod:`.torch` - :class:`TorchRunner` (eager torch, autocast, channels_last, compile, CUDA
  graphs) and the inference rewrites;
* :mod:`.torchscript` - :class:`TorchScriptRunner`;
* :mod:`.onnxruntime` - :class:`OrtRunner`;
* :mod:`.openvino` - :class:`OpenVINORunner` (CPU fp32 / bf16 / int8);
* :mod:`.tensorrt` - :class:`TensorRTRunner` and the engine builder;
* :mod:`.graph_io` - the float32 I/O wrappers, ONNX writer and start-time ONNX cache;
* :mod:`.guard` - the accuracy guard of reduced precisions;
* :mod:`.select` - explicit / exported / ``auto`` (measured) backend choice.
"""
from .base import (BACKENDS, FORMAT_BACKEND, PRECISIONS, Runner, amp_dtype, default_cache_dir,
                   resolve_device)
from .guard import (GUARD_THRESHOLDS, AccuracyError, accuracy_guard, accuracy_metrics,
                    guard_frames, require_accuracy)
from .onnxruntime import OrtRunner, onnxruntime_available
from .openvino import OpenVINORunner, openvino_unavailable_reason
from .select import (auto_cpu_runner, choose_fastest, load_exported_runner, machine_key,
                     openvino_available, resolve_backend)
from .tensorrt import TensorRTRunner, tensorrt_unavailable_reason
from .torch import CudaGraphCache, FastELU, TorchRunner, optimize_module, to_channels_last
from .torchscript import TorchScriptRunner

__all__ = ['BACKENDS', 'PRECISIONS', 'FORMAT_BACKEND', 'Runner', 'resolve_device',
           'resolve_backend', 'amp_dtype', 'FastELU', 'optimize_module', 'to_channels_last',
           'TorchRunner', 'TorchScriptRunner', 'OrtRunner', 'OpenVINORunner', 'TensorRTRunner',
           'CudaGraphCache', 'load_exported_runner', 'default_cache_dir',
           'onnxruntime_available', 'openvino_available', 'openvino_unavailable_reason',
           'tensorrt_unavailable_reason', 'GUARD_THRESHOLDS', 'AccuracyError', 'accuracy_guard',
           'accuracy_metrics', 'guard_frames', 'require_accuracy', 'auto_cpu_runner',
           'choose_fastest', 'machine_key']
