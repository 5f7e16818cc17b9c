"""What the recorder keeps: static-camera frame dropping, rate limit, camera_info deduplication.

Pure numpy + rosbags deserialisation of the received CDR bytes (no rclpy): the bytes that get
written are always the received ones; only a small grey thumbnail is computed to compare frames.

Keep rule (``drop_static``), for self-supervised training on (t-1, t, t+1) triplets:

* a camera frame is **static** when, compared with the last *kept* frame, the image barely changed
  (mean absolute difference of 40×30 block-averaged grey thumbnails below ``image_threshold``
  grey levels) — or, with fresh odometry (``static_source`` auto/odometry), when the robot's linear
  and angular speeds are below ``speed_threshold`` / ``angular_threshold``;
* static frames are dropped, except the two that bound a **static period** (a stretch of more than
  ``static_gap`` seconds without a kept frame): the first static frame right after motion stops
  (written once the gap is exceeded) and the last static frame right before motion resumes
  (written just before the first moving frame). So every kept moving frame has its true
  neighbours, and a time gap > ``static_gap`` between two kept frames marks a segment boundary:
  training triplets should not span it;
* ``max_rate`` (Hz, 0 = off) then thins what is left: a frame closer than 1/max_rate to the last
  kept one is dropped (reason ``rate``).
"""
from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..data.cdr import MessageDecodeError
from ..data.cdr import header_stamp_ns as _cdr_header_stamp_ns

THUMB_W, THUMB_H, BLOCK = 40, 30, 4

# bytes per pixel of 8-bit encodings whose bytes can be sampled directly (one channel suffices)
_BYTES8 = {
    'mono8': 1, '8UC1': 1, 'rgb8': 3, 'bgr8': 3, '8UC3': 3, 'rgba8': 4, 'bgra8': 4, '8UC4': 4,
    'bayer_rggb8': 1, 'bayer_bggr8': 1, 'bayer_gbrg8': 1, 'bayer_grbg8': 1,
    'yuv422': 2, 'uyvy': 2, 'yuv422_yuy2': 2, 'yuyv': 2, 'nv21': 1, 'nv24': 1,
}
_BYTES16 = {'mono16': 1, '16UC1': 1, 'rgb16': 3, 'bgr16': 3, 'rgba16': 4, 'bgra16': 4}


class FrameError(ValueError):
    """The frame cannot be analysed (it is still recorded; this only disables the filter)."""


def _grid(n_pixels: int, n_samples: int) -> np.ndarray:
    return np.linspace(0, n_pixels - 1, n_samples).astype(np.intp)


def image_thumbnail(msg) -> np.ndarray:
    """40×30 float32 grey-ish thumbnail of a sensor_msgs/Image (rosbags-deserialised message).

    Samples a 160×120 grid of one channel (no full conversion) and averages 4×4 blocks, which
    brings the sensor noise down 4× for the difference test. ~0.1 ms at 1280×720.
    """
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), msg.encoding
    data = np.asarray(msg.data)
    if h == 0 or w == 0 or data.size < h * step:
        raise FrameError(f'image {w}x{h} step {step} with {data.size} bytes')
    rows = _grid(h, THUMB_H * BLOCK)
    cols = _grid(w, THUMB_W * BLOCK)
    if enc in _BYTES8:
        bpp = _BYTES8[enc]
        plane = data[:h * step].reshape(h, step)
        byte_cols = cols * bpp + (1 if bpp == 2 else 0)   # packed YUV: take the luma byte
        samples = plane[rows][:, byte_cols].astype(np.float32)
    elif enc in _BYTES16:
        big = bool(msg.is_bigendian)
        plane = data[:h * step].view('>u2' if big else '<u2').reshape(h, step // 2)
        samples = plane[rows][:, cols * _BYTES16[enc]].astype(np.float32) / 256.0
    elif enc == '32FC1':
        plane = data[:h * step].view('<f4').reshape(h, step // 4)
        samples = np.nan_to_num(plane[rows][:, cols].astype(np.float32), nan=0.0,
                                posinf=0.0, neginf=0.0)
        scale = float(np.max(np.abs(samples))) or 1.0
        samples = samples * (255.0 / scale)
    else:
        raise FrameError(f'encoding {enc!r} not supported by the motion test')
    return samples.reshape(THUMB_H, BLOCK, THUMB_W, BLOCK).mean(axis=(1, 3))


def compressed_thumbnail(msg) -> np.ndarray:
    """Same thumbnail from a sensor_msgs/CompressedImage (JPEG decoded at 1/8 scale, PNG fully)."""
    from PIL import Image as PilImage

    try:
        img = PilImage.open(io.BytesIO(bytes(np.asarray(msg.data))))
        img.draft('L', (THUMB_W * 2, THUMB_H * 2))   # JPEG: DCT scaling, no full decode
        img = img.convert('L').resize((THUMB_W, THUMB_H), PilImage.BOX)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data
        raise FrameError(f'cannot decode {msg.format!r} image: {exc}') from exc
    return np.asarray(img, dtype=np.float32)


def header_stamp_ns(cdr: bytes) -> int:
    """``header.stamp`` (ns) of a serialized message that starts with a std_msgs/Header (Image,
    CompressedImage ...), read from the CDR bytes without deserialising; 0 when unreadable (the
    recorder then uses the receive time)."""
    try:
        return _cdr_header_stamp_ns(cdr)
    except MessageDecodeError:
        return 0


def motion(a: np.ndarray | None, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (grey levels); inf when there is no reference."""
    if a is None or a.shape != b.shape:
        return float('inf')
    return float(np.mean(np.abs(a - b)))


def twist_speeds(msg) -> tuple[float, float]:
    """(|v|, |w|) from Odometry, TwistStamped, TwistWithCovarianceStamped or Twist messages."""
    twist = msg
    while hasattr(twist, 'twist'):   # Odometry.twist.twist, TwistStamped.twist, ...
        twist = twist.twist
    lin, ang = twist.linear, twist.angular
    return (float(np.sqrt(lin.x ** 2 + lin.y ** 2 + lin.z ** 2)),
            float(np.sqrt(ang.x ** 2 + ang.y ** 2 + ang.z ** 2)))


@dataclass
class FilterConfig:
    drop_static: bool = False
    static_source: str = 'auto'       # 'auto' | 'image' | 'odometry'
    image_threshold: float = 2.0      # grey levels (0..255) of mean thumbnail difference
    speed_threshold: float = 0.05     # m/s
    angular_threshold: float = 0.02   # rad/s
    odom_timeout: float = 0.5         # s: older odometry is not used
    static_gap: float = 1.0           # s without kept frame = static period (segment boundary)
    max_rate: float = 0.0             # Hz, 0 = no limit

    def validate(self):
        if self.static_source not in ('auto', 'image', 'odometry'):
            raise ValueError(f'static_source must be auto, image or odometry, '
                             f'got {self.static_source!r}')
        for name in ('image_threshold', 'speed_threshold', 'angular_threshold', 'odom_timeout',
                     'static_gap', 'max_rate'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0')
        if self.max_rate > 0 and self.static_gap < 2.0 / self.max_rate:
            self.static_gap = 2.0 / self.max_rate   # a rate-limited stream must not look static
        return self


class FrameFilter:
    """Decides, frame by frame, what to write. Not thread-safe (the subscription thread uses it).

    ``offer(stamp_ns, data, thumbnail)`` returns the list of (stamp_ns, data) to write now — empty,
    the frame itself, or held static frames followed by it — and counts the reasons in
    :attr:`counts` (``received``, ``kept``, ``dropped_static``, ``dropped_rate``, ``unanalysed``).
    ``thumbnail`` is a zero-argument callable, so the image is only decoded when needed.
    """

    def __init__(self, config: FilterConfig):
        self.config = config.validate()
        self.counts = Counter()
        self._ref = None             # thumbnail of the last kept frame
        self._last_kept = None       # stamp (ns) of the last kept frame
        self._first_static = None    # (stamp, data) first static frame since the last kept one
        self._last_static = None     # (stamp, data) latest static frame
        self._static_period = False  # the current static stretch is longer than static_gap
        self._odom = None            # (stamp_ns, |v|, |w|)

    def update_odometry(self, stamp_ns: int, speed: float, angular: float):
        self._odom = (stamp_ns, speed, angular)

    def _odom_static(self, stamp_ns):
        """True/False from fresh odometry, None when there is none (or it is not to be used)."""
        if self._odom is None or self.config.static_source == 'image':
            return None
        t, v, w = self._odom
        if abs(stamp_ns - t) > self.config.odom_timeout * 1e9:
            return None
        return v < self.config.speed_threshold and w < self.config.angular_threshold

    def _is_static(self, stamp_ns, thumbnail):
        """(static?, thumbnail or None); FrameError when the image is needed but unreadable."""
        cfg = self.config
        odom = self._odom_static(stamp_ns)
        if odom is not None:
            thumb = None
            if not odom:   # moving: refresh the image reference in case odometry goes quiet
                try:
                    thumb = thumbnail()
                except FrameError:
                    pass
            return odom, thumb
        if cfg.static_source == 'odometry':
            return False, None       # no fresh odometry: cannot judge, keep
        try:
            thumb = thumbnail()
        except FrameError:
            self.counts['unanalysed'] += 1
            raise
        return motion(self._ref, thumb) < cfg.image_threshold, thumb

    def offer(self, stamp_ns: int, data, thumbnail) -> list:
        cfg = self.config
        self.counts['received'] += 1
        gap = (stamp_ns - self._last_kept) / 1e9 if self._last_kept is not None else float('inf')
        if cfg.max_rate > 0 and gap < 0.95 / cfg.max_rate:
            self.counts['dropped_rate'] += 1
            return []
        if not cfg.drop_static:
            return self._keep(stamp_ns, data, None)
        try:
            static, thumb = self._is_static(stamp_ns, thumbnail)
        except FrameError:
            return self._keep(stamp_ns, data, None)   # cannot judge: record it
        if static and self._last_kept is not None:
            out = []
            frame = (stamp_ns, data)
            if self._first_static is None:
                self._first_static = frame
            elif not self._static_period and gap > cfg.static_gap:
                # motion has stopped for good: the first static frame closes the moving segment
                self._static_period = True
                out = self._rescue(self._first_static)
            self._last_static = frame
            self.counts['dropped_static'] += 1
            return out
        out = []
        if self._last_static is not None and (self._static_period or gap > cfg.static_gap):
            # motion resumes after a static period: its last frame becomes the predecessor
            if not self._static_period and self._first_static is not self._last_static:
                out += self._rescue(self._first_static)
            out += self._rescue(self._last_static)
        return out + self._keep(stamp_ns, data, thumb)

    def _rescue(self, frame):
        self.counts['dropped_static'] -= 1
        self.counts['kept'] += 1
        return [frame]

    def _keep(self, stamp_ns, data, thumb):
        self.counts['kept'] += 1
        self._last_kept = stamp_ns
        if thumb is not None:
            self._ref = thumb
        self._first_static = self._last_static = None
        self._static_period = False
        return [(stamp_ns, data)]


class CameraInfoDedup:
    """Pass a camera_info on when anything but its time stamp changed (padding-proof: compares
    deserialised fields, not bytes)."""

    def __init__(self):
        self._last = None

    @staticmethod
    def key(msg):
        return (msg.header.frame_id, int(msg.height), int(msg.width), msg.distortion_model,
                tuple(np.asarray(msg.d).tolist()), tuple(np.asarray(msg.k).tolist()),
                tuple(np.asarray(msg.r).tolist()), tuple(np.asarray(msg.p).tolist()),
                int(msg.binning_x), int(msg.binning_y),
                (int(msg.roi.x_offset), int(msg.roi.y_offset), int(msg.roi.height),
                 int(msg.roi.width), bool(msg.roi.do_rectify)))

    def changed(self, msg) -> bool:
        key = self.key(msg)
        if key == self._last:
            return False
        self._last = key
        return True
