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

import datetime
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

# the I/O contract and the writers the backends share live with the backends (this module sits
# above them: it verifies what it writes with their runners); re-exported here
from .backends.graph_io import (INPUT_NAMES, ONNX_OPSET, OUTPUT_NAMES, POSE_OUTPUT_NAMES,  # noqa: F401
                                ExportWrapperDepth, ExportWrapperPose, atomic_tmp as _atomic_tmp,
                                check_input, export_onnx, pose_output_shapes)
from .backends.tensorrt import build_tensorrt_engine, tensorrt_unavailable_reason

log = logging.getLogger(__name__)

__all__ = ['FORMATS', 'MANIFEST', 'ONNX_OPSET', 'TOLERANCES', 'ExportWrapperDepth',
           'ExportWrapperPose', 'POSE_OUTPUT_NAMES', 'pose_output_shapes', 'export_onnx',
           'export_models', 'verify_export', 'read_manifest', 'check_input',
           'tensorrt_unavailable_reason']

FORMATS = ('onnx', 'torchscript', 'tensorrt', 'openvino')
MANIFEST = 'export.json'
EXT = {'onnx': '.onnx', 'torchscript': '.pt', 'tensorrt': '.engine', 'openvino': '.xml'}
#: max |exported - torch fp32| allowed by the check: disparity is the sigmoid output in [0, 1],
#: pose the axis-angle (rad) and translation (relative units, ~0.01 per frame) vectors.
TOLERANCES = {
    'fp32': {'disparity': 1e-4, 'pose': 1e-5},
    'fp16': {'disparity': 2e-2, 'pose': 2e-3},
}


# ----------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# export + verification
# ----------------------------------------------------------------------------------------------
def export_models(depth_net: nn.Module, pose_net: nn.Module | None, out_dir, fmt: str,
                  width: int, height: int, *, model: str = 'resnet18', opset: int = ONNX_OPSET,
                  fp16: bool = False, max_batch: int = 8, checkpoint=None, device='auto',
                  tolerances: dict | None = None, num_threads: int = 0,
                  extra: dict | None = None, precision: str | None = None,
                  int8: bool = False, calib_frames: torch.Tensor | None = None,
                  guard_thresholds: dict | None = None) -> dict:
    """Export both networks to ``out_dir`` in format ``fmt`` and check them against torch.

    Returns the manifest (also written to ``out_dir/export.json``) whose ``check`` entry holds
    the measured max abs errors, the tolerances and ``passed``. ValueError for bad arguments,
    RuntimeError when TensorRT is asked for but unavailable (message gives the reason).
    ``extra``: more manifest entries (the Estimator's pose_model, learned_intrinsics,
    packnet_min_depth); the pose outputs are listed under ``pose_outputs``.

    OpenVINO (``fmt='openvino'``, :mod:`.export_openvino`): ``precision`` fp32 | bf16 | int8 is
    the variant the directory runs by default; ``int8`` (or precision int8) also writes NNCF
    int8 models calibrated on ``calib_frames`` [N,3,H,W] (consecutive frames in [0,1] at the
    network resolution); every variant is checked by the accuracy guard (``guard_thresholds``
    override its limits) and the results are under ``checks``; ``check`` is the default one's.
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
    precision_ov = precision
    precision = 'fp16' if fp16 else 'fp32'
    nets = {'depth': depth_net, 'pose': pose_net}
    ov_extra, files = {}, {}
    if fmt == 'openvino':
        from .export_openvino import export_openvino_files
        precision = precision_ov or ('int8' if int8 else 'fp32')
        files, ov_extra = export_openvino_files(depth_net, pose_net, out, width, height, opset,
                                                precision, int8, calib_frames)
        nets = {}
    channels = {'depth': 3, 'pose': 6}
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
        'opset': opset if fmt in ('onnx', 'tensorrt', 'openvino') else None,
        'max_batch': max_batch if fmt == 'tensorrt' else None,
        'files': files, 'inputs': INPUT_NAMES, 'outputs': OUTPUT_NAMES,
        'pose_outputs': list(getattr(pose_net, 'output_names', OUTPUT_NAMES['pose']))
        if pose_net is not None else None,
        'checkpoint': str(checkpoint) if checkpoint is not None else None,
        'random_weights': checkpoint is None,
        'weights_digest': state_dict_digest(*(n for n in (depth_net, pose_net) if n is not None)),
        'versions': versions,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    manifest.update(extra or {})
    manifest.update(ov_extra)
    _write_manifest(out, manifest)
    if fmt == 'openvino':
        from .export_openvino import check_openvino_export
        manifest['checks'] = check_openvino_export(dict(manifest, directory=str(out)), depth_net, pose_net, calib_frames,
                                                   guard_thresholds, num_threads)
        manifest['check'] = manifest['checks'][precision]
        _write_manifest(out, manifest)
        return manifest
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

