"""The perception node end to end: real rclpy + Fast DDS, the node as a separate process
(`python -m depth_ego_ros.ros.perception_node --ros-args ...`) in its own ROS domain.

One node process serves the whole module (start-up costs seconds): raw images, Reliable input QoS
(the override must work), a base_link frame with the static base -> camera transform, camera_info
published by the test. Network input is tiny (128x64) to keep the module fast.
"""
import math
import os
import pathlib

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from depth_ego_ros.ros import compat, conversions as cv, qos  # noqa: E402
from depth_ego_ros.ros.testing import (NodeProcess, Probe, diagnostic_values,  # noqa: E402
                                       generated_frame)

REPO = pathlib.Path(__file__).resolve().parents[1]
FRAME = 'camera_rgb_optical_frame'
STRIDE = 4
NODE_PARAMS = {
    'width': 128, 'height': 64, 'num_threads': 1,
    'qos.input': 'reliable', 'qos.input_depth': 5,
    'frames.base': 'base_link', 'static_transform.publish': True,
    'points.stride': STRIDE, 'diagnostics.period': 0.3, 'log_throttle': 60.0,
    # > Fast DDS's reliable retransmission delay (heartbeat ~3 s): a camera_info datagram lost
    # on a busy loopback (640x480 frames travel as UDP fragments here) must still pair with
    # its image instead of the node falling back to the previous camera_info.
    'camera_info.sync_timeout': 5.0,
}
OUTPUT_TOPICS = {
    'depth': (Image, 'depth'), 'depth_info': (CameraInfo, 'depth/camera_info'),
    'colored': (Image, 'depth/colored'), 'points': (PointCloud2, 'points'),
    'odom': (Odometry, 'odom'),
}
ALL_OUTPUTS = ('depth', 'depth_info', 'colored', 'points', 'odom', 'tf')
TIMEOUT = 60.0   # generous: 2 shared cores


def module_ros_env(tmp_path_factory):
    """Module-scoped isolated ROS graph: one node process serves many tests."""
    from conftest import isolated_ros_environment
    return isolated_ros_environment(tmp_path_factory.mktemp('ros_log'))


class _LaunchedElsewhere:
    """Stand-in for NodeProcess when the node was started by someone else (launch_pytest)."""

    def alive(self):
        return True

    def log_text(self, start=0):
        return '(node started by launch: see the launch output)'


class Harness:
    """The node process + a probe publishing images/camera_info and collecting every output.
    ``params=None``: the node is started elsewhere (e.g. by a launch file) in ``namespace``."""

    def __init__(self, env, params, image_topic='image', image_type=Image, image_qos='reliable',
                 params_file=None, namespace='', camera_info_topic='camera_info'):
        self.node = (NodeProcess('depth_ego_ros.ros.perception_node', params, env,
                                 params_file=params_file) if params is not None
                     else _LaunchedElsewhere())
        ns = namespace.rstrip('/') + '/' if namespace else ''
        self.probe = Probe('perception_probe')
        self.image_pub = self.probe.publisher(image_type, ns + image_topic, qos.profile(image_qos, 5))
        self.info_pub = self.probe.publisher(CameraInfo, ns + camera_info_topic, qos.profile('reliable', 5))
        self.subs = [self.probe.subscribe(k, t, ns + topic, qos.profile('reliable', 50))
                     for k, (t, topic) in OUTPUT_TOPICS.items()]
        if compat.TFMessage is not None:
            self.subs.append(self.probe.subscribe('tf', compat.TFMessage, '/tf', qos.tf_profile()))
            self.probe.subscribe('tf_static', compat.TFMessage, '/tf_static', qos.tf_static_profile())
        self.probe.subscribe('diag', DiagnosticArray, '/diagnostics', qos.profile('reliable', 10))
        self.t = 1000.0                      # synthetic stamps, 0.1 s apart
        ok = self.probe.wait_matched([self.image_pub, self.info_pub] + self.subs, TIMEOUT)
        assert ok, f'node did not come up:\n{self.node.log_text()}'

    def next_header(self, dt=0.1, frame=FRAME):
        self.t += dt
        return Header(stamp=cv.sec_to_stamp(self.t), frame_id=frame)

    def publish(self, msg, info=None):
        if info is not None:
            info.header = msg.header
            self.info_pub.publish(info)
        self.image_pub.publish(msg)

    def outputs_for(self, stamp, keys=ALL_OUTPUTS, timeout=TIMEOUT):
        """{key: message} of the outputs carrying ``stamp``; fails after ``timeout``."""
        found = {}

        def stamp_of(key, m):
            return m.transforms[0].header.stamp if key == 'tf' else m.header.stamp

        def done():
            for key in keys:
                if key not in found:
                    for m in reversed(self.probe.msgs[key]):
                        if stamp_of(key, m) == stamp:
                            found[key] = m
                            break
            return len(found) == len(keys) or not self.node.alive()
        self.probe.wait_until(done, timeout)
        missing = set(keys) - set(found)
        assert not missing, (f'no {sorted(missing)} for stamp {stamp} within {timeout} s; node log:\n'
                             + self.node.log_text())
        return found

    def send(self, msg, info=None, keys=ALL_OUTPUTS, header=None):
        msg.header = header if header is not None else self.next_header()
        self.publish(msg, info)
        return self.outputs_for(msg.header.stamp, keys)

    def diag(self, predicate=lambda v: True, timeout=TIMEOUT):
        """Values of the first diagnostics message (from now on) satisfying ``predicate``."""
        start = len(self.probe.msgs['diag'])
        box = {}

        def check():
            for m in self.probe.msgs['diag'][start:]:
                values = diagnostic_values(m.status[0])
                if predicate(values):
                    box['v'] = values
                    return True
            return False
        assert self.probe.wait_until(check, timeout), 'no matching /diagnostics message'
        return box['v']

    def close(self):
        alive = self.node.alive()
        rc = self.node.stop() if hasattr(self.node, 'stop') else 0
        self.probe.close()
        return alive, rc


def tum_k():
    return np.array([[517.3, 0.0, 318.6], [0.0, 516.5, 255.3], [0.0, 0.0, 1.0]])


def frame_k(width, height):
    f = 0.9 * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    mp, env = module_ros_env(tmp_path_factory)
    # the shipped parameter file (every parameter, documented) + this module's overrides
    h = Harness(env, NODE_PARAMS, params_file=REPO / 'config' / 'depth_ego.yaml')
    try:
        # Before any camera_info exists: a frame must be refused with a clear message.
        mark = h.node.mark()
        img = cv.rgb8_to_image(generated_frame(160, 120))
        img.header = h.next_header()
        h.publish(img)
        h.missing_info_line = h.node.wait_for_log('[missing_camera_info]', TIMEOUT, mark)
        h.missing_info_stamp = img.header.stamp
        # Warm-up with camera_info until every output flows (the node sees our subscriptions).
        h.send(cv.rgb8_to_image(generated_frame(160, 120)), cv.make_camera_info(frame_k(160, 120), 160, 120))
        yield h
    finally:
        alive, rc = h.close()
        mp.undo()
    assert alive, 'the node died during the tests:\n' + h.node.log_text()
    assert rc == 0, f'node exit code {rc} after SIGINT:\n{h.node.log_text()}'


# ---------------------------------------------------------------------------------------------
def check_frame_outputs(out, header, rgb, K, width, height):
    """Everything the issue lists about one frame's outputs."""
    depth_msg, info, colored, cloud = out['depth'], out['depth_info'], out['colored'], out['points']
    for m in (depth_msg, info, colored, cloud):
        assert m.header.stamp == header.stamp and m.header.frame_id == header.frame_id
    assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ('32FC1', width, height)
    depth = cv.image_to_numpy(depth_msg)
    assert depth.dtype == np.float32 and depth.shape == (height, width)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.99 and np.all(depth[valid] > 0)
    assert (info.width, info.height) == (width, height)
    assert np.allclose(np.asarray(info.k).reshape(3, 3), K, atol=1e-6)
    assert (colored.encoding, colored.width, colored.height) == ('rgb8', width, height)
    assert cv.image_to_numpy(colored).shape == (height, width, 3)

    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
    pts, cols = cv.cloud_to_xyzrgb(cloud)
    sub = depth[::STRIDE, ::STRIDE]
    assert len(pts) == int(np.count_nonzero(np.isfinite(sub) & (sub > 0)))
    # every point reprojects onto its stride-grid pixel, at that pixel's depth and colour
    uvw = pts.astype(np.float64) @ K.T
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    assert np.abs(u - ui).max() < 1e-2 and np.abs(v - vi).max() < 1e-2
    assert np.all(ui % STRIDE == 0) and np.all(vi % STRIDE == 0)
    assert np.allclose(pts[:, 2], depth[vi, ui], rtol=1e-5)
    assert np.array_equal(cols, rgb[vi, ui])


def test_frames_wait_for_camera_info_with_a_clear_message(node):
    line = node.missing_info_line
    assert line is not None, node.node.log_text()
    assert 'no camera_info received on /camera_info' in line and 'camera_info.fallback_k' in line
    assert not any(m.header.stamp == node.missing_info_stamp for m in node.probe.msgs['depth'])
    v = node.diag(lambda v: v['bad_input.missing_camera_info'] >= 1)
    assert v['device'] == 'cpu' and v['network_input'] == '128x64'


def test_real_tum_frames(node, shared_data):
    from PIL import Image as PILImage
    folder = shared_data / 'real' / 'tum_fr1_xyz' / 'rgb'
    K = tum_k()
    info = cv.make_camera_info(K, 640, 480, D=[0.2624, -0.9531, -0.0054, 0.0026, 1.1633])
    for path in sorted(folder.glob('*.png')):
        rgb = np.asarray(PILImage.open(path).convert('RGB'))
        header = node.next_header()
        out = node.send(cv.rgb8_to_image(rgb), info, header=header)
        check_frame_outputs(out, header, rgb, K, 640, 480)
        assert list(out['depth_info'].d) == pytest.approx(list(info.d))   # camera_info passes through


@pytest.mark.parametrize('encoding,pad', [('rgb8', 0), ('bgr8', 8), ('rgba8', 0), ('bgra8', 4),
                                          ('mono8', 3)])
def test_generated_frames_in_every_encoding(node, encoding, pad):
    rgb = generated_frame(96, 72, 3)
    msg = cv.rgb8_to_image(rgb, encoding)
    if pad:  # rows padded to a larger step, as some drivers send them
        rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        msg.data = np.concatenate([rows, np.zeros((msg.height, pad), np.uint8)], axis=1).tobytes()
        msg.step += pad
    K = frame_k(96, 72)
    header = node.next_header()
    out = node.send(msg, cv.make_camera_info(K, 96, 72), header=header)
    expected = cv.image_to_rgb8(msg)            # what the camera meant (mono8: grey in 3 channels)
    check_frame_outputs(out, header, expected, K, 96, 72)


def test_camera_info_is_paired_with_its_image_by_stamp(node):
    """An image that arrives before its camera_info waits for it (stamps matched before)."""
    w, h = 96, 72
    for scale in (1.0, 1.25):
        K = frame_k(w, h) * [[scale], [scale], [1.0]]
        msg = cv.rgb8_to_image(generated_frame(w, h))
        msg.header = node.next_header()
        node.image_pub.publish(msg)                        # image first ...
        info = cv.make_camera_info(K, w, h)
        info.header = msg.header
        node.info_pub.publish(info)                        # ... then its camera_info
        out = node.outputs_for(msg.header.stamp, ('depth_info',))
        assert np.allclose(np.asarray(out['depth_info'].k).reshape(3, 3), K)


def test_odometry_chains_and_tf(node):
    K = frame_k(160, 120)
    info = cv.make_camera_info(K, 160, 120)
    outs = [node.send(cv.rgb8_to_image(generated_frame(160, 120, i)), info) for i in range(5)]
    odoms = [o['odom'] for o in outs]
    for o in odoms:
        assert o.header.frame_id == 'odom' and o.child_frame_id == 'base_link'
    poses = [cv.odometry_to_matrix(o) for o in odoms]
    from depth_ego_ros.core.geometry import matrix_to_axis_angle_np
    moved = 0.0
    for k in range(1, len(odoms)):
        step = np.linalg.inv(poses[k - 1]) @ poses[k]
        dt = cv.stamp_to_sec(odoms[k].header.stamp) - cv.stamp_to_sec(odoms[k - 1].header.stamp)
        tw = odoms[k].twist.twist
        # twist (child frame) x dt reproduces the chained step
        assert np.allclose([tw.linear.x, tw.linear.y, tw.linear.z], step[:3, 3] / dt, atol=1e-5)
        assert np.allclose([tw.angular.x, tw.angular.y, tw.angular.z],
                           matrix_to_axis_angle_np(step[:3, :3]) / dt, atol=1e-4)
        cov_prev = np.diag(np.reshape(odoms[k - 1].pose.covariance, (6, 6)))
        cov = np.diag(np.reshape(odoms[k].pose.covariance, (6, 6)))
        assert np.all(cov >= cov_prev) and np.all(cov > 0)       # uncertainty grows, honestly
        moved += np.linalg.norm(step[:3, 3])
    assert moved > 0
    # TF carries the same pose, as tf2_msgs/TFMessage
    if compat.TFMessage is None:
        pytest.skip('tf2_msgs not installed')
    for o in outs:
        (tf,) = o['tf'].transforms
        assert (tf.header.frame_id, tf.child_frame_id) == ('odom', 'base_link')
        assert np.allclose(cv.transform_to_matrix(tf), cv.odometry_to_matrix(o['odom']), atol=1e-6)
    statics = [t for m in node.probe.msgs['tf_static'] for t in m.transforms]
    assert [(t.header.frame_id, t.child_frame_id) for t in statics][-1:] == [('base_link', FRAME)]
    R = cv.transform_to_matrix(statics[-1])[:3, :3]
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-9)      # optical z (forward) = base x
    assert np.allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-9)     # optical x (right) = base -y


def _is_identity_start(odom):
    cov = np.reshape(odom.twist.covariance, (6, 6))
    return np.allclose(cv.odometry_to_matrix(odom), np.eye(4)) and cov[0, 0] >= 1e5


def test_trajectory_resets_on_time_jump_and_size_change(node):
    K = frame_k(160, 120)
    info = cv.make_camera_info(K, 160, 120)
    for i in range(2):
        node.send(cv.rgb8_to_image(generated_frame(160, 120, i)), info)
    resets = node.diag()['trajectory_resets']
    # a bag loop: the stamp goes back in time
    back = Header(stamp=cv.sec_to_stamp(node.t - 5.0), frame_id=FRAME)
    out = node.send(cv.rgb8_to_image(generated_frame(160, 120, 0)), info, header=back)
    assert _is_identity_start(out['odom'])
    assert node.node.wait_for_log('[time_jump_back] time jumped backwards by 5.', 10)
    after = node.send(cv.rgb8_to_image(generated_frame(160, 120, 1)), info,
                      header=Header(stamp=cv.sec_to_stamp(node.t - 4.9), frame_id=FRAME))
    assert not np.allclose(cv.odometry_to_matrix(after['odom']), np.eye(4))   # chaining again
    # the camera changes resolution
    out = node.send(cv.rgb8_to_image(generated_frame(128, 96)), cv.make_camera_info(frame_k(128, 96), 128, 96))
    assert _is_identity_start(out['odom'])
    assert out['depth'].width == 128 and out['depth'].height == 96
    # (one log line per kind per log_throttle: an earlier test may have produced it)
    assert node.node.wait_for_log('[size_change] image size changed from', 10)
    v = node.diag(lambda v: v['trajectory_resets'] >= resets + 2)
    assert v['bad_input.time_jump_back'] >= 1 and v['bad_input.size_change'] >= 1


# ---------------------------------------------------------------------------------------------
# bad input: one clear log line per kind, a counter, and the node keeps answering
# ---------------------------------------------------------------------------------------------
def _good(node, size=(96, 72)):
    w, h = size
    return node.send(cv.rgb8_to_image(generated_frame(w, h)), cv.make_camera_info(frame_k(w, h), w, h),
                     keys=('depth',))


def _unsupported(msg):
    msg.encoding = 'yuv422'


def _step_too_small(msg):
    msg.step = msg.width * 2


def _truncated(msg):
    msg.data = bytes(msg.data)[: len(msg.data) // 2]


BAD_IMAGES = {
    'unsupported_encoding': (_unsupported, "unsupported image encoding 'yuv422'"),
    'malformed_image': (_step_too_small, 'step/size mismatch'),
    'truncated': (_truncated, 'truncated image data'),
}


@pytest.mark.parametrize('case', list(BAD_IMAGES))
def test_bad_images_are_counted_and_node_answers(node, case):
    mutate, text = BAD_IMAGES[case]
    kind = 'malformed_image' if case == 'truncated' else case
    before = node.diag()[f'bad_input.{kind}']
    msg = cv.rgb8_to_image(generated_frame(96, 72))
    mutate(msg)
    msg.header = node.next_header()
    node.publish(msg, cv.make_camera_info(frame_k(96, 72), 96, 72))
    node.diag(lambda v: v[f'bad_input.{kind}'] == before + 1)
    log = node.node.log_text()
    assert f'[{kind}]' in log
    if before == 0:
        assert text in log
    assert not any(m.header.stamp == msg.header.stamp for m in node.probe.msgs['depth'])
    _good(node)                                       # alive and answering
    assert node.node.alive()


def test_repeated_bad_input_is_logged_once_per_throttle_period(node):
    before_lines = node.node.log_text().count('[malformed_image]')
    before = node.diag()['bad_input.malformed_image']
    for i in range(1, 6):
        msg = cv.rgb8_to_image(generated_frame(96, 72))
        _truncated(msg)
        msg.header = node.next_header()
        node.publish(msg)
        # one at a time, so that none is replaced in the latest-frame slot before it is seen
        node.diag(lambda v: v['bad_input.malformed_image'] == before + i)
    assert node.node.log_text().count('[malformed_image]') - before_lines <= 1
    _good(node)


@pytest.mark.parametrize('k', [[0.0] * 9, [math.nan, 0, 48, 0, 500, 36, 0, 0, 1]])
def test_bad_intrinsics_are_refused_then_recovered(node, k):
    before = node.diag()
    info = cv.make_camera_info(frame_k(96, 72), 96, 72)
    info.k = np.asarray(k, dtype=np.float64)
    msg = cv.rgb8_to_image(generated_frame(96, 72))
    msg.header = node.next_header()
    node.publish(msg, info)
    node.diag(lambda v: v['bad_input.bad_camera_info'] > before['bad_input.bad_camera_info']
              and v['bad_input.missing_camera_info'] > before['bad_input.missing_camera_info'])
    assert 'camera_info K is not usable' in node.node.log_text()
    assert not any(m.header.stamp == msg.header.stamp for m in node.probe.msgs['depth'])
    _good(node)                                       # a valid camera_info brings it back


def test_outputs_nobody_listens_to_are_not_computed(node):
    node.probe.unsubscribe('points')
    node.probe.unsubscribe('colored')
    assert node.probe.wait_until(lambda: node.probe.node.count_subscribers('points') == 0
                                 and node.probe.node.count_subscribers('depth/colored') == 0, 10)
    # the node notices within a few frames; after that its points/colored counters stand still
    history = []
    for _ in range(8):
        _good(node)
        history.append(node.diag())
        if len(history) >= 3 and history[-1]['published.points'] == history[-3]['published.points']:
            break
    first, last = history[-3], history[-1]
    assert last['published.points'] == first['published.points']
    assert last['published.colored'] == first['published.colored']
    assert last['published.depth'] >= first['published.depth'] + 2
    node.probe.subscribe('points', PointCloud2, 'points', qos.profile('reliable', 50))
    node.probe.subscribe('colored', Image, 'depth/colored', qos.profile('reliable', 50))


def _set_params(node, **values):
    """Call the node's set_parameters service; returns the SetParametersResult list."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = node.probe.node.create_client(SetParameters, '/depth_ego_node/set_parameters')
    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT)
        req = SetParameters.Request()
        req.parameters = [Parameter(k.replace('__', '.'), value=v).to_parameter_msg()
                          for k, v in values.items()]
        future = client.call_async(req)
        assert node.probe.wait_until(future.done, TIMEOUT)
        return future.result().results
    finally:
        node.probe.node.destroy_client(client)


def test_parameters_change_at_run_time_within_their_ranges(node):
    (ok,) = _set_params(node, points__stride=8)
    assert ok.successful
    w, h = 96, 72
    out = node.send(cv.rgb8_to_image(generated_frame(w, h)), cv.make_camera_info(frame_k(w, h), w, h),
                    keys=('depth', 'points'))
    depth = cv.image_to_numpy(out['depth'])
    assert out['points'].width == int(np.count_nonzero(np.isfinite(depth[::8, ::8])))
    (bad,) = _set_params(node, points__stride=0)                 # outside [1, 64]
    assert not bad.successful
    (ro,) = _set_params(node, width=256)                         # start-up only
    assert not ro.successful
    assert 'width' in ro.reason and 'restart the node' in ro.reason, ro.reason
    (choice,) = _set_params(node, log_throttle=-1.0)
    assert not choice.successful
    (back,) = _set_params(node, points__stride=STRIDE)
    assert back.successful
