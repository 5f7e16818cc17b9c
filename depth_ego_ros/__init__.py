"""depth_ego_ros: self-supervised monocular depth and ego-motion for ROS 2.

Layers (imports go down only): ``core`` (torch/numpy, no ROS) -> ``data`` (bags, synthetic
world, datasets) -> ``training`` / ``evaluation`` -> ``ros`` (the only rclpy users) -> ``cli``.
"""

__version__ = '0.1.0'
