"""What a training run reports: log lines, history.jsonl, TensorBoard, the progress bar.

Only rank 0 writes (the other ranks take part in the all-reduces only). :class:`RunLog` holds the
TensorBoard writer (scalars every log_every steps, held-out losses and sample depth images per
epoch, the extras' per-epoch sections such as ``intrinsics/*``), appends one JSON line per epoch
to history.jsonl and prints the run's log lines (to stderr, or to a ``log_fn``).
"""
from __future__ import annotations

import json
import sys
import time

import torch

__all__ = ['RunLog', 'HISTORY_FILE', 'fmt_terms', 'describe_run', 'depth_images']

HISTORY_FILE = 'history.jsonl'

_FMT_KEYS = ('total', 'photometric', 'velocity', 'explainability', 'alignment',
             'translation_norm', 'odometry_distance', 'depth_median', 'K_fx_error',
             'K_cx_error', 'object_translation', 'object_size', 'object_height')


def fmt_terms(d: dict) -> str:
    """The main loss terms of ``d`` in a log line."""
    return ', '.join(f'{k} {d[k]:.4g}' for k in _FMT_KEYS if k in d)


def describe_run(cfg, extras, *, device, world_size: int, train_samples: int, val_samples: int,
                 steps_per_epoch: int, use_velocity: bool, init_notes: list,
                 resumed_at: tuple | None) -> str:
    """The line that starts a run: what trains, on what, and how it was initialised."""
    normalized = 'depth_normalization' in extras
    return (f'training {cfg.model} + {cfg.pose_model} pose'
            + (' + learned intrinsics' if cfg.learned_intrinsics else '')
            + (f' + 3-D alignment x{cfg.alignment_weight:g}' if 'alignment' in extras else '')
            + (' + object motion' if 'object_motion' in extras else '')
            + (f', depth normalisation {cfg.depth_normalization}' if normalized else '')
            + f' {cfg.width}x{cfg.height} on {device} '
            f'(x{world_size} process(es)): {train_samples} training samples, '
            f'{val_samples} held out, {steps_per_epoch} steps/epoch, '
            + ('odometry: yes (velocity loss)' if use_velocity else
               'odometry: not used (relative depth)' if normalized else
               'odometry: no (relative scale)')
            + (f'; {", ".join(init_notes)}' if init_notes else '')
            + (f'; resumed at epoch {resumed_at[0]}, step {resumed_at[1]}' if resumed_at else ''))


@torch.no_grad()
def depth_images(model, images: torch.Tensor, base_depth) -> torch.Tensor:
    """(N,3,2H,W) float images: ``images`` (on the model's device) above the colour-mapped
    depth the model predicts for them."""
    from ..core.visualize import colorize_disparity
    model.eval()
    disp = model.depth_disps(images)[0].float()
    model.train()
    depth = base_depth(disp)
    rows = []
    for k in range(images.shape[0]):
        col = colorize_disparity(depth[k, 0].cpu().numpy())
        col = torch.from_numpy(col).permute(2, 0, 1).float() / 255.0
        rows.append(torch.cat([images[k].cpu(), col], 1))
    return torch.stack(rows)


class RunLog:
    def __init__(self, config, ctx, out, log_fn=None):
        self.config, self.ctx, self.out = config, ctx, out
        self._log_fn = log_fn
        self.writer = None
        self._t_log, self._seen = time.perf_counter(), 0

    def log(self, text: str):
        if not self.ctx.is_main:
            return
        if self._log_fn is not None:
            self._log_fn(text)
        else:
            print(text, file=sys.stderr, flush=True)

    # -- TensorBoard -----------------------------------------------------------------------------
    def open(self, step: int):
        """Open the TensorBoard writer (rank 0, tensorboard on); a resumed run purges the
        points after ``step``."""
        if not (self.ctx.is_main and self.config.tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:   # tensorboard not installed
            self.log(f'TensorBoard logging off: {exc}')
            return
        self.writer = SummaryWriter(str(self.out / 'tensorboard'), purge_step=step or None)

    def close(self):
        if self.writer:
            self.writer.close()

    def scalars(self, prefix: str, values: dict | None, step: int):
        if self.writer and values:
            for k, v in values.items():
                self.writer.add_scalar(f'{prefix}/{k}', v, step)

    def epoch_start(self):
        self._t_log, self._seen = time.perf_counter(), 0

    def step(self, st: dict, step: int, images: int, lr: float):
        """After an optimiser step: every log_every steps the rank-mean of the step's numbers,
        the learning rate and the images/s since the last point (all ranks call this)."""
        self._seen += images
        if step % self.config.log_every:
            return
        keys = sorted(st)
        vals = self.ctx.all_reduce_mean(torch.tensor([st[k] for k in keys], dtype=torch.float64))
        if self.writer:
            now = time.perf_counter()
            for k, v in zip(keys, vals.tolist()):
                self.writer.add_scalar(f'train/{k}', v, step)
            self.writer.add_scalar('train/lr', lr, step)
            self.writer.add_scalar('train/images_per_s',
                                   self._seen * self.ctx.world_size / max(now - self._t_log, 1e-9), step)
            self._t_log, self._seen = now, 0

    def images(self, epoch: int, step: int, make_images):
        """Sample depth images every image_every epochs (``make_images()`` -> the images)."""
        cfg = self.config
        if self.writer and cfg.image_every and (epoch + 1) % cfg.image_every == 0:
            self.writer.add_images('depth/samples', make_images(), step)

    # -- per epoch -------------------------------------------------------------------------------
    def progress_bar(self, epoch: int, total: int):
        if not (self.ctx.is_main and self.config.progress):
            return None
        from tqdm import tqdm
        return tqdm(total=total, desc=f'epoch {epoch}', unit='step', file=sys.stderr, leave=False,
                    dynamic_ncols=True)

    def epoch_end(self, rec: dict):
        """history.jsonl line and the epoch's log line (rank 0)."""
        if not self.ctx.is_main:
            return
        with open(self.out / HISTORY_FILE, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        val = rec['val']
        self.log(f"epoch {rec['epoch']}: train {fmt_terms(rec['train'])}"
                 + (f' | held-out {fmt_terms(val)}' if val else '')
                 + (f" | saved {rec['checkpoint']}" if rec.get('checkpoint') else ''))
