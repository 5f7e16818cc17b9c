"""Independently moving objects in the self-supervised warp (struct2depth / Depth from Videos in
the Wild): the object-motion network, its ``T_obj`` parametrisation and its checkpoint files.

The rigid warp moves every target pixel into a source camera with the ego-motion
``T_src_tgt``. That is wrong on a moving object. Given instance masks of the objects in the
target frame, each object m gets its own rigid motion and its pixels are warped with the
composition below; every other pixel keeps the ego-motion.

Composition (derived, and tested against the synthetic world's exact poses)
---------------------------------------------------------------------------
A point fixed on object m has world position ``X(t) = T_w_o(t) X_o``. Between the target time t
and the source time s it moves by ``T_w_o(s) T_w_o(t)^-1`` (world frame). In target-camera
coordinates ``p_t = T_ct_w X(t)`` and in source-camera coordinates ``p_s = T_cs_w X(s)``::

    p_s = T_cs_w T_w_o(s) T_w_o(t)^-1 T_w_ct p_t
        = (T_cs_w T_w_ct) (T_ct_w T_w_o(s) T_w_o(t)^-1 T_w_ct) p_t
        = T_src_tgt @ T_obj_m @ p_t

so ``T_obj_m`` is **the object's own motion from the target time to the source time, expressed
in the target camera frame** (it maps the object's points at time t, in target-camera
coordinates, to where those points are at time s, still in target-camera coordinates); the
ego-motion is applied after it. A static object has ``T_obj_m = I``. ``SyntheticWorld.
object_motion(i, j)`` gives the exact value for frames i (target) and j (source).

Parametrisation
---------------
:class:`ObjectMotionNet` predicts per object an axis-angle ``r`` and a translation ``t``;
:func:`object_motion_matrices` turns them into ``T_obj`` with the rotation **about the object's
centre** c (the mask-weighted mean of its back-projected points, :func:`mask_centroids`):
``p' = R (p - c) + c + t``. Rotating about the camera origin instead would couple a small
rotation of a distant object to a large translation; about its centre, ``t`` is the motion of
the object's centre and ``r`` its turn, which is what a car does.

Network (struct2depth's design)
-------------------------------
A small pose-style CNN run once per object on the two frames **masked to the object**
(struct2depth feeds the object motion net the masked frames): input channels are
``[target * m_t, source * m_s, m_t, m_s]`` (images mapped to [-1, 1]; ``m_s`` the same object's
mask in the source frame, or ``m_t`` when none is given). Six stride-2 convolutions + ReLU,
a 1x1 convolution to 6 numbers, spatial mean, times ``motion_scale`` (0.01: it starts near the
identity, like SfMLearner's and monodepth2's pose networks). Objects are batched (``[B*M, 8, H,
W]``); empty slots (all-zero masks, the padding of a batch) return exactly zero motion.
struct2depth passes the source already warped by the ego-motion into the network (the net then
only has to explain the residual motion); that works here too (pass the ego-warped source and
its mask), but the default is the raw source frame so that the net does not depend on the depth
being good.

Where the rest lives
--------------------
The object-aware warp (:func:`~depth_ego_ros.core.losses.warping.warp_image_with_objects`,
:func:`~depth_ego_ros.core.losses.warping.apply_object_motion`) and struct2depth's object size
loss (:mod:`depth_ego_ros.core.losses.object_size`, whose learnable height prior
:class:`ObjectSizePrior` is here beside the network, with the files of both) are losses; the
instance-mask helpers are in :mod:`depth_ego_ros.core.instance_masks`.

Costs and use: see docs/methods.md, "Dynamic objects".
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .geometry import axis_angle_to_matrix, backproject
from .instance_masks import check_masks
from .state_dicts import CheckpointError, load_into, read_state_dict

__all__ = ['ObjectMotionNet', 'object_motion_matrices', 'mask_centroids', 'save_object_motion',
           'load_object_motion', 'OBJECT_MOTION_FILE', 'ObjectSizePrior', 'save_object_size',
           'load_object_size', 'OBJECT_SIZE_FILE']

OBJECT_MOTION_FILE = 'object_motion.pth'
OBJECT_SIZE_FILE = 'object_size.pth'


class ObjectMotionNet(nn.Module):
    """Per-object 6-DoF motion from (target, source) frames masked to each object.

    forward(target [B,3,H,W], source [B,3,H,W], masks [B,M,H,W], source_masks [B,M,H,W] | None)
    -> (axisangle [B,M,3], translation [B,M,3]); zero for slots whose target mask is empty.
    Feed them to :func:`object_motion_matrices` (with :func:`mask_centroids`) for ``T_obj``.
    """

    def __init__(self, channels=(16, 32, 64, 128, 128, 128), motion_scale: float = 0.01):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f'channels must be positive ints, got {channels}')
        self.channels = channels
        self.motion_scale = float(motion_scale)
        layers, cin = [], 8
        for i, c in enumerate(channels):
            k = 7 if i == 0 else 5 if i == 1 else 3
            layers += [nn.Conv2d(cin, c, k, stride=2, padding=k // 2), nn.ReLU(inplace=True)]
            cin = c
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 6, 1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, target: torch.Tensor, source: torch.Tensor, masks: torch.Tensor,
                source_masks: torch.Tensor | None = None):
        if target.dim() != 4 or target.shape[1] != 3 or source.shape != target.shape:
            raise ValueError(f'target and source must be [B,3,H,W] of one shape, got '
                             f'{tuple(target.shape)} and {tuple(source.shape)}')
        B, _, H, W = target.shape
        masks = check_masks(masks, B, H, W, 'masks')
        sm = masks if source_masks is None else check_masks(source_masks, B, H, W, 'source_masks')
        if sm.shape != masks.shape:
            raise ValueError(f'source_masks {tuple(sm.shape)} must match masks {tuple(masks.shape)}')
        M = masks.shape[1]
        if M == 0:
            z = target.new_zeros(B, 0, 3)
            return z, z.clone()
        mt = masks.to(target.dtype).unsqueeze(2)                  # [B,M,1,H,W]
        ms = sm.to(target.dtype).unsqueeze(2)
        tgt = (target * 2 - 1).unsqueeze(1) * mt                  # [B,M,3,H,W]
        src = (source * 2 - 1).unsqueeze(1) * ms
        x = torch.cat([tgt, src, mt, ms], 2).reshape(B * M, 8, H, W)
        out = self.head(self.encoder(x)).mean(dim=(2, 3)).reshape(B, M, 6) * self.motion_scale
        present = (masks.flatten(2).amax(2) > 0).to(out.dtype).unsqueeze(-1)   # [B,M,1]
        out = out * present
        return out[..., :3], out[..., 3:]


def object_motion_matrices(axisangle: torch.Tensor, translation: torch.Tensor,
                           centres: torch.Tensor | None = None) -> torch.Tensor:
    """[B,M,3] axis-angle + [B,M,3] translation (+ optional [B,M,3] rotation centres, target
    camera frame) -> ``T_obj`` [B,M,4,4] with ``p' = R (p - c) + c + t`` (c = 0 without centres).
    """
    if axisangle.shape != translation.shape or axisangle.shape[-1] != 3 or axisangle.dim() != 3:
        raise ValueError(f'axisangle and translation must both be [B,M,3], got '
                         f'{tuple(axisangle.shape)} and {tuple(translation.shape)}')
    B, M, _ = axisangle.shape
    R = axis_angle_to_matrix(axisangle.reshape(-1, 3)).reshape(B, M, 3, 3)
    t = translation
    if centres is not None:
        if centres.shape != axisangle.shape:
            raise ValueError(f'centres must be [B,M,3] like axisangle, got {tuple(centres.shape)}')
        c = centres.to(t)
        t = t + c - (R @ c.unsqueeze(-1)).squeeze(-1)
    T = torch.zeros(B, M, 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def mask_centroids(depth: torch.Tensor, K: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask-weighted mean of the back-projected target points per object -> [B,M,3] (target
    camera frame; zeros for empty masks). Pixels with non-finite depth are ignored. Detach the
    depth when the centre should only be a rotation pivot (the usual use)."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be [B,1,H,W], got {tuple(depth.shape)}')
    B, _, H, W = depth.shape
    masks = check_masks(masks, B, H, W, 'masks').to(depth.dtype)
    finite = torch.isfinite(depth)
    pts = backproject(torch.where(finite, depth, torch.zeros_like(depth)), K)   # [B,3,H,W]
    w = masks * finite.to(depth.dtype)                                         # [B,M,H,W]
    num = torch.einsum('bmhw,bchw->bmc', w, pts)
    den = w.sum(dim=(2, 3)).unsqueeze(-1).clamp_min(1e-6)
    return num / den


# ----------------------------------------------------------------------------------------------
# object size prior (struct2depth; the loss: core/losses/object_size.py)
# ----------------------------------------------------------------------------------------------
class ObjectSizePrior(nn.Module):
    """Learnable real-world height per object class: ``log_height`` [num_classes] (a log, so
    the height stays positive and Adam's steps are relative). ``forward()`` -> log_height."""

    def __init__(self, num_classes: int = 1, init_height: float = 1.5):
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f'num_classes must be an int >= 1, got {num_classes!r}')
        init_height = float(init_height)
        if not (init_height > 0 and init_height < float('inf')):
            raise ValueError(f'init_height must be a finite number > 0, got {init_height!r}')
        self.num_classes = num_classes
        self.log_height = nn.Parameter(torch.full((num_classes,), float(torch.tensor(init_height).log())))

    def forward(self) -> torch.Tensor:
        return self.log_height

    @property
    def height(self) -> torch.Tensor:
        """The heights [num_classes] (detached)."""
        return self.log_height.detach().exp()


# ----------------------------------------------------------------------------------------------
# checkpoint files (beside encoder.pth / depth.pth / pose.pth)
# ----------------------------------------------------------------------------------------------
def save_object_motion(net: ObjectMotionNet, path: str | os.PathLike) -> Path:
    """Write ``net`` to ``path`` (a file, or a directory -> ``directory/object_motion.pth``):
    its state dict plus ``model='object_motion'``, ``channels`` and ``motion_scale``."""
    path = Path(path)
    if path.is_dir() or path.suffix == '':
        path.mkdir(parents=True, exist_ok=True)
        path = path / OBJECT_MOTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    data.update({'model': 'object_motion', 'channels': list(net.channels),
                 'motion_scale': float(net.motion_scale)})
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_object_motion(path: str | os.PathLike) -> ObjectMotionNet:
    """Read a file written by :func:`save_object_motion` (``torch.load(weights_only=True)``; a
    directory means ``directory/object_motion.pth``). Raises CheckpointError (a ValueError)
    naming the file when it is missing, unreadable, not an object-motion net or does not fit."""
    path = Path(path)
    if path.is_dir():
        path = path / OBJECT_MOTION_FILE
    data = read_state_dict(path)
    if data.get('model') != 'object_motion':
        raise CheckpointError(f"{path}: not an object-motion network (model={data.get('model')!r}, "
                              "expected 'object_motion')")
    try:
        net = ObjectMotionNet(channels=tuple(data.get('channels', ObjectMotionNet().channels)),
                              motion_scale=float(data.get('motion_scale', 0.01)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f'{path}: bad object-motion metadata: {exc}') from exc
    load_into(net, path, state_dict=data)
    return net.eval()


def save_object_size(prior: ObjectSizePrior, path: str | os.PathLike) -> Path:
    """Write the size prior to ``path`` (a file, or a directory -> ``directory/object_size.pth``):
    ``log_height`` plus ``model='object_size'``, ``num_classes`` and ``height`` (metres or the
    training's depth units, for reading)."""
    path = Path(path)
    if path.is_dir() or path.suffix == '':
        path.mkdir(parents=True, exist_ok=True)
        path = path / OBJECT_SIZE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {'log_height': prior.log_height.detach().cpu().clone(), 'model': 'object_size',
            'num_classes': int(prior.num_classes), 'height': prior.height.cpu().tolist()}
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_object_size(path: str | os.PathLike) -> ObjectSizePrior:
    """Read a file written by :func:`save_object_size` (weights_only; a directory means
    ``directory/object_size.pth``); CheckpointError naming the file when it does not fit."""
    path = Path(path)
    if path.is_dir():
        path = path / OBJECT_SIZE_FILE
    data = read_state_dict(path)
    if data.get('model') != 'object_size':
        raise CheckpointError(f"{path}: not an object size prior (model={data.get('model')!r}, "
                              "expected 'object_size')")
    lh = data.get('log_height')
    if not torch.is_tensor(lh) or lh.dim() != 1 or lh.numel() < 1 or not torch.isfinite(lh).all():
        raise CheckpointError(f'{path}: log_height must be a finite 1-D tensor, got {lh!r}')
    prior = ObjectSizePrior(num_classes=int(lh.numel()))
    with torch.no_grad():
        prior.log_height.copy_(lh.float())
    return prior
