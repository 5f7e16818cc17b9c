"""The live view end to end: perception node process -> DDS -> `depth_ego_view` process ->
Foxglove WebSocket -> a real WebSocket client (the protocol Foxglove / Lichtblick speak).

The client subscribes to the advertised channels, receives message data and decodes the CDR
payloads; the depth it receives must be byte for byte what the node published over DDS for the
same stamp (a DDS subscriber in the test receives that). With no client the view holds no DDS
subscription at all (so the node computes nothing for it).
"""
import re

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')
pytest.importorskip('foxglove', reason='foxglove-sdk not installed (requirements/python.txt)')
pytest.importorskip('websockets', reason='websockets not installed (requirements/python.txt)')

from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from depth_ego_ros.live.client import FoxgloveClient  # noqa: E402
from depth_ego_ros.ros import compat, conversions as cv, qos  # noqa: E402
from depth_ego_ros.ros.testing import NodeProcess, Probe, generated_frame, wait_until  # noqa: E402

TIMEOUT = 60.0
W, H = 96, 64
CHANNELS = ['/image', '/depth', '/depth/colored', '/points', '/odom', '/path']


def _k(w, h):
    f = 0.9 * w
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


@pytest.fixture(scope='module')
def live(tmp_path_factory):
    from conftest import isolated_ros_environment
    mp, env = isolated_ros_environment(tmp_path_factory.mktemp('ros_log'))
    node = NodeProcess('depth_ego_ros.ros.perception_node', {
        'width': 64, 'height': 64, 'num_threads': 1, 'qos.input': 'reliable',
        'diagnostics.period': 1.0, 'camera_info.sync_timeout': 5.0}, env)
    view = NodeProcess('depth_ego_ros.ros.live_view', env=env,
                       node_args=['--port', '0', '--max-rate', '0', '--path-min-step', '0'])
    probe = Probe('live_probe')
    try:
        line = view.wait_for_log('live view on ws://', TIMEOUT)
        assert line, view.log_text()
        port = int(re.search(r'ws://127\.0\.0\.1:(\d+)', line).group(1))
        image_pub = probe.publisher(Image, 'image', qos.profile('reliable', 5))
        info_pub = probe.publisher(CameraInfo, 'camera_info', qos.profile('reliable', 5))
        probe.subscribe('depth', Image, 'depth', qos.profile('reliable', 50))
        assert probe.wait_matched([image_pub, info_pub], TIMEOUT), node.log_text()
        yield {'node': node, 'view': view, 'probe': probe, 'port': port,
               'image_pub': image_pub, 'info_pub': info_pub, 't': [500.0]}
    finally:
        probe.close()
        rc_view, rc_node = view.stop(), node.stop()
        mp.undo()
    assert rc_view == 0, view.log_text()
    assert rc_node == 0, node.log_text()


def _send(live, index):
    live['t'][0] += 0.1
    header = Header(stamp=cv.sec_to_stamp(live['t'][0]), frame_id='cam')
    img = cv.rgb8_to_image(generated_frame(W, H, index))
    img.header = header
    info = cv.make_camera_info(_k(W, H), W, H, header)
    live['info_pub'].publish(info)
    live['image_pub'].publish(img)
    return img


def _subscribers(live, topic):
    return live['probe'].node.count_subscribers(topic)


def test_client_receives_every_channel_with_the_published_content(live, tmp_path):
    probe = live['probe']
    # nobody connected: the view subscribes to nothing (only the test listens to depth)
    assert _subscribers(live, '/depth') == 1 and _subscribers(live, '/points') == 0
    with FoxgloveClient(f'ws://127.0.0.1:{live["port"]}') as client:
        chans = client.wait_channels(CHANNELS + (['/tf'] if compat.TFMessage else []), TIMEOUT)
        assert chans['/depth']['encoding'] == 'cdr'
        assert chans['/depth']['schemaName'] == 'sensor_msgs/msg/Image'
        assert chans['/depth']['schemaEncoding'] == 'ros2msg'
        assert chans['/path']['schemaName'] == 'nav_msgs/msg/Path'
        assert 'MSG: std_msgs/Header' in chans['/depth']['schema']
        client.subscribe(list(chans))
        # the view now subscribes over DDS (and the node computes points/odom for it)
        assert wait_until(lambda: _subscribers(live, '/depth') == 2
                          and _subscribers(live, '/points') == 1
                          and _subscribers(live, '/odom') == 1
                          and _subscribers(live, '/image') == 2, TIMEOUT), live['view'].log_text()

        got = {}
        sent = []

        def record(m):
            got.setdefault(m.topic, []).append(m)

        # frames until every channel delivered something for the last sent stamps
        for i in range(12):
            sent.append(_send(live, i))
            for m in client.messages(timeout=3.0, until=lambda: len(got.get('/depth', [])) > i):
                record(m)
            if i >= 3 and all(len(got.get(t, [])) >= 2 for t in chans):
                break
        for m in client.messages(timeout=2.0):
            record(m)
        missing = [t for t in chans if not got.get(t)]
        assert not missing, f'no messages on {missing}; view log:\n{live["view"].log_text()}'

        # depth: the same bytes as the DDS message with that stamp
        dds = {cv.stamp_to_ns(m.header.stamp): m for m in probe.msgs['depth']}
        compared = 0
        for m in got['/depth']:
            ws = deserialize_message(m.data, Image)
            ref = dds.get(cv.stamp_to_ns(ws.header.stamp))
            if ref is None:
                continue
            assert (ws.encoding, ws.width, ws.height, ws.step) == \
                (ref.encoding, ref.width, ref.height, ref.step) == ('32FC1', W, H, W * 4)
            assert ws.header.frame_id == ref.header.frame_id == 'cam'
            assert bytes(ws.data) == bytes(ref.data)
            compared += 1
        assert compared >= 2

        # camera: the image the test published
        by_stamp = {cv.stamp_to_ns(s.header.stamp): s for s in sent}
        cam = deserialize_message(got['/image'][-1].data, Image)
        assert bytes(cam.data) == bytes(by_stamp[cv.stamp_to_ns(cam.header.stamp)].data)
        colored = deserialize_message(got['/depth/colored'][-1].data, Image)
        assert (colored.encoding, colored.width, colored.height) == ('rgb8', W, H)
        cloud = deserialize_message(got['/points'][-1].data, PointCloud2)
        assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb'] and cloud.width > 0
        pts, _ = cv.cloud_to_xyzrgb(cloud)
        assert np.all(pts[:, 2] > 0)

        # path: the odometry poses in order, ending at the newest odometry
        odoms = [deserialize_message(m.data, Odometry) for m in got['/odom']]
        path = deserialize_message(got['/path'][-1].data, Path)
        assert path.header.frame_id == odoms[-1].header.frame_id == 'odom'
        assert len(path.poses) >= 2
        stamps = [cv.stamp_to_ns(p.header.stamp) for p in path.poses]
        assert stamps == sorted(stamps)
        last = {cv.stamp_to_ns(o.header.stamp): o for o in odoms}.get(stamps[-1])
        if last is not None:
            p, q = last.pose.pose.position, path.poses[-1].pose.position
            assert (p.x, p.y, p.z) == pytest.approx((q.x, q.y, q.z))
        if compat.TFMessage is not None:
            tf = deserialize_message(got['/tf'][-1].data, compat.TFMessage)
            assert tf.transforms[0].header.frame_id == 'odom'

        # the screenshot path: the received channels decoded without ROS and drawn
        from depth_ego_ros.live.render import decode, render
        topics = {'camera': '/image', 'colored': '/depth/colored', 'points': '/points',
                  'odom': '/odom', 'path': '/path'}
        msgs = decode({t: [m.data for m in got[t]] for t in topics.values()},
                      {t: chans[t]['schemaName'] for t in topics.values()})
        drawn = render(msgs, topics, tmp_path / 'live.png')
        assert (tmp_path / 'live.png').stat().st_size > 10_000
        assert drawn['clouds'] >= 1 and drawn['points'] > 0 and drawn['path_poses'] >= 2

        client.unsubscribe(['/points', '/depth/colored'])
        assert wait_until(lambda: _subscribers(live, '/points') == 0, TIMEOUT)
    # client gone: every DDS subscription of the view goes with it
    assert wait_until(lambda: _subscribers(live, '/depth') == 1 and _subscribers(live, '/odom') == 0
                      and _subscribers(live, '/image') == 1, TIMEOUT), live['view'].log_text()




def test_thinning_options_and_bind_warning_rule():
    from types import SimpleNamespace

    from rclpy.serialization import serialize_message

    from depth_ego_ros.ros.live_view import LiveView, _is_loopback
    img = cv.rgb8_to_image(generated_frame(W, H))
    img.header = Header(stamp=cv.sec_to_stamp(3.0), frame_id='cam')
    me = SimpleNamespace(args=SimpleNamespace(image_stride=2, cloud_stride=3))
    thin = deserialize_message(LiveView._thin_image(me, serialize_message(img)), Image)
    assert (thin.width, thin.height, thin.encoding, thin.header) == (W // 2, H // 2, 'rgb8', img.header)
    assert np.array_equal(cv.image_to_numpy(thin), cv.image_to_numpy(img)[::2, ::2])
    xyz = np.random.default_rng(0).uniform(1, 5, (100, 3)).astype(np.float32)
    rgb = np.random.default_rng(1).integers(0, 255, (100, 3)).astype(np.uint8)
    cloud = cv.xyzrgb_to_cloud(xyz, rgb, img.header)
    thin_cloud = deserialize_message(LiveView._thin_cloud(me, serialize_message(cloud)), PointCloud2)
    pts, cols = cv.cloud_to_xyzrgb(thin_cloud)
    assert thin_cloud.width == 34 and np.allclose(pts, xyz[::3]) and np.array_equal(cols, rgb[::3])
    assert _is_loopback('127.0.0.1') and _is_loopback('localhost') and _is_loopback('::1')
    assert not _is_loopback('0.0.0.0') and not _is_loopback('192.168.1.5') and not _is_loopback('')
