"""depth_ego_lifecycle_node: the perception node as a managed (lifecycle) node, for robot stacks
that bring nodes up through a lifecycle manager (nav2_lifecycle_manager, launch_ros
LifecycleNode + ChangeState events). Same name (depth_ego_node), parameters, topics and outputs
as the plain node (perception_node.py, still the default); what happens when:

  unconfigured --configure-->  inactive   the networks load / compile (PerceptionWorker); the
                                          publishers exist (lifecycle publishers: silent until
                                          active). A checkpoint that cannot be read, a bad
                                          parameter combination, an unknown backend... log one
                                          error line and the transition FAILS (back to
                                          unconfigured: fix the parameters, configure again)
  inactive --activate-->       active     subscriptions, the worker thread, the online refiner,
                                          /diagnostics
  active --deactivate-->       inactive   subscriptions gone, worker stopped; the networks stay
                                          loaded (activate again is immediate)
  inactive --cleanup-->        unconfigured  networks, publishers and buffers released (GPU
                                          memory too); start-up-only parameters can be set again
  any --shutdown-->            finalized  as cleanup

Parameters: the start-up-only ones (``read_only`` in perception_params.py) can be set while
unconfigured and are refused with a reason in every other state; the others apply at run time
as with the plain node.
"""
from __future__ import annotations

import gc
import sys

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from depth_ego_ros.ros import qos
from depth_ego_ros.ros.node_main import run_node
from depth_ego_ros.ros.params import declare, on_set_validator
from depth_ego_ros.ros.perception_diagnostics import PerceptionDiagnostics
from depth_ego_ros.ros.perception_node import (NODE_NAME, create_camera_publishers,
                                               create_camera_subscriptions,
                                               create_speed_subscription)
from depth_ego_ros.ros.perception_outputs import PerceptionOutputs
from depth_ego_ros.ros.perception_params import PARAMS, runtime_refusal
from depth_ego_ros.ros.perception_worker import PerceptionWorker
from depth_ego_ros.ros.tf_broadcast import TfBroadcaster


class PerceptionLifecycleNode(LifecycleNode):
    """See the module docstring. ``work`` is None while unconfigured."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, PARAMS, enforce_read_only=False)
        self.add_on_set_parameters_callback(on_set_validator(PARAMS, self._apply_params,
                                                             self._refuse))
        self.work = None
        self._pubs, self._subs, self._tf = [], [], None
        self._diag_timer = None
        self.get_logger().info('unconfigured: waiting for configure (lifecycle services '
                               f'{self.get_fully_qualified_name()}/change_state)')

    # -- parameters ------------------------------------------------------------------------------
    def _refuse(self, spec, value):
        work = self.work
        return runtime_refusal(spec, value, lifecycle=True, configured=work is not None,
                               refiner_on=work is not None and work.refiner is not None)

    def _apply_params(self, changes: dict):
        p = dict(self.p)
        p.update(changes)
        self.p = p
        if self.work is not None:
            self.work.apply_params(changes)

    # -- transitions -----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            work = PerceptionWorker(lambda: self.p, self.get_logger(), self.get_clock())
        except Exception as exc:              # checkpoint, backend, parameter combination...
            self.get_logger().error(f'configure failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.FAILURE
        out_qos = qos.profile(self.p['qos.output'], self.p['qos.output_depth'])
        for cam in work.cams:
            create_camera_publishers(self, work, cam, out_qos, self.create_lifecycle_publisher)
            self._pubs += [x for x in (cam.pub_depth, cam.pub_depth_info, cam.pub_colored,
                                       cam.pub_points, cam.pub_odom, cam.pub_exp) if x is not None]
        self._tf = TfBroadcaster(self)
        work.outputs = PerceptionOutputs(lambda: self.p, self._tf, work.multi, work.T_base_cam,
                                         work.estimator.point_cloud)
        self.diag = PerceptionDiagnostics(work, lambda: self.p, self.get_name())
        self.pub_diag = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics', 10)
        self._pubs.append(self.pub_diag)
        self.work = work
        self.get_logger().info(
            f'configured: {self.p["model"]}/{work.pose_model} {self.p["width"]}x'
            f'{self.p["height"]} on {work.device} ({work.backend}), checkpoint '
            f'{self.p["checkpoint"] or "NONE (random weights)"}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        work, p = self.work, self.p
        in_qos = qos.profile(p['qos.input'], p['qos.input_depth'])
        for cam in work.cams:
            create_camera_subscriptions(self, work, cam, p['image_transport'], in_qos)
            self._subs += [cam.sub_info, cam.sub_image]
        speed = create_speed_subscription(self, work, p, in_qos)
        if speed is not None:
            self._subs.append(speed)
        work.start()
        self._diag_timer = self.create_timer(p['diagnostics.period'], self._publish_diagnostics)
        self.get_logger().info('active: ' + ', '.join(c.sub_image.topic_name for c in work.cams))
        return super().on_activate(state)           # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_work()
        self.get_logger().info('inactive (networks stay loaded)')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info('unconfigured (networks released)')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # -- helpers -------------------------------------------------------------------------------
    def _stop_work(self):
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.work is not None:
            self.work.stop()

    def _release(self):
        """Stop, save refined weights when asked, drop networks and publishers."""
        self._stop_work()
        if self.work is not None:
            self.work.close()
        for pub in self._pubs:
            self.destroy_lifecycle_publisher(pub)
        self._pubs = []
        if self._tf is not None:
            self._tf.close()
            self._tf = None
        self.work = None
        gc.collect()
        torch = sys.modules.get('torch')
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _publish_diagnostics(self):
        self.pub_diag.publish(self.diag.array(self.get_clock()))

    def close(self):
        """Called by run_node when the process stops (from any state)."""
        if self.work is not None:
            self._stop_work()
            self.work.close()


def main(args=None) -> int:
    return run_node(PerceptionLifecycleNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
