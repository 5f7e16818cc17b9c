"""ROS image messages <-> numpy (re-exported by :mod:`depth_ego_ros.ros.conversions`).

:func:`image_to_numpy` / :func:`numpy_to_image` for rgb8, bgr8, rgba8, bgra8, mono8, 32FC1 and
16UC1, honouring ``step`` (row padding) and ``is_bigendian``; :func:`image_to_rgb8` gives the
HxWx3 uint8 RGB frame the estimator takes. :func:`compressed_to_rgb8` / :func:`rgb8_to_compressed`
for sensor_msgs/CompressedImage (jpeg, png). cv_bridge (resp. cv2) is used when importable -- a
ROS distro -- after the same validation, so both paths accept and reject the same messages (and
messages cv_bridge would misread -- rows padded by part of a pixel, foreign byte order -- take the
project's own path); otherwise the project's own numpy code runs. Every malformed message raises
``ValueError`` with a message saying what is wrong. Also the byte-buffer helpers the other
message conversions share.
"""
from __future__ import annotations

import array
import io
import sys

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from depth_ego_ros.ros import compat

# encoding -> (dtype, channels)
IMAGE_ENCODINGS = {
    'rgb8': (np.uint8, 3),
    'bgr8': (np.uint8, 3),
    'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4),
    'mono8': (np.uint8, 1),
    '32FC1': (np.float32, 1),
    '16UC1': (np.uint16, 1),
}
COLOR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
_NATIVE_BIG = sys.byteorder == 'big'


def _bridge():
    """A shared CvBridge, or None when cv_bridge is not importable."""
    global _BRIDGE
    if compat.cv_bridge is None:
        return None
    if _BRIDGE is None:
        _BRIDGE = compat.cv_bridge.CvBridge()
    return _BRIDGE


_BRIDGE = None


def _as_byte_array(buffer) -> array.array:
    """Any bytes-like object -> array.array('B') with one copy (what message ``data`` fields take
    without a per-element check)."""
    out = array.array('B')
    out.frombytes(memoryview(buffer).cast('B'))
    return out


# ----------------------------------------------------------------------------------------------
# raw images
# ----------------------------------------------------------------------------------------------
def _encoding_info(encoding: str):
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unsupported image encoding '{encoding}' "
                         f"(supported: {', '.join(IMAGE_ENCODINGS)})") from None


def validate_image(msg: Image):
    """Check encoding, size, step and data length of an Image; return (dtype, channels).

    Raises ValueError naming the problem: unsupported encoding, zero size, step smaller than a row,
    truncated data or a data size that does not match ``step * height``.
    """
    dtype, channels = _encoding_info(msg.encoding)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise ValueError(f'image has zero size ({width}x{height})')
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ValueError(f'image step {step} is smaller than one row of {width} {msg.encoding} '
                         f'pixels ({row_bytes} bytes): step/size mismatch')
    expected = step * height
    size = len(msg.data)
    if size < expected:
        raise ValueError(f'truncated image data: {size} bytes for {width}x{height} {msg.encoding} '
                         f'with step {step} (expected step*height = {expected})')
    if size > expected:
        raise ValueError(f'image data size mismatch: {size} bytes but step*height = {expected} '
                         f'({width}x{height} {msg.encoding}, step {step})')
    return dtype, channels


def image_to_numpy(msg: Image, use_cv_bridge: bool | None = None) -> np.ndarray:
    """sensor_msgs/Image -> array (H,W) for one channel, (H,W,C) otherwise, native byte order.

    Row padding (``step`` larger than a row) is dropped and big-endian data is byte-swapped. The
    result may be a view of ``msg.data`` (no copy when none is needed). ``use_cv_bridge``: None =
    use cv_bridge when importable, False = always the project's own code.
    """
    dtype, channels = validate_image(msg)
    bridge = _bridge() if use_cv_bridge in (None, True) else None
    pixel = channels * np.dtype(dtype).itemsize
    # cv_bridge's Python conversion takes the row length as step // pixel size and byte-swaps
    # with a numpy-1 API: rows padded by a fraction of a pixel and foreign byte order take the
    # project's own path, so both give the same result for every message.
    if bridge is not None and int(msg.step) % pixel == 0 and (
            np.dtype(dtype).itemsize == 1 or bool(msg.is_bigendian) == _NATIVE_BIG):
        try:
            out = bridge.imgmsg_to_cv2(msg, desired_encoding='passthrough')
        except Exception as exc:  # CvBridgeError and cv2 errors -> the module's error type
            raise ValueError(f'cv_bridge could not convert the {msg.encoding} image: {exc}') from exc
        return np.asarray(out)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    item = np.dtype(dtype).itemsize
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :width * channels * item]
    wire = np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<')
    if item == 1:
        out = raw
    else:
        if not raw.flags.c_contiguous and (step % item):
            raw = np.ascontiguousarray(raw)          # padding that breaks element alignment
        out = raw.view(wire)
        if wire.byteorder not in ('=', '|') and (wire.byteorder == '>') != _NATIVE_BIG:
            out = out.astype(np.dtype(dtype))       # byte-swap into native order
    out = out.reshape(height, width, channels)
    return out[:, :, 0] if channels == 1 else out


def numpy_to_image(array_in: np.ndarray, encoding: str, header: Header | None = None,
                   use_cv_bridge: bool | None = None) -> Image:
    """Array -> sensor_msgs/Image (no padding, native byte order).

    The array must match the encoding: uint8 (H,W,3) for rgb8/bgr8, (H,W,4) for rgba8/bgra8,
    (H,W) or (H,W,1) for mono8; float32 (H,W) for 32FC1; uint16 (H,W) for 16UC1.
    """
    dtype, channels = _encoding_info(encoding)
    a = np.asarray(array_in)
    if a.ndim == 3 and a.shape[2] == 1 and channels == 1:
        a = a[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if (a.ndim != expected_ndim or (channels > 1 and a.shape[2] != channels)
            or a.dtype != np.dtype(dtype) or a.shape[0] == 0 or a.shape[1] == 0):
        raise ValueError(f'{encoding} needs a non-empty {np.dtype(dtype).name} array of shape '
                         f"{'(H,W)' if channels == 1 else f'(H,W,{channels})'}, "
                         f'got {a.dtype} {a.shape}')
    bridge = _bridge() if use_cv_bridge in (None, True) else None
    if bridge is not None:
        msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(a), encoding=encoding)
        if header is not None:
            msg.header = header
        return msg
    a = np.ascontiguousarray(a)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIG)
    msg.step = int(a.shape[1] * channels * a.dtype.itemsize)
    msg.data = _as_byte_array(a)
    return msg


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded colour/mono8 image -> contiguous (H,W,3) uint8 RGB."""
    if encoding not in COLOR_ENCODINGS:
        raise ValueError(f"encoding '{encoding}' is not a colour image "
                         f"(need one of {', '.join(COLOR_ENCODINGS)})")
    if encoding == 'rgb8':
        return np.ascontiguousarray(image)
    if encoding == 'bgr8':
        return np.ascontiguousarray(image[:, :, ::-1])
    if encoding == 'rgba8':
        return np.ascontiguousarray(image[:, :, :3])
    if encoding == 'bgra8':
        return np.ascontiguousarray(image[:, :, 2::-1])
    return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)  # mono8


def require_color_encoding(encoding: str):
    """ValueError unless ``encoding`` is a camera colour/grey encoding (rgb8, bgr8, rgba8, bgra8,
    mono8): 'unsupported image encoding' for unknown ones, 'not a camera colour image' for depth
    encodings."""
    if encoding not in COLOR_ENCODINGS:
        _encoding_info(encoding)  # unknown encodings get the 'unsupported' message
        raise ValueError(f"image encoding '{encoding}' is not a camera colour image "
                         f"(need one of {', '.join(COLOR_ENCODINGS)})")


def image_to_rgb8(msg: Image, use_cv_bridge: bool | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H,W,3) uint8 RGB."""
    require_color_encoding(msg.encoding)
    return to_rgb8(image_to_numpy(msg, use_cv_bridge), msg.encoding)


def rgb8_to_image(rgb: np.ndarray, encoding: str = 'rgb8', header: Header | None = None) -> Image:
    """(H,W,3) uint8 RGB -> Image in any colour encoding (for tests, benches, simulators)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be uint8 (H,W,3), got {rgb.dtype} {rgb.shape}')
    if encoding == 'rgb8':
        out = rgb
    elif encoding == 'bgr8':
        out = rgb[:, :, ::-1]
    elif encoding in ('rgba8', 'bgra8'):
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        out = np.concatenate([rgb if encoding == 'rgba8' else rgb[:, :, ::-1], alpha], axis=2)
    elif encoding == 'mono8':
        out = np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        out = out.astype(np.uint8)
    else:
        raise ValueError(f"encoding '{encoding}' is not a colour encoding ({', '.join(COLOR_ENCODINGS)})")
    return numpy_to_image(out, encoding, header)


# ----------------------------------------------------------------------------------------------
# compressed images
# ----------------------------------------------------------------------------------------------
_JPEG_SOI, _JPEG_EOI = b'\xff\xd8', b'\xff\xd9'
_PNG_SIGNATURE, _PNG_IEND = b'\x89PNG\r\n\x1a\n', b'IEND'


def _check_complete(data, what: str):
    """Truncated jpeg/png -> ValueError. Pillow notices truncation itself but cv2 decodes what is
    there (grey bottom rows), so both decoders get the same check: a JPEG must end with its EOI
    marker (trailing padding tolerated), a PNG with its IEND chunk."""
    head = bytes(data[:8])
    tail = bytes(data[-1024:])
    if head[:2] == _JPEG_SOI and _JPEG_EOI not in tail:
        raise ValueError(f'cannot decode {what}: truncated JPEG (no end-of-image marker)')
    if head == _PNG_SIGNATURE and _PNG_IEND not in tail[-16:]:
        raise ValueError(f'cannot decode {what}: truncated PNG (no IEND chunk)')


def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png; the format string is informational, the bytes
    decide) -> (H,W,3) uint8 RGB. Corrupt, truncated or empty data raises ValueError."""
    data = msg.data
    size = len(data)
    what = f"CompressedImage (format '{msg.format}', {size} bytes)"
    if size == 0:
        raise ValueError(f'cannot decode {what}: no data')
    _check_complete(data, what)
    if compat.cv2 is not None:
        cv2 = compat.cv2
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f'cannot decode {what}: not a valid jpeg/png image')
        return np.ascontiguousarray(decoded[:, :, ::-1])
    from PIL import Image as PILImage
    try:
        with PILImage.open(io.BytesIO(memoryview(data))) as img:
            if img.format not in ('JPEG', 'PNG'):
                raise ValueError(f'cannot decode {what}: {img.format} is not jpeg/png')
            img.load()
            rgb = np.asarray(img.convert('RGB'))
    except ValueError:
        raise
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), SyntaxError (png)...
        raise ValueError(f'cannot decode {what}: {exc}') from exc
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f'cannot decode {what}: empty image')
    return rgb


def rgb8_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90,
                       header: Header | None = None) -> CompressedImage:
    """(H,W,3) uint8 RGB -> CompressedImage ('jpeg' or 'png'), format string as image_transport
    writes it (``rgb8; jpeg compressed bgr8``)."""
    from PIL import Image as PILImage
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be uint8 (H,W,3), got {rgb.dtype} {rgb.shape}')
    if fmt not in ('jpeg', 'png'):
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    buf = io.BytesIO()
    kwargs = {'quality': int(quality)} if fmt == 'jpeg' else {}
    PILImage.fromarray(rgb).save(buf, format=fmt.upper(), **kwargs)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f'rgb8; {fmt} compressed bgr8'
    msg.data = _as_byte_array(buf.getbuffer())
    return msg


__all__ = ['COLOR_ENCODINGS', 'IMAGE_ENCODINGS', 'compressed_to_rgb8', 'image_to_numpy',
           'image_to_rgb8', 'numpy_to_image', 'require_color_encoding', 'rgb8_to_compressed',
           'rgb8_to_image', 'to_rgb8', 'validate_image']
