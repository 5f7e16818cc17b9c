"""The trainable depth + pose pair (monodepth2's networks) and its initialisation.

:class:`SfMModel` holds the four networks of a monodepth2 checkpoint (depth encoder + decoder,
pose encoder + decoder) under the names the checkpoint files use, so one ``nn.Module`` can be
wrapped in DistributedDataParallel and saved/loaded in the monodepth2 layout.

Forward pass (monodepth2, "separate pose encoder, pairs"): the depth network sees the target
frame and returns the sigmoid disparity at every loss scale; the pose network sees each
(source, target) pair **in temporal order** and its first prediction is turned into
``T_src_tgt`` (target camera -> source camera) -- inverted for sources before the target.

Output scales (training only): monodepth2's pose decoder multiplies its outputs by 0.01,
which suits scale-free training (translations of a few hundredths of a depth unit) but makes
metric translations (tenths of a metre to a metre per frame, imposed by the velocity loss) take
thousands of Adam steps to reach. ``translation_scale`` c reparametrises the translation rows of
the last pose convolution: the network is trained to output t / c and the model multiplies by c,
which for Adam is the same as a c-times larger learning rate on those rows. ``rotation_scale``
does the same for the axis-angle rows (rotations of a few degrees per frame in turns are also
hundreds of Adam steps away at 0.01). Checkpoints are always written with the factors folded
back into the weights (and they are divided out when loading), so they are plain monodepth2
checkpoints the Estimator runs unchanged.
"""
from __future__ import annotations

import logging
import math
import os

import torch
from torch import nn

from ..core import checkpoints as ckpt
from ..core.estimator import build_networks
from ..core.geometry import pose_vec_to_mat
from ..core.networks.pose_decoder import POSE_OUTPUT_SCALE

__all__ = ['SfMModel', 'build_model', 'init_depth_output', 'init_pose_forward',
           'disparity_for_depth']

log = logging.getLogger(__name__)


class SfMModel(nn.Module):
    """Depth and pose networks trained together.

    ``forward(target [B,3,H,W], sources [B,S,3,H,W], offsets)`` ->
    ``(disps, poses, translations)``: disparities per scale (finest first, [B,1,H/2^s,W/2^s]),
    ``T_src_tgt`` [B,S,4,4] and the raw network translations [B,S,3] (the velocity loss uses
    their norm, which inversion does not change).
    """

    def __init__(self, depth_encoder, depth_decoder, pose_encoder, pose_decoder, scales=(0, 1, 2, 3),
                 translation_scale: float = 1.0, rotation_scale: float = 1.0):
        super().__init__()
        self.encoder = depth_encoder
        self.depth = depth_decoder
        self.pose_encoder = pose_encoder
        self.pose = pose_decoder
        self.scales = tuple(scales)
        self.translation_scale = 1.0
        self.rotation_scale = 1.0
        self.set_output_scales(rotation_scale, translation_scale)
        # the ResNet classification heads are kept for checkpoint compatibility only: never run,
        # never trained (DDP would otherwise complain about parameters without gradients)
        for enc in (self.encoder, self.pose_encoder):
            for p in enc.encoder.fc.parameters():
                p.requires_grad_(False)

    def forward(self, target: torch.Tensor, sources: torch.Tensor, offsets,
                lengths: torch.Tensor | None = None):
        """lengths: optional [B,S] translation lengths (e.g. odometry distances) that replace
        the predicted ones in the returned poses where finite and > 0 (the network then only
        decides direction and rotation there); the returned raw translations are unchanged."""
        out = self.depth(self.encoder(target))
        disps = [out[s] for s in self.scales]
        B, S = sources.shape[:2]
        pairs = []
        for k, off in enumerate(offsets):
            src = sources[:, k]
            pairs.append(torch.cat([src, target], 1) if off < 0 else torch.cat([target, src], 1))
        # all pairs through the pose network in one batch
        aa, tr = self.pose([self.pose_encoder(torch.cat(pairs, 0))])
        aa = aa[:, 0, 0].float().view(S, B, 3) * self.rotation_scale
        tr = tr[:, 0, 0].float().view(S, B, 3) * self.translation_scale
        used = tr
        if lengths is not None:
            L = lengths.to(tr).transpose(0, 1).unsqueeze(-1)            # [S,B,1]
            norm = tr.norm(dim=-1, keepdim=True)
            ok = torch.isfinite(L) & (L > 0) & (norm > 1e-9)
            used = torch.where(ok, tr / norm.clamp_min(1e-9) * torch.nan_to_num(L, nan=0.0), tr)
        poses = []
        for k, off in enumerate(offsets):
            # [src, tgt] predicts T_tgt_src -> invert; [tgt, src] predicts T_src_tgt
            poses.append(pose_vec_to_mat(aa[k], used[k], invert=off < 0))
        return disps, torch.stack(poses, 1), tr.transpose(0, 1)

    def networks(self) -> dict:
        """The four networks by checkpoint role."""
        return {'encoder': self.encoder, 'depth': self.depth, 'pose_encoder': self.pose_encoder,
                'pose': self.pose}

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def _rows(self, part: str):
        n = self.pose.num_frames_to_predict_for
        offs = (0, 1, 2) if part == 'rotation' else (3, 4, 5)
        return [6 * k + r for k in range(n) for r in offs]

    def _row_factors(self) -> torch.Tensor:
        """Per output channel of the last pose convolution: the factor the model applies."""
        f = torch.ones(self.pose.net[-1].out_channels)
        f[self._rows('rotation')] = self.rotation_scale
        f[self._rows('translation')] = self.translation_scale
        return f

    def set_output_scales(self, rotation: float | None = None, translation: float | None = None):
        """Change the reparametrisation of the pose outputs without changing what the model
        predicts (the last convolution's rows are divided by the new factors)."""
        old = self._row_factors()
        for name, v in (('rotation', rotation), ('translation', translation)):
            if v is None:
                continue
            v = float(v)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f'{name}_scale must be > 0, got {v}')
            setattr(self, f'{name}_scale', v)
        ratio = (old / self._row_factors()).to(self.pose.net[-1].weight)
        last = self.pose.net[-1]
        with torch.no_grad():
            last.weight.mul_(ratio.view(-1, 1, 1, 1))
            last.bias.mul_(ratio)

    def set_translation_scale(self, c: float):
        self.set_output_scales(translation=c)

    def pose_state_dict(self) -> dict:
        """The pose decoder's state dict as monodepth2 expects it (output scales folded in)."""
        sd = {k: v.detach().clone() for k, v in self.pose.state_dict().items()}
        idx = len(self.pose.net) - 1
        f = self._row_factors()
        sd[f'net.{idx}.weight'] *= f.view(-1, 1, 1, 1).to(sd[f'net.{idx}.weight'])
        sd[f'net.{idx}.bias'] *= f.to(sd[f'net.{idx}.bias'])
        return sd

    def save(self, directory, height: int, width: int):
        """Write the monodepth2 layout (encoder.pth with height/width, depth.pth, pose_*.pth)."""
        d = ckpt.save_monodepth2(directory, self.encoder, self.depth, self.pose_encoder,
                                 self.pose, height=height, width=width)
        if self.translation_scale != 1.0 or self.rotation_scale != 1.0:
            tmp = d / f'.{ckpt.POSE_FILE}.{os.getpid()}.tmp'
            torch.save({k: v.cpu() for k, v in self.pose_state_dict().items()}, tmp)
            os.replace(tmp, d / ckpt.POSE_FILE)
        return d


def build_model(model: str = 'resnet18', checkpoint: str | os.PathLike | None = None,
                scales=(0, 1, 2, 3), seed: int = 0) -> tuple[SfMModel, dict]:
    """SfMModel with random (seeded) weights or loaded from a monodepth2-layout checkpoint.

    A checkpoint without pose files (e.g. a stereo-trained monodepth2 model) gets fresh pose
    networks. Returns (model in train mode on the CPU, info) with info['pose_from_checkpoint'].
    """
    depth_net, pose_net, meta = build_networks(model, checkpoint, with_pose=True, seed=seed)
    info = {'meta': meta, 'pose_from_checkpoint': pose_net is not None and checkpoint is not None}
    if pose_net is None:
        if checkpoint is not None:
            log.warning('checkpoint %s has no pose networks: the pose networks start from random '
                        'weights', checkpoint)
        _, pose_net, _ = build_networks(model, None, with_pose=True, seed=seed + 1)
    m = SfMModel(depth_net.encoder, depth_net.decoder, pose_net.encoder, pose_net.decoder, scales)
    return m.train(), info


def disparity_for_depth(depth: float, min_depth: float, max_depth: float) -> float:
    """The sigmoid output for which monodepth2's disp_to_depth gives ``depth``."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return (1.0 / depth - lo) / (hi - lo)


def init_depth_output(model: SfMModel, depth: float, min_depth: float, max_depth: float) -> float:
    """Make the depth decoder start near ``depth`` (metres) everywhere: the bias of every
    disparity convolution is set to the logit of the matching sigmoid output and its weights are
    scaled down (x0.1) so the start is nearly flat. Returns the bias value."""
    d = disparity_for_depth(depth, min_depth, max_depth)
    logit = math.log(d / (1.0 - d))
    dec = model.depth
    with torch.no_grad():
        for s, idx in dec._dispconv_index.items():
            conv = dec.decoder[idx].conv
            conv.bias.fill_(logit)
            conv.weight.mul_(0.1)
    return logit


def init_pose_forward(model: SfMModel, step: float) -> None:
    """Make the pose decoder start predicting a forward step of ``step`` (depth units) along the
    optical axis with no rotation, for every predicted frame: for a pair [a, b] in temporal
    order the network predicts T_b_a, i.e. translation (0, 0, -step) for a camera moving
    forward. The last convolution's bias carries it (outputs are multiplied by
    POSE_OUTPUT_SCALE); its weights are scaled down (x0.1)."""
    last = model.pose.net[-1]
    n = model.pose.num_frames_to_predict_for
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.zero_()
        for k in range(n):
            last.bias[6 * k + 5] = -float(step) / POSE_OUTPUT_SCALE / model.translation_scale
