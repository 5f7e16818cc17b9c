"""recorder_node end to end: a real recorder process, real DDS, publishers in this test process.

Bags are read back with rosbags AND with the independent `mcap` library; messages are compared
decoded, field by field (rclpy leaves CDR padding bytes uninitialised, so bytes may differ).
"""
import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from geometry_msgs.msg import TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Int32  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from depth_ego_ros.data.bags import TypeCatalog, read_messages, storage_files  # noqa: E402

TFMessage = pytest.importorskip('tf2_msgs.msg', reason='tf2_msgs not built').TFMessage
REPO = Path(__file__).resolve().parents[1]
CATALOG = TypeCatalog()
RNG = np.random.default_rng(7)
SCENE = RNG.integers(0, 255, (48, 200, 3), dtype=np.uint8)


# -- helpers ---------------------------------------------------------------------------------

class Recorder:
    """recorder_node in its own process; its log goes to a file."""

    def __init__(self, env, tmp_path, params, extra_env=None, name='rec', params_file=None):
        self.out = tmp_path / 'bags'
        self.bag = self.out / name
        base = {'output_dir': str(self.out), 'bag_name': name, 'flush_period': 0.2,
                'discovery_period': 0.1, 'diagnostics_period': 0.5, 'min_free_space': 0}
        base.update(params)
        args = [sys.executable, '-m', 'depth_ego_ros.ros.recorder_node', '--ros-args']
        if params_file:
            args += ['--params-file', str(params_file)]
        for key, value in base.items():
            args += ['-p', f'{key}:={value}']
        self.log_path = tmp_path / f'{name}.log'
        self._log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, env=dict(env, **(extra_env or {})),
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self):
        return self.log_path.read_text()

    def signal(self, sig, timeout=30):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def node(ros_env):
    rclpy.init()
    n = rclpy.create_node('recorder_tester')
    recorders = []
    n.recorders = recorders
    yield n
    for r in recorders:
        r.kill()
    n.destroy_node()
    rclpy.shutdown()


def start(node, ros_env, tmp_path, params, **kw):
    rec = Recorder(ros_env, tmp_path, params, **kw)
    node.recorders.append(rec)
    return rec


def call(node, srv_type, name, request=None, timeout=20.0):
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f'no service {name}'
        future = client.call_async(request or srv_type.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        assert future.done(), f'{name} did not answer'
        return future.result()
    finally:
        node.destroy_client(client)


def status(node):
    return json.loads(call(node, Trigger, '/recorder/status').message)


def wait_until(node, predicate, timeout=30.0, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        rclpy.spin_once(node, timeout_sec=0.05)
    raise AssertionError(f'timed out waiting for {what}')


def wait_written(node, expected, timeout=30.0):
    """Wait until the recorder reports ``expected`` {topic: written}; return the status."""
    last = {}

    def done():
        last['s'] = st = status(node)
        return st if all(st['topics'][t]['written'] >= n for t, n in expected.items()) else None
    try:
        return wait_until(node, done, timeout, f'written {expected}')
    except AssertionError:
        raise AssertionError(f'not written {expected}: {json.dumps(last.get("s"), indent=1)}')


def wait_matched(node, pubs, timeout=30.0):
    wait_until(node, lambda: all(p.get_subscription_count() >= 1 for p in pubs), timeout,
               'the recorder to subscribe')


def view(x):
    return np.ascontiguousarray(SCENE[:, x:x + 64])


def image(i, img, stamp_ns=None):
    msg = Image()
    stamp_ns = stamp_ns if stamp_ns is not None else (100 + i) * 10 ** 9 + i
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id = 'camera_optical'
    msg.height, msg.width = img.shape[:2]
    msg.encoding, msg.step = 'rgb8', img.shape[1] * 3
    msg.data = img.tobytes()
    return msg


def camera_info(header, fx=50.0):
    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = header.stamp, header.frame_id
    msg.width, msg.height = 64, 48
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.1, -0.01, 0.0, 0.0, 0.0]
    msg.k = [fx, 0.0, 32.0, 0.0, fx, 24.0, 0.0, 0.0, 1.0]
    return msg


def transform(i, parent, child):
    t = TransformStamped()
    t.header.stamp.sec = 100 + i
    t.header.frame_id, t.child_frame_id = parent, child
    t.transform.translation.x = 0.1 * i
    t.transform.rotation.w = 1.0
    return t


def bag_messages(bag, topic):
    return [(m.timestamp, CATALOG.deserialize(m.data, m.msgtype))
            for m in read_messages(bag, topics=[topic])]


def mcap_messages(bag_or_file, topic):
    """Decoded by the `mcap` library, file by file (a bag directory or one .mcap file)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    path = Path(bag_or_file)
    out = []
    for path in (storage_files(path) if path.is_dir() else [path]):
        with open(path, 'rb') as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            out += [msg for _s, ch, _m, msg in reader.iter_decoded_messages(topics=[topic])]
    return out


def metadata(bag):
    return yaml.safe_load((Path(bag) / 'metadata.yaml').read_text())['rosbag2_bagfile_information']


def counters(bag):
    return json.loads(metadata(bag)['custom_data']['depth_ego.recorder'])


RELIABLE = QoSProfile(depth=100)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


# -- tests -----------------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_records_camera_info_odom_tf_and_reads_back_equal(node, ros_env, tmp_path):
    pub_img = node.create_publisher(Image, '/cam/image', RELIABLE)
    pub_info = node.create_publisher(CameraInfo, '/cam/camera_info', RELIABLE)
    pub_odom = node.create_publisher(Odometry, '/odom', RELIABLE)
    pub_tf = node.create_publisher(TFMessage, '/tf', RELIABLE)
    pub_static = node.create_publisher(TFMessage, '/tf_static', LATCHED)
    static = TFMessage(transforms=[transform(0, 'base_link', 'camera_optical')])
    pub_static.publish(static)     # before the recorder exists: transient local delivers it
    rec = start(node, ros_env, tmp_path, {'camera_topic': '/cam/image',
                                          'camera_info_topic': '/cam/camera_info',
                                          'odom_topic': '/odom'})
    wait_matched(node, [pub_img, pub_info, pub_odom, pub_tf, pub_static])
    sent_img, sent_odom, sent_tf = [], [], []
    for i in range(8):
        img = image(i, view(4 * (i // 2)))      # pairs of identical frames: kept (filter off)
        pub_img.publish(img)
        pub_info.publish(camera_info(img.header))
        odom = Odometry()
        odom.header.stamp = img.header.stamp
        odom.header.frame_id, odom.child_frame_id = 'odom', 'base_link'
        odom.pose.pose.position.x = 0.25 * i
        odom.twist.twist.linear.x = 0.5
        pub_odom.publish(odom)
        tf = TFMessage(transforms=[transform(i, 'odom', 'base_link')])
        pub_tf.publish(tf)
        sent_img.append(img), sent_odom.append(odom), sent_tf.append(tf)
        time.sleep(0.02)
    wait_written(node, {'/cam/image': 8, '/odom': 8, '/tf': 8, '/tf_static': 1,
                        '/cam/camera_info': 1})
    graph_hash = str(node.get_publishers_info_by_topic('/cam/image')[0].topic_type_hash)
    assert rec.signal(signal.SIGINT) == 0, rec.log()
    log = rec.log()
    assert 'recording finished' in log and '/cam/image: 8' in log

    bag = rec.bag
    meta = metadata(bag)
    topics = {t['topic_metadata']['name']: t for t in meta['topics_with_message_count']}
    assert topics['/cam/image']['topic_metadata']['type_description_hash'] == graph_hash
    assert topics['/tf_static']['topic_metadata']['offered_qos_profiles'][0]['durability'] == \
        'transient_local'
    assert {n: t['message_count'] for n, t in topics.items()} == {
        '/cam/image': 8, '/cam/camera_info': 1, '/odom': 8, '/tf': 8, '/tf_static': 1}

    got = bag_messages(bag, '/cam/image')
    assert [t for t, _ in got] == sorted(t for t, _ in got)          # receive times, in order
    for sent, (_t, msg) in zip(sent_img, got, strict=True):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
            (sent.header.stamp.sec, sent.header.stamp.nanosec, sent.header.frame_id)
        assert (msg.height, msg.width, msg.encoding, msg.step) == (48, 64, 'rgb8', 192)
        assert bytes(msg.data) == bytes(sent.data)
    for sent, msg in zip(sent_img, mcap_messages(bag, '/cam/image'), strict=True):
        assert msg.header.stamp.sec == sent.header.stamp.sec
        assert bytes(msg.data) == bytes(sent.data)
    (_t, info), = bag_messages(bag, '/cam/camera_info')
    assert list(info.k) == [50.0, 0, 32.0, 0, 50.0, 24.0, 0, 0, 1.0]
    assert list(info.d) == pytest.approx([0.1, -0.01, 0, 0, 0])
    odoms = [m for _t, m in bag_messages(bag, '/odom')]
    assert [o.pose.pose.position.x for o in odoms] == [o.pose.pose.position.x for o in sent_odom]
    assert odoms[3].child_frame_id == 'base_link'
    tfs = [m for _t, m in bag_messages(bag, '/tf')]
    assert [(t.transforms[0].header.stamp.sec, t.transforms[0].transform.translation.x)
            for t in tfs] == [(100 + i, pytest.approx(0.1 * i)) for i in range(8)]
    (_t, st), = bag_messages(bag, '/tf_static')
    assert st.transforms[0].child_frame_id == 'camera_optical'
    assert [m.transforms[0].child_frame_id for m in mcap_messages(bag, '/tf_static')] == \
        ['camera_optical']

    c = counters(bag)
    assert c['camera_filter'] == {'received': 8, 'kept': 8}
    assert c['topics']['/cam/camera_info']['dropped'] == {'unchanged': 7}
    assert c['topics']['/cam/image']['received'] == 8


@pytest.mark.timeout(90)
def test_compressed_sqlite_sigterm_and_bad_topics(node, ros_env, tmp_path):
    from PIL import Image as PilImage
    import io

    pub_img = node.create_publisher(CompressedImage, '/cam/compressed', RELIABLE)
    pub_chatter = node.create_publisher(Int32, '/chatter', RELIABLE)
    pub_numbers = node.create_publisher(Int32, '/numbers', RELIABLE)
    extra = "['/bogus:nonexistent_msgs/msg/Nope', '/chatter:std_msgs/msg/String', '/numbers']"
    rec = start(node, ros_env, tmp_path, {
        'camera_topic': '/cam/compressed', 'camera_info_topic': "''", 'record_tf': False,
        'storage': 'sqlite3', 'compression': 'zstd', 'extra_topics': extra,
        'drop_static': True})
    wait_matched(node, [pub_img, pub_numbers])
    sent = []
    for i in range(6):
        buf = io.BytesIO()
        PilImage.fromarray(view(10 * i)).save(buf, format='JPEG', quality=90)
        msg = CompressedImage(format='jpeg', data=buf.getvalue())
        msg.header.stamp.sec = 200 + i
        pub_img.publish(msg)
        pub_numbers.publish(Int32(data=i * i))
        pub_chatter.publish(Int32(data=-1))
        sent.append(msg)
        time.sleep(0.02)
    st = wait_written(node, {'/cam/compressed': 6, '/numbers': 6})
    assert 'nonexistent_msgs' in st['topics']['/bogus']['error']
    assert 'published as std_msgs/msg/Int32' in st['topics']['/chatter']['error']
    assert rec.signal(signal.SIGTERM) == 0, rec.log()
    log = rec.log()
    assert "cannot record /bogus: message package 'nonexistent_msgs' is not installed" in log
    assert 'cannot record /chatter: published as std_msgs/msg/Int32, not std_msgs/msg/String' \
        in log

    bag = rec.bag
    assert [p.suffix for p in storage_files(bag)] == ['.db3']
    meta = metadata(bag)
    assert (meta['storage_identifier'], meta['compression_mode']) == ('sqlite3', 'message')
    got = [m for _t, m in bag_messages(bag, '/cam/compressed')]
    assert [(m.header.stamp.sec, m.format, bytes(m.data)) for m in got] == \
        [(s.header.stamp.sec, 'jpeg', bytes(s.data)) for s in sent]
    assert [m.data for _t, m in bag_messages(bag, '/numbers')] == [i * i for i in range(6)]
    assert {t['topic_metadata']['name'] for t in meta['topics_with_message_count']} == \
        {'/cam/compressed', '/numbers'}
    assert counters(bag)['camera_filter']['kept'] == 6   # every frame moved


@pytest.mark.timeout(90)
def test_static_frames_dropped_with_triplet_neighbours(node, ros_env, tmp_path):
    pub_img = node.create_publisher(Image, '/cam/image', RELIABLE)
    rec = start(node, ros_env, tmp_path, {'camera_topic': '/cam/image', 'record_tf': False,
                                          'camera_info_topic': "''", 'drop_static': True,
                                          'static_gap': 0.2},
                params_file=REPO / 'config' / 'recorder.yaml')
    wait_matched(node, [pub_img])
    offsets = [0, 4, 8, 12, 16] + [16] * 10 + [20, 24, 28, 32, 36]
    t0 = 50 * 10 ** 9
    for i, x in enumerate(offsets):   # capture stamps 50 ms apart (what the filter reasons on)
        pub_img.publish(image(i, view(x), stamp_ns=t0 + i * 50_000_000))
        time.sleep(0.01)
    wait_until(node, lambda: status(node)['topics']['/cam/image']['received'] == 20, 30,
               '20 frames received')
    assert rec.signal(signal.SIGINT) == 0, rec.log()
    kept = [round((m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec - t0) / 50e6)
            for _t, m in bag_messages(rec.bag, '/cam/image')]
    assert kept == [0, 1, 2, 3, 4, 5, 14, 15, 16, 17, 18, 19]
    c = counters(rec.bag)['camera_filter']
    assert (c['received'], c['kept'], c['dropped_static']) == (20, 12, 8)


@pytest.mark.timeout(120)
def test_services_pause_split_stop_and_repeated_camera_info(node, ros_env, tmp_path):
    pub_img = node.create_publisher(Image, '/cam/image', RELIABLE)
    pub_info = node.create_publisher(CameraInfo, '/cam/camera_info', RELIABLE)
    rec = start(node, ros_env, tmp_path, {
        'camera_topic': '/cam/image', 'camera_info_topic': '/cam/camera_info',
        'record_tf': False, 'start_paused': True, 'max_bag_size': 40000, 'chunk_size': 8192})
    wait_matched(node, [pub_img, pub_info])
    n = {'sent': 0}

    def publish(count):
        for _ in range(count):
            i = n['sent']
            img = image(i, view(i % 100))
            pub_img.publish(img)
            pub_info.publish(camera_info(img.header, fx=50.0 if i < 3 else 60.0))
            n['sent'] += 1
            time.sleep(0.01)
        wait_until(node, lambda: status(node)['topics']['/cam/image']['received'] == n['sent'],
                   30, f'{n["sent"]} received')

    publish(3)                                   # paused: nothing written
    assert status(node)['state'] == 'idle' and not (rec.bag).exists()
    assert call(node, Trigger, '/recorder/start').success
    publish(10)                                  # 10 x 9.3 kB, split at 40 kB
    assert call(node, Trigger, '/recorder/split').success
    publish(2)
    assert call(node, SetBool, '/recorder/pause', SetBool.Request(data=True)).success
    publish(2)
    assert status(node)['state'] == 'paused'
    assert call(node, SetBool, '/recorder/pause', SetBool.Request(data=False)).success
    publish(2)
    wait_written(node, {'/cam/image': 14})
    stop = call(node, Trigger, '/recorder/stop')
    assert stop.success and '/cam/image: 14' in stop.message, stop.message
    st = status(node)
    assert st['state'] == 'idle'
    assert st['topics']['/cam/image']['dropped'] == {'not_recording': 3, 'paused': 2}
    assert not call(node, Trigger, '/recorder/split').success     # nothing open
    assert rec.signal(signal.SIGINT) == 0, rec.log()

    files = storage_files(rec.bag)
    assert len(files) >= 4, files
    secs = [m.header.stamp.sec - 100 for _t, m in bag_messages(rec.bag, '/cam/image')]
    assert secs == list(range(3, 15)) + [17, 18]
    for path in files:      # every file stands alone: it starts with the current camera_info
        infos = mcap_messages(path, '/cam/camera_info')
        assert infos and infos[0].k[0] in (50.0, 60.0)
    fx = [m.k[0] for _t, m in bag_messages(rec.bag, '/cam/camera_info')]
    assert fx[0] == 50.0 and fx[-1] == 60.0 and 60.0 in fx[:2]   # the change is recorded


@pytest.mark.timeout(90)
def test_sigkill_then_bag_repair_recovers_flushed_frames(node, ros_env, tmp_path):
    pub_img = node.create_publisher(Image, '/cam/image', RELIABLE)
    pub_info = node.create_publisher(CameraInfo, '/cam/camera_info', RELIABLE)
    rec = start(node, ros_env, tmp_path, {'camera_topic': '/cam/image',
                                          'camera_info_topic': '/cam/camera_info',
                                          'record_tf': False, 'flush_period': 0.2})
    wait_matched(node, [pub_img, pub_info])
    sent = []
    for i in range(12):
        img = image(i, view(3 * i))
        pub_img.publish(img)
        pub_info.publish(camera_info(img.header))
        sent.append(img)
        time.sleep(0.01)
    wait_written(node, {'/cam/image': 12})
    time.sleep(0.2 + 0.5)          # flush_period + margin: the open chunk has gone to disk
    rec.signal(signal.SIGKILL)
    out = subprocess.run([sys.executable, '-m', 'depth_ego_ros.cli.main', 'bag-repair',
                          str(rec.bag)], env=ros_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'repaired' in out.stdout
    got = [m for _t, m in bag_messages(rec.bag, '/cam/image')]
    assert [(m.header.stamp.sec, bytes(m.data)) for m in got] == \
        [(s.header.stamp.sec, bytes(s.data)) for s in sent]
    assert len(bag_messages(rec.bag, '/cam/camera_info')) == 1


@pytest.mark.timeout(90)
def test_burst_faster_than_disk_gives_bounded_queue_and_counted_drops(node, ros_env, tmp_path):
    pub_img = node.create_publisher(Image, '/cam/image', QoSProfile(depth=200))
    rec = start(node, ros_env, tmp_path, {'camera_topic': '/cam/image', 'record_tf': False,
                                          'camera_info_topic': "''", 'queue_size': 4},
                extra_env={'DEPTH_EGO_RECORDER_TEST_WRITE_DELAY': '0.05'})
    wait_matched(node, [pub_img])
    for i in range(25):                           # back to back: far faster than 20 msg/s
        pub_img.publish(image(i, view(i)))
    topic = wait_until(node, lambda: (lambda t: t if t['received'] == 25 and
                                      t['written'] + t['dropped'].get('queue_full', 0) == 25
                                      else None)(status(node)['topics']['/cam/image']),
                       40, 'the burst to be handled')
    assert topic['dropped']['queue_full'] > 0
    assert status(node)['queue']['peak_messages'] <= 4
    assert rec.signal(signal.SIGINT) == 0, rec.log()
    assert len(bag_messages(rec.bag, '/cam/image')) == topic['written']


@pytest.fixture
def small_disk(tmp_path):
    """A private tmpfs of 384 KiB: a real file system that really fills up (needs root)."""
    mnt = tmp_path / 'disk'
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root (the EFBIG path is tested in test_bags)')
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=384k', 'tmpfs', str(mnt)],
                      capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    yield mnt
    subprocess.run(['umount', '-l', str(mnt)], capture_output=True)


def record_until_error(node, pub_img, period):
    sent = 0
    for i in range(80):
        pub_img.publish(image(i, view(i)))
        sent += 1
        time.sleep(period)
        if i % 5 == 4 and status(node)['state'] == 'error':
            break
    return wait_until(node, lambda: (lambda s: s if s['state'] == 'error' else None)(
        status(node)), 20, 'the recorder to stop with an error')


@pytest.mark.timeout(90)
@pytest.mark.parametrize('floor', [0, 160 * 1024], ids=['disk_full', 'free_space_floor'])
def test_full_disk_stops_cleanly_with_a_valid_bag(node, ros_env, tmp_path, small_disk, floor):
    pub_img = node.create_publisher(Image, '/cam/image', RELIABLE)
    rec = start(node, ros_env, tmp_path, {'camera_topic': '/cam/image', 'record_tf': False,
                                          'camera_info_topic': "''", 'chunk_size': 16384,
                                          'output_dir': str(small_disk), 'min_free_space': floor})
    rec.bag = small_disk / 'rec'
    wait_matched(node, [pub_img])
    st = record_until_error(node, pub_img, period=0.1 if floor else 0.02)
    if floor:
        assert 'below min_free_space' in st['error']
    else:
        assert 'No space left on device' in st['error']
    assert rec.proc.poll() is None                       # the node lives on
    assert not call(node, Trigger, '/recorder/start').success or floor == 0
    assert rec.signal(signal.SIGINT) == 0, rec.log()
    assert 'recording stopped' in rec.log()
    # readable as it is (no repair), every message whole, in order
    secs = [m.header.stamp.sec - 100 for _t, m in bag_messages(rec.bag, '/cam/image')]
    assert len(secs) >= 8 and secs == list(range(len(secs)))
    assert metadata(rec.bag)['message_count'] == len(secs)


def test_params_file_and_launch_file_match_the_node():
    from depth_ego_ros.ros.recorder_node import PARAMS
    cfg = yaml.safe_load((REPO / 'config' / 'recorder.yaml').read_text())
    assert cfg['/**']['ros__parameters'] == {**{p.name: p.default for p in PARAMS},
                                             'extra_topics': ['']}
    launch_file = REPO / 'launch' / 'record.launch.py'
    tree = ast.parse(launch_file.read_text())
    overrides = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                     and node.targets[0].id == 'OVERRIDES')
    assert {k.value for k in overrides.keys} <= {p.name for p in PARAMS}
    if _importable('launch_ros'):   # on a ROS distro
        import importlib.util
        spec = importlib.util.spec_from_file_location('record_launch', launch_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names = {a.name for a in module.generate_launch_description().entities
                 if hasattr(a, 'name')}
        assert {'camera_namespace', 'image_topic', 'params_file', 'stop_timeout'} <= names


def _importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None
