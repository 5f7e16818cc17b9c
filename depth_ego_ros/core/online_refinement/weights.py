"""Online refinement's private networks: the self-supervised loss on window triplets, the
optimiser, snapshots of accepted / original weights, and handing weights to the estimator
(build a runner + atomic swap) or to a checkpoint directory. :class:`RefinerWeights` holds these
methods of :class:`~depth_ego_ros.core.online_refinement.OnlineRefiner` (a mixin; it uses the
refiner's ``depth_net``, ``pose_net``, ``config``, ``estimator`` and locks).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ..geometry import pose_vec_to_mat
from ..losses import LossConfig, SelfSupervisedLoss

__all__ = ['RefinerWeights']


class RefinerWeights:
    """The refiner's loss and weight methods (a mixin of :class:`OnlineRefiner`)."""

    def _make_losses(self):
        ecfg = self.estimator.config
        lc = LossConfig(smoothness_weight=self.config.smoothness_weight,
                        velocity_weight=self.config.velocity_weight,
                        min_depth=ecfg.min_depth, max_depth=ecfg.max_depth)
        self._loss_fn = SelfSupervisedLoss(lc)
        self._eval_loss_fn = SelfSupervisedLoss(dataclasses.replace(lc, identity_noise=0.0))

    # -- the loss ----------------------------------------------------------------------------
    def _batch(self, trips):
        prev = torch.stack([t[1].x for t in trips])
        tgt = torch.stack([t[2].x for t in trips])
        nxt = torch.stack([t[3].x for t in trips])
        K = torch.as_tensor(np.stack([t[2].K for t in trips]), dtype=torch.float32, device=self.device)
        dist = []
        any_known = False
        for _, a, b, c in trips:
            row = []
            for src in (a, c):
                d = math.nan
                if b.speed is not None and b.stamp is not None and src.stamp is not None:
                    v = b.speed if src.speed is None else 0.5 * (b.speed + src.speed)
                    d = v * abs(b.stamp - src.stamp)
                    any_known = True
                row.append(d)
            dist.append(row)
        distances = torch.tensor(dist, dtype=torch.float32, device=self.device) if any_known else None
        return tgt, prev, nxt, K, distances

    def _loss(self, trips, loss_fn):
        tgt, prev, nxt, K, distances = self._batch(trips)
        outs = self.depth_net.decoder(self.depth_net.encoder(tgt))
        disps = [outs[s] for s in sorted(outs)]
        B = tgt.shape[0]
        # pairs in temporal order: [prev, tgt] predicts T_tgt_prev (inverted), [tgt, next] T_next_tgt
        aa, tr = self.pose_net(torch.cat([torch.cat([prev, tgt], 1), torch.cat([tgt, nxt], 1)], 0))
        T_prev = pose_vec_to_mat(aa[:B], tr[:B], invert=True)
        T_next = pose_vec_to_mat(aa[B:], tr[B:], invert=False)
        return loss_fn(tgt, [prev, nxt], disps, [T_prev, T_next], K, distances)

    def _eval(self, trips) -> float:
        with torch.no_grad():
            return float(self._loss(trips, self._eval_loss_fn).total)

    # -- weights -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict, dict]:
        return ({k: v.detach().clone() for k, v in self.depth_net.state_dict().items()},
                {k: v.detach().clone() for k, v in self.pose_net.state_dict().items()})

    def _restore(self, snap):
        with torch.no_grad():
            self.depth_net.load_state_dict(snap[0])
            self.pose_net.load_state_dict(snap[1])
        self._optimizer = None            # Adam's moments belong to the discarded steps

    def _params(self):
        nets = {'both': (self.depth_net, self.pose_net), 'depth': (self.depth_net,),
                'pose': (self.pose_net,)}[self.config.networks]
        return [p for n in nets for p in n.parameters() if p.requires_grad]

    def _opt(self):
        key = (self.config.networks, self.config.learning_rate)
        if self._optimizer is None or self._opt_key != key:
            self._optimizer = torch.optim.Adam(self._params(), lr=self.config.learning_rate)
            self._opt_key = key
        return self._optimizer

    def _swap_in(self) -> tuple[float, float]:
        """Build a runner with the private weights and swap it into the estimator."""
        info = self.estimator.set_networks(self.depth_net, self.pose_net, cache_dir=self._cache_dir)
        for f in self._ort_files():         # the sessions hold their models in memory
            try:
                f.unlink()
            except OSError:
                pass
        self.swap_ms_max = max(self.swap_ms_max, info['swap_ms'])
        return info['build_ms'], info['swap_ms']

    def _ort_files(self) -> set:
        return set(self._cache_dir.glob('*.onnx')) if self._cache_dir is not None else set()

    def reset_weights(self) -> dict:
        """Back to the original (checkpoint) weights, swapped into the estimator."""
        with self._round_lock:
            self._restore(self._original)
            self._accepted = self._snapshot()
            self._rejects_in_row = 0
            build_ms, swap_ms = self._swap_in()
            self.counts['resets'] += 1
            return {'build_ms': build_ms, 'swap_ms': swap_ms}

    def save(self, directory) -> Path:
        """Write the last accepted weights (what the estimator runs) as a monodepth2 checkpoint."""
        from ..models import save_networks
        ecfg = self.estimator.config
        with self._round_lock:
            d_net, p_net = copy.deepcopy(self.depth_net).cpu(), copy.deepcopy(self.pose_net).cpu()
            d_net.load_state_dict({k: v.cpu() for k, v in self._accepted[0].items()})
            p_net.load_state_dict({k: v.cpu() for k, v in self._accepted[1].items()})
        return save_networks(directory, d_net, p_net, model=ecfg.model, height=ecfg.height,
                             width=ecfg.width)
