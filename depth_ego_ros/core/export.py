"""Export the depth and pose networks to ONNX, TorchScript or TensorRT, and check the result.

An exported model is a directory::

    export.json      manifest: format, model, width x height, precision, opset, files, the
                     check's errors and tolerances, versions, weights digest
    depth.<ext>      image [B,3,H,W] float32 RGB in [0,1] -> disparity [B,1,H,W] float32 (sigmoid)
    pose.<ext>       pair [B,6,H,W] float32 [previous, current] -> axisangle [B,3], translation [B,3]
                     (of T_curr_prev, monodepth2's first prediction); absent for depth-only
                     checkpoints

``<ext>`` is ``.onnx`` (ONNX, legacy TorchScript-based exporter, dynamic batch axis), ``.pt``
(``torch.jit.trace``; dynamic batch) or ``.engine`` (serialised TensorRT engine with a batch
profile 1..max_batch, built from the ONNX export through the ``tensorrt`` Python package).

Inputs and outputs are always float32. With ``fp16=True`` the weights and the computation inside
are half precision (TensorRT: FP16 builder flag) except where accuracy needs float32: the pose
decoder (its 0.01-scaled outputs) and the final disparity are computed/returned in float32.

:func:`export_models` writes the directory and runs :func:`verify_export`, which loads it with
the same runner the Estimator uses and compares disparity and pose with eager float32 torch on a
batch of 2 frames (so the dynamic batch axis is exercised too).
"""
from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ['FORMATS', 'MANIFEST', 'ONNX_OPSET', 'TOLERANCES', 'ExportWrapperDepth',
           'ExportWrapperPose', 'POSE_OUTPUT_NAMES', 'pose_output_shapes', 'export_onnx', 'export_models', 'verify_export', 'read_manifest',
           'check_input', 'tensorrt_unavailable_reason']

FORMATS = ('onnx', 'torchscript', 'tensorrt')
MANIFEST = 'export.json'
ONNX_OPSET = 17
EXT = {'onnx': '.onnx', 'torchscript': '.pt', 'tensorrt': '.engine'}
#: max |exported - torch fp32| allowed by the check: disparity is the sigmoid output in [0, 1],
#: pose the axis-angle (rad) and translation (relative units, ~0.01 per frame) vectors.
TOLERANCES = {
    'fp32': {'disparity': 1e-4, 'pose': 1e-5},
    'fp16': {'disparity': 2e-2, 'pose': 2e-3},
}
INPUT_NAMES = {'depth': ['image'], 'pose': ['pair']}
OUTPUT_NAMES = {'depth': ['disparity'], 'pose': ['axisangle', 'translation']}
#: every pose output a pose network may have, in this order: axisangle, translation [B,3];
#: intrinsics [B,4] = (fx/W, fy/H, principal-point offsets ox, oy) of a learned-intrinsics head;
#: explainability [B,1,H,W] (PoseExpNet's mask of the current frame)
POSE_OUTPUT_NAMES = ('axisangle', 'translation', 'intrinsics', 'explainability')


# ----------------------------------------------------------------------------------------------
# wrappers: float32 in/out, optional low-precision inside
# ----------------------------------------------------------------------------------------------
class ExportWrapperDepth(nn.Module):
    """DepthNet with float32 input/output; the network itself in ``dtype``."""

    def __init__(self, depth_net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        self.net = depth_net if dtype == torch.float32 else copy.deepcopy(depth_net).to(dtype)
        self.eval()     # exporters restore the wrapper's mode afterwards: never leave nets in train

    def forward(self, image):
        return self.net(image.to(self.dtype)).float()


class ExportWrapperPose(nn.Module):
    """PoseNet with float32 input/output.

    monodepth2's PoseNet (``encoder`` + ``decoder`` [+ ``intrinsics`` head]): the encoder in
    ``dtype``, the decoder and the intrinsics head in float32. Any other pose module (e.g. the
    Estimator's PoseExpNet adapter) runs whole in ``dtype`` with float32 outputs. Outputs are
    ``pose_net.output_names`` (default ``('axisangle', 'translation')``; optionally
    ``'intrinsics'`` [B,4] and ``'explainability'`` [B,1,H,W], see :data:`POSE_OUTPUT_NAMES`)."""

    def __init__(self, pose_net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        self.output_names = tuple(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose']))
        self.split = hasattr(pose_net, 'encoder') and hasattr(pose_net, 'decoder')
        if self.split:
            self.encoder = (pose_net.encoder if dtype == torch.float32
                            else copy.deepcopy(pose_net.encoder).to(dtype))
            self.decoder = pose_net.decoder
            self.intrinsics = getattr(pose_net, 'intrinsics', None)
        else:
            self.net = pose_net if dtype == torch.float32 else copy.deepcopy(pose_net).to(dtype)
        self.eval()

    def forward(self, pair):
        if not self.split:
            return tuple(o.float() for o in self.net(pair.to(self.dtype)))
        last = self.encoder(pair.to(self.dtype))[-1].float()
        axisangle, translation = self.decoder([[last]])
        outs = (axisangle[:, 0, 0], translation[:, 0, 0])
        if self.intrinsics is not None:
            outs = outs + (torch.cat(self.intrinsics.normalized(last), 1),)
        return outs


def pose_output_shapes(names, batch: int, height: int, width: int) -> list[tuple]:
    """``[(name, shape)]`` of a pose network's outputs for a batch of ``height x width`` pairs."""
    shapes = {'axisangle': (batch, 3), 'translation': (batch, 3), 'intrinsics': (batch, 4),
              'explainability': (batch, 1, height, width)}
    return [(n, shapes[n]) for n in names]


# ----------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------
def _atomic_tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f'.{path.name}.{os.getpid()}.tmp')


def export_onnx(net: nn.Module, example: torch.Tensor, path, input_name: str,
                output_names: list[str], opset: int = ONNX_OPSET) -> Path:
    """Export ``net`` (on the CPU) to ONNX at ``path`` with a dynamic batch axis; atomic write."""
    path = Path(path)
    tmp = _atomic_tmp(path)
    net.eval()
    dyn = {input_name: {0: 'batch'}, **{o: {0: 'batch'} for o in output_names}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=int(opset),
                          input_names=[input_name], output_names=output_names,
                          dynamic_axes=dyn, do_constant_folding=True)
    os.replace(tmp, path)
    return path


def export_torchscript(net: nn.Module, example: torch.Tensor, path) -> Path:
    """``torch.jit.trace`` ``net`` and save it at ``path`` (atomic)."""
    path = Path(path)
    tmp = _atomic_tmp(path)
    net.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(net, example, check_trace=False)
        torch.jit.save(traced, str(tmp))
    os.replace(tmp, path)
    return path


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
    tmp = _atomic_tmp(engine_path)
    with open(tmp, 'wb') as f:
        f.write(bytes(serialized))
    os.replace(tmp, engine_path)
    return engine_path


# ----------------------------------------------------------------------------------------------
# manifest
# ----------------------------------------------------------------------------------------------
def read_manifest(directory) -> dict:
    """Read and validate ``directory/export.json``; ValueError says what is wrong."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.is_file():
        raise ValueError(f'{d}: not an exported model directory ({MANIFEST} missing; create one '
                         f'with `depth-ego export`)')
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f'{path}: cannot be read as JSON ({exc})') from exc
    for key in ('format', 'model', 'width', 'height', 'precision', 'files'):
        if key not in m:
            raise ValueError(f'{path}: key {key!r} missing')
    if m['format'] not in FORMATS:
        raise ValueError(f'{path}: unknown format {m["format"]!r} (expected one of {FORMATS})')
    if not m['files'].get('depth'):
        raise ValueError(f'{path}: no depth network listed')
    for net, name in m['files'].items():
        if name and not (d / name).is_file():
            raise ValueError(f'{d}: {net} network file {name} listed in {MANIFEST} is missing')
    m['directory'] = str(d)
    return m


def check_input(height: int, width: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A deterministic smooth test batch ``[batch+1,3,H,W]`` in [0,1] (consecutive frames of a
    moving pattern: frames i, i+1 make the pose pairs)."""
    rng = np.random.default_rng(seed)
    base = rng.random((3, height // 8 + 2, width // 8 + batch + 2))
    big = np.kron(base, np.ones((1, 8, 8)))
    frames = [big[:, :height, 8 * i // 2: 8 * i // 2 + width] for i in range(batch + 1)]
    return torch.from_numpy(np.stack(frames)).float()


# ----------------------------------------------------------------------------------------------
# export + verification
# ----------------------------------------------------------------------------------------------
def export_models(depth_net: nn.Module, pose_net: nn.Module | None, out_dir, fmt: str,
                  width: int, height: int, *, model: str = 'resnet18', opset: int = ONNX_OPSET,
                  fp16: bool = False, max_batch: int = 8, checkpoint=None, device='auto',
                  tolerances: dict | None = None, num_threads: int = 0,
                  extra: dict | None = None) -> dict:
    """Export both networks to ``out_dir`` in format ``fmt`` and check them against torch.

    Returns the manifest (also written to ``out_dir/export.json``) whose ``check`` entry holds
    the measured max abs errors, the tolerances and ``passed``. ValueError for bad arguments,
    RuntimeError when TensorRT is asked for but unavailable (message gives the reason).
    ``extra``: more manifest entries (the Estimator's pose_model, learned_intrinsics,
    packnet_min_depth); the pose outputs are listed under ``pose_outputs``.
    """
    from .checkpoints import state_dict_digest
    if fmt not in FORMATS:
        raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
    for name, v in (('width', width), ('height', height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 32:
            raise ValueError(f'{name} must be a positive multiple of 32, got {v!r}')
        if v < 64:
            raise ValueError(f'{name} must be >= 64 (2 pixels at 1/32 scale), got {v!r}')
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f'max_batch must be an int >= 1, got {max_batch!r}')
    if fmt == 'tensorrt':
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f'cannot export to TensorRT: {reason}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = out / MANIFEST
    if old.exists():
        old.unlink()                            # a half-written directory is never "valid"
    depth_net = depth_net.float().cpu().eval()
    pose_net = pose_net.float().cpu().eval() if pose_net is not None else None
    precision = 'fp16' if fp16 else 'fp32'
    nets = {'depth': depth_net, 'pose': pose_net}
    channels = {'depth': 3, 'pose': 6}
    files = {}
    for key, net in nets.items():
        if net is None:
            files[key] = None
            continue
        example = torch.zeros(1, channels[key], height, width)
        path = out / f'{key}{EXT[fmt]}'
        outputs = OUTPUT_NAMES[key] if key == 'depth' else \
            list(getattr(net, 'output_names', OUTPUT_NAMES['pose']))
        if fmt == 'onnx':
            wrapped = (ExportWrapperDepth if key == 'depth' else ExportWrapperPose)(
                net, torch.float16 if fp16 else torch.float32)
            export_onnx(wrapped, example, path, INPUT_NAMES[key][0], outputs, opset)
        elif fmt == 'torchscript':
            wrapped = (ExportWrapperDepth if key == 'depth' else ExportWrapperPose)(
                net, torch.float16 if fp16 else torch.float32)
            export_torchscript(wrapped, example.to(torch.float32), path)
        else:   # tensorrt: float32 ONNX, precision chosen by the builder
            wrapped = (ExportWrapperDepth if key == 'depth' else ExportWrapperPose)(net)
            onnx_path = out / f'.{key}.trt.onnx'
            export_onnx(wrapped, example, onnx_path, INPUT_NAMES[key][0], outputs, opset)
            try:
                build_tensorrt_engine(onnx_path, path, INPUT_NAMES[key][0], channels[key],
                                      height, width, fp16, max_batch,
                                      ('/decoder/',) if key == 'pose' else ())
            finally:
                onnx_path.unlink(missing_ok=True)
        files[key] = path.name
        log.info('exported the %s network to %s', key, path)

    versions = {'torch': torch.__version__}
    try:
        import onnx
        versions['onnx'] = onnx.__version__
    except ImportError:
        pass
    manifest = {
        'format': fmt, 'model': model, 'width': width, 'height': height, 'precision': precision,
        'opset': opset if fmt in ('onnx', 'tensorrt') else None,
        'max_batch': max_batch if fmt == 'tensorrt' else None,
        'files': files, 'inputs': INPUT_NAMES, 'outputs': OUTPUT_NAMES,
        'pose_outputs': list(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose']))
        if pose_net is not None else None,
        'checkpoint': str(checkpoint) if checkpoint is not None else None,
        'random_weights': checkpoint is None,
        'weights_digest': state_dict_digest(*(n for n in nets.values() if n is not None)),
        'versions': versions,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    manifest.update(extra or {})
    _write_manifest(out, manifest)
    report = verify_export(out, depth_net, pose_net, device=device, tolerances=tolerances,
                           num_threads=num_threads)
    manifest['check'] = report
    _write_manifest(out, manifest)
    return manifest


def _write_manifest(out: Path, manifest: dict):
    tmp = _atomic_tmp(out / MANIFEST)
    tmp.write_text(json.dumps(manifest, indent=2) + '\n')
    os.replace(tmp, out / MANIFEST)


def verify_export(directory, depth_net: nn.Module, pose_net: nn.Module | None, device='auto',
                  tolerances: dict | None = None, num_threads: int = 0, batch: int = 2) -> dict:
    """Load the exported models in ``directory`` with the Estimator's runner for their format and
    compare them with float32 eager torch on :func:`check_input` (``batch`` frames / pairs).

    Returns ``{'passed', 'runtime', 'device', 'batch', 'disparity_max_abs', 'pose_max_abs',
    'tolerance': {'disparity', 'pose'}}``."""
    from .backends import load_exported_runner, resolve_device
    manifest = read_manifest(directory)
    dev = resolve_device(device)
    tol = dict(TOLERANCES[manifest['precision']])
    tol.update(tolerances or {})
    runner = load_exported_runner(manifest, dev, num_threads=num_threads)
    frames = check_input(manifest['height'], manifest['width'], batch)
    images, pairs = frames[1:], torch.cat([frames[:-1], frames[1:]], dim=1)
    with torch.inference_mode():
        ref_disp = depth_net.float().cpu()(images)
        got_disp = runner.depth(images.to(dev)).float().cpu()
        report = {'disparity_max_abs': float((got_disp - ref_disp).abs().max())}
        if pose_net is not None and runner.has_pose:
            ref = pose_net.float().cpu()(pairs)
            got = [t.float().cpu() for t in runner.pose(pairs.to(dev))]
            names = list(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose']))
            errs = {n: float((g - r).abs().max()) for n, g, r in zip(names, got, ref)}
            report['pose_max_abs'] = max(v for n, v in errs.items() if n != 'explainability')
            if 'explainability' in errs:     # a probability map: compared like the disparity
                report['explainability_max_abs'] = errs['explainability']
        else:
            report['pose_max_abs'] = None
    passed = report['disparity_max_abs'] <= tol['disparity'] and \
        report.get('explainability_max_abs', 0.0) <= tol['disparity'] and (
        report['pose_max_abs'] is None or report['pose_max_abs'] <= tol['pose'])
    report.update(passed=bool(passed), tolerance=tol, batch=batch, device=str(dev),
                  runtime=runner.describe())
    return report

