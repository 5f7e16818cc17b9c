"""The recorder's keep/drop decisions (ros/recorder_filter.py): pure numpy, no DDS."""
import io
from types import SimpleNamespace

import numpy as np
import pytest

from depth_ego_ros.data.bags import TypeCatalog
from depth_ego_ros.ros.recorder_filter import (CameraInfoDedup, FilterConfig, FrameError,
                                               FrameFilter, compressed_thumbnail,
                                               header_stamp_ns, image_thumbnail, motion,
                                               twist_speeds)

RNG = np.random.default_rng(3)
SCENE = RNG.integers(0, 255, (60, 200, 3), dtype=np.uint8)   # wider than the view: we pan


def view(x, noise=0):
    img = SCENE[:, x:x + 80].astype(np.int16)
    if noise:
        img = img + RNG.integers(-noise, noise + 1, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def image_msg(img, encoding='rgb8'):
    h, w = img.shape[:2]
    return SimpleNamespace(height=h, width=w, step=img[0].nbytes, encoding=encoding,
                           is_bigendian=0, data=img.reshape(-1).view(np.uint8))


def run(filter_, frames, dt=0.05):
    """Offer frames (x offset per frame) at 1/dt Hz; return indices written, in write order."""
    out = []
    for i, x in enumerate(frames):
        msg = image_msg(view(x, noise=2))
        out += [d for _t, d in filter_.offer(int(i * dt * 1e9), i, lambda m=msg: image_thumbnail(m))]
    return out


def test_static_frames_dropped_and_triplet_neighbours_kept():
    # moving 0-4, static 5-14 (no camera motion, sensor noise only), moving 15-19
    frames = [0, 4, 8, 12, 16] + [16] * 10 + [20, 24, 28, 32, 36]
    f = FrameFilter(FilterConfig(drop_static=True, static_gap=0.2))
    kept = run(f, frames)
    # the first static frame (closes the segment) and the last one (opens the next) are kept
    assert kept == [0, 1, 2, 3, 4, 5, 14, 15, 16, 17, 18, 19]
    assert f.counts['received'] == 20 and f.counts['kept'] == 12
    assert f.counts['dropped_static'] == 8


def test_short_pause_is_not_a_static_period():
    frames = [0, 4, 8, 8, 8, 12, 16]          # 2 static frames = 0.1 s < static_gap
    f = FrameFilter(FilterConfig(drop_static=True, static_gap=0.2))
    assert run(f, frames) == [0, 1, 2, 5, 6]
    assert f.counts['dropped_static'] == 2


def test_everything_kept_when_filter_off():
    f = FrameFilter(FilterConfig(drop_static=False))
    assert run(f, [0] * 10) == list(range(10))
    assert f.counts['kept'] == 10


def test_max_rate_thins_the_stream():
    f = FrameFilter(FilterConfig(max_rate=10.0))
    assert run(f, list(range(0, 60, 2)), dt=1 / 30) == list(range(0, 30, 3))
    assert f.counts['dropped_rate'] == 20


def test_odometry_decides_when_fresh():
    f = FrameFilter(FilterConfig(drop_static=True, static_gap=10.0))
    msg = image_msg(view(0))
    moving = image_msg(view(30))
    assert f.offer(0, 'a', lambda: image_thumbnail(msg))            # first frame: kept
    f.update_odometry(int(0.05e9), speed=0.0, angular=0.0)
    # image changed a lot but the robot stands still (e.g. people walking by): dropped
    assert f.offer(int(0.06e9), 'b', lambda: image_thumbnail(moving)) == []
    f.update_odometry(int(0.1e9), speed=0.5, angular=0.0)
    assert f.offer(int(0.11e9), 'c', lambda: image_thumbnail(msg)) == [(int(0.11e9), 'c')]
    # stale odometry: back to the image test (same image as the last kept one -> static)
    assert f.offer(int(2e9), 'd', lambda: image_thumbnail(msg)) == []


def test_unreadable_frames_are_recorded_anyway():
    f = FrameFilter(FilterConfig(drop_static=True))
    bad = image_msg(view(0), encoding='weird42')
    with pytest.raises(FrameError):
        image_thumbnail(bad)
    assert f.offer(0, 'x', lambda: image_thumbnail(bad)) == [(0, 'x')]
    assert f.offer(1, 'y', lambda: image_thumbnail(bad)) == [(1, 'y')]
    assert f.counts['unanalysed'] == 2


@pytest.mark.parametrize('encoding,convert', [
    ('rgb8', lambda im: im), ('bgr8', lambda im: im[..., ::-1].copy()),
    ('mono8', lambda im: im[..., 1].copy()),
    ('mono16', lambda im: im[..., 1].astype('<u2') * 257),
    ('rgba8', lambda im: np.dstack([im, np.full(im.shape[:2], 255, np.uint8)])),
    ('yuv422_yuy2', lambda im: np.stack([im[..., 1], im[..., 0]], -1).copy()),
])
def test_thumbnails_see_motion_in_every_encoding(encoding, convert):
    still = image_thumbnail(image_msg(convert(view(10)), encoding))
    noisy = image_thumbnail(image_msg(convert(view(10, noise=3)), encoding))
    moved = image_thumbnail(image_msg(convert(view(14)), encoding))
    assert still.shape == (30, 40)
    assert motion(still, noisy) < 2.0 < 10.0 < motion(still, moved)


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_compressed_thumbnails(fmt):
    from PIL import Image

    def compressed(img):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt.upper())
        return SimpleNamespace(format=fmt, data=np.frombuffer(buf.getvalue(), np.uint8))

    a = compressed_thumbnail(compressed(view(10)))
    b = compressed_thumbnail(compressed(view(10, noise=3)))
    c = compressed_thumbnail(compressed(view(14)))
    assert a.shape == (30, 40)
    assert motion(a, b) < 2.0 < 10.0 < motion(a, c)
    with pytest.raises(FrameError, match='cannot decode'):
        compressed_thumbnail(SimpleNamespace(format=fmt, data=np.arange(10, dtype=np.uint8)))


def test_camera_info_dedup_ignores_the_stamp_only():
    T = TypeCatalog().typestore.types

    def info(sec, fx):
        header = T['std_msgs/msg/Header'](T['builtin_interfaces/msg/Time'](sec, 0), 'cam')
        roi = T['sensor_msgs/msg/RegionOfInterest'](0, 0, 0, 0, False)
        k = np.array([fx, 0, 32, 0, fx, 24, 0, 0, 1], float)
        return T['sensor_msgs/msg/CameraInfo'](header, 48, 64, 'plumb_bob', np.zeros(5), k,
                                               np.eye(3).reshape(-1), np.zeros(12), 0, 0, roi)

    d = CameraInfoDedup()
    assert d.changed(info(1, 500.0))
    assert not d.changed(info(2, 500.0))
    assert d.changed(info(3, 501.0))


def test_header_stamp_and_twist_speeds_from_messages():
    cat = TypeCatalog()
    ts = cat.typestore
    T = ts.types
    img = T['sensor_msgs/msg/Image'](T['std_msgs/msg/Header'](
        T['builtin_interfaces/msg/Time'](12, 345), 'cam'), 1, 1, 'mono8', 0, 1, np.zeros(1, np.uint8))
    assert header_stamp_ns(bytes(ts.serialize_cdr(img, 'sensor_msgs/msg/Image'))) == 12 * 10**9 + 345
    assert header_stamp_ns(b'\x00\x01') == 0
    # the bag readers use the same CDR functions, which raise instead of returning 0
    from depth_ego_ros.data import cdr
    raw = bytes(ts.serialize_cdr(img, 'sensor_msgs/msg/Image'))
    assert cdr.header_stamp(raw) == pytest.approx(12 + 345e-9)
    assert cdr.header_frame_id(raw) == 'cam'
    with pytest.raises(cdr.MessageDecodeError):
        cdr.header_stamp_ns(b'\x00\x01')
    bad = bytearray(raw)
    bad[8:12] = (2_000_000_000).to_bytes(4, 'little')       # nanosec out of range
    assert header_stamp_ns(bytes(bad)) == 0
    V = T['geometry_msgs/msg/Vector3']
    twist = T['geometry_msgs/msg/Twist'](V(3.0, 4.0, 0.0), V(0.0, 0.0, -0.5))
    stamped = T['geometry_msgs/msg/TwistStamped'](img.header, twist)
    assert twist_speeds(twist) == (5.0, 0.5)
    assert twist_speeds(stamped) == (5.0, 0.5)
