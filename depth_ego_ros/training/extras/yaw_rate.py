"""Rotation supervision from the odometry's yaw rate (yaw_rate_weight > 0): the pose network's
turn about the camera's vertical axis is tied to what odometry (wheel encoders, an IMU) measured
between the frames, as PackNet-SfM's velocity term ties its translation length to the speed.
The photometric loss alone pins rotation poorly in a drive with few turns; a small per-frame
yaw bias then bends the whole trajectory (docs/training.md, *Heading*)."""
from __future__ import annotations

import math

import torch

from ...core.losses import camera_yaw, yaw_rate_loss
from .base import Extra, LossInputs

__all__ = ['YawRate']


class YawRate(Extra):
    name = 'yaw_rate'
    val_keys = ('yaw', 'yaw_error_deg')

    @classmethod
    def enabled(cls, config) -> bool:
        return config.yaw_rate_weight > 0

    def prepare(self, model, source, data, resumed: bool) -> list:
        w = self.config.yaw_rate_weight
        if not data.has_odometry:
            return [f'yaw_rate_weight {w:g}: the bags have no odometry, no yaw-rate supervision']
        return [f'yaw-rate supervision x{w:g} (odometry twist.angular.z)']

    def add_terms(self, out, li: LossInputs) -> None:
        yaw = li.batch.get('yaw')
        if yaw is None:
            return
        loss = yaw_rate_loss(li.poses, yaw)
        out.total = out.total + self.config.yaw_rate_weight * loss
        out.terms['yaw'] = loss.detach()
        valid = torch.isfinite(yaw)
        if bool(valid.any()):
            err = (camera_yaw(li.poses.detach())[valid] - yaw.to(li.poses)[valid]).abs().mean()
            out.terms['yaw_error_deg'] = err * (180.0 / math.pi)
