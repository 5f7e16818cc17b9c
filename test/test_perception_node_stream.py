"""The perception node under stream conditions, each with its own node process and ROS domain:

* compressed input (jpeg/png) with the default sensor-data QoS, no camera_info at all (fallback
  intrinsics from a parameter), no base frame (TF odom -> camera frame), metric scale from a
  speed topic;
* a burst of 100 camera frames (640x480 rgb8, from a separate publisher process) into a node
  whose network is slow (640x192 input on one CPU thread): the callback path must not block
  or queue -- the newest frame gets processed, the rest are dropped and counted, memory stays flat.
"""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from sensor_msgs.msg import CompressedImage  # noqa: E402

from depth_ego_ros.ros import compat, conversions as cv, qos  # noqa: E402
from depth_ego_ros.ros.testing import generated_frame  # noqa: E402
from test_perception_node import TIMEOUT, Harness, module_ros_env  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHM_PROFILE = REPO / 'config' / 'fastdds_shm.xml'
FALLBACK = [280.0, 280.0, 159.5, 119.5]           # fx fy cx cy for 320x240 frames


@pytest.fixture(scope='module')
def compressed_node(tmp_path_factory):
    mp, env = module_ros_env(tmp_path_factory)
    params = {'width': 128, 'height': 64, 'num_threads': 1, 'image_transport': 'compressed',
              'camera_info.fallback_k': FALLBACK, 'diagnostics.period': 0.3,
              'scale.mode': 'speed', 'scale.speed_topic': 'wheel_odom'}
    h = Harness(env, params, image_topic='image/compressed', image_type=CompressedImage)
    try:
        yield h
    finally:
        alive, rc = h.close()
        mp.undo()
    assert alive and rc == 0, h.node.log_text()


def _send_retry(h, msg, keys, attempts=3):
    """Best-effort input may lose a frame: publish again (same stamp) if nothing came back."""
    msg.header = h.next_header(frame='cam_optical')
    for attempt in range(attempts):
        h.publish(msg)
        try:
            return h.outputs_for(msg.header.stamp, keys, timeout=TIMEOUT / 3)
        except AssertionError:
            if attempt == attempts - 1:
                raise


def test_speed_topic_sets_the_metric_scale(compressed_node):
    from nav_msgs.msg import Odometry
    """First test of the module on purpose: the first scale estimate is exact (later ones are
    smoothed with the previous)."""
    h = compressed_node
    pub = h.probe.publisher(Odometry, 'wheel_odom', qos.profile('reliable', 5))
    assert h.probe.wait_matched([pub], TIMEOUT)
    speed = Odometry()
    speed.twist.twist.linear.x = 2.0                       # m/s
    outs = []
    for i in range(2):
        pub.publish(speed)                                 # like a 50 Hz wheel odometry
        outs.append(_send_retry(h, cv.rgb8_to_compressed(generated_frame(320, 240, i), 'png'),
                                ('odom',)))
    p0, p1 = (cv.odometry_to_matrix(o['odom']) for o in outs)
    dt = cv.stamp_to_sec(outs[1]['odom'].header.stamp) - cv.stamp_to_sec(outs[0]['odom'].header.stamp)
    step = np.linalg.inv(p0) @ p1
    assert np.linalg.norm(step[:3, 3]) == pytest.approx(2.0 * dt, rel=1e-3)   # |t| = speed * dt


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_frames_with_fallback_intrinsics(compressed_node, fmt):
    h = compressed_node
    rgb = generated_frame(320, 240, 5)
    out = _send_retry(h, cv.rgb8_to_compressed(rgb, fmt, quality=95),
                      ('depth', 'depth_info', 'points', 'odom') + (('tf',) if compat.TFMessage else ()))
    depth = cv.image_to_numpy(out['depth'])
    assert depth.shape == (240, 320) and out['depth'].header.frame_id == 'cam_optical'
    fx, fy, cx, cy = FALLBACK
    assert np.allclose(np.asarray(out['depth_info'].k).reshape(3, 3),
                       [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    _, cols = cv.cloud_to_xyzrgb(out['points'])
    src = rgb[::4, ::4].reshape(-1, 3)                 # default stride 4, all depth valid
    assert cols.shape == src.shape
    tolerance = 0 if fmt == 'png' else 40               # png is lossless; jpeg close
    assert np.abs(cols.astype(int) - src).max() <= tolerance
    # no base frame configured: odometry and TF go odom -> the camera's optical frame
    assert (out['odom'].header.frame_id, out['odom'].child_frame_id) == ('odom', 'cam_optical')
    if 'tf' in out:
        t = out['tf'].transforms[0]
        assert (t.header.frame_id, t.child_frame_id) == ('odom', 'cam_optical')
    assert not h.probe.msgs['tf_static']                # static transform off by default


@pytest.mark.parametrize('data', [b'\xff\xd8\xff\xe0' + b'\x00' * 300, b'definitely not an image'])
def test_corrupt_compressed_bytes_keep_node_alive(compressed_node, data):
    h = compressed_node
    before = h.diag()['bad_input.corrupt_compressed']
    bad = CompressedImage(format='jpeg')
    bad.data = data
    for _ in range(3):     # best effort: until the node has seen it
        bad.header = h.next_header()
        h.publish(bad)
        try:
            h.diag(lambda v: v['bad_input.corrupt_compressed'] > before, timeout=TIMEOUT / 3)
            break
        except AssertionError:
            continue
    assert '[corrupt_compressed] frame dropped: cannot decode CompressedImage' in h.node.log_text()
    _send_retry(h, cv.rgb8_to_compressed(generated_frame(320, 240), 'jpeg'), ('depth',))
    assert h.node.alive()


# ---------------------------------------------------------------------------------------------
# burst
# ---------------------------------------------------------------------------------------------
def _publisher(env, count, rate=0.0):
    """Run the frame publisher process (640x480 rgb8 to `image`); returns its JSON summary."""
    cmd = [sys.executable, '-m', 'depth_ego_ros.ros.testing', 'publish', '--count', str(count),
           '--rate', str(rate), '--width', '640', '--height', '480', '--qos', 'sensor_data',
           '--depth', '1', '--linger', '0.5']
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_burst_keeps_the_newest_frame_and_drops_the_rest(tmp_path_factory):
    mp, env = module_ros_env(tmp_path_factory)
    # big images travel through shared memory (the shipped profile) for every process; the test
    # process itself only receives depth (reliable) and diagnostics.
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(SHM_PROFILE)
    params = {'width': 640, 'height': 192, 'num_threads': 1, 'diagnostics.period': 0.3,
              'camera_info.fallback_k': [500.0, 500.0, 319.5, 239.5]}
    h = Harness(env, params)
    try:
        for key in ('colored', 'points', 'odom', 'depth_info', 'tf'):
            h.probe.unsubscribe(key)        # only depth: the slow network is the whole cost
        warm = None
        for _ in range(3):
            warm = _publisher(env, 1)
            if h.probe.wait_until(lambda: any(cv.stamp_to_ns(m.header.stamp) == warm['last_stamp']
                                              for m in h.probe.msgs['depth']), TIMEOUT / 2):
                break
        else:
            pytest.fail('warm-up frame never processed:\n' + h.node.log_text())
        _publisher(env, 1)        # a second frame: allocations of the steady state are made
        before = h.diag()
        rss_before = h.node.rss_mb()

        burst = _publisher(env, 100, rate=100.0)
        last = burst['last_stamp']
        got_last = h.probe.wait_until(
            lambda: any(cv.stamp_to_ns(m.header.stamp) == last for m in h.probe.msgs['depth']),
            TIMEOUT)
        after = h.diag(lambda v: v['frames_processed'] > before['frames_processed'])
        rss_after = h.node.rss_mb()
        received = after['frames_received'] - before['frames_received']
        processed = after['frames_processed'] - before['frames_processed']
        dropped = after['frames_dropped'] - before['frames_dropped']
        report = (f'burst of 100 in {burst["seconds"]:.2f} s: received {received}, processed '
                  f'{processed}, dropped {dropped}, network {after["network_ms_mean"]:.0f} ms, '
                  f'rss {rss_before:.0f} -> {rss_after:.0f} MiB')
        print(report)
        assert got_last, 'the newest frame of the burst was not processed: ' + report
        assert dropped > 0 and processed < received, report
        assert processed + dropped <= received, report
        assert received >= 50, report                          # the callback path kept up
        assert rss_after - rss_before < 60, report             # no backlog (100 frames = 88 MiB)
    finally:
        alive, rc = h.close()
        mp.undo()
    assert alive and rc == 0, h.node.log_text()
