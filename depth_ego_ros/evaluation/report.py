"""report.json of an evaluation: one function per section, assembled by :func:`build_report`
from a finished run (:class:`~.evaluate.EvaluationRun`); JSON-safe copy and atomic write. The
PNGs are :mod:`.plots` (their names are re-exported here, where they used to live).

A new section = one function here and one line in :func:`build_report`."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from .plots import (make_plots, plot_abs_rel, plot_examples, plot_trajectory_error,  # noqa: F401
                    plot_trajectory_top, top_view_axes)

__all__ = ['build_report', 'clean', 'versions', 'write_json', 'plot_trajectory_top',
           'plot_trajectory_error', 'plot_abs_rel', 'plot_examples', 'make_plots', 'top_view_axes']


def write_json(path, report: dict) -> None:
    """Write the report (already JSON-safe) with a stable layout; atomic replace."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + '\n')
    tmp.replace(path)


def clean(obj):
    """JSON-safe copy: numpy -> python, non-finite floats -> None, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def versions() -> dict:
    import platform
    out = {'python': platform.python_version(), 'numpy': np.__version__}
    try:
        from .. import __version__
        out['depth_ego_ros'] = __version__
    except ImportError:
        pass
    from importlib import metadata
    for name in ('torch', 'rosbags', 'matplotlib', 'onnxruntime', 'pillow'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:   # optional packages
            continue
    return out


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
def settings_section(run, sizes: dict) -> dict:
    """``settings``: the config (estimator as built), metric settings, checkpoint, extrinsic;
    adds the network size to ``sizes`` in estimator mode."""
    cfg, pred = run.cfg, run.prediction
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != 'estimator'}
    settings['depth_metrics'] = dataclasses.asdict(run.depth.config)
    if run.inputs.mode == 'estimator':
        settings['estimator'] = dataclasses.asdict(pred.est_config)
        sizes['network'] = [pred.est_config.width, pred.est_config.height]
        settings['checkpoint'] = {'path': cfg.checkpoint, 'encoder_meta': pred.checkpoint_meta}
    else:
        settings['estimator'] = None
        settings['checkpoint'] = {'path': cfg.checkpoint} if cfg.checkpoint else None
    if cfg.gt_cloud and run.depth.enabled:
        inp = run.inputs
        settings['lidar_to_camera'] = {'T_cam_lidar': inp.T_cam_cloud, 'source': inp.extrinsic_source,
                                       'cloud_frame': inp.cloud_frame, 'camera_frame': inp.camera_frame}
    return settings


def inputs_section(run) -> dict:
    """``inputs``: the bags, every role's topic, the camera frame and intrinsics."""
    inp = run.inputs
    topics = {}
    for role, (b, topic, msgtype) in inp.roles.items():
        topics[role] = {'topic': topic, 'type': msgtype, 'count': b.topics[topic]['count'],
                        'bag': str(b.path)}
    learned_K = run.prediction.learned_K
    return {'bag': str(inp.bag.path), 'pred_bag': str(inp.pbag.path), 'topics': topics,
            'camera_frame': inp.camera_frame,
            'camera_info': None if inp.K is None else {'K': inp.K, 'size': inp.info_wh},
            'learned_K': (None if learned_K is None else
                          {'K': learned_K[0], 'size': learned_K[1],
                           'note': 'the last frame\'s K (the running estimate)'})}


def frames_section(run) -> dict:
    """``frames``: how many frames the bag has, were selected, processed, evaluated, skipped."""
    cfg, inp = run.cfg, run.inputs
    return {'stream': inp.roles.get(inp.frame_role, (None, inp.frame_role))[1],
            'in_bag': inp.frames_in_bag, 'selected': inp.n_frames,
            'stride': cfg.stride, 'max_frames': cfg.max_frames,
            'processed': len(run.frame_records), 'depth_evaluated': run.depth.n_evaluated,
            'skipped': run.frame_skips}


def timings_section(run, t_index: float, t_run: float) -> dict:
    """``timings``: the two passes, estimator set-up, frames/s and the estimator's per-frame ms."""
    setup_s = run.prediction_setup_s
    return {'index_s': t_index, 'estimator_setup_s': setup_s, 'run_s': t_run,
            'frames_per_s': (len(run.frame_records) / (t_run - setup_s)
                             if t_run - setup_s > 0 else None),
            'estimator': run.prediction.timing_summary()}


def online_refinement_section(run) -> dict | None:
    """``online_refinement`` (only when it ran): its config, the round cadence, its statistics."""
    refiner = run.prediction.refiner
    if refiner is None:
        return None
    return {'config': dataclasses.asdict(refiner.config), 'refine_every': run.cfg.refine_every,
            'stats': refiner.stats()}


def build_report(run, depth: dict | None, traj: dict | None, files: dict, argv,
                 t_index: float, t_run: float) -> dict:
    """The report of a finished run (not yet JSON-cleaned; ``files`` is kept by reference so
    plots written afterwards appear in it)."""
    sizes = dict(run.sizes)
    settings = settings_section(run, sizes)
    report = {
        'tool': {'command': 'depth-ego evaluate', 'argv': argv, 'versions': versions()},
        'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'mode': run.inputs.mode,
        'inputs': inputs_section(run),
        'settings': settings,
        'sizes': sizes,
        'association': run.inputs.assoc,
        'frames': frames_section(run),
        'depth': depth,
        'trajectory': traj,
        'per_frame': run.frame_records,
        'timings': timings_section(run, t_index, t_run),
        'notes': run.notes,
        'warnings': run.warnings,
        'files': files,
    }
    refinement = online_refinement_section(run)
    if refinement is not None:
        report['online_refinement'] = refinement
    return report
