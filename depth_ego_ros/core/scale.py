"""Scale recovery: the factor that makes the Estimator's depth and translation metric.

Scale modes (``EstimatorConfig.scale_mode``): 'none' (1), 'fixed' (``scale_factor``),
'relative' (the frame's median inverse depth: median depth 1), 'camera_height' (a RANSAC
ground plane, :func:`fit_ground_plane`, fitted to the lower image part lies ``camera_height``
below the camera) and 'speed' (|translation| = speed * dt). The last two keep a running
(log-domain) average per camera. :class:`ScaleRecovery` holds the Estimator's methods for this
(mixed into :class:`~depth_ego_ros.core.estimator.Estimator`; they use its ``config`` and
per-camera state ``_cams`` / ``_state``).
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .cameras import _CameraState
from .estimator_types import _finite
from .geometry import backproject, intrinsics_for_resize

if TYPE_CHECKING:
    from .estimator_types import Frame

__all__ = ['MIN_SPEED', 'fit_ground_plane', 'ScaleRecovery']

# moved out of core/estimator.py: keeps that logger name so log filters/levels still match
log = logging.getLogger('depth_ego_ros.core.estimator')

#: below this speed (m/s) a frame does not update the speed-based scale
MIN_SPEED = 0.05


def fit_ground_plane(points: np.ndarray, max_tilt_deg: float = 35.0, iterations: int = 128,
                     inlier_ratio: float = 0.05, min_inlier_fraction: float = 0.2,
                     rng: np.random.Generator | None = None):
    """RANSAC ground plane in camera (optical) coordinates.

    Args:
        points: (N,3) candidate points (the lower image part), x right, y down, z forward.
        max_tilt_deg: the plane normal must be within this angle of the camera's up axis (-y).
        inlier_ratio: a point is an inlier when its distance to the plane is below
            ``inlier_ratio * height`` (relative, so it works on depth of unknown scale).
        min_inlier_fraction: fewer inliers than this fraction of the points -> no plane.
    Returns:
        (normal (3,), height) with the normal pointing up (towards the camera side) and
        ``height`` the camera's distance above the plane (> 0), or None when no plausible
        plane is found.
    """
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    P = P[np.all(np.isfinite(P), axis=1) & (P[:, 2] > 0)]
    n_pts = P.shape[0]
    if n_pts < 20:
        return None
    rng = rng if rng is not None else np.random.default_rng(0)
    cos_tilt = math.cos(math.radians(max_tilt_deg))
    idx = rng.integers(0, n_pts, size=(iterations, 3))
    a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals = normals[ok] / norms[ok, None]
    a = a[ok]
    normals *= np.where(normals[:, 1:2] > 0, -1.0, 1.0)      # point up (-y)
    d = -np.einsum('ij,ij->i', normals, a)                      # n.p + d = 0; d = camera height
    keep = (-normals[:, 1] >= cos_tilt) & (d > 0)
    if not np.any(keep):
        return None
    normals, d = normals[keep], d[keep]
    resid = np.abs(P @ normals.T + d)                           # (N, hypotheses)
    counts = (resid < inlier_ratio * d).sum(axis=0)
    best = int(np.argmax(counts))
    if counts[best] < max(10, min_inlier_fraction * n_pts):
        return None
    n, h = normals[best], d[best]
    # refine: least squares plane through the inliers (two rounds)
    for _ in range(2):
        inl = P[np.abs(P @ n + h) < inlier_ratio * h]
        if inl.shape[0] < 10:
            break
        centroid = inl.mean(axis=0)
        _, _, vt = np.linalg.svd(inl - centroid, full_matrices=False)
        n_new = vt[-1] * (-1.0 if vt[-1][1] > 0 else 1.0)
        h_new = -float(n_new @ centroid)
        if h_new <= 0 or -n_new[1] < cos_tilt:
            break
        n, h = n_new, h_new
    return n, float(h)


class ScaleRecovery:
    """The Estimator's scale methods (a mixin of :class:`~depth_ego_ros.core.estimator.Estimator`)."""

    def camera_scale(self, camera_id=None) -> float:
        """The current metric scale of ``camera_id`` (1.0 until estimated)."""
        mode = self.config.scale_mode
        if mode == 'none':
            return 1.0
        if mode == 'fixed':
            return float(self.config.scale_factor)
        st = self._cams.get(camera_id)
        return float(st.scale) if st is not None and st.scale is not None else 1.0

    @property
    def scale(self) -> float:
        """The current metric scale of the default camera (1.0 until estimated)."""
        return self.camera_scale(None)

    @property
    def _scale(self):
        st = self._cams.get(None)
        return st.scale if st is not None else None

    @_scale.setter
    def _scale(self, value):
        self._state(None).scale = value

    def _ground_scale(self, scaled_disp: torch.Tensor, K: np.ndarray, in_wh,
                      rng: np.random.Generator) -> float | None:
        """Scale from the ground plane in the lower image part, or None if none found."""
        h, w = scaled_disp.shape[-2:]
        K_net = intrinsics_for_resize(K, in_wh, (w, h))
        depth = 1.0 / scaled_disp
        # lower 40 % of the image, central 80 % of the columns, subsampled to ~2000 points
        v0, u0, u1 = int(0.6 * h), int(0.1 * w), int(0.9 * w)
        step = max(1, int(math.sqrt((h - v0) * (u1 - u0) / 2000.0)))
        pts = backproject(depth, torch.as_tensor(K_net, dtype=torch.float32, device=depth.device))
        pts = pts[0, :, v0::step, u0:u1:step].reshape(3, -1).T.cpu().double().numpy()
        plane = fit_ground_plane(pts, rng=rng)
        if plane is None:
            return None
        scale = self.config.camera_height / plane[1]
        return scale if _finite(scale) and scale > 0 else None

    def _smooth(self, st: _CameraState, raw: float | None) -> float:
        if raw is not None:
            if st.scale is None:
                st.scale = raw
            else:
                s = self.config.scale_smoothing
                st.scale = math.exp(s * math.log(st.scale) + (1.0 - s) * math.log(raw))
        return float(st.scale) if st.scale is not None else 1.0

    def _scale_for(self, i: int, f: Frame, scaled: torch.Tensor, T, update: bool) -> float:
        """The metric scale of frame i (updating its camera's estimate when ``update``)."""
        cfg = self.config
        H, W = f.image.shape[:2]
        if cfg.scale_mode == 'camera_height':
            if update:
                st = self._state(f.camera_id)
                return self._smooth(st, self._ground_scale(scaled[i:i + 1], f.K, (W, H), st.rng))
            st = self._cams.get(f.camera_id)
            if st is not None and st.scale is not None:
                return float(st.scale)
            raw = self._ground_scale(scaled[i:i + 1], f.K, (W, H), np.random.default_rng(0))
            return raw if raw is not None else 1.0
        if cfg.scale_mode == 'speed':
            if not update:
                return self.camera_scale(f.camera_id)
            st = self._state(f.camera_id)
            raw = None
            if T is not None and f.speed is not None and f.stamp is not None \
                    and st.prev_stamp is not None:
                dt = f.stamp - st.prev_stamp
                norm_t = float(np.linalg.norm(T[:3, 3]))
                if dt > 0 and abs(f.speed) >= MIN_SPEED and norm_t > 1e-9:
                    raw = abs(f.speed) * dt / norm_t
                elif dt <= 0:
                    log.debug('speed scale: non-increasing stamp (dt=%.6f), scale kept', dt)
            return self._smooth(st, raw)
        if cfg.scale_mode == 'relative':
            # scaled is inverse depth: 1 / median(depth) = median(inverse depth)
            med = float(scaled[i].median())
            return med if math.isfinite(med) and med > 0 else 1.0
        return self.camera_scale(f.camera_id)
