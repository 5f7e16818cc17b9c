"""`depth-ego play`: a bag's messages published at recorded timing, in a separate process, over
real DDS, received here. Timing is asserted loosely (shared CI cores): ordering, spacing to
within a wide band, never a tight deadline."""
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from depth_ego_ros.data.bag_writer import BagWriter  # noqa: E402
from depth_ego_ros.data.bags import TypeCatalog  # noqa: E402
from depth_ego_ros.ros.recorder_graph import to_bag_qos  # noqa: E402

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
T0 = 1_700_000_000 * 10 ** 9
CAM_DT = 100_000_000          # 10 Hz camera in the bag


def image(i):
    msg = Image()
    msg.header.stamp.sec, msg.header.frame_id = i, 'cam'
    msg.height, msg.width, msg.encoding, msg.step = 4, 6, 'mono8', 6
    msg.data = ((np.arange(24) + i) % 256).astype(np.uint8).tobytes()
    return msg


@pytest.fixture
def bag(tmp_path):
    """10 camera frames at 10 Hz, 5 strings at 5 Hz, one latched /latched string."""
    cat = TypeCatalog()
    w = BagWriter(tmp_path / 'play_bag')
    w.add_topic(cat.spec('/play/cam', 'sensor_msgs/msg/Image')[0])
    w.add_topic(cat.spec('/play/text', 'std_msgs/msg/String')[0])
    w.add_topic(cat.spec('/play/latched', 'std_msgs/msg/String', qos=[to_bag_qos(LATCHED)])[0])
    w.write('/play/latched', T0, serialize_message(String(data='static')))
    for i in range(10):
        w.write('/play/cam', T0 + i * CAM_DT, serialize_message(image(i)))
        if i % 2 == 0:
            w.write('/play/text', T0 + i * CAM_DT + 1, serialize_message(String(data=f's{i}')))
    w.close()
    return w.path


@pytest.fixture
def node(ros_env):
    rclpy.init()
    n = rclpy.create_node('play_tester')
    yield n
    n.destroy_node()
    rclpy.shutdown()


def play(node, ros_env, bag, topics, *args, timeout=60):
    """Run `depth-ego play` while collecting [(topic, arrival, msg)] on ``topics``."""
    got = []
    for topic, cls, qos in topics:
        node.create_subscription(cls, topic, lambda m, t=topic: got.append(
            (t, time.monotonic(), m)), qos)
    proc = subprocess.Popen([sys.executable, '-m', 'depth_ego_ros.cli.main', 'play', str(bag),
                             '--wait-for-subscribers', '1', '--wait-timeout', '30', *args],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.02)
    end = time.monotonic() + 1.0          # late deliveries
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    assert proc.returncode == 0, out
    return got, out


@pytest.mark.timeout(120)
def test_play_publishes_recorded_messages_at_recorded_timing(node, ros_env, bag):
    got, out = play(node, ros_env, bag, [('/play/cam', Image, 10), ('/play/text', String, 10),
                                         ('/play/latched', String, LATCHED)],
                    '--rate', '2.0')
    assert 'played 16 messages' in out
    cams = [(a, m) for t, a, m in got if t == '/play/cam']
    assert [m.header.stamp.sec for _a, m in cams] == list(range(10))
    assert all(bytes(m.data) == bytes(image(i).data) and m.encoding == 'mono8'
               for i, (_a, m) in enumerate(cams))
    assert [m.data for t, _a, m in got if t == '/play/text'] == ['s0', 's2', 's4', 's6', 's8']
    assert [m.data for t, _a, m in got if t == '/play/latched'] == ['static']
    # 100 ms apart in the bag, --rate 2: ~50 ms apart on the wire (loose band)
    gaps = np.diff([a for a, _m in cams])
    assert 0.02 < float(np.median(gaps)) < 0.15, gaps
    assert 0.3 < cams[-1][0] - cams[0][0] < 2.0


@pytest.mark.timeout(120)
def test_play_topic_filter_start_offset_and_loop(node, ros_env, bag):
    got, out = play(node, ros_env, bag, [('/play/cam', Image, 10), ('/play/text', String, 10)],
                    '--topics', '/play/text', '--start-offset', '0.35', '--loop',
                    '--max-loops', '2', '--rate', '4')
    assert [t for t, _a, _m in got] == ['/play/text'] * 6
    assert [m.data for _t, _a, m in got] == ['s4', 's6', 's8'] * 2


def test_play_reports_bad_bags_and_options(tmp_path, ros_env):
    def run(*args):
        return subprocess.run([sys.executable, '-m', 'depth_ego_ros.cli.main', 'play', *args],
                              env=ros_env, capture_output=True, text=True, timeout=60)
    out = run(str(tmp_path / 'nope'))
    assert out.returncode == 1 and 'no bag at' in out.stderr
    (tmp_path / 'killed').mkdir()
    (tmp_path / 'killed' / 'killed_0.mcap').write_bytes(b'\x89MCAP0\r\n')
    out = run(str(tmp_path / 'killed'))
    assert out.returncode == 1 and 'bag-repair' in out.stderr
    out = run(str(tmp_path), '--rate', '0')
    assert out.returncode == 2 and 'rate must be > 0' in out.stderr
