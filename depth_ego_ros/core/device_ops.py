"""Image upload, colour conversion, resizing and point-cloud packing as torch functions that run
on whatever device their tensors live on.

The same functions serve the CPU and CUDA paths (a ``device`` argument or the input tensor's
device decides), so the CUDA code is exercised by the CPU tests; only the pinned staging buffer
and the non-blocking copy are CUDA specific.

Conventions: images are uint8 ``[N,H,W,C]`` (camera layout, as decoded) until
:func:`to_network_input` turns them into float ``[N,3,h,w]`` in [0, 1]; points are in the camera
optical frame (x right, y down, z forward), in the depth's units.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['ENCODINGS', 'Uploader', 'to_rgb', 'to_network_input', 'upsample_disparity',
           'pixel_rays', 'depth_to_cloud', 'pack_rgb', 'split_cloud', 'check_image']

#: encoding -> channels of the uint8 image (ROS sensor_msgs/image_encodings names)
ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}


def check_image(image, encoding: str = 'rgb8') -> np.ndarray:
    """Validate a decoded camera image; returns it as HxWxC (mono8 HxW gets a channel axis).

    ValueError says what is wrong (type, dtype, shape, zero size, unknown encoding)."""
    if encoding not in ENCODINGS:
        raise ValueError(f'encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}')
    channels = ENCODINGS[encoding]
    if not isinstance(image, np.ndarray):
        raise ValueError(f'image must be a numpy array (HxWx{channels} uint8 {encoding}), '
                         f'got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise ValueError(f'image must be uint8 {encoding} (HxWx{channels}), got dtype {image.dtype}')
    if channels == 1 and image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels:
        hint = ''
        if image.ndim == 2:
            hint = ' (a 2-D grey image? convert it to RGB or pass encoding="mono8")'
        raise ValueError(f'image must be HxWx{channels} ({encoding}), got shape {image.shape}{hint}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'image has zero size: shape {image.shape}')
    return image


class Uploader:
    """numpy uint8 HxWxC frames of one size -> one uint8 ``[N,H,W,C]`` tensor on ``device``.

    CUDA: the frames are copied into a reusable page-locked (pinned) staging buffer and sent with
    one non-blocking host->device copy; a CUDA event guards the buffer against being overwritten
    before that copy finished. CPU (or ``pin=False``): no staging; a single frame is wrapped
    without a copy when its buffer allows it.
    """

    def __init__(self, device, pin: bool | None = None):
        self.device = torch.device(device)
        self.pin = (self.device.type == 'cuda') if pin is None else bool(pin)
        self._buffers: dict[tuple, tuple[torch.Tensor, object]] = {}

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        if not images:
            raise ValueError('no images to upload')
        shape = images[0].shape
        if any(im.shape != shape for im in images):
            raise ValueError(f'all frames of one upload must have the same shape, got '
                             f'{sorted({im.shape for im in images})}')
        n = len(images)
        if not self.pin:
            if n == 1:
                im = images[0]
                if not im.flags.writeable or not im.flags.c_contiguous:
                    im = np.array(im, order='C')   # torch wants a writable contiguous buffer
                t = torch.from_numpy(im)[None]
            else:
                t = torch.from_numpy(np.stack(images))
            return t.to(self.device)
        key = (n,) + tuple(shape)
        entry = self._buffers.get(key)
        if entry is None:
            if len(self._buffers) >= 16:           # many sizes / batch sizes: keep memory bounded
                self._buffers.clear()
            entry = (torch.empty(key, dtype=torch.uint8).pin_memory(), None)
        buf, event = entry
        if event is not None:
            event.synchronize()                    # the previous copy out of buf has finished
        host = buf.numpy()
        for i, im in enumerate(images):
            host[i] = im
        out = buf.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._buffers[key] = (buf, event)
        return out


def to_rgb(images: torch.Tensor, encoding: str = 'rgb8') -> torch.Tensor:
    """uint8 ``[N,H,W,C]`` in ``encoding`` -> uint8 ``[N,H,W,3]`` RGB (a view where possible)."""
    if encoding not in ENCODINGS:
        raise ValueError(f'encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}')
    if images.dim() != 4 or images.shape[-1] != ENCODINGS[encoding]:
        raise ValueError(f'expected [N,H,W,{ENCODINGS[encoding]}] for {encoding}, '
                         f'got {tuple(images.shape)}')
    if encoding == 'rgb8':
        return images
    if encoding == 'rgba8':
        return images[..., :3]
    if encoding in ('bgr8', 'bgra8'):
        return images[..., [2, 1, 0]]
    return images.expand(-1, -1, -1, 3)                  # mono8


def to_network_input(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 RGB ``[N,H,W,3]`` -> float32 ``[N,3,h,w]`` in [0, 1] at ``size=(h, w)``.

    Resizing is bilinear with antialiasing (so downscaling averages like PIL/cv2 INTER_AREA-ish
    filters instead of aliasing), half-pixel centres (``align_corners=False``); no resize when
    the size already matches."""
    x = rgb.permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False, antialias=True)
    return x


def upsample_disparity(scaled_disp: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Disparity ``[N,1,h,w]`` -> depth ``[N,1,H,W]`` = 1 / bilinear upsampling of the disparity
    (interpolating disparity, not depth, keeps far regions from bleeding into near ones)."""
    if tuple(size) != tuple(scaled_disp.shape[-2:]):
        scaled_disp = F.interpolate(scaled_disp, size=tuple(size), mode='bilinear',
                                    align_corners=False)
    return 1.0 / scaled_disp


def pixel_rays(height: int, width: int, K, stride: int = 1, device='cpu') -> torch.Tensor:
    """Rays ``K^-1 (u, v, 1)`` (z = 1) of the pixels ``(u, v) = (j*stride, i*stride)`` of a
    ``height x width`` image: float32 ``[ceil(H/stride), ceil(W/stride), 3]``."""
    K = np.asarray(K, np.float64)
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    u = torch.arange(0, width, stride, dtype=torch.float64, device=device)
    v = torch.arange(0, height, stride, dtype=torch.float64, device=device)
    y = ((v - cy) / fy)[:, None].expand(len(v), len(u))
    x = (u[None, :] - cx - skew * y) / fx
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).float()


def pack_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 ``[...,3]`` RGB -> float32 ``[...]`` whose bits are ``0x00RRGGBB`` (the ``rgb``
    field of PCL / RViz point clouds)."""
    c = rgb.to(torch.int32)
    return ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(torch.float32)


def depth_to_cloud(depth: torch.Tensor, rgb: torch.Tensor | None, K, stride: int = 1,
                   min_range: float = 0.0, max_range: float = math.inf,
                   rays: torch.Tensor | None = None) -> torch.Tensor:
    """Depth ``[H,W]`` (+ uint8 RGB ``[H,W,3]``) -> packed points on the depth's device.

    Every ``stride``-th pixel in both directions starting at (0, 0); a point is kept when its
    depth is finite and > 0 and its distance from the camera centre is in
    ``[min_range, max_range]``. Returns float32 ``[N,4]`` rows ``x, y, z, rgb`` (rgb packed as by
    :func:`pack_rgb`; the byte layout of a PointCloud2 with fields x, y, z, rgb at offsets 0, 4,
    8, 12 and point_step 16), or ``[N,3]`` without ``rgb``; row-major pixel order.
    ``rays``: a cached :func:`pixel_rays` result for this size/K/stride.
    """
    if depth.dim() != 2:
        raise ValueError(f'depth must be [H,W], got {tuple(depth.shape)}')
    H, W = depth.shape
    if rays is None:
        rays = pixel_rays(H, W, K, stride, depth.device)
    d = depth[::stride, ::stride].float()
    pts = rays * d[..., None]
    dist = d * torch.linalg.vector_norm(rays, dim=-1)
    keep = torch.isfinite(d) & (d > 0) & (dist >= min_range) & (dist <= max_range)
    if rgb is None:
        return pts[keep]
    if tuple(rgb.shape) != (H, W, 3):
        raise ValueError(f'rgb must be [H,W,3] like the depth {H}x{W}, got {tuple(rgb.shape)}')
    packed = torch.cat([pts, pack_rgb(rgb[::stride, ::stride])[..., None]], dim=-1)
    return packed[keep]


def split_cloud(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host ``[N,4]`` float32 packed cloud -> (xyz ``(N,3)`` float32, rgb ``(N,3)`` uint8)."""
    packed = np.ascontiguousarray(packed, dtype=np.float32)
    bits = packed[:, 3].view(np.uint32)
    rgb = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)
    return packed[:, :3], rgb
