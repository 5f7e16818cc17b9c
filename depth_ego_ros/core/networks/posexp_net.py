"""SfMLearner's pose + explainability network (Zhou et al., CVPR 2017, "Unsupervised Learning of
Depth and Ego-Motion from Video"), written for this project from the paper's description.

Input: the target frame and N source frames, ``[B,3,H,W]`` and ``[B,N,3,H,W]`` (or a list of N
``[B,3,H,W]``) RGB in [0, 1], stacked along channels as (target, source_1, ..., source_N) and
mapped to [-1, 1] inside ``forward``. H and W must be multiples of 32.

Pose branch: seven stride-2 convolutions with ReLU (16, 32, 64, 128, 256, 256, 256 channels;
kernels 7, 5, 3, 3, 3, 3, 3), a 1x1 convolution to 6N channels, the global spatial mean and a
0.01 scaling (small initial motions). For source j the 6 numbers are (axis-angle rx, ry, rz,
translation tx, ty, tz) -- the project's order (monodepth2's), not the paper's Euler angles -- and
``pose_vec_to_mat(axisangle[:, j], translation[:, j])`` is ``T_src_tgt``: it maps target-camera
points into source j's camera (what :func:`~depth_ego_ros.core.losses.warp_image` takes).

Explainability branch: from the 5th convolution (stride 32), five stride-2 transposed
convolutions with ReLU (256, 128, 64, 32, 16 channels) bring it back to full resolution; at
strides 8, 4, 2, 1 a 3x3 convolution predicts 2 logits per source, and a softmax over each pair
gives the probability that the pixel is *explainable* by the rigid warp (channel 1 of the pair,
as the paper's reference label [0, 1]). Masks: ``{s: [B,N,H/2**s,W/2**s]}`` for s = 0..3 in [0, 1].

The stride-128 feature after the 7th convolution is returned as ``bottleneck`` -- the input of
:class:`~.intrinsics_head.IntrinsicsHead` when intrinsics are learned.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..geometry import pose_vec_to_mat

__all__ = ['PoseExpNet', 'POSE_SCALE', 'mask_to_mono8']

POSE_SCALE = 0.01
_ENC_CH = (16, 32, 64, 128, 256, 256, 256)
_ENC_K = (7, 5, 3, 3, 3, 3, 3)
_DEC_CH = (256, 128, 64, 32, 16)


def _conv(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=2, padding=k // 2), nn.ReLU(inplace=True))


def _upconv(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                         nn.ReLU(inplace=True))


class PoseExpNet(nn.Module):
    """Args:
        num_sources: N, the number of source frames per target (2 for a triplet t-1, t, t+1).
        output_exp: build and run the explainability branch (False: pose only, cheaper).

    ``forward(target, sources)`` returns a dict:
        ``axisangle`` [B,N,3], ``translation`` [B,N,3] (already scaled by 0.01),
        ``masks`` {s: [B,N,h_s,w_s]} explainability probabilities (absent without output_exp),
        ``mask_logits`` {s: [B,N,2,h_s,w_s]} (for a numerically stable regulariser),
        ``bottleneck`` [B,256,H/128,W/128] (rounded up).
    """

    def __init__(self, num_sources: int = 2, output_exp: bool = True):
        super().__init__()
        if int(num_sources) < 1:
            raise ValueError(f'num_sources must be >= 1, got {num_sources}')
        self.num_sources = int(num_sources)
        self.output_exp = bool(output_exp)
        cin = 3 * (1 + self.num_sources)
        chans = (cin,) + _ENC_CH
        for i in range(7):
            setattr(self, f'conv{i + 1}', _conv(chans[i], chans[i + 1], _ENC_K[i]))
        self.pose_pred = nn.Conv2d(_ENC_CH[-1], 6 * self.num_sources, 1)
        if self.output_exp:
            dec_in = (_ENC_CH[4],) + _DEC_CH[:-1]
            for i, level in enumerate((5, 4, 3, 2, 1)):
                setattr(self, f'upconv{level}', _upconv(dec_in[i], _DEC_CH[i]))
            for level, ch in ((4, 128), (3, 64), (2, 32), (1, 16)):
                setattr(self, f'predict_mask{level}', nn.Conv2d(ch, 2 * self.num_sources, 3, padding=1))
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform weights, zero biases (as SfMLearner's TF-slim defaults)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _stack(self, target, sources):
        if not torch.is_tensor(target) or target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f'target must be [B,3,H,W], got {tuple(getattr(target, "shape", ()))}')
        srcs = list(sources.unbind(1)) if torch.is_tensor(sources) and sources.dim() == 5 else \
            [sources] if torch.is_tensor(sources) else list(sources)
        if len(srcs) != self.num_sources:
            raise ValueError(f'expected {self.num_sources} source frames, got {len(srcs)}')
        for s in srcs:
            if s.shape != target.shape:
                raise ValueError(f'source {tuple(s.shape)} does not match target {tuple(target.shape)}')
        H, W = target.shape[-2:]
        if H % 32 or W % 32:
            raise ValueError(f'PoseExpNet needs H and W multiples of 32, got {H}x{W}')
        return torch.cat([target] + srcs, 1)

    def forward(self, target: torch.Tensor, sources: torch.Tensor | Sequence[torch.Tensor]) -> dict:
        x = (self._stack(target, sources) - 0.5) / 0.5
        B, _, H, W = x.shape
        feats = []
        for i in range(7):
            x = getattr(self, f'conv{i + 1}')(x)
            feats.append(x)
        pose = POSE_SCALE * self.pose_pred(feats[-1]).mean(dim=(2, 3)).view(B, self.num_sources, 6)
        out = {'axisangle': pose[..., :3], 'translation': pose[..., 3:], 'bottleneck': feats[-1]}
        if self.output_exp:
            y = feats[4]
            masks, logits = {}, {}
            for level in (5, 4, 3, 2, 1):
                y = getattr(self, f'upconv{level}')(y)
                if level <= 4:
                    s = level - 1
                    lg = getattr(self, f'predict_mask{level}')(y)
                    lg = lg.view(B, self.num_sources, 2, *lg.shape[-2:])
                    logits[s] = lg
                    masks[s] = torch.softmax(lg, dim=2)[:, :, 1]
            out['masks'] = dict(sorted(masks.items()))
            out['mask_logits'] = dict(sorted(logits.items()))
        return out

    @staticmethod
    def pose_matrices(out: dict) -> torch.Tensor:
        """``T_src_tgt`` [B,N,4,4] from a ``forward`` output."""
        aa, t = out['axisangle'], out['translation']
        B, N = aa.shape[:2]
        return pose_vec_to_mat(aa.reshape(B * N, 3), t.reshape(B * N, 3)).view(B, N, 4, 4)


def mask_to_mono8(mask) -> np.ndarray:
    """An explainability mask (torch or numpy, [H,W] or [1,H,W] or [1,1,H,W], values in [0,1])
    -> HxW uint8 image (255 = explainable), for publishing as a ``mono8`` debug image."""
    m = mask.detach().float().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask, np.float32)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f'mask must be HxW (with leading singleton dims), got shape {np.shape(mask)}')
    return np.clip(np.nan_to_num(m, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
