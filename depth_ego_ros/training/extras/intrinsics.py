"""Learned intrinsics: an intrinsics head on the pose network's bottleneck predicts K, which
replaces the bags' camera_info K in the loss.

Contributes the loss's K (mirrored for flipped samples), its own learning rate on the head's
biases, the K statistics (mean K, error against camera_info where the bags have it), and the
running K of the last epoch (logged, and saved in intrinsics.pth as the Estimator's estimate
before a camera's first frame pair)."""
from __future__ import annotations

import torch

from .base import Extra

__all__ = ['LearnedIntrinsics']

_NAMES = ('fx', 'fy', 'cx', 'cy')


class LearnedIntrinsics(Extra):
    name = 'learned_intrinsics'
    val_keys = tuple(f'K_{n}{e}' for n in _NAMES for e in ('', '_error'))

    def __init__(self, config):
        super().__init__(config)
        self._acc = None      # sum of normalised predictions this epoch, count

    @classmethod
    def enabled(cls, config) -> bool:
        return bool(config.learned_intrinsics)

    def network_notes(self, info: dict) -> list:
        if info['intrinsics_from_checkpoint']:
            return []
        return [f'intrinsics head at its prior (fx/W, fy/H) = '
                f'{self.config.intrinsics_init_focal}, centred']

    def param_groups(self, groups: list, model) -> list:
        cfg = self.config
        if model.intrinsics is None or cfg.intrinsics_lr_factor == 1.0:
            return groups
        # the head's 4 outputs are constants of the camera, carried by its biases: a higher
        # learning rate on them lets K move within a run (at lr 1e-4 one Adam step moves a
        # normalised focal length by ~1e-4). Its weights (the per-pair dependence on the
        # pose features) keep the networks' rate: larger steps there made K jump from
        # sample to sample.
        head = [model.intrinsics.focal.bias, model.intrinsics.offset.bias]
        ids = {id(p) for p in head}
        return ([{**g, 'params': [p for p in g['params'] if id(p) not in ids]} for g in groups]
                + [{'params': [p for g in groups for p in g['params'] if id(p) in ids],
                    'lr': cfg.lr * cfg.intrinsics_lr_factor}])

    def loss_K(self, batch: dict, fwd: dict):
        """The K the loss uses: the learned one. The intrinsics head predicts the camera's own
        (unflipped) K; a horizontally flipped sample's images are warped with its mirror image,
        cx -> W - 1 - cx (as the dataset does with camera_info), so the head never has to tell
        flipped from unflipped input."""
        K_pred = fwd['K']
        if K_pred is None:
            return None
        K_pred = K_pred.float()
        W = batch['image'].shape[-1]
        flipped = torch.as_tensor(batch['flipped'], device=K_pred.device).view(-1).float()
        delta = torch.zeros_like(K_pred)
        delta[:, 0, 2] = (W - 1 - 2 * K_pred[:, 0, 2]) * flipped
        return K_pred + delta

    def stats(self, fwd: dict, batch: dict) -> dict:
        """Mean learned K (the camera's, unflipped) and its absolute error against the bags'
        camera_info K (unflipped), in pixels at the network resolution."""
        K_pred = fwd.get('K')
        if K_pred is None:
            return {}
        K_pred = K_pred.detach().float()
        W = batch['image'].shape[-1]
        K_true = batch['K'].to(K_pred).clone()
        flipped = torch.as_tensor(batch['flipped'], device=K_pred.device).view(-1)
        K_true[:, 0, 2] = torch.where(flipped, W - 1 - K_true[:, 0, 2], K_true[:, 0, 2])
        known = torch.isfinite(K_true.flatten(1)).all(1)     # bags without camera_info: NaN
        st = {}
        for name, (i, j) in zip(_NAMES, ((0, 0), (1, 1), (0, 2), (1, 2))):
            st[f'K_{name}'] = float(K_pred[:, i, j].mean())
            if known.any():
                st[f'K_{name}_error'] = float((K_pred[known, i, j] - K_true[known, i, j]).abs().mean())
        return st

    # -- the running estimate ------------------------------------------------------------------
    def epoch_start(self) -> None:
        self._acc = None

    def after_step(self, fwd: dict) -> None:
        from ...core.networks.intrinsics_head import normalized_from_intrinsics
        K = fwd.get('K')
        if K is None:
            return
        W, H = self.config.width, self.config.height
        f, o = normalized_from_intrinsics(K.detach().double().cpu(), W, H)
        v = torch.cat([f, o], -1)
        if self._acc is None:
            self._acc = [torch.zeros(4, dtype=torch.float64), 0]
        self._acc[0] += v.sum(0)
        self._acc[1] += v.shape[0]

    def running(self) -> dict | None:
        """The learned K averaged over the last epoch (normalised: fx/W, fy/H, ox, oy)."""
        if self._acc is None or self._acc[1] == 0:
            return None
        return {'value': (self._acc[0] / self._acc[1]).tolist(), 'count': int(self._acc[1])}

    def epoch_record(self, rec: dict) -> dict:
        run_K = self.running()
        if run_K is None:
            return {}
        from ...core.networks.intrinsics_head import RunningIntrinsics
        ri = RunningIntrinsics()
        ri.load_state_dict(run_K)
        K = ri.K(self.config.width, self.config.height)
        res = {'fx': K[0, 0], 'fy': K[1, 1], 'cx': K[0, 2], 'cy': K[1, 2]}
        for name in _NAMES:
            if f'K_{name}_error' in rec['train']:
                res[f'{name}_error'] = rec['train'][f'K_{name}_error']
        return {'intrinsics': {k: float(v) for k, v in res.items()}}

    def save_kwargs(self) -> dict:
        return {'running_intrinsics': self.running()}
