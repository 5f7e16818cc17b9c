"""Online refinement (struct2depth's test-time adaptation) for a running :class:`Estimator`.

While the estimator serves frames, an :class:`OnlineRefiner` keeps a sliding window of the
recent frames (network-resolution images, intrinsics, stamps and, when known, the platform
speed) and every so often runs a few optimiser steps of the self-supervised loss
(:class:`~depth_ego_ros.core.losses.SelfSupervisedLoss`: photometric min-reprojection with
auto-masking + edge-aware smoothness, + PackNet-SfM's velocity term when speeds are known) on
frame triplets ``(t-1, t, t+1)`` of that window, on its own private copy of the depth and pose
networks. A round is **accepted** only when the loss on a fixed set of the window's triplets
went down and every number stayed finite; its weights are then built into a fresh runner of
the estimator's backend (ONNX Runtime: exported and opened in the refiner's thread) and swapped
in with one reference assignment (:meth:`Estimator.swap_runner`): inference is never blocked
and never sees half-updated weights. A rejected round restores the last accepted weights;
after ``reset_after_rejects`` rejected rounds in a row the original weights come back.

Cost control: the refiner's busy time is measured per unit of work (an evaluation, an optimiser
step, a runner build) and followed by a sleep that keeps busy / wall time at most
``max_share``; its torch intra-op threads are capped (``threads``); on CUDA it works on its own
stream. BatchNorm statistics stay frozen (eval mode): windows are a few frames, far too few to
re-estimate them.

Supported networks: the monodepth2 ResNet-18/50 depth + pose networks (``model`` resnet18 /
resnet50, ``pose_model`` monodepth2, without learned intrinsics); anything else is refused with
a ValueError saying so. Pure torch/numpy: no ROS here (the node wires it in ros/perception_node).

Layout: :mod:`.config` (RefinerConfig, RoundResult, check_supported), :mod:`.window` (frames ->
per-camera windows -> triplets), :mod:`.weights` (loss, optimiser, snapshots, swap/save),
:mod:`.refiner` (OnlineRefiner: rounds, pacing, background thread).
"""
from .config import (NETWORK_CHOICES, SUPPORTED_MODELS, RefinerConfig, RoundResult,
                     check_supported)
from .refiner import OnlineRefiner

__all__ = ['RefinerConfig', 'OnlineRefiner', 'RoundResult', 'NETWORK_CHOICES',
           'SUPPORTED_MODELS', 'check_supported']
