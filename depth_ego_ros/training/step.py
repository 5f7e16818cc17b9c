"""One optimisation step of a training run, and the held-out loss.

:class:`LossStep` forwards the networks on a batch and computes the self-supervised loss
(:class:`~depth_ego_ros.core.losses.SelfSupervisedLoss`: photometric min-reprojection with
auto-masking, smoothness, PackNet-SfM's velocity term when odometry makes depth metric, the
odometry-length warps of the curriculum) plus whatever the run's extras add; :meth:`~LossStep.
optimise` is forward, loss, backward and the optimiser step; :meth:`~LossStep.validate` the mean
loss terms on the held-out split over all ranks.
"""
from __future__ import annotations

import torch

from ..core.losses import LossConfig, SelfSupervisedLoss, velocity_loss
from .data import to_device
from .errors import TrainingError
from .extras import LossInputs

__all__ = ['LossStep']

_BASE_VAL_KEYS = ('total', 'photometric', 'smoothness', 'velocity', 'translation_norm')


class LossStep:
    """The loss of a run: ``compute(batch, train, step)`` -> (LossOutput, translations); the
    model's whole output of the last call is kept in ``last_forward`` and the K the loss used
    in ``last_K``."""

    def __init__(self, config, model, ddp_model, extras, *, has_odometry: bool,
                 use_velocity: bool, amp: bool, device: torch.device):
        cfg = self.config = config
        self.model, self.ddp_model, self.extras = model, ddp_model, extras
        self.has_odometry, self.use_velocity, self.amp = has_odometry, use_velocity, amp
        self.device = device
        self.loss_fn = SelfSupervisedLoss(LossConfig(
            smoothness_weight=cfg.smoothness_weight,
            velocity_weight=cfg.velocity_weight if use_velocity else 0.0,
            automask=cfg.automask, min_depth=cfg.min_depth, max_depth=cfg.max_depth),
            depth_fn=self.base_depth)
        self.last_forward = None
        self.last_K = None

    def base_depth(self, disp: torch.Tensor) -> torch.Tensor:
        """Network disparity -> depth with the depth network's own convention (no normalisation)."""
        return self.model.disp_to_depth(disp, self.config.min_depth, self.config.max_depth)[1]

    def odometry_warp_active(self, step: int) -> bool:
        n = self.config.odometry_warp_steps
        return self.has_odometry and (n == -1 or step < n)

    def compute(self, batch: dict, train: bool, step: int):
        """Forward the networks on a batch (already on the device) -> LossOutput, translations."""
        cfg = self.config
        net = self.ddp_model if train else self.model
        img_in = batch['image_aug'] if train else batch['image']
        src_in = batch['sources_aug'] if train else batch['sources']
        lengths = batch['distance'] if self.odometry_warp_active(step) else None
        fkw = {'source_depth': False, **self.extras.merged('forward_kwargs', batch)}
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            fwd = net(img_in, src_in, cfg.frame_offsets, lengths, return_dict=True, **fkw)
        disps = [d.float() for d in fwd['disps']]
        poses, trans = fwd['poses'].float(), fwd['translations']
        K = self.extras.first('loss_K', batch, fwd)
        if K is None:
            K = batch['K']
        depth_fn = self.extras.first('depth_fn', batch, disps[0], train, self.base_depth)
        self.loss_fn.depth_fn = depth_fn = depth_fn or self.base_depth
        li = LossInputs(batch, fwd, disps, poses, K, depth_fn, self.base_depth, train)
        kw = self.extras.merged('loss_kwargs', li)
        if lengths is None:
            out = self.loss_fn(batch['image'], batch['sources'], disps, poses, K,
                               distances=batch['distance'] if self.use_velocity else None, **kw)
        else:
            # the warps use odometry lengths: the velocity term must see the predicted ones
            out = self.loss_fn(batch['image'], batch['sources'], disps, poses, K, **kw)
            v = velocity_loss(trans.float(), batch['distance'].to(trans))
            out.total = out.total + cfg.velocity_weight * v
            out.terms['velocity'] = v.detach()
        self.extras.each('add_terms', out, li)
        out.terms['total'] = out.total.detach()
        self.last_forward, self.last_K = fwd, K
        return out, trans

    def optimise(self, batch: dict, step: int, optimizer, scaler, epoch: int):
        """One optimiser step on ``batch`` (on the device; ``step`` steps done before it) ->
        (LossOutput, translations). A non-finite loss is an error."""
        out, trans = self.compute(batch, train=True, step=step)
        if not torch.isfinite(out.total):
            raise TrainingError(f'loss is {float(out.total)} at step {step} (epoch {epoch}); '
                                'lower --lr or check the data')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.total).backward()
        scaler.step(optimizer)
        scaler.update()
        return out, trans

    def stats(self, out, trans, batch) -> dict:
        """The step's logged numbers: the loss terms, the extras' statistics, mean |t|, mean
        odometry distance, median depth."""
        s = {k: float(v) for k, v in out.terms.items()}
        if self.last_forward is not None:
            s.update(self.extras.merged('stats', self.last_forward, batch))
        s['translation_norm'] = float(trans.detach().norm(dim=-1).mean())
        d = batch['distance']
        if torch.isfinite(d).any():
            s['odometry_distance'] = float(d[torch.isfinite(d)].mean())
        if out.depth is not None:
            s['depth_median'] = float(out.depth.median())
        return s

    @torch.no_grad()
    def validate(self, loader, ctx, step: int) -> dict | None:
        """Mean loss terms on the held-out split (no augmentation), averaged over all ranks."""
        if loader is None:
            return None
        self.model.eval()
        keys = _BASE_VAL_KEYS + self.extras.val_keys
        # per key: sum and sample count (a K error exists only for bags with camera_info)
        sums = torch.zeros(2 * len(keys), dtype=torch.float64)
        for batch in loader:
            batch = to_device(batch, self.device)
            out, trans = self.compute(batch, train=False, step=step)
            st = self.stats(out, trans, batch)
            n = batch['image'].shape[0]
            for i, k in enumerate(keys):
                if k in st or k in _BASE_VAL_KEYS[:4]:
                    sums[i] += st.get(k, 0.0) * n
                    sums[len(keys) + i] += n
        self.model.train()
        sums = ctx.all_reduce_sum(sums)
        res = {k: float(sums[i]) / float(sums[len(keys) + i])
               for i, k in enumerate(keys) if float(sums[len(keys) + i]) > 0}
        if not self.use_velocity:
            res.pop('velocity', None)
        return res
