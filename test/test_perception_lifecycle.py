"""The perception node as a lifecycle node, driven over DDS through its lifecycle services
(lifecycle_msgs ChangeState / GetState, what nav2_lifecycle_manager and `ros2 lifecycle` call),
and its parameters through the parameter services: a failing configure, start-up-only values
taken while unconfigured and refused (with the reason) once configured, a run-time value
applied, frames served only while active, networks kept over deactivate, released by cleanup.
"""
import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from depth_ego_ros.ros import conversions as cv, qos  # noqa: E402
from depth_ego_ros.ros.testing import NodeProcess, Probe, generated_frame  # noqa: E402

TIMEOUT = 60.0
NODE = '/depth_ego_node'
W, H = 96, 64


class Lifecycle:
    def __init__(self, probe):
        self.probe = probe
        n = probe.node
        self.change = n.create_client(ChangeState, NODE + '/change_state')
        self.get = n.create_client(GetState, NODE + '/get_state')
        self.params = n.create_client(SetParameters, NODE + '/set_parameters')
        for c in (self.change, self.get, self.params):
            assert c.wait_for_service(timeout_sec=TIMEOUT), c.srv_name

    def _call(self, client, req):
        future = client.call_async(req)
        assert self.probe.wait_until(future.done, TIMEOUT), client.srv_name
        return future.result()

    def state(self) -> int:
        return self._call(self.get, GetState.Request()).current_state.id

    def transition(self, tid) -> bool:
        return self._call(self.change, ChangeState.Request(
            transition=Transition(id=tid))).success

    def set(self, **values):
        req = SetParameters.Request(parameters=[
            Parameter(k.replace('__', '.'), value=v).to_parameter_msg() for k, v in values.items()])
        return self._call(self.params, req).results


def test_lifecycle_transitions_and_parameters_over_dds(ros_env):
    node = NodeProcess('depth_ego_ros.ros.perception_lifecycle', {
        'width': 64, 'height': 64, 'num_threads': 1, 'qos.input': 'reliable',
        'diagnostics.period': 0.5, 'camera_info.sync_timeout': 5.0,
        'checkpoint': '/nonexistent/checkpoint'}, ros_env)
    probe = Probe('lifecycle_probe')
    t = [100.0]

    def send():
        t[0] += 0.1
        header = Header(stamp=cv.sec_to_stamp(t[0]), frame_id='cam')
        img = cv.rgb8_to_image(generated_frame(W, H, int(t[0] * 10) % 8))
        img.header = header
        f = 0.9 * W
        K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
        info_pub.publish(cv.make_camera_info(K, W, H, header))
        image_pub.publish(img)
        return header.stamp

    def depth_for(stamp, timeout):
        ok = probe.wait_until(lambda: any(m.header.stamp == stamp for m in probe.msgs['depth']),
                              timeout)
        return next((m for m in probe.msgs['depth'] if m.header.stamp == stamp), None) if ok else None

    try:
        lc = Lifecycle(probe)
        image_pub = probe.publisher(Image, 'image', qos.profile('reliable', 5))
        info_pub = probe.publisher(CameraInfo, 'camera_info', qos.profile('reliable', 5))
        probe.subscribe('depth', Image, 'depth', qos.profile('reliable', 20))
        n = probe.node
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert n.count_subscribers('/image') == 0 and n.count_publishers('/depth') == 0

        # configure with an unreadable checkpoint: a failed transition, back to unconfigured
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.wait_for_log('configure failed', TIMEOUT), node.log_text()

        # unconfigured: start-up-only values are taken (configure reads them)
        (ok,) = lc.set(checkpoint='')
        assert ok.successful, ok.reason
        assert lc.transition(Transition.TRANSITION_CONFIGURE), node.log_text()
        assert lc.state() == State.PRIMARY_STATE_INACTIVE
        # inactive: publishers exist, no subscription, nothing flows
        assert probe.wait_until(lambda: n.count_publishers('/depth') == 1, TIMEOUT)
        assert n.count_subscribers('/image') == 0

        # configured: a start-up-only value is refused with the reason; a run-time one applies
        (ro,) = lc.set(width=128)
        assert not ro.successful
        assert 'width' in ro.reason and 'networks' in ro.reason and 'clean up' in ro.reason
        (rt,) = lc.set(points__stride=2)
        assert rt.successful, rt.reason
        (off,) = lc.set(online_refinement__steps=5)
        assert not off.successful and 'online refinement is off' in off.reason

        # activate: the node subscribes and serves frames
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert lc.state() == State.PRIMARY_STATE_ACTIVE
        assert probe.wait_matched([image_pub, info_pub], TIMEOUT)
        assert probe.wait_until(lambda: n.count_subscribers('/depth') >= 1, TIMEOUT)
        got = None
        for _ in range(10):
            got = depth_for(send(), 10.0)
            if got is not None:
                break
        assert got is not None, node.log_text()
        assert (got.width, got.height, got.encoding) == (W, H, '32FC1')

        # deactivate: subscriptions gone, networks kept (no second 'configured' line)
        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.state() == State.PRIMARY_STATE_INACTIVE
        assert probe.wait_until(lambda: n.count_subscribers('/image') == 0, TIMEOUT)
        assert node.wait_for_log('networks stay loaded', TIMEOUT)
        assert depth_for(send(), 2.0) is None
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert probe.wait_until(lambda: n.count_subscribers('/image') == 1, TIMEOUT)
        again = None
        for _ in range(10):
            again = depth_for(send(), 10.0)
            if again is not None:
                break
        assert again is not None, node.log_text()
        assert node.log_text().count(': configured: ') == 1

        # deactivate + cleanup: publishers released, start-up values settable again
        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.wait_until(lambda: n.count_publishers('/depth') == 0, TIMEOUT)
        assert node.wait_for_log('networks released', TIMEOUT)
        (ok,) = lc.set(width=128)
        assert ok.successful, ok.reason
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert node.wait_for_log('128x64', TIMEOUT), node.log_text()

        assert lc.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert lc.state() == State.PRIMARY_STATE_FINALIZED
        assert node.alive(), node.log_text()
    finally:
        probe.close()
        rc = node.stop()
    assert rc == 0, node.log_text()
