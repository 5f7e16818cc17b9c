"""Monodepth2-style depth decoder: U-Net upsampling with skips, sigmoid disparity at 4 scales.

Layout (so that monodepth2's released ``depth.pth`` loads unchanged): every layer lives in one
``nn.ModuleList`` called ``decoder``, in this order

* for level i = 4, 3, 2, 1, 0: ``upconv(i, 0)`` then ``upconv(i, 1)``  -> ``decoder.0`` .. ``decoder.9``
* for each output scale s (default 0..3): ``dispconv(s)``                -> ``decoder.10`` .. ``decoder.13``

``upconv`` is a :class:`ConvBlock` (reflection-padded 3x3 conv + ELU, parameters
``decoder.K.conv.conv.weight/bias``); ``dispconv`` a bare :class:`Conv3x3`
(``decoder.K.conv.weight/bias``). Decoder widths are [16, 32, 64, 128, 256].

Per level i: ``x = upconv(i,0)(x)``; nearest 2x upsampling; concatenation with encoder feature
``i-1`` (for i > 0); ``x = upconv(i,1)(x)``; at output scales ``disp_s = sigmoid(dispconv(s)(x))``.
Scale s has resolution ``(H / 2**s, W / 2**s)``; H and W must be multiples of 32.

:func:`disp_to_depth` turns the sigmoid output into depth with monodepth2's bounds.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['DepthDecoder', 'ConvBlock', 'Conv3x3', 'disp_to_depth', 'NUM_CH_DEC']

NUM_CH_DEC = [16, 32, 64, 128, 256]


class Conv3x3(nn.Module):
    """Reflection padding by 1, then a 3x3 convolution with bias (keeps H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), kernel_size=3)

    def forward(self, x):
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """:class:`Conv3x3` followed by ELU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))


class DepthDecoder(nn.Module):
    """Args:
        num_ch_enc: channels of the 5 encoder features (``ResnetEncoder.num_ch_enc``).
        scales: output scales (subset of 0..3), default all four.
        num_output_channels: 1 for disparity.
        use_skips: concatenate encoder features (monodepth2 default True).

    ``forward(features)`` takes the encoder's list of 5 feature maps and returns a dict
    ``{scale: disparity [B, C, H/2**s, W/2**s]}`` with values in (0, 1).
    """

    def __init__(self, num_ch_enc: Sequence[int], scales: Sequence[int] = (0, 1, 2, 3),
                 num_output_channels: int = 1, use_skips: bool = True):
        super().__init__()
        self.num_ch_enc = [int(c) for c in num_ch_enc]
        if len(self.num_ch_enc) != 5:
            raise ValueError(f'num_ch_enc must have 5 entries, got {self.num_ch_enc}')
        self.scales = sorted(int(s) for s in scales)
        if not self.scales or any(s not in (0, 1, 2, 3) for s in self.scales):
            raise ValueError(f'scales must be a non-empty subset of 0..3, got {list(scales)}')
        self.num_output_channels = int(num_output_channels)
        self.use_skips = bool(use_skips)
        self.num_ch_dec = list(NUM_CH_DEC)

        layers = []
        self._upconv_index = {}      # (level, 0|1) -> index in self.decoder
        for i in range(4, -1, -1):
            c_in = self.num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            self._upconv_index[(i, 0)] = len(layers)
            layers.append(ConvBlock(c_in, self.num_ch_dec[i]))
            c_in = self.num_ch_dec[i] + (self.num_ch_enc[i - 1] if self.use_skips and i > 0 else 0)
            self._upconv_index[(i, 1)] = len(layers)
            layers.append(ConvBlock(c_in, self.num_ch_dec[i]))
        self._dispconv_index = {}
        for s in self.scales:
            self._dispconv_index[s] = len(layers)
            layers.append(Conv3x3(self.num_ch_dec[s], self.num_output_channels))
        self.decoder = nn.ModuleList(layers)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        if len(features) != 5:
            raise ValueError(f'expected 5 encoder features, got {len(features)}')
        outputs = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = self.decoder[self._upconv_index[(i, 0)]](x)
            x = F.interpolate(x, scale_factor=2.0, mode='nearest')
            if self.use_skips and i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self.decoder[self._upconv_index[(i, 1)]](x)
            if i in self._dispconv_index:
                outputs[i] = torch.sigmoid(self.decoder[self._dispconv_index[i]](x))
        return outputs


def disp_to_depth(disp, min_depth: float = 0.1, max_depth: float = 100.0):
    """Sigmoid output in [0, 1] -> (scaled disparity, depth), as monodepth2.

    ``scaled = 1/max_depth + (1/min_depth - 1/max_depth) * disp`` and ``depth = 1 / scaled``, so
    disp=0 gives max_depth and disp=1 gives min_depth. Works on torch tensors and numpy arrays.
    """
    if not (0 < min_depth < max_depth):
        raise ValueError(f'need 0 < min_depth < max_depth, got {min_depth}, {max_depth}')
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled
