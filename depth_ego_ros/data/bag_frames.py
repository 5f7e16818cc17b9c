"""Per-message helpers of the bag dataset: decode an instance mask, resize images (Lanczos, as
monodepth2) and masks (nearest, pixel-centre exact), a message's stamp, a grey thumbnail for the
static-frame test."""
from __future__ import annotations

import numpy as np

from .bag_reader import MessageDecodeError


def _decode_mask(msg) -> np.ndarray:
    """Instance-id image (mono8/8UC1 or mono16/16UC1) -> (H,W) uint16."""
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if enc in ('mono8', '8uc1'):
        bpp, dt = 1, np.uint8
    elif enc in ('mono16', '16uc1'):
        bpp, dt = 2, np.dtype('>u2' if msg.is_bigendian else '<u2')
    else:
        raise MessageDecodeError(f'mask encoding {msg.encoding!r} is not mono8/mono16/8UC1/16UC1')
    if h <= 0 or w <= 0 or step < w * bpp or data.size < step * h:
        raise MessageDecodeError(f'mask image {w}x{h} step {step} with {data.size} bytes is inconsistent')
    rows = data[:step * h].reshape(h, step)[:, :w * bpp]
    return np.ascontiguousarray(rows).view(dt).reshape(h, w).astype(np.uint16)


def _resize_nearest(ids: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a label image, pixel-centre exact (never mixes ids)."""
    h, w = ids.shape
    if (w, h) == (width, height):
        return ids
    ys = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return ids[ys[:, None], xs[None, :]]


def _stamp(msg) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    from PIL import Image
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))


def _thumb(rgb: np.ndarray) -> np.ndarray:
    """Small grey image for the static-frame test (noise averaged out)."""
    g = rgb.astype(np.float32).mean(axis=2)
    h, w = g.shape
    f = max(1, w // 64)
    h2, w2 = h // f, w // f
    return g[:h2 * f, :w2 * f].reshape(h2, f, w2, f).mean(axis=(1, 3))

