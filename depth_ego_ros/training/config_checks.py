"""Validation of a :class:`~depth_ego_ros.training.config.TrainConfig`: every field, the
combinations of fields, the combinations with the data found in the bags, and a resumed run's
saved configuration against the new one.

Each check names every problem it finds (``TrainConfig.validate`` raises them all at once, so a
bad command line is fixed in one go). Torch-free: ``depth-ego train --help`` and the CLI's
config errors do not import torch.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..core.names import MODELS, POSE_MODELS   # torch-free
from .errors import TrainConfigError
from .schedule import ANNEAL_SHAPES           # torch-free at import

__all__ = ['field_problems', 'check_object_masks', 'check_odometry_needs', 'check_resume_config',
           'DEPTH_NORMALIZATIONS', 'POSE_INITS']

DEPTH_NORMALIZATIONS = ('none', 'sample', 'sequence')
POSE_INITS = ('auto', 'zero', 'forward')


def field_problems(cfg) -> list[str]:
    """Every problem of ``cfg``'s fields and of their combinations, as messages (empty: fine).
    Normalises a few fields in place on the way (a single bag path -> list, numbers given as
    strings -> numbers, lists -> tuples, scales sorted)."""
    errs = []

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(cfg.bags, (str, os.PathLike)):
        cfg.bags = [cfg.bags]
    cfg.bags = [str(b) for b in (cfg.bags or [])]
    if not cfg.bags:
        errs.append('bags: give at least one bag directory (--bags)')
    for b in cfg.bags:
        if not Path(b).exists():
            errs.append(f'bags: {b} does not exist')
    if not cfg.out:
        errs.append('out: give an output directory (--out)')
    elif Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        errs.append(f'out: {cfg.out} exists and is not a directory')
    if cfg.model not in MODELS:
        errs.append(f"model must be one of {', '.join(MODELS)} (got {cfg.model!r})")
    for name in ('width', 'height'):
        v = getattr(cfg, name)
        if not is_int(v) or v < 64 or v % 32:
            errs.append(f'{name} must be a multiple of 32 and at least 64 (the encoder '
                        f'downsamples by 32 and the decoder pads by 1), got {v!r}')
    if cfg.pose_model not in POSE_MODELS:
        errs.append(f"pose_model must be one of {', '.join(POSE_MODELS)} (got {cfg.pose_model!r})")
    if not (is_num(cfg.explainability_weight) and cfg.explainability_weight >= 0):
        errs.append(f'explainability_weight must be a finite number >= 0, got '
                    f'{cfg.explainability_weight!r}')
    foc = cfg.intrinsics_init_focal
    if isinstance(foc, (list, tuple)) and len(foc) == 1:
        foc = cfg.intrinsics_init_focal = foc[0]
    if isinstance(foc, (list, tuple)):
        if len(foc) == 2 and all(is_num(f) and 0.05 <= f <= 20 for f in foc):
            cfg.intrinsics_init_focal = tuple(float(f) for f in foc)
        else:
            errs.append(f'intrinsics_init_focal must be one number or two (fx/W, fy/H), each '
                        f'in [0.05, 20], got {foc!r}')
    elif not (is_num(foc) and 0.05 <= foc <= 20):
        errs.append(f'intrinsics_init_focal must be in [0.05, 20] (fx/W = fy/H), got {foc!r}')
    if not (is_num(cfg.intrinsics_lr_factor) and 0 < cfg.intrinsics_lr_factor <= 1e4):
        errs.append(f'intrinsics_lr_factor must be in (0, 1e4], got {cfg.intrinsics_lr_factor!r}')
    if not (is_num(cfg.alignment_weight) and cfg.alignment_weight >= 0):
        errs.append(f'alignment_weight must be a finite number >= 0, got {cfg.alignment_weight!r}')
    if cfg.depth_normalization not in DEPTH_NORMALIZATIONS:
        errs.append(f"depth_normalization must be one of {', '.join(DEPTH_NORMALIZATIONS)} "
                    f'(got {cfg.depth_normalization!r})')
    elif cfg.depth_normalization != 'none':
        if is_int(cfg.odometry_warp_steps) and cfg.odometry_warp_steps != 0:
            errs.append(f'odometry_warp_steps needs metric depth: not with depth_normalization='
                        f'{cfg.depth_normalization!r} (translations are in units of the '
                        'median depth there)')
        if cfg.pose_init == 'forward':
            errs.append(f"pose_init 'forward' needs metric depth: not with depth_normalization="
                        f"{cfg.depth_normalization!r} (use 'auto' or 'zero')")
    from .weights_init import weights_init_problems
    errs.extend(weights_init_problems(cfg))
    if cfg.init is not None:
        try:
            d = cfg.init_path()
        except ValueError as exc:      # ZooError: a zoo name not fetched / unknown
            errs.append(f'init: {exc}')
            d = None
        if d is None:
            pass
        elif d.is_file():
            if not str(cfg.model).startswith('packnet01'):
                errs.append(f'init: {cfg.init} is a file: only a PackNet-SfM .ckpt file can '
                            "be, with model 'packnet01...'; other models need a checkpoint "
                            'directory')
        elif not d.is_dir():
            errs.append(f'init: checkpoint directory {cfg.init} not found')
        elif not (d / 'depth.pth').is_file():
            errs.append(f'init: {cfg.init} is not a monodepth2-layout checkpoint (encoder.pth and '
                        'depth.pth) nor a PackNet one (depth.pth)')
        elif (d / 'encoder.pth').is_file() and str(cfg.model).startswith('packnet01'):
            errs.append(f'init: {cfg.init} holds a monodepth2 (ResNet) depth network, '
                        f'model is {cfg.model!r}')
        elif not (d / 'encoder.pth').is_file() and not str(cfg.model).startswith('packnet01'):
            errs.append(f'init: {cfg.init} has no encoder.pth (a PackNet checkpoint?): '
                        f"{cfg.model!r} needs monodepth2's encoder.pth and depth.pth")
    if isinstance(cfg.init_depth, str) and cfg.init_depth not in ('auto', 'off'):
        try:
            cfg.init_depth = float(cfg.init_depth)
        except ValueError:
            pass
    if cfg.init_depth not in ('auto', 'off') and not (
            is_num(cfg.init_depth) and is_num(cfg.min_depth) and is_num(cfg.max_depth)
            and cfg.min_depth < cfg.init_depth < cfg.max_depth):
        errs.append(f"init_depth must be 'auto', 'off' or metres inside (min_depth, max_depth) = "
                    f'({cfg.min_depth}, {cfg.max_depth}), got {cfg.init_depth!r}')
    if isinstance(cfg.translation_scale, str) and cfg.translation_scale != 'auto':
        try:
            cfg.translation_scale = float(cfg.translation_scale)
        except ValueError:
            pass
    if cfg.translation_scale != 'auto' and not (is_num(cfg.translation_scale)
                                                 and 0 < cfg.translation_scale <= 1e4):
        errs.append(f"translation_scale must be 'auto' or a number in (0, 1e4], "
                    f'got {cfg.translation_scale!r}')
    if not (is_num(cfg.rotation_scale) and 0 < cfg.rotation_scale <= 1e4):
        errs.append(f'rotation_scale must be a number in (0, 1e4], got {cfg.rotation_scale!r}')
    if not is_int(cfg.odometry_warp_steps) or cfg.odometry_warp_steps < -1:
        errs.append(f'odometry_warp_steps must be an integer >= -1, got {cfg.odometry_warp_steps!r}')
    if cfg.pose_init not in POSE_INITS:
        errs.append(f"pose_init must be one of {', '.join(POSE_INITS)} (got {cfg.pose_init!r})")
    if not (is_num(cfg.min_depth) and is_num(cfg.max_depth) and 0 < cfg.min_depth < cfg.max_depth):
        errs.append(f'need 0 < min_depth < max_depth, got {cfg.min_depth!r}, {cfg.max_depth!r}')
    for name, lo in (('epochs', 1), ('batch_size', 1), ('lr_step', 1), ('log_every', 1),
                     ('save_every', 1)):
        v = getattr(cfg, name)
        if not is_int(v) or v < lo:
            errs.append(f'{name} must be an integer >= {lo}, got {v!r}')
    if cfg.anneal not in ANNEAL_SHAPES:
        errs.append(f"anneal must be one of {', '.join(ANNEAL_SHAPES)} (got {cfg.anneal!r})")
    for name in ('max_steps', 'warmup_steps', 'num_workers', 'num_threads', 'image_every', 'seed',
                 'keep_checkpoints'):
        v = getattr(cfg, name)
        if not is_int(v) or v < 0:
            errs.append(f'{name} must be an integer >= 0, got {v!r}')
    if not (is_num(cfg.ema_decay) and 0 <= cfg.ema_decay < 1):
        errs.append(f'ema_decay must be in [0, 1) (0 = off), got {cfg.ema_decay!r}')
    if not (is_num(cfg.lr) and 0 < cfg.lr < 1):
        errs.append(f'lr must be in (0, 1), got {cfg.lr!r}')
    if not (is_num(cfg.lr_gamma) and 0 < cfg.lr_gamma <= 1):
        errs.append(f'lr_gamma must be in (0, 1], got {cfg.lr_gamma!r}')
    for name in ('weight_decay', 'time_budget', 'smoothness_weight', 'velocity_weight',
                 'yaw_rate_weight'):
        v = getattr(cfg, name)
        if not (is_num(v) and v >= 0):
            errs.append(f'{name} must be a finite number >= 0, got {v!r}')
    if not (is_num(cfg.anneal_fraction) and 0 <= cfg.anneal_fraction < 1):
        errs.append(f'anneal_fraction must be in [0, 1), got {cfg.anneal_fraction!r}')
    elif cfg.anneal_fraction > 0 and not (cfg.max_steps or cfg.time_budget):
        errs.append('anneal_fraction needs a budget: max_steps or time_budget')
    if not (is_num(cfg.val_fraction) and 0 <= cfg.val_fraction < 1):
        errs.append(f'val_fraction must be in [0, 1), got {cfg.val_fraction!r}')
    dev = cfg.device
    if not isinstance(dev, str) or not (dev in ('auto', 'cpu', 'cuda') or
                                        (dev.startswith('cuda:') and dev[5:].isdigit())):
        errs.append(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    try:
        offs = tuple(int(o) for o in cfg.frame_offsets)
        if not offs or 0 in offs or len(set(offs)) != len(offs):
            raise ValueError
        cfg.frame_offsets = offs
    except (TypeError, ValueError):
        errs.append(f'frame_offsets must be distinct non-zero integers, got {cfg.frame_offsets!r}')
    try:
        scales = tuple(sorted(int(s) for s in cfg.scales))
        if not scales or any(s not in (0, 1, 2, 3) for s in scales) or len(set(scales)) != len(scales):
            raise ValueError
        if scales[0] != 0:
            raise ValueError
        cfg.scales = scales
    except (TypeError, ValueError):
        errs.append(f'scales must be distinct values of 0..3 including 0, got {cfg.scales!r}')
    if cfg.mask_topic is not None and not isinstance(cfg.mask_topic, str):
        errs.append(f'mask_topic must be a topic name or None (auto), got {cfg.mask_topic!r}')
    elif cfg.mask_topic == '' and cfg.object_motion is True:
        errs.append("object_motion needs instance masks: mask_topic '' switches them off "
                    '(give the mask topic, or leave it unset for auto-detection)')
    if not (is_num(cfg.object_size_weight) and cfg.object_size_weight >= 0):
        errs.append(f'object_size_weight must be a finite number >= 0, got {cfg.object_size_weight!r}')
    elif cfg.object_size_weight > 0 and cfg.object_motion is not True:
        errs.append('object_size_weight needs object_motion (the instance masks it reads are '
                    'loaded only with --object-motion)')
    if not (is_num(cfg.object_height_init) and 0 < cfg.object_height_init <= 1e3):
        errs.append(f'object_height_init must be in (0, 1000], got {cfg.object_height_init!r}')
    for name in ('augment', 'amp', 'automask', 'tensorboard', 'progress', 'learned_intrinsics',
                 'object_motion'):
        if not isinstance(getattr(cfg, name), bool):
            errs.append(f'{name} must be true or false, got {getattr(cfg, name)!r}')
    return errs


def check_object_masks(cfg, train_set) -> None:
    """object_motion needs an instance-mask topic in every bag of the training data."""
    if not cfg.object_motion:
        return
    no_masks = sorted({s.bag for s in train_set.all_sequences if s.masks is None})
    if no_masks:
        raise TrainConfigError(
            f'object_motion needs instance masks in every bag; no instance-mask topic in '
            f'{", ".join(no_masks)}. Give the mask image topic with --mask-topic '
            '(sensor_msgs/Image mono8/mono16, 0 = static, k = object k, same stamps as the '
            'camera; auto-detected when its name contains "mask"), write such bags with '
            '`depth-ego synth --moving-objects N`, or train without --object-motion')


def check_odometry_needs(cfg, has_odometry: bool) -> None:
    """The odometry-length warps need odometry in the bags."""
    if cfg.odometry_warp_steps and not has_odometry:
        raise TrainConfigError('odometry_warp_steps needs odometry in the bags (none found)')


def check_resume_config(saved: dict, cfg) -> None:
    """Refuse to resume a run (saved configuration ``saved``, a dict) with other networks or
    resolution than it was trained with (``cfg``)."""
    size_saved = float(saved.get('object_size_weight', 0.0) or 0.0) > 0 if saved else False
    if saved and size_saved != (cfg.object_size_weight > 0):
        raise TrainConfigError(f'cannot resume: the run was trained with object_size_weight '
                               f"{saved.get('object_size_weight', 0.0)!r}, this configuration "
                               f'says {cfg.object_size_weight!r} (switching the size '
                               'prior on or off needs a new run with --init)')
    if saved and bool(saved.get('object_motion', False)) != bool(cfg.object_motion):
        raise TrainConfigError(f"cannot resume: the run was trained with object_motion="
                               f"{bool(saved.get('object_motion', False))!r}, this configuration "
                               f'says {cfg.object_motion!r} (start a new run with --init '
                               'to add or drop the object-motion net)')
    for key in ('model', 'pose_model', 'learned_intrinsics', 'width', 'height', 'min_depth',
                'max_depth', 'depth_normalization'):
        if key in saved and saved[key] != getattr(cfg, key):
            raise TrainConfigError(f'cannot resume: the run was trained with {key}='
                                   f'{saved[key]!r}, this configuration says '
                                   f'{getattr(cfg, key)!r}')
    if cfg.pose_model == 'posexp' and 'frame_offsets' in saved and \
            len(saved['frame_offsets']) != len(cfg.frame_offsets):
        raise TrainConfigError(f"cannot resume: the run's PoseExpNet predicts "
                               f"{len(saved['frame_offsets'])} sources, this configuration "
                               f'has frame_offsets {list(cfg.frame_offsets)}')
