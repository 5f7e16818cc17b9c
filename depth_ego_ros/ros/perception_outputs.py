"""The perception node's outputs: which ones somebody listens to, the header every output
carries, and building + publishing depth, depth/camera_info, depth/colored, points,
explainability, odom and TF for one frame. The publishers are created by the node (its table
of topics) and found on each camera (``cam.pub_*``), so a plain and a lifecycle node can use
the same code.
"""
from __future__ import annotations

import math

import numpy as np
from std_msgs.msg import Header

from depth_ego_ros.ros import conversions as conv
from depth_ego_ros.ros.perception_camera import CameraState
from depth_ego_ros.ros.perception_params import DEFAULT_CAMERA_FRAME

OUTPUTS = ('depth', 'colored', 'points', 'odom', 'tf', 'explainability')


class PerceptionOutputs:
    """``params()``: the node's current parameters; ``tf``: a TfBroadcaster; ``multi``: several
    cameras (frame names per camera); ``T_base_cam``: the static base -> camera transform;
    ``point_cloud``: Estimator.point_cloud (back-projects the last depth on its device)."""

    def __init__(self, params, tf, multi: bool, T_base_cam: np.ndarray, point_cloud):
        from depth_ego_ros.core.visualize import colorize_disparity
        from depth_ego_ros.core.networks.posexp_net import mask_to_mono8
        self._params = params
        self.tf = tf
        self.multi = multi
        self.T_base_cam = T_base_cam
        self._point_cloud = point_cloud
        self._colorize = colorize_disparity
        self._mask_to_mono8 = mask_to_mono8

    def wanted(self, cam: CameraState) -> dict:
        """output -> True when it is enabled and somebody subscribes to it."""
        p = self._params()
        return {
            'depth': p['publish.depth'] and (cam.pub_depth.get_subscription_count()
                                             + cam.pub_depth_info.get_subscription_count()) > 0,
            'colored': p['publish.colored'] and cam.pub_colored.get_subscription_count() > 0,
            'points': p['publish.points'] and cam.pub_points.get_subscription_count() > 0,
            'odom': p['publish.odom'] and cam.pub_odom.get_subscription_count() > 0,
            'tf': p['publish.tf'] and self.tf.subscribers() > 0,
            'explainability': (cam.pub_exp is not None and p['publish.explainability']
                               and cam.pub_exp.get_subscription_count() > 0),
        }

    def header(self, cam: CameraState, msg) -> Header:
        """The input image's stamp with the camera's optical frame."""
        if self.multi:
            frame = msg.header.frame_id or f'{cam.name.replace("/", "_")}_optical_frame'
        else:
            frame = self._params()['frames.camera'] or msg.header.frame_id or DEFAULT_CAMERA_FRAME
        return Header(stamp=msg.header.stamp, frame_id=frame)

    def odom_frame(self, cam: CameraState) -> str:
        p = self._params()
        if self.multi:
            return p['frames.camera_odom'].replace('{camera}', cam.name.replace('/', '_'))
        return p['frames.odom']

    def publish_images(self, cam: CameraState, want, header, depth, K, info_msg):
        """depth + depth/camera_info (the input's camera_info re-stamped, else one made from K),
        depth/colored and points."""
        p = self._params()
        if want['depth']:
            cam.pub_depth.publish(conv.numpy_to_image(depth, '32FC1', header))
            info = (conv.camera_info_with_header(info_msg, header) if info_msg is not None
                    else conv.make_camera_info(K, depth.shape[1], depth.shape[0], header))
            cam.pub_depth_info.publish(info)
            cam.counts['published_depth'] += 1
        if want['colored']:
            colored = self._colorize(depth, p['colored.percentile'])
            cam.pub_colored.publish(conv.numpy_to_image(colored, 'rgb8', header))
            cam.counts['published_colored'] += 1
        if want['points']:                          # back-projected on the estimator's device
            kwargs = {'camera_id': cam.cid} if self.multi else {}
            packed = self._point_cloud(stride=p['points.stride'], min_range=p['points.min_range'],
                                       max_range=p['points.max_range'] or math.inf, **kwargs)
            cam.pub_points.publish(conv.packed_to_cloud(packed, header))
            cam.counts['published_points'] += 1

    def publish_explainability(self, cam: CameraState, header, mask):
        cam.pub_exp.publish(conv.numpy_to_image(self._mask_to_mono8(mask), 'mono8', header))
        cam.counts['published_explainability'] += 1

    def publish_odometry(self, cam: CameraState, want, header):
        """odom and TF of the camera's pose chain (and, once per camera frame, the static
        base -> camera transform)."""
        p = self._params()
        child = p['frames.base'] or header.frame_id
        odom = self.odom_frame(cam)
        if p['static_transform.publish'] and cam.static_frame != header.frame_id:
            self.tf.send_static([conv.pose_to_transform(self.T_base_cam, header.stamp,
                                                        p['frames.base'], header.frame_id)])
            cam.static_frame = header.frame_id
        chain = cam.chain
        if want['odom']:
            cam.pub_odom.publish(conv.pose_to_odometry(
                chain.pose, header.stamp, odom, child,
                linear=chain.linear, angular=chain.angular,
                pose_covariance=chain.pose_covariance,
                twist_covariance=chain.twist_covariance))
            cam.counts['published_odom'] += 1
        if want['tf']:
            self.tf.send([conv.pose_to_transform(chain.pose, header.stamp, odom, child)])
            cam.counts['published_tf'] += 1


__all__ = ['OUTPUTS', 'PerceptionOutputs']
