"""Which backend runs: explicit choices, exported directories, and ``auto``'s measured choice.

``backend='auto'`` on the CPU measures, once per machine / weights / resolution / library
versions, every CPU candidate that builds (ONNX Runtime fp32, OpenVINO fp32 and bf16, and
OpenVINO int8 for an export that has it), drops those that fail the accuracy guard
(:mod:`.guard`) and keeps the fastest depth + pose (batch 1, median of interleaved runs). The
choice is cached as JSON beside the ONNX cache (checkpoint start) or in the export directory, and
said in the log and in ``Estimator.backend_info`` (``reason``, ``selection``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from .base import FORMAT_BACKEND
from .guard import accuracy_guard, describe_guard, guard_frames, reference_outputs
from .onnxruntime import OrtRunner, onnxruntime_available
from .openvino import OpenVINORunner, openvino_unavailable_reason
from .tensorrt import TensorRTRunner
from .torchscript import TorchScriptRunner

log = logging.getLogger(__name__)

__all__ = ['resolve_backend', 'load_exported_runner', 'machine_key', 'time_runner',
           'choose_fastest', 'auto_cpu_runner', 'openvino_available']


def openvino_available() -> bool:
    return openvino_unavailable_reason() is None


def resolve_backend(requested: str, device: torch.device, exported_format: str | None = None,
                    torch_only_options: bool = False) -> tuple[str, str]:
    """-> (backend, why). With an exported model directory: the runtime of its format. 'auto':
    torch on CUDA or when a torch-only option (channels_last / compile / cuda_graphs / bf16) was
    asked for; on the CPU ``'auto'`` again when OpenVINO is importable (the Estimator then
    measures, :func:`auto_cpu_runner`), else ONNX Runtime. An explicit 'openvino' where OpenVINO
    is absent falls back to ONNX Runtime (or torch) and says so. An explicit backend must fit the
    exported format (ValueError otherwise)."""
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
    if requested == 'openvino':
        reason = openvino_unavailable_reason()
        if reason is None:
            return 'openvino', 'requested'
        fallback = 'onnxruntime' if onnxruntime_available() and device.type == 'cpu' else 'torch'
        log.warning("backend 'openvino' unavailable (%s): falling back to %s", reason, fallback)
        return fallback, f'openvino requested but unavailable ({reason}); fell back to {fallback}'
    if requested != 'auto':
        return requested, 'requested'
    if device.type == 'cuda':
        return 'torch', 'auto: torch on CUDA'
    if torch_only_options:
        return 'torch', 'auto: a torch-only option was requested'
    if openvino_available():
        return 'auto', 'auto: fastest CPU backend that passes the accuracy guard (measured)'
    if onnxruntime_available():
        return 'onnxruntime', ('auto: ONNX Runtime (OpenVINO unavailable: '
                               f'{openvino_unavailable_reason()})')
    return 'torch', 'auto: neither openvino nor onnxruntime is installed'


def _exported_files(manifest: dict, precision: str) -> tuple[Path, Path | None]:
    d = Path(manifest['directory'])
    files = manifest['files']
    if precision == 'int8' and manifest['format'] == 'openvino':
        files = manifest.get('int8_files') or {}
        if not files.get('depth'):
            raise ValueError(f'{d}: no int8 models in this export (export with --int8)')
    return d / files['depth'], (d / files['pose'] if files.get('pose') else None)


def load_exported_runner(manifest: dict, device: torch.device, num_threads: int = 0,
                         optimize: bool = True, auto: bool = False, precision: str | None = None):
    """The runner for an exported model directory (``export.read_manifest`` result).
    OpenVINO exports: ``precision`` (default the manifest's) picks fp32 / bf16 / int8; with
    ``auto`` the fastest variant that passed the export's accuracy guard on this machine."""
    fmt = manifest['format']
    precision = precision or manifest['precision']
    if fmt == 'openvino' and auto:
        return _auto_exported_openvino(manifest, device, num_threads)
    depth_path, pose_path = _exported_files(manifest, precision)
    if fmt == 'onnx':
        return OrtRunner(depth_path, pose_path, device, num_threads, precision)
    if fmt == 'torchscript':
        return TorchScriptRunner.from_files(depth_path, pose_path, device, precision, optimize)
    if fmt == 'openvino':
        check = (manifest.get('checks') or {}).get(precision)
        if check is not None and not check.get('passed', False):
            from .guard import AccuracyError
            raise AccuracyError(f'{manifest["directory"]}: the {precision} variant failed the '
                                f'accuracy guard at export ({describe_guard(check)}); refused')
        return OpenVINORunner(depth_path, pose_path, device, num_threads, precision,
                              cache_dir=Path(manifest['directory']) / '.ov_cache')
    return TensorRTRunner(depth_path, pose_path, device, precision, manifest.get('max_batch') or 1)


# ----------------------------------------------------------------------------------------------
# measured choice
# ----------------------------------------------------------------------------------------------
def machine_key() -> dict:
    """What makes a timing valid elsewhere: CPU model, its bf16/int8 instruction sets, cores
    available to this process, and the runtimes' versions."""
    model, flags = platform.processor() or '', set()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name') and not model.strip():
                model = line.split(':', 1)[1].strip()
            elif line.startswith('flags'):
                flags = set(line.split(':', 1)[1].split())
                break
    except OSError:
        pass
    versions = {'torch': torch.__version__}
    for mod in ('onnxruntime', 'openvino'):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return {'cpu': model, 'isa': sorted(flags & {'avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni',
                                                 'avx_vnni', 'amx_bf16', 'amx_int8', 'amx_tile'}),
            'cores': cores, 'versions': versions}


def _key_hash(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def time_runner(runner, height: int, width: int, runs: int = 5) -> list[float]:
    """Seconds of one depth (batch 1) + one pose call, ``runs`` times (after one warm-up)."""
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    pair = torch.cat([x, x.flip(3)], 1)
    out = []
    with torch.inference_mode():
        for i in range(runs + 1):
            t0 = time.perf_counter()
            runner.depth(x)
            if runner.has_pose:
                runner.pose(pair)
            if i:
                out.append(time.perf_counter() - t0)
    return out


def _median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if s else float('inf')


def choose_fastest(candidates: dict, depth_net, pose_net, height: int, width: int,
                   cache_file: Path | None, runs: int = 5, guards: dict | None = None):
    """``candidates``: ``{label: (precision, build() -> runner)}``. Builds each, checks it with
    the accuracy guard (unless ``guards[label]`` holds an earlier report, e.g. the export's),
    times the passing ones interleaved and returns ``(runner, record)`` of the fastest.
    ``record``: choice, reason, median ms per candidate, guard results, rejected candidates.
    With ``cache_file``, a record for this machine there is reused (only the choice is built)."""
    key = machine_key()
    khash = _key_hash(key)
    cached = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cached = {}
    rec = cached.get(khash)
    if rec and rec.get('choice') in candidates:
        try:
            runner = candidates[rec['choice']][1]()
            rec = dict(rec, cached=True)
            log.info('backend auto: %s (cached choice, %s)', rec['choice'], rec['reason'])
            return runner, rec
        except Exception as exc:
            log.warning('backend auto: cached choice %s does not build any more (%s); measuring '
                        'again', rec['choice'], exc)
    runners, rejected, guard_reports = {}, {}, {}
    reference = None
    for label, (precision, build) in candidates.items():
        try:
            r = build()
        except Exception as exc:
            rejected[label] = f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}'
            continue
        report = (guards or {}).get(label)
        if report is None and depth_net is not None:
            if reference is None:             # float32 torch once for every candidate
                reference = reference_outputs(depth_net, pose_net, guard_frames(height, width))
            report = accuracy_guard(r, depth_net, pose_net, precision, reference=reference)
        if report is not None:
            guard_reports[label] = {'passed': report['passed'], 'metrics': report['metrics'],
                                    'failed': report.get('failed', [])}
            if not report['passed']:
                rejected[label] = f'accuracy guard: {describe_guard(report)}'
                continue
        runners[label] = r
    if not runners:
        raise RuntimeError(f'backend auto: no CPU backend could be used: {rejected}')
    times = {label: [] for label in runners}
    for _ in range(runs):                     # interleaved: load changes hit all alike
        for label, r in runners.items():
            times[label] += time_runner(r, height, width, runs=1)
    med = {label: _median(v) * 1e3 for label, v in times.items()}
    best = min(med, key=med.get)
    others = ', '.join(f'{k} {v:.1f} ms' for k, v in sorted(med.items(), key=lambda kv: kv[1]))
    reason = (f'auto: {best} fastest of the candidates passing the accuracy guard on this CPU '
              f'(depth+pose, batch 1, {width}x{height}, median of {runs}: {others})')
    if rejected:
        reason += '; rejected: ' + '; '.join(f'{k} ({v})' for k, v in rejected.items())
    record = {'choice': best, 'reason': reason, 'median_ms': med, 'guard': guard_reports,
              'rejected': rejected, 'machine': key, 'cached': False,
              'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    log.info('backend %s', reason)
    if cache_file is not None:
        try:
            cached[khash] = record
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f'.{cache_file.name}.{os.getpid()}.tmp')
            tmp.write_text(json.dumps(cached, indent=2) + '\n')
            os.replace(tmp, cache_file)
        except OSError as exc:
            log.warning('backend auto: cannot cache the choice in %s (%s)', cache_file, exc)
    return runners[best], record


def _label(backend: str, precision: str) -> str:
    return f'{backend} {precision}'


def auto_cpu_runner(depth_net, pose_net, device, width: int, height: int, model: str,
                    cache_dir=None, num_threads: int = 0, precisions=('fp32', 'bf16')):
    """``backend='auto'`` on the CPU from torch networks: the fastest of ONNX Runtime fp32 and
    OpenVINO in ``precisions`` (fp32, bf16) that passes the guard. Returns ``(runner,
    record)``; the runner's ``depth_net`` / ``pose_net`` are the float32 torch nets."""
    from ..checkpoints import state_dict_digest
    from .base import default_cache_dir
    from .graph_io import cached_onnx
    depth_net = depth_net.float().cpu().eval()
    pose_net = pose_net.float().cpu().eval() if pose_net is not None else None
    cands = {}
    if onnxruntime_available():
        cands[_label('onnxruntime', 'fp32')] = ('fp32', lambda: OrtRunner.from_nets(
            depth_net, pose_net, device, width, height, model, cache_dir, num_threads))
    for p in precisions:
        cands[_label('openvino', p)] = (p, lambda p=p: OpenVINORunner.from_nets(
            depth_net, pose_net, device, width, height, model, cache_dir, num_threads, p))
    cached_onnx(depth_net, pose_net, width, height, model, cache_dir)   # export once, up front
    nets = [n for n in (depth_net, pose_net) if n is not None]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache / (f'auto_{model}_{width}x{height}_{"-".join(precisions)}_'
                          f'{state_dict_digest(*nets)}.json')
    runner, record = choose_fastest(cands, depth_net, pose_net, height, width, cache_file)
    runner.depth_net, runner.pose_net = depth_net, pose_net
    runner.selection = record
    return runner, record


def _auto_exported_openvino(manifest: dict, device, num_threads: int):
    d = Path(manifest['directory'])
    checks = manifest.get('checks') or {}
    cands, guards = {}, {}
    for p in manifest.get('variants') or ('fp32', 'bf16', 'int8'):
        if p == 'int8' and not (manifest.get('int8_files') or {}).get('depth'):
            continue
        if p in checks:
            guards[p] = checks[p]
        cands[p] = (p, lambda p=p: load_exported_runner(manifest, device, num_threads,
                                                       precision=p))
    cache_file = d / 'auto_choice.json'
    if not os.access(d, os.W_OK):
        from .base import default_cache_dir
        cache_file = default_cache_dir() / f'auto_export_{manifest.get("weights_digest", "x")}.json'
    runner, record = choose_fastest(cands, None, None, manifest['height'], manifest['width'],
                                    cache_file, guards=guards)
    runner.selection = record
    return runner
