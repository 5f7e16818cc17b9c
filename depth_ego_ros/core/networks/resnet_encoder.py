"""ResNet-18/50 feature encoder (monodepth2 layout) for the depth and pose networks.

The torchvision ResNet is kept whole under the attribute ``encoder`` so that parameter names are
exactly those of monodepth2's ``ResnetEncoder`` (``encoder.conv1.weight``, ``encoder.layer1.0.
conv1.weight``, ..., ``encoder.fc.weight``): released ``encoder.pth`` / ``pose_encoder.pth``
state dicts load unchanged. The classification head (``fc``) is kept for that reason only; it is
never run.

Input: ``[B, 3*N, H, W]`` RGB in [0, 1] (N stacked frames for the pose encoder, channel order
frame0 RGB, frame1 RGB, ...). It is normalised inside ``forward`` as monodepth2 does:
``(x - 0.45) / 0.225``. Output: 5 feature maps at strides 2, 4, 8, 16, 32 with
``num_ch_enc`` channels ([64, 64, 128, 256, 512] for ResNet-18, [64, 256, 512, 1024, 2048] for
ResNet-50).

Weights are random (torchvision's initialisation) unless a state dict is given: nothing is ever
downloaded. ``imagenet_state_dict`` accepts a plain torchvision ResNet state dict (e.g. one the
user placed in the torch hub cache) and adapts its first convolution to N stacked frames by
repeating it N times along the input channels and dividing by N, as monodepth2 does.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
import torchvision

__all__ = ['ResnetEncoder', 'NUM_CH_ENC', 'MEAN', 'STD', 'expand_first_conv', 'parse_num_layers']

#: channels of the 5 feature maps per depth
NUM_CH_ENC = {
    18: [64, 64, 128, 256, 512],
    50: [64, 256, 512, 1024, 2048],
}
#: monodepth2's input normalisation on [0, 1] RGB (the same scalar for all channels)
MEAN = 0.45
STD = 0.225


def parse_num_layers(model) -> int:
    """'resnet18' | 'resnet50' | 18 | 50 -> 18 | 50 (ValueError otherwise)."""
    if isinstance(model, str):
        name = model.lower().strip()
        n = {'resnet18': 18, 'resnet50': 50, '18': 18, '50': 50}.get(name)
    else:
        n = int(model) if model in (18, 50) else None
    if n is None:
        raise ValueError(f"model must be 'resnet18' or 'resnet50', got {model!r}")
    return n


def expand_first_conv(weight: torch.Tensor, num_input_images: int) -> torch.Tensor:
    """First-conv weight for one RGB image [64,3,k,k] -> for N stacked images [64,3N,k,k].

    The weight is repeated N times along the input channels and divided by N, so that N identical
    frames give the same response as one frame did (monodepth2's treatment of ImageNet weights).
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f'expected a [C,3,k,k] first-conv weight, got {tuple(weight.shape)}')
    if num_input_images < 1:
        raise ValueError(f'num_input_images must be >= 1, got {num_input_images}')
    return torch.cat([weight] * num_input_images, dim=1) / num_input_images


class ResnetEncoder(nn.Module):
    """ResNet feature pyramid (5 levels), monodepth2-compatible parameter names.

    Args:
        num_layers: 18 or 50 (or 'resnet18' / 'resnet50').
        num_input_images: frames stacked along channels (1 for depth, 2 for the pose encoder).
        imagenet_state_dict: optional torchvision ResNet state dict for a single image
            (``conv1.weight`` [64,3,7,7], ...); loaded after adapting ``conv1`` to N frames.
    """

    def __init__(self, num_layers=18, num_input_images: int = 1,
                 imagenet_state_dict: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        num_layers = parse_num_layers(num_layers)
        if int(num_input_images) < 1:
            raise ValueError(f'num_input_images must be >= 1, got {num_input_images}')
        self.num_layers = num_layers
        self.num_input_images = int(num_input_images)
        self.num_ch_enc = list(NUM_CH_ENC[num_layers])

        factory = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[num_layers]
        net = factory(weights=None)
        if self.num_input_images != 1:
            # same geometry as torchvision's conv1, more input channels
            net.conv1 = nn.Conv2d(3 * self.num_input_images, 64, kernel_size=7, stride=2,
                                  padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode='fan_out', nonlinearity='relu')
        self.encoder = net

        if imagenet_state_dict is not None:
            sd = dict(imagenet_state_dict)
            if 'conv1.weight' not in sd:
                raise ValueError('imagenet_state_dict must be a torchvision ResNet state dict '
                                 "(key 'conv1.weight' missing)")
            sd['conv1.weight'] = expand_first_conv(sd['conv1.weight'], self.num_input_images)
            self.encoder.load_state_dict(sd)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B, 3N, H, W] in [0, 1] -> 5 feature maps (strides 2, 4, 8, 16, 32)."""
        e = self.encoder
        x = (x - MEAN) / STD
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        f4 = e.layer4(f3)
        return [f0, f1, f2, f3, f4]
