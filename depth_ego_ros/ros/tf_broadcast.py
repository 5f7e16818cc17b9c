"""TF output: tf2_ros' broadcasters when importable (a distro), else tf2_msgs/TFMessage published
directly on /tf and /tf_static with the same QoS as tf2_ros (/tf_static transient local, so late
subscribers still get the static transforms)."""
from __future__ import annotations

from depth_ego_ros.ros import compat, qos


class TfBroadcaster:
    """``send(transforms)`` on /tf, ``send_static(transforms)`` on /tf_static (created on first
    use), ``subscribers()`` = how many subscribers /tf has (0 = nobody listens)."""

    def __init__(self, node):
        self._node = node
        self._static = None
        self._static_pub = None
        self.available = compat.tf2_ros is not None or compat.TFMessage is not None
        if compat.tf2_ros is not None:
            self._dynamic = compat.tf2_ros.TransformBroadcaster(node)
            self._pub = self._dynamic.pub_tf
        elif compat.TFMessage is not None:
            self._dynamic = None
            self._pub = node.create_publisher(compat.TFMessage, '/tf', qos.tf_profile())
        else:
            self._dynamic = self._pub = None
            node.get_logger().warning(
                'tf2_msgs is not installed: no TF will be published (odometry still is)')

    def subscribers(self) -> int:
        return self._pub.get_subscription_count() if self._pub is not None else 0

    def send(self, transforms):
        if self._dynamic is not None:
            self._dynamic.sendTransform(list(transforms))
        elif self._pub is not None:
            self._pub.publish(compat.TFMessage(transforms=list(transforms)))

    def send_static(self, transforms):
        """Publish the complete set of static transforms of this node (replaces the previous)."""
        if compat.tf2_ros is not None:
            if self._static is None:
                self._static = compat.tf2_ros.StaticTransformBroadcaster(self._node)
            self._static.sendTransform(list(transforms))
        elif compat.TFMessage is not None:
            if self._static_pub is None:
                self._static_pub = self._node.create_publisher(
                    compat.TFMessage, '/tf_static', qos.tf_static_profile())
            self._static_pub.publish(compat.TFMessage(transforms=list(transforms)))

    def close(self):
        """Destroy this broadcaster's publishers (a lifecycle node's cleanup)."""
        pubs = [self._pub, self._static_pub,
                getattr(self._static, 'pub_tf', None) if self._static is not None else None]
        for pub in pubs:
            if pub is not None:
                self._node.destroy_publisher(pub)
        self._dynamic = self._pub = self._static = self._static_pub = None
