"""Cameras as the Estimator sees them: the stand-in intrinsics when a camera's K is unknown
(:func:`default_intrinsics`, monodepth2's KITTI K), the learned-intrinsics head's normalised
output -> K, and the per-camera state (:class:`_CameraState`: previous frame for the pose net,
running scale, learned K) that lets several cameras share one Estimator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:                  # annotations only: default_intrinsics stays numpy-only
    import torch

    from .networks.intrinsics_head import RunningIntrinsics

__all__ = ['MONODEPTH2_KITTI_K', 'default_intrinsics']

#: monodepth2's KITTI intrinsics, normalised by the image size (fx/W, fy/H, cx/W, cy/H)
MONODEPTH2_KITTI_K = np.array([[0.58, 0.0, 0.5],
                               [0.0, 1.92, 0.5],
                               [0.0, 0.0, 1.0]])


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """monodepth2's KITTI intrinsics scaled to a width x height image (a stand-in when the
    camera's K is unknown; only the metric scale modes depend on it)."""
    K = MONODEPTH2_KITTI_K.copy()
    K[0] *= width
    K[1] *= height
    return K


def _K_from_normalized(v, width: float, height: float) -> np.ndarray:
    """(fx/W, fy/H, ox, oy) (the intrinsics head's normalised output) -> 3x3 float64 K for a
    width x height image (pixel centres at integers, as IntrinsicsHead)."""
    fx, fy, ox, oy = (float(a) for a in v)
    return np.array([[fx * width, 0.0, (0.5 + ox) * width - 0.5],
                     [0.0, fy * height, (0.5 + oy) * height - 0.5],
                     [0.0, 0.0, 1.0]])


class _CameraState:
    """Per-camera state: the previous frame (network input on the device) and its stamp for the
    pose net, and the running metric scale estimate."""
    __slots__ = ('prev', 'prev_stamp', 'scale', 'rng', 'intrinsics')

    def __init__(self):
        self.prev: torch.Tensor | None = None
        self.prev_stamp: float | None = None
        self.scale: float | None = None
        self.rng = np.random.default_rng(0)
        self.intrinsics: RunningIntrinsics | None = None   # learned K (plain mean of the pairs)
