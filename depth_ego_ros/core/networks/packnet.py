"""PackNet01 depth network (PackNet-SfM, Guizilini et al., CVPR 2020, "3D Packing for
Self-Supervised Monocular Depth Estimation").

Written for this project from the paper's description; parameter names and shapes follow the
released PackNet-SfM model so that its ``.ckpt`` files load through
:mod:`depth_ego_ros.core.packnet_checkpoint` (keys ``model.depth_net.<name>`` there, ``<name>`` here).

Building blocks
---------------
* :class:`Conv2D` -- convolution (zero padding k//2) + GroupNorm + ELU
  (parameters ``conv_base.*``, ``normalize.*``).
* :class:`ResidualConv` -- two :class:`Conv2D` plus a 1x1 shortcut (``conv3``), summed, GroupNorm,
  ELU; :func:`residual_block` stacks them in an ``nn.Sequential``.
* :class:`PackLayer3d` -- *packing*: space-to-depth with ratio r=2 (``[B,C,H,W] ->
  [B,4C,H/2,W/2]``, channel ``c*4 + i*2 + j`` holds pixel (2y+i, 2x+j) of channel c), a 3-D
  convolution that treats the folded channel axis as depth (1 -> d=8 feature volumes, 3x3x3),
  the d volumes flattened back into ``d*4C`` channels, and a 2-D :class:`Conv2D` down to C
  channels. Downsamples without discarding detail (invertible folding instead of striding).
* :class:`UnpackLayer3d` -- *unpacking*: 2-D :class:`Conv2D` to ``4*C_out/d`` channels, the 3-D
  convolution (1 -> d), flattening to ``4*C_out`` channels and depth-to-space (pixel shuffle, r=2).
* :class:`InvDepthHead` -- 3x3 convolution to one channel and a sigmoid (``conv1.*``).

Network (:class:`PackNet01`)
----------------------------
Encoder: ``pre_calc`` (5x5, 64) -> ``conv1`` (7x7, 64) -> 5 times {``packN`` (stride 2 by
packing), ``convN+1`` (residual block)} with channels 64, 64, 128, 256, 512 and residual blocks
of 2, 2, 3, 3 convolutions. Decoder: 5 times {``unpackN`` (x2), skip connection, ``iconvN``};
the skip is concatenated (version ``'A'``, the released default) or added (version ``'B'``). The
inverse-depth heads ``disp4_layer`` .. ``disp1_layer`` run at strides 8, 4, 2, 1 and each coarser
prediction is upsampled (nearest) and concatenated into the next finer ``iconv`` input.

Output contract (same as the project's :class:`~.depth_decoder.DepthDecoder`):
``forward(image [B,3,H,W] in [0,1])`` returns ``{s: disp_s [B,1,H/2**s,W/2**s]}`` for s = 0..3,
sigmoid values in (0, 1). The input is NOT normalised (PackNet-SfM feeds [0,1] RGB directly).
H and W must be multiples of 32.

Depth convention: PackNet-SfM's inverse depth is ``sigmoid / min_depth`` with ``min_depth`` =
0.5 (so depth >= 0.5 network units, unbounded above). :meth:`PackNet01.disp_to_depth` /
:func:`packnet_disp_to_depth` turn a ``disp_s`` into ``(inverse depth, depth)`` with that
convention, clamped to [min_depth, max_depth] -- the same signature and return as monodepth2's
:func:`~.depth_decoder.disp_to_depth`, so a caller swaps one function. (The coarse predictions
that feed the decoder are the inverse depths, ``sigmoid / 0.5``, exactly as in the release.)

Width: ``width`` multiplies every channel count (1.0 = the released 128 M-parameter network;
0.5 and 0.25 are lighter variants for CPU). GroupNorm uses 16 groups, or gcd(16, channels) where a
light variant has fewer channels than that.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['PackNet01', 'Conv2D', 'ResidualConv', 'residual_block', 'PackLayer3d',
           'UnpackLayer3d', 'InvDepthHead', 'packing', 'unpacking', 'packnet_disp_to_depth',
           'PACKNET_MIN_DEPTH', 'PACKNET_VERSIONS']

#: PackNet-SfM's inverse-depth head divides the sigmoid by this (metres in the released models)
PACKNET_MIN_DEPTH = 0.5
PACKNET_VERSIONS = ('A', 'B')
GROUPS = 16


def _groups(channels: int) -> int:
    return GROUPS if channels % GROUPS == 0 else math.gcd(GROUPS, channels)


def packing(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Space-to-depth: [B,C,H,W] -> [B,C*r*r,H/r,W/r]; output channel ``c*r*r + i*r + j`` holds
    input pixel (r*y + i, r*x + j) of channel c (the inverse of :func:`unpacking`)."""
    return F.pixel_unshuffle(x, r)


def unpacking(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Depth-to-space: [B,C*r*r,H,W] -> [B,C,r*H,r*W] (the inverse of :func:`packing`)."""
    return F.pixel_shuffle(x, r)


class Conv2D(nn.Module):
    """k x k convolution (zero padding k//2, given stride) -> GroupNorm -> ELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv_base = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                   padding=kernel_size // 2)
        self.normalize = nn.GroupNorm(_groups(out_channels), out_channels)

    def forward(self, x):
        return F.elu(self.normalize(self.conv_base(x)), inplace=True)


class ResidualConv(nn.Module):
    """ELU(GroupNorm(Conv2D(Conv2D(x)) + conv3(x))), conv3 a 1x1 shortcut convolution.

    ``dropout`` (2-D channel dropout on the shortcut, as the release's option) lives in a
    parameter-free attribute, so parameter names do not depend on it."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 dropout: float | None = None):
        super().__init__()
        self.conv1 = Conv2D(in_channels, out_channels, 3, stride)
        self.conv2 = Conv2D(out_channels, out_channels, 3, 1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.normalize = nn.GroupNorm(_groups(out_channels), out_channels)
        self.drop = nn.Dropout2d(dropout) if dropout else nn.Identity()

    def forward(self, x):
        y = self.conv2(self.conv1(x)) + self.drop(self.conv3(x))
        return F.elu(self.normalize(y), inplace=True)


def residual_block(in_channels: int, out_channels: int, num_blocks: int, stride: int = 1,
                   dropout: float | None = None) -> nn.Sequential:
    layers = [ResidualConv(in_channels, out_channels, stride, dropout)]
    layers += [ResidualConv(out_channels, out_channels, 1, dropout) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


class PackLayer3d(nn.Module):
    """Packing: [B,C,H,W] -> [B,C,H/2,W/2] (space-to-depth, 3-D conv over the folded channel
    axis, 2-D conv)."""

    def __init__(self, channels: int, kernel_size: int, r: int = 2, d: int = 8):
        super().__init__()
        self.r, self.d = int(r), int(d)
        self.conv3d = nn.Conv3d(1, self.d, kernel_size=3, stride=1, padding=1)
        self.conv = Conv2D(channels * self.r ** 2 * self.d, channels, kernel_size, 1)

    def forward(self, x):
        x = packing(x, self.r)                        # [B,4C,h,w]
        b, c, h, w = x.shape
        x = self.conv3d(x.unsqueeze(1))               # [B,d,4C,h,w]
        return self.conv(x.reshape(b, self.d * c, h, w))


class UnpackLayer3d(nn.Module):
    """Unpacking: [B,C_in,H,W] -> [B,C_out,2H,2W] (2-D conv, 3-D conv, depth-to-space)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, r: int = 2,
                 d: int = 8):
        super().__init__()
        self.r, self.d = int(r), int(d)
        if (out_channels * self.r ** 2) % self.d:
            raise ValueError(f'unpacking: out_channels*r^2 ({out_channels * self.r ** 2}) must be '
                             f'divisible by d ({self.d})')
        self.conv = Conv2D(in_channels, out_channels * self.r ** 2 // self.d, kernel_size, 1)
        self.conv3d = nn.Conv3d(1, self.d, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        x = self.conv(x)                              # [B,4C/d,h,w]
        b, c, h, w = x.shape
        x = self.conv3d(x.unsqueeze(1))               # [B,d,4C/d,h,w]
        return unpacking(x.reshape(b, self.d * c, h, w), self.r)


class InvDepthHead(nn.Module):
    """3x3 conv (zero padding) -> one channel -> sigmoid, in (0, 1)."""

    def __init__(self, in_channels: int, out_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv1(x))


def packnet_disp_to_depth(disp, min_depth: float = 0.1, max_depth: float = 100.0,
                          net_min_depth: float = PACKNET_MIN_DEPTH):
    """PackNet-SfM sigmoid output -> (inverse depth, depth).

    ``inv = disp / net_min_depth`` (the release's convention), clamped to
    ``[1/max_depth, 1/min_depth]``; ``depth = 1 / inv``. Works on torch tensors and numpy arrays.
    """
    if not (0 < min_depth < max_depth):
        raise ValueError(f'need 0 < min_depth < max_depth, got {min_depth}, {max_depth}')
    if not net_min_depth > 0:
        raise ValueError(f'net_min_depth must be > 0, got {net_min_depth}')
    inv = disp / net_min_depth
    if torch.is_tensor(inv):
        inv = inv.clamp(1.0 / max_depth, 1.0 / min_depth)
    else:
        import numpy as np
        inv = np.clip(inv, 1.0 / max_depth, 1.0 / min_depth)
    return inv, 1.0 / inv


class PackNet01(nn.Module):
    """PackNet01 encoder-decoder (see the module docstring).

    Args:
        version: 'A' (skip concatenation, the released default; '1A' also accepted) or 'B'
            (skip addition).
        width: channel multiplier (1.0 = released; 0.5 / 0.25 = lighter CPU variants).
        dropout: optional dropout on the residual shortcuts (training only).
        d: number of 3-D convolution features in packing/unpacking (8 as released).
        min_depth: the inverse-depth head's ``min_depth`` (inverse depth = sigmoid / min_depth).
    """

    def __init__(self, version: str = 'A', width: float = 1.0, dropout: float | None = None,
                 d: int = 8, min_depth: float = PACKNET_MIN_DEPTH):
        super().__init__()
        v = str(version).upper()
        v = v[1:] if len(v) == 2 and v[0] == '1' else v
        if v not in PACKNET_VERSIONS:
            raise ValueError(f"version must be 'A' or 'B' (or '1A'/'1B'), got {version!r}")
        width = float(width)
        base = [64, 64, 64, 128, 256, 512]            # ni, n1 .. n5
        chans = [base_c * width for base_c in base]
        if not (width > 0) or any(c != int(c) or int(c) % 16 for c in chans):
            raise ValueError(f'width must make every channel count (64, 128, 256, 512 x width) a '
                             f'multiple of 16, e.g. 1.0, 0.5 or 0.25; got {width}')
        if not min_depth > 0:
            raise ValueError(f'min_depth must be > 0, got {min_depth}')
        self.version, self.width, self.d, self.min_depth = v, width, int(d), float(min_depth)
        self.scales = (0, 1, 2, 3)
        ni, n1, n2, n3, n4, n5 = (int(c) for c in chans)
        no = 1
        self.num_ch = dict(ni=ni, n1=n1, n2=n2, n3=n3, n4=n4, n5=n5)
        pack_k, unpack_k, iconv_k = (5, 3, 3, 3, 3), (3,) * 5, (3,) * 5
        blocks = (2, 2, 3, 3)
        if v == 'A':
            n1o, n1i = n1, n1 + ni + no
            n2o, n2i = n2, n2 + n1 + no
            n3o, n3i = n3, n3 + n2 + no
            n4o, n4i = n4, n4 + n3
            n5o, n5i = n5, n5 + n4
        else:
            n1o, n1i = n1, n1 + no
            n2o, n2i = n2, n2 + no
            n3o, n3i = n3 // 2, n3 // 2 + no
            n4o, n4i = n4 // 2, n4 // 2
            n5o, n5i = n5 // 2, n5 // 2

        self.pre_calc = Conv2D(3, ni, 5, 1)
        # encoder
        self.conv1 = Conv2D(ni, n1, 7, 1)
        self.pack1 = PackLayer3d(n1, pack_k[0], d=self.d)
        self.conv2 = residual_block(n1, n2, blocks[0], 1, dropout)
        self.pack2 = PackLayer3d(n2, pack_k[1], d=self.d)
        self.conv3 = residual_block(n2, n3, blocks[1], 1, dropout)
        self.pack3 = PackLayer3d(n3, pack_k[2], d=self.d)
        self.conv4 = residual_block(n3, n4, blocks[2], 1, dropout)
        self.pack4 = PackLayer3d(n4, pack_k[3], d=self.d)
        self.conv5 = residual_block(n4, n5, blocks[3], 1, dropout)
        self.pack5 = PackLayer3d(n5, pack_k[4], d=self.d)
        # decoder
        self.unpack5 = UnpackLayer3d(n5, n5o, unpack_k[0], d=self.d)
        self.unpack4 = UnpackLayer3d(n5, n4o, unpack_k[1], d=self.d)
        self.unpack3 = UnpackLayer3d(n4, n3o, unpack_k[2], d=self.d)
        self.unpack2 = UnpackLayer3d(n3, n2o, unpack_k[3], d=self.d)
        self.unpack1 = UnpackLayer3d(n2, n1o, unpack_k[4], d=self.d)
        self.iconv5 = Conv2D(n5i, n5, iconv_k[0], 1)
        self.iconv4 = Conv2D(n4i, n4, iconv_k[1], 1)
        self.iconv3 = Conv2D(n3i, n3, iconv_k[2], 1)
        self.iconv2 = Conv2D(n2i, n2, iconv_k[3], 1)
        self.iconv1 = Conv2D(n1i, n1, iconv_k[4], 1)
        # inverse-depth heads at strides 8, 4, 2, 1
        self.disp4_layer = InvDepthHead(n4)
        self.disp3_layer = InvDepthHead(n3)
        self.disp2_layer = InvDepthHead(n2)
        self.disp1_layer = InvDepthHead(n1)
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform convolution weights, zero biases (the release's initialisation)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _merge(self, up, skip):
        return torch.cat((up, skip), 1) if self.version == 'A' else up + skip

    def forward(self, image: torch.Tensor) -> dict[int, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f'image must be [B,3,H,W], got {tuple(image.shape)}')
        H, W = image.shape[-2:]
        if H % 32 or W % 32:
            raise ValueError(f'PackNet01 needs H and W multiples of 32, got {H}x{W}')
        x = self.pre_calc(image)
        x1 = self.conv1(x)
        x1p = self.pack1(x1)
        x2p = self.pack2(self.conv2(x1p))
        x3p = self.pack3(self.conv3(x2p))
        x4p = self.pack4(self.conv4(x3p))
        x5p = self.pack5(self.conv5(x4p))

        inv = 1.0 / self.min_depth
        i5 = self.iconv5(self._merge(self.unpack5(x5p), x4p))
        i4 = self.iconv4(self._merge(self.unpack4(i5), x3p))
        d4 = self.disp4_layer(i4)
        up = F.interpolate(d4 * inv, scale_factor=2.0, mode='nearest')
        i3 = self.iconv3(torch.cat((self._merge(self.unpack3(i4), x2p), up), 1))
        d3 = self.disp3_layer(i3)
        up = F.interpolate(d3 * inv, scale_factor=2.0, mode='nearest')
        i2 = self.iconv2(torch.cat((self._merge(self.unpack2(i3), x1p), up), 1))
        d2 = self.disp2_layer(i2)
        up = F.interpolate(d2 * inv, scale_factor=2.0, mode='nearest')
        i1 = self.iconv1(torch.cat((self._merge(self.unpack1(i2), x), up), 1))
        d1 = self.disp1_layer(i1)
        return {0: d1, 1: d2, 2: d3, 3: d4}

    def disp_to_depth(self, disp, min_depth: float = 0.1, max_depth: float = 100.0):
        """(inverse depth, depth) of a ``forward`` output with this network's convention."""
        return packnet_disp_to_depth(disp, min_depth, max_depth, self.min_depth)

    def config(self) -> dict:
        """Constructor arguments (stored in checkpoints)."""
        return {'name': 'PackNet01', 'version': '1' + self.version, 'width': self.width,
                'd': self.d, 'min_depth': self.min_depth}
