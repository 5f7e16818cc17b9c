"""depth_ego_node: one camera in -> depth image, coloured depth, point cloud, odometry and TF out.

Topics (relative names resolve in the node's namespace; remap them freely)
  in   image               sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)   image_transport=raw
  in   image/compressed    sensor_msgs/CompressedImage (jpeg, png)        image_transport=compressed
  in   camera_info         sensor_msgs/CameraInfo (intrinsics; fallback: camera_info.fallback_k, or
                           with learned_intrinsics the learned K until a camera_info arrives)
  in   <scale.speed_topic> nav_msgs/Odometry | geometry_msgs/TwistStamped   (scale.mode=speed only)
  out  depth               sensor_msgs/Image 32FC1, metres, camera resolution, NaN = invalid
  out  depth/camera_info   sensor_msgs/CameraInfo matching ``depth``
  out  depth/colored       sensor_msgs/Image rgb8, colour-mapped inverse depth
  out  points              sensor_msgs/PointCloud2 x, y, z, rgb (optical frame)
  out  odom                nav_msgs/Odometry (child: frames.base, or the camera frame)
  out  explainability      sensor_msgs/Image mono8, network resolution (pose_model posexp only)
  out  /tf, /tf_static     tf2_msgs/TFMessage: odom -> child; optional static base -> camera
  out  /diagnostics        diagnostic_msgs/DiagnosticArray
Every image output carries the input image's header (stamp and optical frame).

Runtime model: subscription callbacks only store the newest frame in a one-item slot (a newer
frame replaces an unprocessed one and counts as dropped); a single worker thread decodes, runs the
estimator, builds the outputs that have subscribers and publishes them. Bad input never stops the
node: each kind of problem gets one throttled log line and a counter in the diagnostics.

This file is the node's table of topics and the calls that wire them; the pieces live beside it:
parameters perception_params.py, the work (estimator, slots, worker thread) perception_worker.py,
per-camera state and camera_info pairing perception_camera.py, decoding / intrinsics / bad input
perception_inputs.py, output messages perception_outputs.py, /diagnostics
perception_diagnostics.py.

Multi-camera mode (parameter ``cameras: [front, left, ...]``): one node process serves every
camera. Each camera <cam> has its own subscriptions <cam>/image (or <cam>/image/compressed) and
<cam>/camera_info, its own latest-frame slot and drop counter, pose chain, camera_info pairing,
bad-input counters and diagnostics status ("<node>: perception <cam>"), and publishes <cam>/depth,
<cam>/depth/camera_info, <cam>/depth/colored, <cam>/points and <cam>/odom, every message stamped
with that camera's own image header; odometry and TF go frames.camera_odom ('{camera}_odom') ->
the camera's optical frame. The worker takes every waiting frame (after waiting up to
``batch_window`` s for the other recently active cameras) and runs them through the networks as
one ``Estimator.infer_batch`` call (one depth and one pose network call). A bad frame drops only
itself: decoding and intrinsics are checked per camera, and a batch the estimator refuses is
retried frame by frame.
"""
from __future__ import annotations

import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from depth_ego_ros.ros import qos
from depth_ego_ros.ros.node_main import run_node
from depth_ego_ros.ros.params import declare, on_set_validator
from depth_ego_ros.ros.perception_camera import CameraState
from depth_ego_ros.ros.perception_diagnostics import PerceptionDiagnostics
from depth_ego_ros.ros.perception_outputs import PerceptionOutputs
from depth_ego_ros.ros.perception_params import (DEFAULT_CAMERA_FRAME, PARAMS,  # noqa: F401
                                                 runtime_refusal)
from depth_ego_ros.ros.perception_worker import PerceptionWorker
from depth_ego_ros.ros.tf_broadcast import TfBroadcaster

NODE_NAME = 'depth_ego_node'


def create_camera_subscriptions(node, work: PerceptionWorker, cam: CameraState, transport: str,
                                in_qos):
    """One camera's subscriptions (names relative to the camera's prefix)."""
    pre = cam.prefix
    # camera_info first: when both are ready the executor serves it before the image
    cam.sub_info = node.create_subscription(
        CameraInfo, pre + 'camera_info', lambda m, c=cam: work.on_camera_info(c, m), in_qos)
    if transport == 'compressed':
        cam.sub_image = node.create_subscription(
            CompressedImage, pre + 'image/compressed', lambda m, c=cam: work.on_image(c, m), in_qos)
    else:
        cam.sub_image = node.create_subscription(
            Image, pre + 'image', lambda m, c=cam: work.on_image(c, m), in_qos)


def create_camera_publishers(node, work: PerceptionWorker, cam: CameraState, out_qos,
                             create_publisher=None):
    """One camera's publishers. ``create_publisher``: node.create_publisher (default) or a
    lifecycle node's create_lifecycle_publisher."""
    create_publisher = create_publisher or node.create_publisher
    pre = cam.prefix
    cam.pub_depth = create_publisher(Image, pre + 'depth', out_qos)
    cam.pub_depth_info = create_publisher(CameraInfo, pre + 'depth/camera_info', out_qos)
    cam.pub_colored = create_publisher(Image, pre + 'depth/colored', out_qos)
    cam.pub_points = create_publisher(PointCloud2, pre + 'points', out_qos)
    cam.pub_odom = create_publisher(Odometry, pre + 'odom', out_qos)
    cam.pub_exp = (create_publisher(Image, pre + 'explainability', out_qos)
                   if work.pose_model == 'posexp' else None)


def create_camera_topics(node, work: PerceptionWorker, cam: CameraState, transport: str,
                         in_qos, out_qos, create_publisher=None):
    """One camera's subscriptions and publishers (names relative to the camera's prefix)."""
    create_camera_subscriptions(node, work, cam, transport, in_qos)
    create_camera_publishers(node, work, cam, out_qos, create_publisher)


def create_speed_subscription(node, work: PerceptionWorker, p: dict, in_qos):
    """scale.mode speed: the platform speed topic (else None)."""
    if p['scale.mode'] != 'speed':
        return None
    msg_type = Odometry if p['scale.speed_type'] == 'odometry' else TwistStamped
    sub = node.create_subscription(msg_type, p['scale.speed_topic'], work.on_speed, in_qos)
    work.speed_topic = sub.topic_name
    return sub


class PerceptionNode(Node):
    """See the module docstring. ``close()`` stops the worker (call before destroy_node)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        # start-up-only parameters are refused by the callback, with the reason and what to do
        self.p = declare(self, PARAMS, enforce_read_only=False)
        self.add_on_set_parameters_callback(on_set_validator(PARAMS, self._apply_params,
                                                             self._refuse))
        # the networks load here (ValueError / OSError: the node does not start)
        self.work = work = PerceptionWorker(lambda: self.p, self.get_logger(), self.get_clock())
        p = self.p

        # -- topics -------------------------------------------------------------------------------
        in_qos = qos.profile(p['qos.input'], p['qos.input_depth'])
        out_qos = qos.profile(p['qos.output'], p['qos.output_depth'])
        for cam in work.cams:
            create_camera_topics(self, work, cam, p['image_transport'], in_qos, out_qos)
        self.sub_speed = create_speed_subscription(self, work, p, in_qos)
        work.outputs = PerceptionOutputs(lambda: self.p, TfBroadcaster(self), work.multi,
                                         work.T_base_cam, work.estimator.point_cloud)
        self.diag = PerceptionDiagnostics(work, lambda: self.p, self.get_name())
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(p['diagnostics.period'], self._publish_diagnostics)

        # names of the single-node layout, kept for callers
        self.estimator, self.cams, self.multi = work.estimator, work.cams, work.multi
        self.counts, self.chain = work.counts, work.cams[0].chain
        if not work.multi:
            c0 = work.cams[0]
            self.sub_info, self.sub_image = c0.sub_info, c0.sub_image
            self.pub_depth, self.pub_depth_info = c0.pub_depth, c0.pub_depth_info
            self.pub_colored, self.pub_points, self.pub_odom = c0.pub_colored, c0.pub_points, c0.pub_odom

        work.start()
        inputs = ', '.join(c.sub_image.topic_name for c in work.cams)
        self.get_logger().info(
            f'ready: {p["model"]}/{work.pose_model} {p["width"]}x{p["height"]}'
            f'{" (learned intrinsics)" if work.learned else ""} on {work.device} ({work.backend}, '
            f'{work.precision}: {work.backend_reason}), input {inputs} '
            f'[{p["qos.input"]}], checkpoint {p["checkpoint"] or "NONE (random weights)"}'
            + (f', {len(work.cams)} cameras batched (window {p["batch_window"]} s)' if work.multi else ''))

    def _refuse(self, spec, value):
        work = getattr(self, 'work', None)
        return runtime_refusal(spec, value, refiner_on=work is None or work.refiner is not None)

    def _apply_params(self, changes: dict):
        p = dict(self.p)
        p.update(changes)
        self.p = p                                  # one atomic swap; the worker reads self.p
        self.work.apply_params(changes)

    def diagnostics(self, cam: CameraState | None = None) -> DiagnosticStatus:
        """The status of ``cam`` (default: the first / only camera)."""
        return self.diag.status(cam or self.work.cams[0])

    def _publish_diagnostics(self):
        self.pub_diag.publish(self.diag.array(self.get_clock()))

    def close(self):
        self.work.close()


def main(args=None) -> int:
    return run_node(PerceptionNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
