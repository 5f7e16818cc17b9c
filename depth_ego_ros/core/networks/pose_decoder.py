"""Monodepth2-style pose decoder: 6-DoF (axis-angle + translation) from encoder features.

Layout (so that monodepth2's released ``pose.pth`` loads unchanged): one ``nn.ModuleList``
called ``net`` holding

* ``net.0`` squeeze: 1x1 conv, ``num_ch_enc[-1]`` -> 256, applied to each input feature set;
* ``net.1`` pose0: 3x3 conv, ``256 * num_input_features`` -> 256;
* ``net.2`` pose1: 3x3 conv, 256 -> 256;
* ``net.3`` pose2: 1x1 conv, 256 -> ``6 * num_frames_to_predict_for``.

ReLU after squeeze, pose0 and pose1; global average over H, W; outputs scaled by 0.01.

Monodepth2 runs it with the "separate pose encoder, pairs" setting: the pose encoder sees the two
frames stacked (``num_input_images=2``), the decoder gets ONE feature set
(``num_input_features=1``) and predicts for ``num_frames_to_predict_for=2`` (only the first is
used). Those are the defaults here. For a pair (frame_a, frame_b) in temporal order, the first
prediction ``M = pose_vec_to_mat(axisangle[:, 0], translation[:, 0])`` maps frame_a camera
points into frame_b (``T_b_a``); ``invert=True`` gives ``T_a_b``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ['PoseDecoder', 'POSE_OUTPUT_SCALE']

POSE_OUTPUT_SCALE = 0.01


class PoseDecoder(nn.Module):
    """Args:
        num_ch_enc: channels of the encoder features (only the last one is used).
        num_input_features: number of feature sets passed to ``forward`` (concatenated).
        num_frames_to_predict_for: poses predicted (default 2, as monodepth2's released pose.pth).
        stride: stride of the two 3x3 pose convs (monodepth2: 1).

    ``forward(input_features)``: a list of ``num_input_features`` encoder outputs (each a list of
    5 feature maps; the last map is used). Returns ``(axisangle, translation)``, each
    ``[B, num_frames_to_predict_for, 1, 3]`` (monodepth2's shapes).
    """

    def __init__(self, num_ch_enc: Sequence[int], num_input_features: int = 1,
                 num_frames_to_predict_for: int | None = 2, stride: int = 1):
        super().__init__()
        self.num_ch_enc = [int(c) for c in num_ch_enc]
        self.num_input_features = int(num_input_features)
        if num_frames_to_predict_for is None:
            num_frames_to_predict_for = self.num_input_features - 1
        self.num_frames_to_predict_for = int(num_frames_to_predict_for)
        if self.num_input_features < 1 or self.num_frames_to_predict_for < 1:
            raise ValueError('num_input_features and num_frames_to_predict_for must be >= 1, got '
                             f'{self.num_input_features}, {self.num_frames_to_predict_for}')
        self.net = nn.ModuleList([
            nn.Conv2d(self.num_ch_enc[-1], 256, 1),                                   # squeeze
            nn.Conv2d(256 * self.num_input_features, 256, 3, stride, 1),              # pose 0
            nn.Conv2d(256, 256, 3, stride, 1),                                        # pose 1
            nn.Conv2d(256, 6 * self.num_frames_to_predict_for, 1),                    # pose 2
        ])
        self.relu = nn.ReLU()

    def forward(self, input_features: Sequence[Sequence[torch.Tensor]]):
        if len(input_features) != self.num_input_features:
            raise ValueError(f'expected {self.num_input_features} feature sets, '
                             f'got {len(input_features)}')
        squeeze, pose0, pose1, pose2 = self.net
        x = torch.cat([self.relu(squeeze(f[-1])) for f in input_features], dim=1)
        x = self.relu(pose0(x))
        x = self.relu(pose1(x))
        x = pose2(x)
        x = x.mean(dim=(2, 3))
        x = POSE_OUTPUT_SCALE * x.view(-1, self.num_frames_to_predict_for, 1, 6)
        return x[..., :3], x[..., 3:]
