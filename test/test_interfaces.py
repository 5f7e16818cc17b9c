"""tf2_msgs/TFMessage, built here from the project's own .msg when the environment has no
tf2_msgs, must be the real type on the wire: same RIHS01 hash as the upstream definition and
received across processes on /tf."""
import subprocess
import sys
import textwrap
import time

import pytest

rosbags_typesys = pytest.importorskip('rosbags.typesys')


def _upstream_hash(name):
    stores = rosbags_typesys.Stores
    store = rosbags_typesys.get_typestore(getattr(stores, 'ROS2_KILTED', stores.ROS2_JAZZY))
    return store.hash_rihs01(name)


@pytest.mark.timeout(60)
def test_tfmessage_type_hash_matches_upstream(ros_env):
    import rclpy
    from tf2_msgs.msg import TFMessage
    rclpy.init()
    try:
        node = rclpy.create_node('hash_probe')
        node.create_publisher(TFMessage, '/tf', 10)
        infos = node.get_publishers_info_by_topic('/tf')
        assert infos, 'own publisher not visible in the graph'
        assert str(infos[0].topic_type_hash) == _upstream_hash('tf2_msgs/msg/TFMessage')
        node.destroy_node()
    finally:
        rclpy.shutdown()


PUBLISHER = textwrap.dedent('''
    import time, rclpy
    from tf2_msgs.msg import TFMessage
    from geometry_msgs.msg import TransformStamped
    rclpy.init()
    node = rclpy.create_node('tf_pub')
    pub = node.create_publisher(TFMessage, '/tf', 10)
    t = TransformStamped()
    t.header.frame_id = 'odom'
    t.child_frame_id = 'camera_optical_frame'
    t.transform.translation.x = 1.5
    t.transform.rotation.w = 1.0
    deadline = time.time() + 30
    while pub.get_subscription_count() == 0 and time.time() < deadline:
        time.sleep(0.02)
    for _ in range(50):
        pub.publish(TFMessage(transforms=[t]))
        time.sleep(0.05)
''')


@pytest.mark.timeout(90)
def test_tfmessage_received_from_another_process(ros_env):
    import rclpy
    from tf2_msgs.msg import TFMessage
    rclpy.init()
    node = rclpy.create_node('tf_sub')
    got = []
    node.create_subscription(TFMessage, '/tf', got.append, 10)
    proc = subprocess.Popen([sys.executable, '-c', PUBLISHER], env=ros_env)
    try:
        deadline = time.time() + 60
        while not got and time.time() < deadline and proc.poll() in (None, 0):
            rclpy.spin_once(node, timeout_sec=0.1)
        assert got, 'no TFMessage received on /tf'
        tf = got[0].transforms[0]
        assert (tf.header.frame_id, tf.child_frame_id) == ('odom', 'camera_optical_frame')
        assert tf.transform.translation.x == pytest.approx(1.5)
    finally:
        proc.kill()
        proc.wait()
        node.destroy_node()
        rclpy.shutdown()
