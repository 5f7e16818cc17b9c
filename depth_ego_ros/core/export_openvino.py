"""``depth-ego export --format openvino``: OpenVINO IR files (+ NNCF int8 variants) and their
accuracy check.

The directory holds ``depth.xml``/``.bin`` and ``pose.xml``/``.bin`` (float32 IR converted from
the float32 ONNX export, dynamic batch); bf16 is the same IR compiled with the bf16 inference
precision hint. With int8, ``depth_int8.xml`` / ``pose_int8.xml`` are NNCF post-training
quantizations calibrated on the given frames (the pose decoder - 3 small convolutions whose
outputs are scaled by 0.01 - stays in float). Every variant is compared with float32 torch by
the accuracy guard (:mod:`.backends.guard`); ``checks`` in the manifest holds each result.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .backends.graph_io import (INPUT_NAMES, OUTPUT_NAMES, ExportWrapperDepth, ExportWrapperPose,
                                export_onnx)
from .backends.guard import accuracy_guard, guard_frames
from .backends.openvino import openvino_unavailable_reason, quantize_int8, save_ir

log = logging.getLogger(__name__)

__all__ = ['OV_EXPORT_PRECISIONS', 'export_openvino_files', 'check_openvino_export']

OV_EXPORT_PRECISIONS = ('fp32', 'bf16', 'int8')
#: pose-network nodes NNCF leaves in float (ONNX node names of the legacy exporter)
POSE_FLOAT_PATTERNS = ('.*decoder.*', '.*intrinsics.*')


def _calibration_samples(frames: torch.Tensor, key: str) -> list:
    frames = frames.float().cpu()
    if key == 'depth':
        return [frames[i:i + 1].numpy() for i in range(frames.shape[0])]
    return [torch.cat([frames[i:i + 1], frames[i + 1:i + 2]], 1).numpy()
            for i in range(frames.shape[0] - 1)]


def export_openvino_files(depth_net: nn.Module, pose_net: nn.Module | None, out: Path,
                          width: int, height: int, opset: int, precision: str, int8: bool,
                          calib_frames: torch.Tensor | None) -> tuple[dict, dict]:
    """Write the IR files into ``out``; returns ``(files, manifest extras)``."""
    reason = openvino_unavailable_reason()
    if reason:
        raise RuntimeError(f'cannot export to OpenVINO: {reason}')
    if precision not in OV_EXPORT_PRECISIONS:
        raise ValueError(f'OpenVINO precision must be one of {OV_EXPORT_PRECISIONS}, '
                         f'got {precision!r}')
    int8 = int8 or precision == 'int8'
    if int8:
        if calib_frames is None or calib_frames.shape[0] < 3:
            raise ValueError('int8 needs calibration frames (at least 3 consecutive frames; '
                             'depth-ego export --int8 --calib-bag BAG)')
        if tuple(calib_frames.shape[1:]) != (3, height, width):
            raise ValueError(f'calibration frames must be [N,3,{height},{width}], got '
                             f'{list(calib_frames.shape)}')
    files, int8_files = {}, {}
    for key, net in (('depth', depth_net), ('pose', pose_net)):
        if net is None:
            files[key] = int8_files[key] = None
            continue
        wrapped = (ExportWrapperDepth if key == 'depth' else ExportWrapperPose)(net)
        outputs = OUTPUT_NAMES[key] if key == 'depth' else \
            list(getattr(net, 'output_names', OUTPUT_NAMES['pose']))
        ch = 3 if key == 'depth' else 6
        onnx_path = out / f'.{key}.ov.onnx'
        export_onnx(wrapped, torch.zeros(1, ch, height, width), onnx_path, INPUT_NAMES[key][0],
                    outputs, opset)
        try:
            save_ir(onnx_path, out / f'{key}.xml')
            files[key] = f'{key}.xml'
            if int8:
                log.info('quantizing the %s network to int8 on %d frames', key,
                         calib_frames.shape[0])
                quantize_int8(onnx_path, out / f'{key}_int8.xml',
                              _calibration_samples(calib_frames, key),
                              ignored_patterns=POSE_FLOAT_PATTERNS if key == 'pose' else ())
                int8_files[key] = f'{key}_int8.xml'
        finally:
            onnx_path.unlink(missing_ok=True)
    import openvino as ov
    extra = {'int8_files': int8_files if int8 else None,
             'calibration_frames': int(calib_frames.shape[0]) if int8 else None,
             'variants': [p for p in OV_EXPORT_PRECISIONS if p != 'int8' or int8]}
    extra_versions = {'openvino': ov.get_version().split('-')[0]}
    if int8:
        import nncf
        extra_versions['nncf'] = nncf.__version__
    extra['runtime_versions'] = extra_versions
    return files, extra


def _limits(thresholds: dict | None, precision: str) -> dict | None:
    """``thresholds``: ``{metric: limit}`` for every variant or ``{precision: {metric: limit}}``."""
    if not thresholds:
        return None
    if any(k in OV_EXPORT_PRECISIONS for k in thresholds):
        return thresholds.get(precision)
    return thresholds


def check_openvino_export(manifest: dict, depth_net, pose_net, frames: torch.Tensor | None,
                          thresholds: dict | None = None, num_threads: int = 0) -> dict:
    """The accuracy guard of every variant of the export (``manifest`` with its ``directory``)
    -> ``{precision: report}``; each report also has ``runtime`` and, like the other formats'
    check, ``disparity_max_abs`` / ``pose_max_abs``. ``frames``: the last 5 calibration frames
    when given (real images), else :func:`~.backends.guard.guard_frames`."""
    from .backends.select import load_exported_runner
    if frames is not None and frames.shape[0] >= 3:
        check = frames[-5:].float()
    else:
        check = guard_frames(manifest['height'], manifest['width'])
    out = {}
    for precision in manifest['variants']:
        runner = load_exported_runner(dict(manifest, checks={}), torch.device('cpu'),
                                      num_threads, precision=precision)
        report = accuracy_guard(runner, depth_net, pose_net, precision, check,
                                _limits(thresholds, precision))
        m = report['metrics']
        report.update(runtime=runner.describe(), device='cpu', batch=report['frames'],
                      disparity_max_abs=m['disparity_max_abs'],
                      pose_max_abs=m.get('pose_max_abs'))
        out[precision] = report
        log.info('%s: accuracy guard %s', runner.describe(), 'PASS' if report['passed'] else
                 f'FAIL ({", ".join(report["failed"])})')
    return out
