"""The perception node's odometry: relative camera motions chained into the pose, twist and
covariances of the odometry child frame. numpy only (plus the project's geometry helpers); the
message packing lives in conversions.py, the point cloud and the colour-mapped depth come from the
estimator (``Estimator.point_cloud``, ``colorize_disparity``)."""
from __future__ import annotations

import numpy as np

from depth_ego_ros.core.geometry import invert_pose, matrix_to_axis_angle_np


class PoseChain:
    """Chains relative camera motions into the pose of the odometry child frame in ``odom``.

    ``T_base_cam`` is the camera's pose in the child frame (identity when the child is the camera
    itself): a camera motion ``rel`` (= T_prev_curr of the camera) moves the child by
    ``T_base_cam @ rel @ inv(T_base_cam)``. The odometry origin is the child's pose at the first
    frame after a reset.

    Uncertainty: a monocular network gives no covariance, so an honest error model is used: each
    step adds an isotropic variance of (translation_noise * |step translation|)^2 (+ a tiny floor)
    and (rotation_noise * step angle)^2, accumulated as a random walk in the pose covariance; the
    twist covariance is the last step's variance / dt^2. Twist is unknown (variance
    ``UNKNOWN_VARIANCE``) on the first frame after a reset.
    """
    UNKNOWN_VARIANCE = 1e6
    _FLOOR = 1e-8

    def __init__(self, T_base_cam=None, translation_noise: float = 0.1, rotation_noise: float = 0.1):
        self.T_base_cam = np.eye(4) if T_base_cam is None else np.asarray(T_base_cam, np.float64)
        self._T_cam_base = invert_pose(self.T_base_cam)
        self.translation_noise = translation_noise
        self.rotation_noise = rotation_noise
        self.reset()

    def reset(self):
        self.pose = np.eye(4)
        self.steps = 0
        self._pose_var = np.zeros(6)
        self.linear = np.zeros(3)
        self.angular = np.zeros(3)
        self.twist_var = np.full(6, self.UNKNOWN_VARIANCE)

    def update(self, rel_cam: np.ndarray | None, dt: float | None):
        """Add one camera motion (None = first frame: nothing moves, twist unknown)."""
        if rel_cam is None:
            self.linear[:] = 0.0
            self.angular[:] = 0.0
            self.twist_var = np.full(6, self.UNKNOWN_VARIANCE)
            return
        step = self.T_base_cam @ np.asarray(rel_cam, np.float64) @ self._T_cam_base
        self.pose = self.pose @ step
        self.steps += 1
        t = step[:3, 3]
        rotvec = matrix_to_axis_angle_np(step[:3, :3])
        var_t = (self.translation_noise * np.linalg.norm(t)) ** 2 + self._FLOOR
        var_r = (self.rotation_noise * np.linalg.norm(rotvec)) ** 2 + self._FLOOR
        step_var = np.array([var_t] * 3 + [var_r] * 3)
        self._pose_var += step_var
        if dt is not None and dt > 0:
            self.linear = t / dt
            self.angular = rotvec / dt
            self.twist_var = step_var / dt ** 2
        else:
            self.linear[:] = 0.0
            self.angular[:] = 0.0
            self.twist_var = np.full(6, self.UNKNOWN_VARIANCE)

    @property
    def pose_covariance(self) -> np.ndarray:
        return np.diag(self._pose_var)

    @property
    def twist_covariance(self) -> np.ndarray:
        return np.diag(self.twist_var)

    def camera_pose(self) -> np.ndarray:
        """Pose of the camera in ``odom`` (= chained pose @ T_base_cam)."""
        return self.pose @ self.T_base_cam
