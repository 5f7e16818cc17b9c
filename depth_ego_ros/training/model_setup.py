"""The networks of a training run, assembled: :func:`setup_model`.

Builds the :class:`~depth_ego_ros.training.model.SfMModel` (from random weights, ``config.init``
or the resumed checkpoint), sets its output reparametrisation (translation/rotation scale; 'auto'
from the odometry), attaches the extras' sub-networks and loads them from the start checkpoint,
lets the extras adjust the model (the relative translation start of depth normalisation), applies
the metric start of a run from scratch (depth output at init_depth, pose output at the median
odometry step), moves it to the device and wraps it in DDP under torchrun. Every choice made on
the way is noted (``init_notes``, shown at the start of training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import checkpoints as ckpt
from .config_checks import check_odometry_needs
from .errors import TrainConfigError, TrainingError
from .model import SfMModel, build_model, init_depth_output, init_pose_forward

__all__ = ['ModelSetup', 'setup_model', 'DEFAULT_INIT_DEPTH']

DEFAULT_INIT_DEPTH = 10.0        # metres, init_depth 'auto' with odometry


@dataclass
class ModelSetup:
    model: SfMModel               # on the device
    ddp_model: object             # what the training forward runs (the model, or its DDP wrapper)
    use_velocity: bool            # the velocity loss is on (odometry, metric depth)
    init_notes: list = field(default_factory=list)


def setup_model(cfg, ctx, data, extras, resume=None) -> ModelSetup:
    """The run's networks; ``data``: its TrainData, ``extras``: its Extras, ``resume``: the
    ResumeSource of a resumed run (None: a fresh one, from ``cfg.init`` or scratch)."""
    source = resume.directory if resume is not None else cfg.init_path()
    normalized = cfg.depth_normalization != 'none'
    try:
        model, info = build_model(
            cfg.model, source, cfg.scales, seed=cfg.seed, pose_model=cfg.pose_model,
            learned_intrinsics=cfg.learned_intrinsics, num_sources=len(cfg.frame_offsets),
            explainability=cfg.pose_model == 'posexp' and cfg.explainability_weight > 0,
            intrinsics_init_focal=cfg.intrinsics_init_focal)
    except ckpt.CheckpointError as exc:
        raise TrainingError(f'cannot start from checkpoint {source}: {exc}') from exc
    notes = []
    if source is None and cfg.weights_init != 'none':
        from .weights_init import apply_weights_init
        notes.append(apply_weights_init(model, cfg.weights_init))
    if source is not None and not info['pose_from_checkpoint']:
        notes.append(f'{cfg.pose_model} pose network from random weights '
                     '(none of that kind in the checkpoint)')
    notes += extras.collect('network_notes', info)
    check_odometry_needs(cfg, data.has_odometry)
    _output_scales(cfg, model, data, resume, normalized, notes)
    # after the output scales: the object-motion net shares the translation scale
    _attach_extras(model, source, extras, notes)
    notes += extras.collect('prepare', model, source, data, resume is not None)
    if data.missing_K:
        notes.append(f'no camera_info in {", ".join(Path(b).name for b in data.missing_K)}'
                     ': learned K only, no K error for those')
    if source is None:
        _metric_start(cfg, model, data, normalized, notes)
    elif info['meta'].get('width') and (info['meta']['width'], info['meta']['height']) != \
            (cfg.width, cfg.height):
        notes.append(f"checkpoint was trained at {info['meta']['width']}x"
                     f"{info['meta']['height']}; training at {cfg.width}x{cfg.height}")
    model = model.to(ctx.device)
    ddp_model = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # the disparity (and mask) convolutions of scales the loss does not use get no gradient
        ddp_model = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None,
                        find_unused_parameters=len(cfg.scales) < 4)
    # depth normalisation makes translations relative: no metric velocity term
    use_velocity = data.has_odometry and cfg.velocity_weight > 0 and not normalized
    if normalized and data.has_odometry and cfg.velocity_weight > 0:
        notes.append(f'velocity loss off (depth_normalization '
                     f'{cfg.depth_normalization!r}: relative depth)')
    return ModelSetup(model, ddp_model, use_velocity, notes)


def _output_scales(cfg, model, data, resume, normalized: bool, notes: list):
    """The pose outputs' reparametrisation: the resumed run's, else the config's ('auto':
    median odometry step / 0.05, clipped to 1..100; 1 with normalised depth)."""
    c = cfg.translation_scale
    if resume is not None:
        c = resume.value('translation_scale', c)
    if c == 'auto' and normalized:
        c = 1.0                    # relative depth: translations in units of the median depth
    if c == 'auto':
        step = data.median_step()
        c = float(np.clip(step / 0.05, 1.0, 100.0)) if step else 1.0
    r = cfg.rotation_scale
    if resume is not None:
        r = resume.value('rotation_scale', r)
    model.set_output_scales(rotation=float(r), translation=float(c))
    if c != 1.0:
        notes.append(f'pose translation scale {float(c):.3g}')
    if r != 1.0:
        notes.append(f'pose rotation scale {float(r):.3g}')


def _attach_extras(model, source, extras, notes: list):
    """The extras' sub-networks in ``model.extras`` (before the optimiser is built: their
    parameters are trained, they are saved as ``<name>.pth`` in every checkpoint and loaded
    back from ``source``)."""
    extras.each('attach', model)
    loaded = []
    if source is not None and Path(source).is_dir():
        try:
            loaded = model.load_extras(source)
        except ckpt.CheckpointError as exc:
            raise TrainingError(f'cannot start from checkpoint {source}: {exc}') from exc
    notes += extras.collect('attached_notes', model, source, loaded)


def _metric_start(cfg, model, data, normalized: bool, notes: list):
    """From scratch: depth output at init_depth, pose output at a forward step ('auto': both
    with odometry and metric depth)."""
    init_depth = cfg.init_depth
    if init_depth == 'auto':
        init_depth = DEFAULT_INIT_DEPTH if data.has_odometry and not normalized else 'off'
    if init_depth != 'off':
        init_depth_output(model, float(init_depth), cfg.min_depth, cfg.max_depth)
        notes.append(f'depth output initialised at {float(init_depth):g} m')
    pose_init = cfg.pose_init
    if pose_init == 'auto':
        pose_init = 'forward' if data.has_odometry and not normalized else 'zero'
    if pose_init == 'forward':
        step = data.median_step()
        if step is None:
            raise TrainConfigError("pose_init 'forward' needs odometry in the bags "
                                   "(none found); use 'zero' or 'auto'")
        if model.posexp:
            init_pose_forward(model, step, cfg.frame_offsets)
        else:
            init_pose_forward(model, step * max(1, min(abs(o) for o in cfg.frame_offsets)))
        notes.append(f'pose output initialised at a {step:.3g} m forward step')
