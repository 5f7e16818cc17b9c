"""Self-supervised training of depth + ego-motion on bags (monodepth2 recipe + velocity loss).

``Trainer(config).fit()`` trains :class:`~depth_ego_ros.training.model.SfMModel` on
:class:`~depth_ego_ros.data.dataset.BagTripletDataset` with
:class:`~depth_ego_ros.core.losses.SelfSupervisedLoss` (photometric min-reprojection with
auto-masking, edge-aware smoothness, and PackNet-SfM's velocity loss when the bags have odometry,
which makes depth metric). Adam with a step schedule; float16 autocast + GradScaler on CUDA.

Output directory::

    out/train_config.json        the TrainConfig of the run
    out/weights_N/               after epoch N (0-based), monodepth2 layout: encoder.pth,
                                 depth.pth, pose_encoder.pth, pose.pth -- a checkpoint for the
                                 perception node, `depth-ego evaluate` and monodepth2's tools
                                 (PackNet: depth.pth only with a 'model' entry; PoseExpNet:
                                 pose.pth with model='posexp'; learned K: intrinsics.pth --
                                 the layouts the Estimator loads; object motion:
                                 object_motion.pth and, with object_size_weight,
                                 object_size.pth: training only)
    out/weights_N/adam.pth       optimiser, schedule, scaler and progress (for --resume)
    out/weights_N/train_config.json
    out/latest -> weights_N      symlink to the newest checkpoint
    out/history.jsonl            one JSON line per epoch (losses, time, steps)
    out/tensorboard/             scalars every log_every steps, validation losses and sample
                                 depth images per epoch

Distributed: under ``torchrun --nproc_per_node N`` the same command runs one process per
GPU (NCCL) or per CPU slot (gloo): DistributedDataParallel, DistributedSampler, only rank 0
writes. ``batch_size`` is per process.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..core import checkpoints as ckpt
from ..core.losses import (LossConfig, SelfSupervisedLoss, SequenceDepthNormalizer,
                           alignment_loss_3d, explainability_regularization, object_size_loss,
                           relative_depth_fn, velocity_loss)
from ..core.object_motion import (ObjectMotionNet, ObjectSizePrior, mask_centroids,
                                  object_motion_matrices)
from .config import CONFIG_FILE, TrainConfig, TrainConfigError
from .distributed import DistContext, setup_distributed
from .model import SfMModel, build_model, init_depth_output, init_pose_forward
from .schedule import budget_progress, lr_factor, seed_everything

__all__ = ['Trainer', 'TrainingError', 'STATE_FILE', 'LATEST', 'find_checkpoint',
           'checkpoint_dir_name']

log = logging.getLogger(__name__)

STATE_FILE = 'adam.pth'          # monodepth2 keeps its optimiser state under this name
LATEST = 'latest'
HISTORY_FILE = 'history.jsonl'
DEFAULT_INIT_DEPTH = 10.0        # metres, init_depth 'auto' with odometry
OBJECT_SIZE_LR_FACTOR = 10.0     # the object height prior (one number) learns at lr x this


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad data, unusable checkpoint, nothing to resume)."""


def checkpoint_dir_name(epoch: int) -> str:
    return f'weights_{epoch}'


def _is_checkpoint(d: Path) -> bool:
    """monodepth2 layout (encoder.pth) or the project's PackNet layout (depth.pth, no encoder)."""
    return (d / ckpt.ENCODER_FILE).is_file() or (d / ckpt.DEPTH_FILE).is_file()


def find_checkpoint(path) -> Path:
    """A checkpoint directory from ``path``: itself when it holds encoder.pth (or, PackNet,
    depth.pth), else its ``latest`` link, else its newest weights_N."""
    p = Path(path)
    if _is_checkpoint(p):
        return p
    if _is_checkpoint(p / LATEST):
        return (p / LATEST).resolve()
    numbered = sorted((int(d.name.split('_', 1)[1]), d) for d in p.glob('weights_*')
                      if d.is_dir() and d.name.split('_', 1)[1].isdigit() and _is_checkpoint(d))
    if numbered:
        return numbered[-1][1]
    raise TrainingError(f'no checkpoint in {p} (no encoder.pth/depth.pth, no {LATEST} link, '
                        'no weights_N)')


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class Trainer:
    """One training run. ``Trainer(config, resume=None)``; ``fit()`` -> summary dict.

    resume: None (fresh run, from scratch or ``config.init``), or a checkpoint directory / the
    run's output directory (its ``latest``) whose networks, optimiser state and progress
    continue: training goes on with the epoch after the saved one.
    """

    def __init__(self, config: TrainConfig, resume: str | os.PathLike | None = None,
                 log_fn=None):
        self.config = cfg = config.validate()
        if resume is not None and cfg.init is not None:
            raise TrainConfigError('give either init (start from a checkpoint) or resume '
                                   '(continue a run), not both')
        self.ctx: DistContext = setup_distributed(cfg.device)
        self._log_fn = log_fn
        self.out = Path(cfg.out)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed + self.ctx.rank)
        self.resume_dir = None
        if resume is not None:
            self.resume_dir = find_checkpoint(resume)
            self._check_resume_config(self._saved_state_value('config', None) or {})
        self._build_data()
        self._build_model()
        self._build_optimiser()
        self.writer = None
        self.history: list[dict] = []
        self.step_hook = None   # callable(trainer) after every optimiser step (e.g. a learning curve)
        self.step_hook_s = 0.0  # time spent in it (not counted as training time)

    # -- helpers ---------------------------------------------------------------------------------
    def log(self, text: str):
        if not self.ctx.is_main:
            return
        if self._log_fn is not None:
            self._log_fn(text)
        else:
            print(text, file=sys.stderr, flush=True)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def amp(self) -> bool:
        return self.config.amp and self.device.type == 'cuda'

    # -- set-up ----------------------------------------------------------------------------------
    def _build_data(self):
        from ..data.dataset import BagDatasetError, BagTripletDataset, DatasetConfig
        cfg = self.config
        dcfg = DatasetConfig(width=cfg.width, height=cfg.height, image_topic=cfg.image_topic,
                             camera_info_topic=cfg.camera_info_topic, odom_topic=cfg.odom_topic,
                             frame_offsets=cfg.frame_offsets, augment=cfg.augment,
                             val_fraction=cfg.val_fraction,
                             # masks are read only for object motion; camera_info may be
                             # missing only when K is learned
                             mask_topic=cfg.mask_topic if cfg.object_motion else '',
                             require_camera_info=not cfg.learned_intrinsics)
        try:
            self.train_set = BagTripletDataset(cfg.bags, dcfg, split='train' if cfg.val_fraction > 0 else 'all')
            self.val_set = (BagTripletDataset(cfg.bags, dcfg, split='val')
                            if cfg.val_fraction > 0 else None)
        except BagDatasetError as exc:
            raise TrainingError(f'training data: {exc}') from exc
        self.has_odometry = self.train_set.has_odometry
        if cfg.object_motion:
            no_masks = sorted({s.bag for s in self.train_set.all_sequences if s.masks is None})
            if no_masks:
                raise TrainConfigError(
                    f'object_motion needs instance masks in every bag; no instance-mask topic in '
                    f'{", ".join(no_masks)}. Give the mask image topic with --mask-topic '
                    '(sensor_msgs/Image mono8/mono16, 0 = static, k = object k, same stamps as the '
                    'camera; auto-detected when its name contains "mask"), write such bags with '
                    '`depth-ego synth --moving-objects N`, or train without --object-motion')
        self.missing_K = self.train_set.missing_camera_info
        sampler = None
        g = torch.Generator()
        g.manual_seed(cfg.seed)
        if self.ctx.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(
                self.train_set, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                shuffle=True, seed=cfg.seed, drop_last=False)
        n_per_rank = math.ceil(len(self.train_set) / self.ctx.world_size)
        drop_last = n_per_rank >= cfg.batch_size
        pin = self.device.type == 'cuda'
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
            num_workers=cfg.num_workers, drop_last=drop_last, pin_memory=pin, generator=g,
            persistent_workers=cfg.num_workers > 0)
        self.train_sampler = sampler
        self.val_loader = None
        if self.val_set is not None:
            vs = None
            if self.ctx.distributed:
                vs = torch.utils.data.distributed.DistributedSampler(
                    self.val_set, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=False)
            self.val_loader = torch.utils.data.DataLoader(
                self.val_set, batch_size=cfg.batch_size, shuffle=False, sampler=vs,
                num_workers=0, pin_memory=pin)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise TrainingError('no training batch: the training split is empty')

    def _median_step(self) -> float | None:
        """Median odometry distance between consecutive kept frames of the training split."""
        steps = []
        for s in self.train_set.sequences:
            d = np.abs(np.diff(s.distance))
            steps.extend(d[np.isfinite(d)].tolist())
        if not steps:
            return None
        return float(np.median(steps))

    def _build_model(self):
        cfg = self.config
        source = self.resume_dir if self.resume_dir is not None else cfg.init
        self.normalized = cfg.depth_normalization != 'none'
        try:
            model, info = build_model(
                cfg.model, source, cfg.scales, seed=cfg.seed, pose_model=cfg.pose_model,
                learned_intrinsics=cfg.learned_intrinsics, num_sources=len(cfg.frame_offsets),
                explainability=cfg.pose_model == 'posexp' and cfg.explainability_weight > 0,
                intrinsics_init_focal=cfg.intrinsics_init_focal)
        except ckpt.CheckpointError as exc:
            raise TrainingError(f'cannot start from checkpoint {source}: {exc}') from exc
        self.init_notes = []
        if source is not None and not info['pose_from_checkpoint']:
            self.init_notes.append(f'{cfg.pose_model} pose network from random weights '
                                   '(none of that kind in the checkpoint)')
        if cfg.learned_intrinsics and not info['intrinsics_from_checkpoint']:
            self.init_notes.append(f'intrinsics head at its prior (fx/W, fy/H) = '
                                   f'{cfg.intrinsics_init_focal}, centred')
        if cfg.odometry_warp_steps and not self.has_odometry:
            raise TrainConfigError('odometry_warp_steps needs odometry in the bags (none found)')
        c = cfg.translation_scale
        if self.resume_dir is not None:
            c = self._saved_state_value('translation_scale', c)
        if c == 'auto' and self.normalized:
            c = 1.0                    # relative depth: translations in units of the median depth
        if c == 'auto':
            step = self._median_step()
            c = float(np.clip(step / 0.05, 1.0, 100.0)) if step else 1.0
        r = cfg.rotation_scale
        if self.resume_dir is not None:
            r = self._saved_state_value('rotation_scale', r)
        model.set_output_scales(rotation=float(r), translation=float(c))
        if c != 1.0:
            self.init_notes.append(f'pose translation scale {float(c):.3g}')
        if r != 1.0:
            self.init_notes.append(f'pose rotation scale {float(r):.3g}')
        # after the output scales: the object-motion net shares the translation scale
        self._build_extras(model, source)
        if self.normalized and source is not None and self.resume_dir is None:
            self._relative_translation_start(model, source)
        if self.missing_K:
            self.init_notes.append(f'no camera_info in {", ".join(Path(b).name for b in self.missing_K)}'
                                   ': learned K only, no K error for those')
        if source is None:
            init_depth = cfg.init_depth
            if init_depth == 'auto':
                init_depth = DEFAULT_INIT_DEPTH if self.has_odometry and not self.normalized else 'off'
            if init_depth != 'off':
                init_depth_output(model, float(init_depth), cfg.min_depth, cfg.max_depth)
                self.init_notes.append(f'depth output initialised at {float(init_depth):g} m')
            pose_init = cfg.pose_init
            if pose_init == 'auto':
                pose_init = 'forward' if self.has_odometry and not self.normalized else 'zero'
            if pose_init == 'forward':
                step = self._median_step()
                if step is None:
                    raise TrainConfigError("pose_init 'forward' needs odometry in the bags "
                                           "(none found); use 'zero' or 'auto'")
                if model.posexp:
                    init_pose_forward(model, step, cfg.frame_offsets)
                else:
                    init_pose_forward(model, step * max(1, min(abs(o) for o in cfg.frame_offsets)))
                self.init_notes.append(f'pose output initialised at a {step:.3g} m forward step')
        elif info['meta'].get('width') and (info['meta']['width'], info['meta']['height']) != \
                (cfg.width, cfg.height):
            self.init_notes.append(f"checkpoint was trained at {info['meta']['width']}x"
                                   f"{info['meta']['height']}; training at {cfg.width}x{cfg.height}")
        self.model: SfMModel = model.to(self.device)
        self.ddp_model = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            # the disparity convolutions of scales the loss does not use get no gradient
            # the disparity (and mask) convolutions of scales the loss does not use get no gradient
            self.ddp_model = DDP(self.model,
                                 device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                                 find_unused_parameters=len(cfg.scales) < 4)
        # depth normalisation makes translations relative: no metric velocity term
        self.use_velocity = self.has_odometry and cfg.velocity_weight > 0 and not self.normalized
        if self.normalized and self.has_odometry and cfg.velocity_weight > 0:
            self.init_notes.append(f'velocity loss off (depth_normalization '
                                   f'{cfg.depth_normalization!r}: relative depth)')
        self.use_explainability = model.posexp and cfg.explainability_weight > 0
        self.use_alignment = cfg.alignment_weight > 0
        self.use_object_motion = 'object_motion' in model.extras
        self.use_object_size = 'object_size' in model.extras
        self.normalizer = (SequenceDepthNormalizer()
                           if cfg.depth_normalization == 'sequence' else None)
        if self.normalizer is not None and self.resume_dir is not None:
            st = self._saved_state_value('depth_normalizer', None)
            if st:
                self.normalizer.load_state_dict(st)
        self.loss_fn = SelfSupervisedLoss(LossConfig(
            smoothness_weight=cfg.smoothness_weight,
            velocity_weight=cfg.velocity_weight if self.use_velocity else 0.0,
            automask=cfg.automask, min_depth=cfg.min_depth, max_depth=cfg.max_depth),
            depth_fn=self.base_depth)
        self._K_acc = None      # learned intrinsics: sum of normalised predictions this epoch, count

    def base_depth(self, disp: torch.Tensor) -> torch.Tensor:
        """Network disparity -> depth with the depth network's own convention (no normalisation)."""
        return self.model.disp_to_depth(disp, self.config.min_depth, self.config.max_depth)[1]

    def _relative_translation_start(self, model: SfMModel, source, samples: int = 8):
        """A depth-normalised run started from a checkpoint that was not (--init with a metric
        model, or released weights): its pose net predicts translations in the checkpoint's
        units (metres), while the loss now measures depth in units of the scene's median depth.
        Left alone, the warps would start with motions median-depth times too long (x10 on a
        street) and training collapsed to a constant depth. So the translation outputs are
        divided by the start model's median depth on a few training samples. A checkpoint whose
        train_config.json says it was trained normalised is left as it is."""
        cfg = self.config
        saved = Path(source) / CONFIG_FILE
        try:
            if json.loads(saved.read_text()).get('depth_normalization', 'none') != 'none':
                return
        except (OSError, ValueError, AttributeError):
            pass                                  # no config: not one of ours, treat as metric
        n = min(samples, len(self.train_set))
        idx = np.linspace(0, len(self.train_set) - 1, n).round().astype(int)
        images = torch.stack([self.train_set[int(i)]['image'] for i in idx])
        was_training = model.training
        model.eval()
        with torch.no_grad():
            disp = model.depth_disps(images)[0]
            depth = model.disp_to_depth(disp, cfg.min_depth, cfg.max_depth)[1]
        model.train(was_training)
        med = float(depth.flatten(1).median(1).values.median())
        if math.isfinite(med) and med > 0:
            model.rescale_translation(1.0 / med)
            self.init_notes.append(f'pose translation divided by the start model\'s median depth '
                                   f'{med:.3g} (depth normalisation: relative units)')

    def _build_extras(self, model: SfMModel, source):
        """Optional further sub-networks in ``model.extras`` (before the optimiser is built:
        their parameters are trained, they are saved as ``<name>.pth`` in every checkpoint and
        loaded back from ``source``); their loss terms in :meth:`_extra_terms`.

        object_motion: ``extras['object_motion']`` = ObjectMotionNet (object_motion.pth in
        save_object_motion's format; from ``source`` when it has one, else fresh, seeded).
        object_size_weight > 0: ``extras['object_size']`` = ObjectSizePrior (one class, at
        object_height_init; object_size.pth from ``source`` when it has one)."""
        cfg = self.config
        if cfg.object_motion:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 2)
                model.extras['object_motion'] = ObjectMotionNet()
        if cfg.object_size_weight > 0:
            model.extras['object_size'] = ObjectSizePrior(init_height=cfg.object_height_init)
        loaded = []
        if source is not None and Path(source).is_dir():
            try:
                loaded = model.load_extras(source)
            except ckpt.CheckpointError as exc:
                raise TrainingError(f'cannot start from checkpoint {source}: {exc}') from exc
        if cfg.object_motion:
            self.init_notes.append('object-motion net ' + (f'from {source}' if 'object_motion' in loaded
                                                           else 'from random weights'))
        if cfg.object_size_weight > 0:
            h = float(model.extras['object_size'].height[0])
            self.init_notes.append(f'object height prior {h:.3g} '
                                   + (f'from {source}' if 'object_size' in loaded else '(start)'))

    def _check_resume_config(self, saved: dict):
        """Refuse to resume a run with other networks or resolution than it was trained with."""
        size_saved = float(saved.get('object_size_weight', 0.0) or 0.0) > 0 if saved else False
        if saved and size_saved != (self.config.object_size_weight > 0):
            raise TrainConfigError(f'cannot resume: the run was trained with object_size_weight '
                                   f"{saved.get('object_size_weight', 0.0)!r}, this configuration "
                                   f'says {self.config.object_size_weight!r} (switching the size '
                                   'prior on or off needs a new run with --init)')
        if saved and bool(saved.get('object_motion', False)) != bool(self.config.object_motion):
            raise TrainConfigError(f"cannot resume: the run was trained with object_motion="
                                   f"{bool(saved.get('object_motion', False))!r}, this configuration "
                                   f'says {self.config.object_motion!r} (start a new run with --init '
                                   'to add or drop the object-motion net)')
        for key in ('model', 'pose_model', 'learned_intrinsics', 'width', 'height', 'min_depth',
                    'max_depth', 'depth_normalization'):
            if key in saved and saved[key] != getattr(self.config, key):
                raise TrainConfigError(f'cannot resume: the run was trained with {key}='
                                       f'{saved[key]!r}, this configuration says '
                                       f'{getattr(self.config, key)!r}')
        if self.config.pose_model == 'posexp' and 'frame_offsets' in saved and \
                len(saved['frame_offsets']) != len(self.config.frame_offsets):
            raise TrainConfigError(f"cannot resume: the run's PoseExpNet predicts "
                                   f"{len(saved['frame_offsets'])} sources, this configuration "
                                   f'has frame_offsets {list(self.config.frame_offsets)}')

    def _saved_state_value(self, key, default):
        """A value of the resumed checkpoint's adam.pth (read once: it is twice the networks'
        size; dropped once the optimiser state is restored)."""
        path = self.resume_dir / STATE_FILE
        if not path.is_file():
            return default
        if getattr(self, '_saved_state', None) is None:
            try:
                self._saved_state = torch.load(path, map_location='cpu', weights_only=True)
            except Exception:  # noqa: BLE001 - reported properly by _load_state
                return default
        return self._saved_state.get(key, default)

    def _build_optimiser(self):
        cfg = self.config
        params = self.model.trainable_parameters()
        groups = [{'params': params}]
        if self.model.intrinsics is not None and cfg.intrinsics_lr_factor != 1.0:
            # the head's 4 outputs are constants of the camera, carried by its biases: a higher
            # learning rate on them lets K move within a run (at lr 1e-4 one Adam step moves a
            # normalised focal length by ~1e-4). Its weights (the per-pair dependence on the
            # pose features) keep the networks' rate: larger steps there made K jump from
            # sample to sample.
            head = {id(self.model.intrinsics.focal.bias), id(self.model.intrinsics.offset.bias)}
            groups = [{'params': [p for p in params if id(p) not in head]},
                      {'params': [p for p in params if id(p) in head],
                       'lr': cfg.lr * cfg.intrinsics_lr_factor}]
        if 'object_size' in self.model.extras:
            # one number per class: at the networks' lr it would move ~lr per step (in log)
            prior = {id(p) for p in self.model.extras['object_size'].parameters()}
            groups = [{**g, 'params': [p for p in g['params'] if id(p) not in prior]} for g in groups]
            groups.append({'params': list(self.model.extras['object_size'].parameters()),
                           'lr': cfg.lr * OBJECT_SIZE_LR_FACTOR, 'weight_decay': 0.0})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.lr_step, cfg.lr_gamma)
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp)
        self.epoch = 0          # next epoch to run
        self.step = 0           # optimiser steps done
        self.annealed = False   # the anneal_fraction drop happened
        self.train_seconds = 0.0  # training time of earlier sessions (resume)
        if self.resume_dir is not None:
            self._load_state(self.resume_dir)

    def _load_state(self, directory: Path):
        path = directory / STATE_FILE
        if not path.is_file():
            raise TrainingError(f'cannot resume from {directory}: no {STATE_FILE} (optimiser state); '
                                'to start from its weights with a fresh optimiser use --init')
        try:
            state = getattr(self, '_saved_state', None) or \
                torch.load(path, map_location='cpu', weights_only=True)
            self._saved_state = None
            self.optimizer.load_state_dict(state['optimizer'])
            self.scheduler.load_state_dict(state['scheduler'])
            if state.get('scaler') and self.amp:
                self.scaler.load_state_dict(state['scaler'])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise TrainingError(f'cannot resume from {path}: {exc}') from exc
        self._check_resume_config(state.get('config') or {})
        self.epoch = int(state['epoch']) + 1
        self.step = int(state['step'])
        self.annealed = bool(state.get('annealed', False))
        self.train_seconds = float(state.get('train_seconds', 0.0))
        for g in self.optimizer.param_groups:     # the schedule decides the learning rate
            g.setdefault('initial_lr', self.config.lr)
        self.resumed_from = {'directory': str(directory), 'epoch': int(state['epoch']),
                             'step': self.step}

    # -- one step --------------------------------------------------------------------------------
    def compute_loss(self, batch: dict, train: bool = True):
        """Forward the networks on a batch (already on the device) -> LossOutput, translations.

        The model's whole output (a dict, see :class:`SfMModel`) is kept in
        ``self.last_forward`` and the K the loss used in ``self.last_K``."""
        cfg = self.config
        net = self.ddp_model if train else self.model
        img_in = batch['image_aug'] if train else batch['image']
        src_in = batch['sources_aug'] if train else batch['sources']
        lengths = batch['distance'] if self.odometry_warp_active else None
        okw = {}
        if self.use_object_motion:
            okw = dict(instance_masks=batch['instance_masks'],
                       source_instance_masks=batch['source_instance_masks'])
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            fwd = net(img_in, src_in, cfg.frame_offsets, lengths, source_depth=self.use_alignment,
                      return_dict=True, **okw)
        disps = [d.float() for d in fwd['disps']]
        poses, trans = fwd['poses'].float(), fwd['translations']
        K = self._loss_K(batch, fwd['K'])
        self.loss_fn.depth_fn = depth_fn = self._depth_fn(batch, disps[0], train)
        kw = {}
        if self.use_explainability:
            kw['source_weights'] = [fwd['masks'][s].float() for s in cfg.scales]
        if self.use_object_motion:
            kw.update(self._object_motion(batch, fwd, disps[0], K, depth_fn))
        if lengths is None:
            out = self.loss_fn(batch['image'], batch['sources'], disps, poses, K,
                               distances=batch['distance'] if self.use_velocity else None, **kw)
        else:
            # the warps use odometry lengths: the velocity term must see the predicted ones
            out = self.loss_fn(batch['image'], batch['sources'], disps, poses, K, **kw)
            v = velocity_loss(trans.float(), batch['distance'].to(trans))
            out.total = out.total + cfg.velocity_weight * v
            out.terms['velocity'] = v.detach()
        if self.use_explainability:
            reg = explainability_regularization({s: fwd['mask_logits'][s].float() for s in cfg.scales})
            out.total = out.total + cfg.explainability_weight * reg
            out.terms['explainability'] = reg.detach()
            out.terms['mask_mean'] = fwd['masks'][0].detach().float().mean()
        if self.use_alignment:
            al = self._alignment(disps[0], fwd['source_disps'], poses, K, depth_fn)
            out.total = out.total + cfg.alignment_weight * al
            out.terms['alignment'] = al.detach()
        if self.use_object_motion:
            out.terms.update(self._object_motion_stats(batch, fwd))
        if self.use_object_size:
            # struct2depth's size constraint on the loss's own depth and K (K detached: the
            # prior must not drive the learned intrinsics)
            lh = fwd['object_log_height'].float()
            sz = object_size_loss(depth_fn(disps[0]), batch['instance_masks'], K.detach(), lh)
            out.total = out.total + cfg.object_size_weight * sz
            out.terms['object_size'] = sz.detach()
            out.terms['object_height'] = lh.detach()[0].exp()
        for name, (weight, term) in self._extra_terms(batch, fwd, out).items():
            out.total = out.total + weight * term
            out.terms[name] = term.detach()
        out.terms['total'] = out.total.detach()
        self.last_forward, self.last_K = fwd, K
        return out, trans

    def _extra_terms(self, batch: dict, fwd: dict, out) -> dict:
        """{name: (weight, scalar term)} of the optional sub-networks in ``model.extras`` (see
        :meth:`_build_extras`); added to the total and logged under their names. None yet
        (object motion changes the warp, it has no term of its own)."""
        return {}

    def _object_motion(self, batch: dict, fwd: dict, disp0, K, depth_fn) -> dict:
        """The loss's object_masks / object_poses: per source ``T_obj`` [B,M,4,4] from the
        object-motion net's outputs, rotating about each object's centre. The centres come from
        the depth and K the loss warps with (normalised depth, learned/flipped K), detached:
        they are only pivots. Flipped samples: images, masks and K are all mirrored, so the net
        simply sees (and predicts) the mirrored motion; nothing here assumes unflipped input."""
        masks = batch['instance_masks']
        with torch.no_grad():
            centres = mask_centroids(depth_fn(disp0.detach()), K.detach(), masks)
        aa, tr = fwd['object_axisangle'], fwd['object_translation']
        T_obj = [object_motion_matrices(aa[:, k], tr[:, k], centres) for k in range(aa.shape[1])]
        return {'object_masks': masks, 'object_poses': T_obj}

    @staticmethod
    def _object_motion_stats(batch: dict, fwd: dict) -> dict:
        """Mean |t_obj| (loss depth units) and |r_obj| (rad) over the slots holding an object,
        all sources; and the mean number of objects per sample."""
        present = batch['instance_masks'].flatten(2).amax(2) > 0                 # [B,M]
        tr = fwd['object_translation'].detach().norm(dim=-1)                      # [B,S,M]
        aa = fwd['object_axisangle'].detach().norm(dim=-1)
        w = present.unsqueeze(1).expand_as(tr).to(tr)
        n = w.sum().clamp_min(1.0)
        return {'object_translation': (tr * w).sum() / n, 'object_rotation': (aa * w).sum() / n,
                'objects': present.float().sum(1).mean()}

    def _loss_K(self, batch: dict, K_pred):
        """The K the loss uses: the batch's (camera_info) K, or the learned one. The intrinsics
        head predicts the camera's own (unflipped) K; a horizontally flipped sample's images are
        warped with its mirror image, cx -> W - 1 - cx (as the dataset does with camera_info),
        so the head never has to tell flipped from unflipped input."""
        if K_pred is None:
            return batch['K']
        K_pred = K_pred.float()
        W = batch['image'].shape[-1]
        flipped = torch.as_tensor(batch['flipped'], device=K_pred.device).view(-1).float()
        delta = torch.zeros_like(K_pred)
        delta[:, 0, 2] = (W - 1 - 2 * K_pred[:, 0, 2]) * flipped
        return K_pred + delta

    def _depth_fn(self, batch: dict, disp0: torch.Tensor, train: bool):
        """disparity -> depth used by the loss: the network's own convention, divided by the
        sample's median depth ('sample') or its sequence's running median ('sequence')."""
        mode = self.config.depth_normalization
        if mode == 'none':
            return self.base_depth
        if mode == 'sample':
            return relative_depth_fn(self.base_depth)
        ids = list(batch['sequence'])
        known = self.normalizer.state_dict()['log_scale']
        if train or any(str(i) not in known for i in ids):
            with torch.no_grad():
                self.normalizer.update(self.base_depth(disp0.detach()), ids)
        norm = self.normalizer
        return lambda d: norm(self.base_depth(d), ids, update=False)

    def _alignment(self, disp0, src_disps, poses, K, depth_fn):
        """Mean over sources of vid2depth's 3-D alignment loss at scale 0. Source depths are
        brought into the target's units (the same normalisation factor as the target's)."""
        base_t = self.base_depth(disp0)
        depth_t = depth_fn(disp0)
        factor = (depth_t / base_t).flatten(1).median(1).values.view(-1, 1, 1, 1)
        terms = []
        for k in range(src_disps.shape[1]):
            depth_s = self.base_depth(src_disps[:, k].float()) * factor
            terms.append(alignment_loss_3d(depth_t, depth_s, poses[:, k], K).loss)
        return torch.stack(terms).mean()

    @property
    def odometry_warp_active(self) -> bool:
        n = self.config.odometry_warp_steps
        return self.has_odometry and (n == -1 or self.step < n)

    def _stats(self, out, trans, batch) -> dict:
        s = {k: float(v) for k, v in out.terms.items()}
        K_pred = self.last_forward.get('K') if getattr(self, 'last_forward', None) else None
        if K_pred is not None:
            s.update(self._K_stats(K_pred.detach().float(), batch))
        s['translation_norm'] = float(trans.detach().norm(dim=-1).mean())
        d = batch['distance']
        if torch.isfinite(d).any():
            s['odometry_distance'] = float(d[torch.isfinite(d)].mean())
        if out.depth is not None:
            s['depth_median'] = float(out.depth.median())
        return s

    def _K_stats(self, K_pred, batch) -> dict:
        """Mean learned K (the camera's, unflipped) and its absolute error against the bags'
        camera_info K (unflipped), in pixels at the network resolution."""
        W = batch['image'].shape[-1]
        K_true = batch['K'].to(K_pred).clone()
        flipped = torch.as_tensor(batch['flipped'], device=K_pred.device).view(-1)
        K_true[:, 0, 2] = torch.where(flipped, W - 1 - K_true[:, 0, 2], K_true[:, 0, 2])
        known = torch.isfinite(K_true.flatten(1)).all(1)     # bags without camera_info: NaN
        st = {}
        for name, (i, j) in (('fx', (0, 0)), ('fy', (1, 1)), ('cx', (0, 2)), ('cy', (1, 2))):
            st[f'K_{name}'] = float(K_pred[:, i, j].mean())
            if known.any():
                st[f'K_{name}_error'] = float((K_pred[known, i, j] - K_true[known, i, j]).abs().mean())
        return st

    # -- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict | None:
        """Mean loss terms on the held-out split (no augmentation), averaged over all ranks."""
        if self.val_loader is None:
            return None
        self.model.eval()
        keys = ('total', 'photometric', 'smoothness', 'velocity', 'translation_norm')
        if self.use_explainability:
            keys += ('explainability', 'mask_mean')
        if self.use_alignment:
            keys += ('alignment',)
        if self.config.learned_intrinsics:
            keys += tuple(f'K_{n}{e}' for n in ('fx', 'fy', 'cx', 'cy') for e in ('', '_error'))
        if self.use_object_motion:
            keys += ('object_translation', 'object_rotation')
        if self.use_object_size:
            keys += ('object_size', 'object_height')
        # per key: sum and sample count (a K error exists only for bags with camera_info)
        sums = torch.zeros(2 * len(keys), dtype=torch.float64)
        for batch in self.val_loader:
            batch = _to(batch, self.device)
            out, trans = self.compute_loss(batch, train=False)
            st = self._stats(out, trans, batch)
            n = batch['image'].shape[0]
            for i, k in enumerate(keys):
                if k in st or k in ('total', 'photometric', 'smoothness', 'velocity'):
                    sums[i] += st.get(k, 0.0) * n
                    sums[len(keys) + i] += n
        self.model.train()
        sums = self.ctx.all_reduce_sum(sums)
        res = {k: float(sums[i]) / float(sums[len(keys) + i])
               for i, k in enumerate(keys) if float(sums[len(keys) + i]) > 0}
        if not self.use_velocity:
            res.pop('velocity', None)
        return res

    @torch.no_grad()
    def sample_images(self, n: int = 4):
        """(N,3,2H,W) float images: RGB above the colour-mapped predicted depth, from the
        held-out split (else the training split)."""
        from ..core.estimator import colorize_disparity
        data = self.val_set if self.val_set is not None else self.train_set
        idx = np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int)
        imgs = torch.stack([data[int(i)]['image'] for i in idx]).to(self.device)
        self.model.eval()
        disp = self.model.depth_disps(imgs)[0].float()
        self.model.train()
        depth = self.base_depth(disp)
        rows = []
        for k in range(imgs.shape[0]):
            col = colorize_disparity(depth[k, 0].cpu().numpy())
            col = torch.from_numpy(col).permute(2, 0, 1).float() / 255.0
            rows.append(torch.cat([imgs[k].cpu(), col], 1))
        return torch.stack(rows)

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, epoch: int, complete: bool = True) -> Path | None:
        """Write out/weights_<epoch>/ (monodepth2 layout + adam.pth + train_config.json) and
        point out/latest at it. Rank 0 only; returns the directory (None on other ranks)."""
        if not self.ctx.is_main:
            return None
        cfg = self.config
        d = self.out / checkpoint_dir_name(epoch)
        self.model.save(d, height=cfg.height, width=cfg.width,
                        running_intrinsics=self._running_intrinsics())
        state = {'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                 'scaler': self.scaler.state_dict() if self.amp else {},
                 'epoch': int(epoch), 'step': int(self.step), 'epoch_complete': bool(complete),
                 'annealed': bool(self.annealed),
                 'train_seconds': float(self.train_seconds + time.perf_counter() - self._t_start),
                 'translation_scale': float(self.model.translation_scale),
                 'rotation_scale': float(self.model.rotation_scale),
                 'config': cfg.to_dict()}
        if self.normalizer is not None:
            state['depth_normalizer'] = self.normalizer.state_dict()
        tmp = d / f'.{STATE_FILE}.{os.getpid()}.tmp'
        torch.save(state, tmp)
        os.replace(tmp, d / STATE_FILE)
        cfg.save(d / CONFIG_FILE)
        link = self.out / LATEST
        tmp_link = self.out / f'.{LATEST}.{os.getpid()}.tmp'
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(d.name, tmp_link)
        os.replace(tmp_link, link)
        self._prune(d)
        return d

    def _running_intrinsics(self) -> dict | None:
        """The learned K averaged over the last epoch (normalised: fx/W, fy/H, ox, oy), stored
        in intrinsics.pth as the Estimator's estimate before a camera's first frame pair."""
        if self._K_acc is None or self._K_acc[1] == 0:
            return None
        return {'value': (self._K_acc[0] / self._K_acc[1]).tolist(), 'count': int(self._K_acc[1])}

    def _accumulate_K(self):
        from ..core.networks.intrinsics_head import normalized_from_intrinsics
        K = self.last_forward.get('K')
        if K is None:
            return
        W, H = self.config.width, self.config.height
        f, o = normalized_from_intrinsics(K.detach().double().cpu(), W, H)
        v = torch.cat([f, o], -1)
        if self._K_acc is None:
            self._K_acc = [torch.zeros(4, dtype=torch.float64), 0]
        self._K_acc[0] += v.sum(0)
        self._K_acc[1] += v.shape[0]

    def _prune(self, newest: Path):
        """Optimiser state only in the newest checkpoint; at most keep_checkpoints weights_N."""
        import shutil
        dirs = sorted((int(p.name.split('_', 1)[1]), p) for p in self.out.glob('weights_*')
                      if p.is_dir() and p.name.split('_', 1)[1].isdigit())
        for _, p in dirs:
            if p != newest and (p / STATE_FILE).is_file():
                (p / STATE_FILE).unlink()
        keep = self.config.keep_checkpoints
        if keep:
            for _, p in dirs[:-keep]:
                if p != newest:
                    shutil.rmtree(p, ignore_errors=True)

    # -- the loop --------------------------------------------------------------------------------
    def _open_writer(self):
        if not (self.ctx.is_main and self.config.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:   # tensorboard not installed
            self.log(f'TensorBoard logging off: {exc}')
            return None
        return SummaryWriter(str(self.out / 'tensorboard'), purge_step=self.step or None)

    def fit(self) -> dict:
        cfg = self.config
        ctx = self.ctx
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / CONFIG_FILE)
        t_start = self._t_start = time.perf_counter() - self.train_seconds
        self.train_seconds = 0.0
        first_epoch = self.epoch
        summary = {'out': str(self.out), 'device': str(self.device), 'world_size': ctx.world_size,
                   'train_samples': len(self.train_set),
                   'val_samples': len(self.val_set) if self.val_set is not None else 0,
                   'odometry': self.has_odometry, 'velocity_loss': self.use_velocity,
                   'amp': self.amp, 'init_notes': self.init_notes,
                   'resumed_from': getattr(self, 'resumed_from', None)}
        if self.epoch >= cfg.epochs:
            self.log(f'nothing to do: the run already completed {self.epoch} of {cfg.epochs} epochs '
                     '(raise --epochs to continue)')
            summary.update(epochs_run=0, steps=self.step, checkpoint=str(find_checkpoint(self.out)),
                           stopped='done', history=[])
            return summary
        self.log(f'training {cfg.model} + {cfg.pose_model} pose'
                 + (' + learned intrinsics' if cfg.learned_intrinsics else '')
                 + (f' + 3-D alignment x{cfg.alignment_weight:g}' if self.use_alignment else '')
                 + (' + object motion' if self.use_object_motion else '')
                 + (f', depth normalisation {cfg.depth_normalization}' if self.normalized else '')
                 + f' {cfg.width}x{cfg.height} on {self.device} '
                 f'(x{ctx.world_size} process(es)): {len(self.train_set)} training samples, '
                 f'{summary["val_samples"]} held out, {self.steps_per_epoch} steps/epoch, '
                 + ('odometry: yes (velocity loss)' if self.use_velocity else
                    'odometry: not used (relative depth)' if self.normalized else
                    'odometry: no (relative scale)')
                 + (f'; {", ".join(self.init_notes)}' if self.init_notes else '')
                 + (f'; resumed at epoch {self.epoch}, step {self.step}' if self.resume_dir else ''))
        self.writer = self._open_writer()
        val0 = None
        if first_epoch == 0 and self.val_loader is not None:
            val0 = self.validate()
            if val0 is not None:
                self.log('held-out loss before training: ' + _fmt(val0))
                if self.writer:
                    for k, v in val0.items():
                        self.writer.add_scalar(f'val/{k}', v, 0)
        summary['val_before'] = val0
        stopped = None
        last_ckpt = None
        try:
            for epoch in range(self.epoch, cfg.epochs):
                self.epoch = epoch
                rec, stopped = self._train_epoch(epoch, t_start)
                val = self.validate()
                rec['val'] = val
                self.scheduler.step()
                if ctx.is_main:
                    if val is not None and self.writer:
                        for k, v in val.items():
                            self.writer.add_scalar(f'val/{k}', v, self.step)
                    if self.writer and cfg.image_every and (epoch + 1) % cfg.image_every == 0:
                        self.writer.add_images('depth/samples', self.sample_images(), self.step)
                last = stopped is not None or epoch == cfg.epochs - 1
                if last or (epoch + 1) % cfg.save_every == 0:
                    last_ckpt = self.save_checkpoint(epoch, complete=stopped is None)
                    rec['checkpoint'] = str(last_ckpt) if last_ckpt else None
                rec['elapsed_s'] = time.perf_counter() - t_start
                self.history.append(rec)
                if ctx.is_main:
                    with open(self.out / HISTORY_FILE, 'a') as f:
                        f.write(json.dumps(rec) + '\n')
                    self.log(f"epoch {epoch}: train {_fmt(rec['train'])}"
                             + (f' | held-out {_fmt(val)}' if val else '')
                             + (f' | saved {last_ckpt}' if rec.get('checkpoint') else ''))
                if stopped is not None:
                    self.log(f'stopped after {self.step} steps: {stopped}')
                    break
                self.epoch = epoch + 1
        finally:
            if self.writer:
                self.writer.close()
            ctx.barrier()
        summary.update(epochs_run=len(self.history), steps=self.step,
                       checkpoint=str(last_ckpt) if last_ckpt else None,
                       stopped=stopped or 'epochs',
                       train_s=time.perf_counter() - t_start - self.step_hook_s,
                       step_hook_s=self.step_hook_s,
                       time_cap_hit=bool(stopped and stopped.startswith('time budget')),
                       history=self.history,
                       val_after=self.history[-1]['val'] if self.history else None)
        return summary

    def _maybe_anneal(self, t_start: float):
        """Set the learning rate of the next step from the budget's schedule
        (:mod:`.schedule`): warm-up, then the anneal over the last anneal_fraction of the
        budget, whose progress is counted in steps when max_steps is set (time_budget is then
        only a safety cap), else in seconds."""
        cfg = self.config
        if not (cfg.anneal_fraction or cfg.warmup_steps):
            return
        elapsed = 0.0
        if cfg.time_budget and not cfg.max_steps:
            elapsed = time.perf_counter() - t_start
            if self.ctx.distributed:     # every rank drops at the same step
                elapsed = float(self.ctx.all_reduce_mean(torch.tensor([elapsed]))[0])
        progress = budget_progress(self.step, cfg.max_steps, elapsed, cfg.time_budget)
        was = self.annealed
        if cfg.anneal == 'step' and not cfg.warmup_steps:
            if not was and progress >= 1.0 - cfg.anneal_fraction:   # one-off drop
                for g in self.optimizer.param_groups:
                    g['lr'] *= cfg.lr_gamma
                self.annealed = True
        else:
            f = lr_factor(self.step, progress, warmup_steps=cfg.warmup_steps,
                          anneal_fraction=cfg.anneal_fraction, anneal=cfg.anneal, gamma=cfg.lr_gamma)
            epoch_f = cfg.lr_gamma ** (self.epoch // cfg.lr_step)     # the epoch schedule's part
            for g in self.optimizer.param_groups:
                g['lr'] = g['initial_lr'] * epoch_f * f
            self.annealed = bool(cfg.anneal_fraction) and progress >= 1.0 - cfg.anneal_fraction
        if self.annealed and not was:
            self.log(f'step {self.step}: learning-rate anneal ({cfg.anneal}, to x{cfg.lr_gamma:g}) '
                     f'for the last {cfg.anneal_fraction:.0%} of the budget')

    def _train_epoch(self, epoch: int, t_start: float):
        cfg = self.config
        ctx = self.ctx
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        bar = None
        if ctx.is_main and cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.steps_per_epoch, desc=f'epoch {epoch}', unit='step',
                       file=sys.stderr, leave=False, dynamic_ncols=True)
        sums: dict[str, float] = {}
        n = 0
        stopped = None
        t_epoch = time.perf_counter()
        self._K_acc = None
        t_log, seen_log = time.perf_counter(), 0
        for batch in self.train_loader:
            self._maybe_anneal(t_start)
            batch = _to(batch, self.device)
            out, trans = self.compute_loss(batch, train=True)
            if not torch.isfinite(out.total):
                raise TrainingError(f'loss is {float(out.total)} at step {self.step} (epoch {epoch}); '
                                    'lower --lr or check the data')
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            self._accumulate_K()
            if self.step_hook is not None:          # its time is not training time
                t_hook = time.perf_counter()
                self.step_hook(self)
                self.step_hook_s += time.perf_counter() - t_hook
            st = self._stats(out, trans, batch)
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            seen_log += batch['image'].shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{st['total']:.4f}", t=f"{st['translation_norm']:.3g}")
            if self.step % cfg.log_every == 0:
                keys = sorted(st)
                vals = ctx.all_reduce_mean(torch.tensor([st[k] for k in keys], dtype=torch.float64))
                if self.writer:
                    now = time.perf_counter()
                    for k, v in zip(keys, vals.tolist()):
                        self.writer.add_scalar(f'train/{k}', v, self.step)
                    self.writer.add_scalar('train/lr', self.optimizer.param_groups[0]['lr'], self.step)
                    self.writer.add_scalar('train/images_per_s',
                                           seen_log * ctx.world_size / max(now - t_log, 1e-9), self.step)
                    t_log, seen_log = now, 0
            over = (cfg.max_steps and self.step >= cfg.max_steps)
            if cfg.time_budget:
                over = ctx.any(bool(over) or time.perf_counter() - t_start - self.step_hook_s
                               >= cfg.time_budget)
            if over:
                stopped = (f'max_steps {cfg.max_steps} reached' if cfg.max_steps and self.step >= cfg.max_steps
                           else f'time budget {cfg.time_budget:g} s used')
                break
        if bar is not None:
            bar.close()
        rec = {'epoch': epoch, 'steps': n, 'global_step': self.step,
               'lr': self.optimizer.param_groups[0]['lr'],
               'epoch_s': time.perf_counter() - t_epoch,
               'train': {k: v / max(n, 1) for k, v in sums.items()}}
        run_K = self._running_intrinsics()
        if run_K is not None:
            from ..core.networks.intrinsics_head import RunningIntrinsics
            ri = RunningIntrinsics()
            ri.load_state_dict(run_K)
            K = ri.K(cfg.width, cfg.height)
            rec['intrinsics'] = {'fx': K[0, 0], 'fy': K[1, 1], 'cx': K[0, 2], 'cy': K[1, 2]}
            for name in ('fx', 'fy', 'cx', 'cy'):
                if f'K_{name}_error' in rec['train']:
                    rec['intrinsics'][f'{name}_error'] = rec['train'][f'K_{name}_error']
            rec['intrinsics'] = {k: float(v) for k, v in rec['intrinsics'].items()}
            if self.writer:
                for k, v in rec['intrinsics'].items():
                    self.writer.add_scalar(f'intrinsics/{k}', v, self.step)
        return rec, stopped


def _fmt(d: dict) -> str:
    keys = [k for k in ('total', 'photometric', 'velocity', 'explainability', 'alignment',
                        'translation_norm', 'odometry_distance', 'depth_median', 'K_fx_error',
                        'K_cx_error', 'object_translation', 'object_size', 'object_height') if k in d]
    return ', '.join(f'{k} {d[k]:.4g}' for k in keys)
