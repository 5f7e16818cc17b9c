"""ImageNet initialisation of ResNet encoders from the zoo's torchvision weights.

monodepth2 starts its depth and pose encoders from torchvision's ImageNet ResNet weights
(AbsRel 0.115 vs 0.132 from scratch on KITTI, its README table). The pose encoder takes N stacked
frames: its first convolution gets the RGB kernels repeated over the frames and divided by N
(:func:`~depth_ego_ros.core.networks.resnet_encoder.expand_first_conv`), so N identical frames
respond as one frame did.
"""
from __future__ import annotations

from torch import nn

from ..core import checkpoints as ckpt
from ..core.networks.resnet_encoder import ResnetEncoder, expand_first_conv
from .install import IMAGENET_FILE
from .resolve import resolve_checkpoint

__all__ = ['imagenet_name', 'imagenet_state_dict', 'init_encoder_from_imagenet']


def imagenet_name(num_layers: int) -> str:
    """Zoo name of torchvision's ImageNet weights for resnet18 / resnet50."""
    return f'resnet{int(num_layers)}_imagenet'


def imagenet_state_dict(num_layers: int, auto_fetch: bool = False) -> dict:
    """torchvision's ImageNet ResNet state dict from the zoo cache (ZooError naming the fetch
    command when it is not downloaded and ``auto_fetch`` is off)."""
    d = resolve_checkpoint(imagenet_name(num_layers), kind='imagenet', auto_fetch=auto_fetch,
                           progress=auto_fetch)
    return ckpt.read_state_dict(d / IMAGENET_FILE if d.is_dir() else d)


def init_encoder_from_imagenet(encoder: ResnetEncoder, state_dict: dict | None = None,
                               auto_fetch: bool = False) -> nn.Module:
    """Load ImageNet weights into ``encoder`` (any number of stacked input frames); -> encoder."""
    sd = dict(state_dict if state_dict is not None
              else imagenet_state_dict(encoder.num_layers, auto_fetch=auto_fetch))
    sd['conv1.weight'] = expand_first_conv(sd['conv1.weight'], encoder.num_input_images)
    parts = ckpt.state_dict_mismatches(encoder.encoder.state_dict(), sd)
    if parts:
        raise ckpt.CheckpointError(f'ImageNet weights do not fit resnet{encoder.num_layers}: '
                                   + '; '.join(parts))
    encoder.encoder.load_state_dict(sd)
    return encoder
