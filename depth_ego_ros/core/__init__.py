"""Pure torch/numpy core: networks, geometry, losses, checkpoints, the Estimator. No ROS imports."""
