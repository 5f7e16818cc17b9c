"""Learned camera intrinsics (Gordon et al., ICCV 2019, "Depth from Videos in the Wild:
Unsupervised Monocular Depth Learning from Unknown Cameras"), written for this project from the
paper's description.

The head sits on the bottleneck of the pose (motion) network: the feature map is averaged over
space (and divided by its channel count, so that the step size of the head does not grow with
the bottleneck's width) and two 1x1 convolutions predict, per image pair,

* focal lengths  ``fx = softplus(a_x) * W``, ``fy = softplus(a_y) * H``  (positive, in pixels);
* principal point ``cx = (0.5 + o_x) * W - 0.5``, ``cy = (0.5 + o_y) * H - 0.5``.

The ``- 0.5`` is the project's pixel convention (pixel centres at integer coordinates, see
:mod:`depth_ego_ros.core.geometry`): offsets 0 put the principal point exactly on the image centre
``((W-1)/2, (H-1)/2)``. W, H are the size of the images the intrinsics are for (the network
resolution during training); :func:`~depth_ego_ros.core.geometry.intrinsics_for_resize` maps them
to another resolution.

Everything is differentiable, so the photometric loss trains the head through the warp
(``backproject`` uses K^-1, ``project`` uses K). The output is K ``[B,3,3]``; skew is 0.

Initialisation: the convolution weights start at 0, so at first every input gives the prior
``init_focal`` (normalised focal lengths fx/W, fy/H; default 1.0 ~ a 53 degree horizontal field of
view) and ``init_offset`` (default centred); the biases carry the prior and everything is learned.
(Gordon et al. have no bias on the offsets; here a bias lets the prior be set and learned.)

:class:`RunningIntrinsics` averages per-pair predictions in normalised form, resolution
independent -- what a node running without camera_info publishes (the paper also averages the
per-pair predictions over the data at test time).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['IntrinsicsHead', 'RunningIntrinsics', 'intrinsics_from_normalized',
           'normalized_from_intrinsics', 'inverse_softplus']


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0)."""
    if not y > 0:
        raise ValueError(f'softplus output must be > 0, got {y}')
    return float(y + math.log(-math.expm1(-y)))


def intrinsics_from_normalized(focal: torch.Tensor, offset: torch.Tensor, width: float,
                               height: float) -> torch.Tensor:
    """focal [B,2] (fx/W, fy/H), offset [B,2] (principal point offsets from the centre, in image
    sizes) -> K [B,3,3] in pixels (pixel centres at integers). Differentiable."""
    B = focal.shape[0]
    fx = focal[:, 0] * width
    fy = focal[:, 1] * height
    cx = (0.5 + offset[:, 0]) * width - 0.5
    cy = (0.5 + offset[:, 1]) * height - 0.5
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], 1).view(B, 3, 3)


def normalized_from_intrinsics(K, width: float, height: float):
    """Inverse of :func:`intrinsics_from_normalized` for numpy (3,3)/(N,3,3) or torch [...,3,3]:
    returns (focal [...,2], offset [...,2])."""
    lib = torch if torch.is_tensor(K) else np
    K = K if torch.is_tensor(K) else np.asarray(K, dtype=np.float64)
    focal = lib.stack([K[..., 0, 0] / width, K[..., 1, 1] / height], -1)
    offset = lib.stack([(K[..., 0, 2] + 0.5) / width - 0.5, (K[..., 1, 2] + 0.5) / height - 0.5], -1)
    return focal, offset


class IntrinsicsHead(nn.Module):
    """Args:
        in_channels: channels of the bottleneck feature (512 for the ResNet-18 pose encoder's
            last feature, 256 for :class:`~.posexp_net.PoseExpNet`'s ``bottleneck``).
        init_focal: prior (fx/W, fy/H) (a float sets both).
        init_offset: prior principal-point offsets (o_x, o_y) in image sizes.

    ``forward(features, width, height)``: features a [B,C,h,w] tensor or a list of feature maps
    (the last is used); width/height of the images K is for. Returns K [B,3,3].
    """

    def __init__(self, in_channels: int, init_focal: float | Sequence[float] = 1.0,
                 init_offset: Sequence[float] = (0.0, 0.0)):
        super().__init__()
        fxy = (float(init_focal),) * 2 if isinstance(init_focal, (int, float)) else tuple(map(float, init_focal))
        off = tuple(map(float, init_offset))
        if len(fxy) != 2 or len(off) != 2 or min(fxy) <= 0:
            raise ValueError(f'init_focal must be one or two positive numbers and init_offset two '
                             f'numbers, got {init_focal!r}, {init_offset!r}')
        self.in_channels = int(in_channels)
        self.focal = nn.Conv2d(self.in_channels, 2, 1)
        self.offset = nn.Conv2d(self.in_channels, 2, 1)
        with torch.no_grad():
            nn.init.zeros_(self.focal.weight)
            nn.init.zeros_(self.offset.weight)
            self.focal.bias.copy_(torch.tensor([inverse_softplus(f) for f in fxy]))
            self.offset.bias.copy_(torch.tensor(off))

    def normalized(self, features) -> tuple[torch.Tensor, torch.Tensor]:
        """(focal [B,2] = (fx/W, fy/H), offset [B,2])."""
        x = features[-1] if isinstance(features, (list, tuple)) else features
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'features must be [B,{self.in_channels},h,w], got '
                             f'{tuple(getattr(x, "shape", ()))}')
        # mean over space, and over channels through the 1/C factor: under Adam one step then moves
        # the outputs by about lr x mean|feature| whatever the bottleneck's width
        x = x.mean(dim=(2, 3), keepdim=True) / self.in_channels
        focal = F.softplus(self.focal(x)).flatten(1)
        offset = self.offset(x).flatten(1)
        return focal, offset

    def forward(self, features, width: float, height: float) -> torch.Tensor:
        if not (width > 0 and height > 0):
            raise ValueError(f'width and height must be > 0, got {width}, {height}')
        focal, offset = self.normalized(features)
        return intrinsics_from_normalized(focal, offset, float(width), float(height))


class RunningIntrinsics:
    """Running average of learned intrinsics in normalised form (resolution independent).

    ``update(K, width, height)`` with K [B,3,3] (torch or numpy) for images of that size; an
    exponential moving average with ``momentum`` (None = plain mean of everything seen).
    ``K(width, height)`` -> (3,3) float64 numpy for any image size, or None before any update.
    """

    def __init__(self, momentum: float | None = None):
        if momentum is not None and not 0 < momentum < 1:
            raise ValueError(f'momentum must be in (0, 1) or None, got {momentum}')
        self.momentum = momentum
        self.count = 0
        self._value = None          # (fx/W, fy/H, ox, oy)

    def update(self, K, width: float, height: float) -> None:
        if torch.is_tensor(K):
            K = K.detach().double().cpu().numpy()
        K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
        if not np.all(np.isfinite(K)):
            raise ValueError('intrinsics must be finite')
        f, o = normalized_from_intrinsics(K, width, height)
        for v in np.concatenate([f, o], -1):
            self.count += 1
            if self._value is None:
                self._value = v.copy()
            else:
                a = self.momentum if self.momentum is not None else 1.0 / self.count
                self._value = (1 - a) * self._value + a * v

    def K(self, width: float, height: float) -> np.ndarray | None:
        if self._value is None:
            return None
        fx, fy, ox, oy = self._value
        return np.array([[fx * width, 0.0, (0.5 + ox) * width - 0.5],
                         [0.0, fy * height, (0.5 + oy) * height - 0.5],
                         [0.0, 0.0, 1.0]])

    def state_dict(self) -> dict:
        return {'count': self.count, 'value': None if self._value is None else self._value.tolist(),
                'momentum': self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get('count', 0))
        v = state.get('value')
        self._value = None if v is None else np.asarray(v, dtype=np.float64)
