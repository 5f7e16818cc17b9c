"""Independently moving objects in the self-supervised warp (struct2depth / Depth from Videos in
the Wild): an object-motion network and the object-aware warp.

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

Object size prior (struct2depth)
--------------------------------
The photometric loss cannot pin a moving object's depth: a nearer object moving less and a
farther one moving more give the same image motion. struct2depth adds a size constraint: an
object of real height h whose mask spans ``p`` pixel rows lies at about ``fy * h / p``.
:func:`object_size_loss` penalises the log-ratio of the predicted object depth to that
estimate, with h a learnable prior (:class:`ObjectSizePrior`, a log-height per class), so
gradients reach both the depth and the prior. The log-ratio is unchanged when depth and h are
scaled together, so the term has no trivial minimum at "everything small" (struct2depth divides
both depths by the image's mean depth for the same reason); with metric training (velocity
loss) h is learned in metres, with depth normalisation in the normalised units.

Costs and use: see docs/methods.md, "Dynamic objects".
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import axis_angle_to_matrix, backproject

__all__ = ['ObjectMotionNet', 'object_motion_matrices', 'mask_centroids', 'apply_object_motion',
           'warp_image_with_objects', 'save_object_motion', 'load_object_motion',
           'OBJECT_MOTION_FILE', 'resize_masks', 'object_size_loss', 'mask_row_extent',
           'ObjectSizePrior', 'save_object_size', 'load_object_size', 'OBJECT_SIZE_FILE']

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
        masks = _check_masks(masks, B, H, W, 'masks')
        sm = masks if source_masks is None else _check_masks(source_masks, B, H, W, 'source_masks')
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
    masks = _check_masks(masks, B, H, W, 'masks').to(depth.dtype)
    finite = torch.isfinite(depth)
    pts = backproject(torch.where(finite, depth, torch.zeros_like(depth)), K)   # [B,3,H,W]
    w = masks * finite.to(depth.dtype)                                         # [B,M,H,W]
    num = torch.einsum('bmhw,bchw->bmc', w, pts)
    den = w.sum(dim=(2, 3)).unsqueeze(-1).clamp_min(1e-6)
    return num / den


def apply_object_motion(points: torch.Tensor, masks: torch.Tensor,
                        object_poses: torch.Tensor) -> torch.Tensor:
    """Move target-camera points [B,3,H,W] by their object's motion: ``p + sum_m mask_m (T_m p - p)``
    (exactly ``T_m p`` inside a binary mask m, ``p`` outside all masks; soft masks blend)."""
    B, _, H, W = points.shape
    masks = _check_masks(masks, B, H, W, 'masks').to(points.dtype)
    M = masks.shape[1]
    if object_poses.shape != (B, M, 4, 4):
        raise ValueError(f'object_poses must be [B,M,4,4] = [{B},{M},4,4], got {tuple(object_poses.shape)}')
    if M == 0:
        return points
    T = object_poses.to(points.dtype)
    p = points.reshape(B, 1, 3, H * W)
    moved = T[..., :3, :3] @ p + T[..., :3, 3:]                      # [B,M,3,N]
    delta = ((moved - p) * masks.reshape(B, M, 1, H * W)).sum(1)     # [B,3,N]
    return points + delta.reshape(B, 3, H, W)


def warp_image_with_objects(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                            T_src_tgt: torch.Tensor, object_masks: torch.Tensor | None,
                            object_poses: torch.Tensor | None, padding_mode: str = 'border'):
    """Inverse warp of a source image into the target view with per-object motion.

    Pixels inside object mask m are moved by ``T_src_tgt @ T_obj_m``, all others by
    ``T_src_tgt`` (see the module docstring). Without masks/poses it is the rigid warp
    (:func:`depth_ego_ros.core.losses.warp_image`, the same numbers).

    Args:
        source [B,C,H,W]; depth [B,1,H,W] target z-depth; K [B,3,3]; T_src_tgt [B,4,4];
        object_masks [B,M,H,W] in [0,1] (target frame; resized by nearest neighbour when at
        another resolution); object_poses [B,M,4,4] ``T_obj`` per object.
    Returns: (warped [B,C,H,W], valid [B,1,H,W] bool) as warp_image.
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be [B,1,H,W], got {tuple(depth.shape)}')
    if source.dim() != 4 or source.shape[0] != depth.shape[0] or source.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f'source {tuple(source.shape)} and depth {tuple(depth.shape)} must share B, H, W')
    B, _, H, W = depth.shape
    points = backproject(depth, K)
    if object_masks is not None and object_poses is not None:
        masks = resize_masks(object_masks, H, W)
        points = apply_object_motion(points, masks, object_poses)
    from .losses import sample_source      # losses imports this module lazily: no cycle
    return sample_source(source, points, K, T_src_tgt, padding_mode)


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B,M,h,w] -> [B,M,height,width] by nearest neighbour (identity when the size matches)."""
    if masks.dim() != 4:
        raise ValueError(f'masks must be [B,M,H,W], got {tuple(masks.shape)}')
    if masks.shape[-2:] == (height, width) or masks.shape[1] == 0:
        return masks
    return F.interpolate(masks.float(), size=(height, width), mode='nearest-exact').to(masks.dtype)


def _check_masks(masks, B, H, W, what):
    if not torch.is_tensor(masks) or masks.dim() != 4 or masks.shape[0] != B:
        raise ValueError(f'{what} must be [B,M,H,W] with B={B}, got {tuple(getattr(masks, "shape", ()))}')
    if masks.shape[-2:] != (H, W):
        masks = resize_masks(masks, H, W)
    return masks


# ----------------------------------------------------------------------------------------------
# object size prior (struct2depth)
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


def mask_row_extent(masks: torch.Tensor):
    """Row extent of every mask [B,M,H,W] -> (top [B,M], bottom [B,M], rows [B,M] = bottom -
    top + 1, present [B,M] bool); top/bottom are 0 and rows 0 for empty masks. Every row with
    any mask pixel counts (a mask with a gap keeps its full span)."""
    if masks.dim() != 4:
        raise ValueError(f'masks must be [B,M,H,W], got {tuple(masks.shape)}')
    H = masks.shape[2]
    occupied = masks.flatten(3).amax(3) > 0                          # [B,M,H]
    present = occupied.any(-1)
    idx = torch.arange(H, device=masks.device).expand_as(occupied)
    top = torch.where(occupied, idx, torch.full_like(idx, H)).amin(-1)
    bottom = torch.where(occupied, idx, torch.full_like(idx, -1)).amax(-1)
    top = torch.where(present, top, torch.zeros_like(top))
    bottom = torch.where(present, bottom, torch.zeros_like(bottom))
    rows = torch.where(present, bottom - top + 1, torch.zeros_like(top))
    return top, bottom, rows, present


def object_size_loss(depth: torch.Tensor, masks: torch.Tensor, K: torch.Tensor,
                     log_height: torch.Tensor, classes: torch.Tensor | None = None,
                     min_rows: int = 4, depth_stat: str = 'pixel', return_count: bool = False):
    """struct2depth's object size constraint.

    For every object mask that is not empty, not cut by the image's top or bottom border and at
    least ``min_rows`` rows tall, its pixel height ``p`` (rows spanned) and the learned real
    height ``h = exp(log_height[class])`` give the depth estimate ``D_est = fy h / p``. Per
    object, ``depth_stat`` says what is compared with it:

    * ``'pixel'`` (default): the mean over the mask's pixels of ``|log d - log D_est|``: every
      pixel is pulled toward D_est, so the object's median depth is what the term pins;
    * ``'mean'`` / ``'median'``: ``|log D_obj - log D_est|`` with ``D_obj`` the mean / median
      depth in the mask (struct2depth's form). Measured in training (docs/training.md), the
      mean is *gamed*: the depth network met it with a bimodal object (some pixels far too
      near, some far too far, the mean right), which made the objects' per-pixel error worse
      than without the term; the median gives a gradient to one pixel per object only.

    The loss is the mean over those objects (zero, with a graph, when there is none). Gradients
    reach ``depth`` and ``log_height``; K is treated as given.

    Args:
        depth [B,1,H,W] (> 0); masks [B,M,H,W] in {0,1} (resized to H,W by nearest neighbour);
        K [B,3,3] at depth's resolution; log_height: scalar or [C] tensor; classes: [B,M] long
        indices into log_height (None: class 0 for all); depth_stat: 'pixel' | 'mean' | 'median'.
    Returns: scalar loss (and the number of objects used, with ``return_count``).
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f'depth must be [B,1,H,W], got {tuple(depth.shape)}')
    if depth_stat not in ('pixel', 'mean', 'median'):
        raise ValueError(f"depth_stat must be 'pixel', 'mean' or 'median', got {depth_stat!r}")
    B, _, H, W = depth.shape
    masks = _check_masks(masks, B, H, W, 'masks')
    if not torch.is_tensor(K) or K.shape[-2:] != (3, 3) or K.reshape(-1, 3, 3).shape[0] != B:
        raise ValueError(f'K must be [B,3,3] with B={B}, got {tuple(getattr(K, "shape", ()))}')
    lh = torch.as_tensor(log_height).to(depth.dtype).reshape(-1)
    M = masks.shape[1]
    if classes is None:
        classes = torch.zeros(B, M, dtype=torch.long, device=depth.device)
    elif tuple(classes.shape) != (B, M):
        raise ValueError(f'classes must be [B,M] = [{B},{M}], got {tuple(classes.shape)}')
    top, bottom, rows, present = mask_row_extent(masks)
    valid = present & (top > 0) & (bottom < H - 1) & (rows >= int(min_rows))
    zero = depth.sum() * 0.0 + lh.sum() * 0.0
    if not bool(valid.any()):
        return (zero, 0) if return_count else zero
    m = masks.to(depth.dtype)[valid]                                   # [N,H,W]
    b_idx = torch.arange(B, device=depth.device).view(B, 1).expand(B, M)[valid]
    d = depth[b_idx, 0]                                                # [N,H,W]
    w = m * torch.isfinite(d).to(d.dtype)
    d = torch.where(torch.isfinite(d), d, torch.ones_like(d))
    fy = K.reshape(B, 3, 3)[b_idx, 1, 1].to(depth.dtype)
    log_est = torch.log(fy) + lh[classes[valid]] - torch.log(rows[valid].to(depth.dtype))   # [N]
    if depth_stat == 'pixel':
        err = (torch.log(d.clamp_min(1e-6)) - log_est.view(-1, 1, 1)).abs()
        loss = ((err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-6)).mean()
    else:
        if depth_stat == 'mean':
            d_obj = (d * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-6)
        else:
            inside = torch.where(w > 0, d, torch.full_like(d, float('nan'))).flatten(1)
            d_obj = inside.nanmedian(1).values
        loss = (torch.log(d_obj.clamp_min(1e-6)) - log_est).abs().mean()
    return (loss, int(valid.sum())) if return_count else loss


# ----------------------------------------------------------------------------------------------
# checkpoint file (beside encoder.pth / depth.pth / pose.pth)
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
    from .state_dicts import CheckpointError, load_into, read_state_dict
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
    from .state_dicts import CheckpointError, read_state_dict
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
