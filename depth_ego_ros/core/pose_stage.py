"""The Estimator's pose stage: one pose-network call for a batch of frames.

:class:`PoseStage` (a mixin of :class:`~depth_ego_ros.core.estimator.Estimator`; it uses its
``config``, ``runner`` and per-camera state ``_cams``) pairs each frame with its camera's
previous one (earlier in the batch, else the camera state), runs the pairs through the pose
network once, turns the outputs into ``T_prev_curr`` matrices, and with learned intrinsics keeps
each camera's running K (:meth:`PoseStage.learned_K`).
"""
from __future__ import annotations

from typing import Hashable

import numpy as np
import torch

from .cameras import _K_from_normalized
from .geometry import pose_vec_to_mat
from .networks.intrinsics_head import RunningIntrinsics

__all__ = ['PoseStage']


class PoseStage:
    """The Estimator's pose methods (a mixin of :class:`~depth_ego_ros.core.estimator.Estimator`)."""

    def _pose_stage(self, frames: list, x: torch.Tensor, with_pose: bool, runner=None):
        """One pose-network call for the batch -> (T_prev_curr per frame | None, explainability
        per frame | None, K used per frame).

        with_pose: pairs [previous, current] for every frame whose camera has a previous frame,
        and (learned intrinsics) the cameras' running K updated with each pair's prediction.
        Learned intrinsics, a frame without K whose camera has no estimate yet and no pair: the
        pair [current, current] is added to the call, only for its K (no state change)."""
        cfg = self.config
        runner = self.runner if runner is None else runner
        n = len(frames)
        learned = cfg.learned_intrinsics
        T, masks, K_used = [None] * n, [None] * n, [f.K for f in frames]
        pair_of: dict[int, int] = {}           # frame index -> row of the pose call
        rows_prev, rows_cur = [], []
        if with_pose:
            last_in_batch = {}
            for i, f in enumerate(frames):     # the previous frame: earlier in this batch, else state
                if f.camera_id in last_in_batch:
                    prev = x[last_in_batch[f.camera_id]]
                else:
                    st = self._cams.get(f.camera_id)
                    prev = st.prev if st is not None else None
                if prev is not None:
                    pair_of[i] = len(rows_prev)
                    rows_prev.append(prev)
                    rows_cur.append(x[i])
                last_in_batch[f.camera_id] = i
        self_pair: dict[int, int] = {}
        if learned:
            estimated = set()                  # cameras with an estimate before frame i
            for i, f in enumerate(frames):
                st = self._cams.get(f.camera_id)
                has = f.camera_id in estimated or (st is not None and st.intrinsics is not None) \
                    or self._intrinsics_prior is not None
                if f.K is None and i not in pair_of and not has:
                    self_pair[i] = len(rows_prev)
                    rows_prev.append(x[i])
                    rows_cur.append(x[i])
                if i in pair_of and with_pose:
                    estimated.add(f.camera_id)
        mats = intr = exp = None
        if rows_prev:
            outs = runner.pose(torch.cat([torch.stack(rows_prev), torch.stack(rows_cur)], dim=1))
            named = dict(zip(self._pose_outputs, outs))
            vec = torch.cat([named['axisangle'].float().reshape(-1, 3),
                             named['translation'].float().reshape(-1, 3)], dim=1).cpu().double()
            mats = pose_vec_to_mat(vec[:, :3], vec[:, 3:], invert=self._pose_invert).numpy()
            if 'intrinsics' in named:
                intr = named['intrinsics'].float().cpu().double().numpy()
            if 'explainability' in named:
                exp = named['explainability'].float()[:, 0].cpu().numpy()
        for i, f in enumerate(frames):         # input order: a camera's estimate grows in turn
            H, W = f.image.shape[:2]
            k = pair_of.get(i)
            if k is not None:
                T[i] = mats[k].copy()
                if exp is not None:
                    masks[i] = exp[k].copy()
                if intr is not None:
                    st = self._state(f.camera_id)
                    if st.intrinsics is None:
                        st.intrinsics = self._new_running_intrinsics()
                    st.intrinsics.update(_K_from_normalized(intr[k], cfg.width, cfg.height),
                                         cfg.width, cfg.height)
            if f.K is None:
                K = self.learned_K(f.camera_id, W, H)
                if K is None:
                    K = _K_from_normalized(intr[self_pair[i]], W, H)
                K_used[i] = K
        return T, masks, K_used

    def _new_running_intrinsics(self) -> RunningIntrinsics:
        r = RunningIntrinsics(momentum=None)
        if self._intrinsics_prior is not None:     # stored with the head: counts as one sample
            r.load_state_dict({'count': 1, 'value': self._intrinsics_prior})
        return r

    def learned_K(self, camera_id: Hashable = None, width: int | None = None,
                  height: int | None = None) -> np.ndarray | None:
        """The learned intrinsics of ``camera_id`` (running mean of the head's predictions over
        its frame pairs; the checkpoint's stored estimate before the first pair) for a
        ``width x height`` image (default: the network resolution): float64 3x3, or None when
        intrinsics are not learned or nothing is known yet."""
        if not self.config.learned_intrinsics:
            return None
        width = self.config.width if width is None else width
        height = self.config.height if height is None else height
        st = self._cams.get(camera_id)
        if st is not None and st.intrinsics is not None:
            return st.intrinsics.K(width, height)
        if self._intrinsics_prior is not None:
            return self._new_running_intrinsics().K(width, height)
        return None
