"""Self-supervised training of depth + ego-motion on bags (monodepth2 recipe + velocity loss).

``Trainer(config).fit()`` trains :class:`~depth_ego_ros.training.model.SfMModel` on
:class:`~depth_ego_ros.data.dataset.BagTripletDataset` with
:class:`~depth_ego_ros.core.losses.SelfSupervisedLoss` (photometric min-reprojection with
auto-masking, edge-aware smoothness, and PackNet-SfM's velocity loss when the bags have odometry,
which makes depth metric). Adam with a step schedule; float16 autocast + GradScaler on CUDA.

The Trainer is the loop; each concern is a collaborator: :mod:`.data` (datasets, loaders,
samplers), :mod:`.model_setup` (the networks, initialised), :mod:`.extras` (the methods' optional
parts, registered in one place), :mod:`.optim` (Adam, GradScaler), :mod:`.schedule` (learning
rate, anneal, step/time budgets, progress), :mod:`.step` (one optimisation step, the held-out
loss), :mod:`.checkpointing` (save, find, resume), :mod:`.run_log` (log lines, history,
TensorBoard), :mod:`.config_checks` (what a configuration may combine).

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

import contextlib
import os
import time
from pathlib import Path

import torch

from .checkpointing import (LATEST, STATE_FILE, ResumeSource, checkpoint_dir_name,
                            find_checkpoint, load_output_heads, output_heads, write_checkpoint)
from .config import CONFIG_FILE, TrainConfig
from .config_checks import check_resume_config
from .data import TrainData, to_device
from .distributed import DistContext, setup_distributed
from .ema import WeightAverage
from .errors import TrainConfigError, TrainingError
from .extras import enabled_extras
from .model import SfMModel
from .model_setup import setup_model
from .optim import build_optimizer, build_scaler
from .run_log import RunLog, depth_images, describe_run, fmt_terms
from .schedule import Progress, Schedule, restore_rng_state, rng_state, seed_everything
from .step import LossStep

__all__ = ['Trainer', 'TrainingError', 'STATE_FILE', 'LATEST', 'find_checkpoint',
           'checkpoint_dir_name']


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
        self.out = Path(cfg.out)
        self.run_log = RunLog(cfg, self.ctx, self.out, log_fn)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed + self.ctx.rank)
        self.resume = ResumeSource(resume) if resume is not None else None
        self.resume_dir = self.resume.directory if self.resume is not None else None
        if self.resume is not None:
            check_resume_config(self.resume.value('config', None) or {}, cfg)
        self.data = TrainData(cfg, self.ctx)
        self.extras = enabled_extras(cfg)
        setup = setup_model(cfg, self.ctx, self.data, self.extras, self.resume)
        self.model: SfMModel = setup.model
        self.init_notes = setup.init_notes
        self.use_velocity = setup.use_velocity
        # the weight average (ema_decay): its state needs the networks as the checkpoint left them
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.resume is not None:
            self.extras.each('load_state_dict', self.resume.saved())
            if self.ema is not None and 'ema' in self.resume.saved():
                self.ema.load_state_dict(self.resume.saved()['ema'])
            if 'output_heads' in self.resume.saved():     # exact, not unfolded from the files
                load_output_heads(self.model, self.resume.saved()['output_heads'])
        self.loss_step = LossStep(cfg, self.model, setup.ddp_model, self.extras,
                                  has_odometry=self.data.has_odometry,
                                  use_velocity=self.use_velocity, amp=self.amp, device=self.device)
        self.optimizer = build_optimizer(self.model, cfg, self.extras)
        self.schedule = Schedule(cfg, self.optimizer, self.ctx, self.log)
        self.scheduler = self.schedule.scheduler
        self.scaler = build_scaler(self.amp)
        self.progress = Progress()
        self.resumed_from = None
        if self.resume is not None:
            state = self.resume.restore(self.optimizer, self.scheduler, self.scaler, self.amp)
            check_resume_config(state.get('config') or {}, cfg)
            self.progress.load_state_dict(state)
            self.schedule.resumed()
            self.resumed_from = {'directory': str(self.resume_dir), 'epoch': int(state['epoch']),
                                 'step': self.step}
            if 'rng' in state and self.ctx.world_size == 1:
                # last: building and loading the networks above may have drawn numbers
                restore_rng_state(state['rng'], self.data.generator)
        self.history: list[dict] = []
        self.last_loss = None   # total loss of the last optimiser step
        self.step_hook = None   # callable(trainer) after every optimiser step (e.g. a learning curve)
        self.step_hook_s = 0.0  # time spent in it (not counted as training time)

    # -- what the rest of the package and the tests read -----------------------------------------
    def log(self, text: str):
        self.run_log.log(text)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def amp(self) -> bool:
        return self.config.amp and self.device.type == 'cuda'

    epoch = property(lambda self: self.progress.epoch)
    step = property(lambda self: self.progress.step)
    train_set = property(lambda self: self.data.train_set)
    val_set = property(lambda self: self.data.val_set)
    steps_per_epoch = property(lambda self: self.data.steps_per_epoch)
    has_odometry = property(lambda self: self.data.has_odometry)
    loss_fn = property(lambda self: self.loss_step.loss_fn)
    last_forward = property(lambda self: self.loss_step.last_forward)
    last_K = property(lambda self: self.loss_step.last_K)
    use_alignment = property(lambda self: 'alignment' in self.extras)
    use_explainability = property(lambda self: 'explainability' in self.extras)
    use_object_motion = property(lambda self: 'object_motion' in self.extras)
    use_object_size = property(lambda self: 'object_size' in self.extras)

    @property
    def normalizer(self):
        """The per-sequence depth normaliser ('sequence' normalisation; else None)."""
        norm = self.extras.get('depth_normalization')
        return norm.normalizer if norm is not None else None

    def base_depth(self, disp: torch.Tensor) -> torch.Tensor:
        return self.loss_step.base_depth(disp)

    def compute_loss(self, batch: dict, train: bool = True):
        """Forward the networks on a batch (already on the device) -> LossOutput, translations
        (the model's whole output kept in ``last_forward``, the loss's K in ``last_K``)."""
        return self.loss_step.compute(batch, train=train, step=self.step)

    def averaged_weights(self):
        """Context manager: the networks to save/evaluate (with ema_decay the weight average,
        else the raw weights) in ``self.model`` for the duration of the block."""
        return self.ema.swapped() if self.ema is not None else contextlib.nullcontext(self.model)

    def validate(self) -> dict | None:
        """Mean loss terms on the held-out split (no augmentation), averaged over all ranks
        (the averaged weights with ema_decay)."""
        with self.averaged_weights():
            return self.loss_step.validate(self.data.val_loader, self.ctx, self.step)

    def sample_images(self, n: int = 4):
        """(N,3,2H,W) float images: RGB above the colour-mapped predicted depth, from the
        held-out split (else the training split)."""
        imgs = self.data.samples(n, held_out=True).to(self.device)
        with self.averaged_weights():
            return depth_images(self.model, imgs, self.base_depth)

    def save_checkpoint(self, epoch: int, complete: bool = True) -> Path | None:
        """Write out/weights_<epoch>/ (monodepth2 layout + adam.pth + train_config.json) and
        point out/latest at it. Rank 0 only; returns the directory (None on other ranks)."""
        if not self.ctx.is_main:
            return None
        state = {'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                 'scaler': self.scaler.state_dict() if self.amp else {},
                 **self.progress.state_dict(epoch, complete, self.progress.train_seconds
                                            + time.perf_counter() - self._t_start),
                 'translation_scale': float(self.model.translation_scale),
                 'rotation_scale': float(self.model.rotation_scale),
                 'config': self.config.to_dict(),
                 'rng': rng_state(self.data.generator),
                 'output_heads': output_heads(self.model),
                 **self.extras.merged('state_dict')}
        if self.ema is not None:        # the raw weights (for --resume), taken before the swap
            state['ema'] = self.ema.state_dict()
        with self.averaged_weights():   # the networks written are the ones to deploy
            return write_checkpoint(self.out, epoch, self.model, self.config, state,
                                    self.extras.merged('save_kwargs'))

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, ctx, data, rl = self.config, self.ctx, self.data, self.run_log
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / CONFIG_FILE)
        t_start = self._t_start = time.perf_counter() - self.progress.train_seconds
        self.progress.train_seconds = 0.0
        first_epoch = self.epoch
        summary = {'out': str(self.out), 'device': str(self.device), 'world_size': ctx.world_size,
                   'train_samples': len(data.train_set),
                   'val_samples': len(data.val_set) if data.val_set is not None else 0,
                   'odometry': data.has_odometry, 'velocity_loss': self.use_velocity,
                   'amp': self.amp, 'init_notes': self.init_notes, 'resumed_from': self.resumed_from}
        if self.epoch >= cfg.epochs:
            self.log(f'nothing to do: the run already completed {self.epoch} of {cfg.epochs} epochs '
                     '(raise --epochs to continue)')
            summary.update(epochs_run=0, steps=self.step, checkpoint=str(find_checkpoint(self.out)),
                           stopped='done', history=[])
            return summary
        self.log(describe_run(cfg, self.extras, device=self.device, world_size=ctx.world_size,
                              train_samples=len(data.train_set), val_samples=summary['val_samples'],
                              steps_per_epoch=data.steps_per_epoch, use_velocity=self.use_velocity,
                              init_notes=self.init_notes,
                              resumed_at=(self.epoch, self.step) if self.resume_dir else None))
        rl.open(self.step)
        val0 = None
        if first_epoch == 0 and data.val_loader is not None:
            val0 = self.validate()
            if val0 is not None:
                self.log('held-out loss before training: ' + fmt_terms(val0))
                rl.scalars('val', val0, 0)
        summary['val_before'] = val0
        stopped = None
        last_ckpt = None
        try:
            for epoch in range(self.epoch, cfg.epochs):
                self.progress.epoch = epoch
                rec, stopped = self._train_epoch(epoch, t_start)
                val = rec['val'] = self.validate()
                self.schedule.epoch_end()
                if ctx.is_main:
                    rl.scalars('val', val, self.step)
                    rl.images(epoch, self.step, self.sample_images)
                if stopped is not None or epoch == cfg.epochs - 1 or (epoch + 1) % cfg.save_every == 0:
                    last_ckpt = self.save_checkpoint(epoch, complete=stopped is None)
                    rec['checkpoint'] = str(last_ckpt) if last_ckpt else None
                rec['elapsed_s'] = time.perf_counter() - t_start
                self.history.append(rec)
                rl.epoch_end(rec)
                if stopped is not None:
                    self.log(f'stopped after {self.step} steps: {stopped}')
                    break
                self.progress.epoch = epoch + 1
        finally:
            rl.close()
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

    def _train_epoch(self, epoch: int, t_start: float):
        data, rl, extras = self.data, self.run_log, self.extras
        data.set_epoch(epoch)
        bar = rl.progress_bar(epoch, data.steps_per_epoch)
        sums: dict[str, float] = {}
        n = 0
        stopped = None
        t_epoch = time.perf_counter()
        extras.each('epoch_start')
        rl.epoch_start()
        for batch in data.train_loader:
            self.schedule.maybe_anneal(self.progress, t_start, self.step_hook_s)
            batch = to_device(batch, self.device)
            out, trans = self.loss_step.optimise(batch, self.step, self.optimizer, self.scaler, epoch)
            self.progress.step += 1
            if self.ema is not None:
                self.ema.update()
            self.last_loss = out.total.detach()     # the step's total loss (for step hooks)
            extras.each('after_step', self.last_forward)
            if self.step_hook is not None:          # its time is not training time
                t_hook = time.perf_counter()
                self.step_hook(self)
                self.step_hook_s += time.perf_counter() - t_hook
            st = self.loss_step.stats(out, trans, batch)
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{st['total']:.4f}", t=f"{st['translation_norm']:.3g}")
            rl.step(st, self.step, batch['image'].shape[0], self.schedule.lr)
            stopped = self.schedule.stop_reason(self.step, t_start, self.step_hook_s)
            if stopped is not None:
                break
        if bar is not None:
            bar.close()
        rec = {'epoch': epoch, 'steps': n, 'global_step': self.step, 'lr': self.schedule.lr,
               'epoch_s': time.perf_counter() - t_epoch,
               'train': {k: v / max(n, 1) for k, v in sums.items()}}
        for section, values in extras.merged('epoch_record', rec).items():
            rec[section] = values
            rl.scalars(section, values, self.step)
        return rec, stopped
