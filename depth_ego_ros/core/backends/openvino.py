"""OpenVINO runner (CPU): fp32, bf16 (``INFERENCE_PRECISION_HINT``) or int8 (an NNCF-quantized
model from ``depth-ego export --format openvino --int8 --calib-bag BAG``), dynamic batch.

Models are read from ONNX (the start-time cache, :func:`~.graph_io.cached_onnx`) or OpenVINO IR
(``.xml`` + ``.bin`` of an export). Compiled blobs are cached by OpenVINO in ``<cache>/openvino``
beside the ONNX cache, so a second start skips compilation.

Set ``DEPTH_EGO_NO_OPENVINO=1`` to make this process behave as if OpenVINO were not installed
(the fallback path; tests use it).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .base import Runner
from .graph_io import OUTPUT_NAMES, POSE_OUTPUT_NAMES, cached_onnx

log = logging.getLogger(__name__)

__all__ = ['OpenVINORunner', 'openvino_unavailable_reason', 'OV_PRECISIONS', 'quantize_int8',
           'save_ir']

#: precision -> OpenVINO CPU inference precision hint. int8 models carry their own
#: FakeQuantize nodes; the layers NNCF leaves in float run in f32.
OV_PRECISIONS = {'fp32': 'f32', 'bf16': 'bf16', 'int8': 'f32'}
HIDE_ENV = 'DEPTH_EGO_NO_OPENVINO'


def openvino_unavailable_reason() -> str | None:
    """None when the OpenVINO runtime can be imported here, else why not."""
    if os.environ.get(HIDE_ENV, '') not in ('', '0'):
        return f'OpenVINO hidden by {HIDE_ENV}={os.environ[HIDE_ENV]}'
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f'the openvino Python package is not installed ({exc}); pip install openvino'
    return None


def _core(cache_dir: Path | None):
    import openvino as ov
    core = ov.Core()
    if cache_dir is not None:
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({'CACHE_DIR': str(cache_dir)})
        except Exception as exc:   # a read-only cache only costs compile time
            log.warning('OpenVINO model cache %s not usable (%s)', cache_dir, exc)
    return core


class OpenVINORunner(Runner):
    """OpenVINO compiled models on the CPU; torch tensors in and out (host memory, no copy of the
    input). ``precision``: fp32 | bf16 | int8 (int8 needs quantized model files)."""
    name = 'openvino'

    def __init__(self, depth_path, pose_path, device, num_threads: int = 0,
                 precision: str = 'fp32', cache_dir=None):
        reason = openvino_unavailable_reason()
        if reason:
            raise ValueError(f"backend 'openvino' unavailable: {reason}")
        self.device = torch.device(device)
        if self.device.type != 'cpu':
            raise ValueError(f"backend 'openvino' runs on the CPU here, not {self.device} "
                             "(use backend 'torch' or 'tensorrt' on CUDA)")
        if precision not in OV_PRECISIONS:
            raise ValueError(f"backend 'openvino' precision must be one of "
                             f"{tuple(OV_PRECISIONS)}, got {precision!r}")
        import openvino as ov
        self.ov_version = ov.get_version().split('-')[0]
        self.precision = precision
        self.paths = {'depth': Path(depth_path), 'pose': Path(pose_path) if pose_path else None}
        core = _core(Path(cache_dir) if cache_dir else None)
        config = {'INFERENCE_PRECISION_HINT': OV_PRECISIONS[precision],
                  'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads > 0:
            config['INFERENCE_NUM_THREADS'] = int(num_threads)
        self._depth = core.compile_model(str(depth_path), 'CPU', config)
        self._pose = core.compile_model(str(pose_path), 'CPU', config) if pose_path else None
        self._depth_req = self._depth.create_infer_request()
        self._pose_req = self._pose.create_infer_request() if self._pose is not None else None
        if self._pose is not None:
            names = {n for o in self._pose.outputs for n in o.get_names()}
            self.pose_outputs = [n for n in POSE_OUTPUT_NAMES if n in names]
        else:
            self.pose_outputs = []
        hint = self._depth.get_property('INFERENCE_PRECISION_HINT')
        hint = hint.get_type_name() if hasattr(hint, 'get_type_name') else str(hint)
        self.info = {'backend': self.name, 'device': str(self.device), 'precision': precision,
                     'openvino': self.ov_version, 'inference_precision': hint,
                     'files': {k: str(v) if v else None for k, v in self.paths.items()}}
        self.depth_net = self.pose_net = None

    @classmethod
    def from_nets(cls, depth_net, pose_net, device, width: int, height: int, model: str,
                  cache_dir=None, num_threads: int = 0, precision: str = 'fp32'):
        """Compile the nets from the start-time ONNX cache (exported once per weights /
        resolution). int8 needs calibration frames: use ``depth-ego export --int8``."""
        if precision == 'int8':
            raise ValueError("backend 'openvino' precision int8 needs a quantized export: "
                             'depth-ego export --format openvino --int8 --calib-bag BAG, then '
                             'set exported_model_dir')
        reason = openvino_unavailable_reason()
        if reason:
            raise ValueError(f"backend 'openvino' unavailable: {reason}")
        depth_path, pose_path, depth_net, pose_net = cached_onnx(
            depth_net, pose_net, width, height, model, cache_dir)
        runner = cls(depth_path, pose_path, device, num_threads, precision,
                     cache_dir=depth_path.parent / 'openvino')
        runner.depth_net, runner.pose_net = depth_net, pose_net     # the torch reference
        return runner

    @property
    def has_pose(self) -> bool:
        return self._pose is not None

    def describe(self) -> str:
        return f'openvino {self.ov_version} on cpu {self.precision} ' \
               f'(inference precision {self.info["inference_precision"]})'

    @staticmethod
    def _infer(req, x: torch.Tensor, names) -> list[torch.Tensor]:
        x = x.detach().to('cpu', torch.float32).contiguous()
        res = req.infer({0: x.numpy()}, share_inputs=True)
        by_name = {n: v for port, v in res.items() for n in port.get_names()}
        return [torch.from_numpy(by_name[n]) for n in names]

    def depth(self, image):
        return self._infer(self._depth_req, image, OUTPUT_NAMES['depth'])[0]

    def pose(self, pair):
        return tuple(self._infer(self._pose_req, pair, self.pose_outputs))


# ----------------------------------------------------------------------------------------------
# writing IR and int8 quantization (depth-ego export --format openvino)
# ----------------------------------------------------------------------------------------------
def save_ir(onnx_path, xml_path, model=None) -> Path:
    """Convert an ONNX file (or save an ``ov.Model``) to OpenVINO IR ``xml_path`` (+ ``.bin``),
    float32 weights."""
    import openvino as ov
    if model is None:
        model = ov.convert_model(str(onnx_path))
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_int8(onnx_path, xml_path, samples, subset_size: int = 300,
                  ignored_patterns: tuple[str, ...] = ()) -> Path:
    """NNCF post-training quantization (int8 weights and activations) of the ONNX model at
    ``onnx_path`` calibrated on ``samples`` (a list of float32 numpy inputs [1,C,H,W]); saved as
    IR at ``xml_path``. ``ignored_patterns``: node-name regexes kept in float (e.g. the pose
    decoder, whose outputs are scaled by 0.01)."""
    import nncf
    import openvino as ov
    logging.getLogger('nncf').setLevel(logging.WARNING)     # per-node INFO lines otherwise
    model = ov.convert_model(str(onnx_path))
    kwargs = {}
    if ignored_patterns:
        kwargs['ignored_scope'] = nncf.IgnoredScope(patterns=list(ignored_patterns),
                                                    validate=False)
    quantized = nncf.quantize(model, nncf.Dataset(list(samples)),
                              subset_size=min(subset_size, len(samples)),
                              preset=nncf.QuantizationPreset.MIXED, **kwargs)
    return save_ir(None, xml_path, quantized)
