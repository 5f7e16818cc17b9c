"""Camera geometry: back-projection, projection, rotations, poses and intrinsics.

Two modules, re-exported here (``from depth_ego_ros.core.geometry import X`` for any of them):

* :mod:`.camera` -- the pinhole camera: (back-)projection, sampling grids, intrinsics of resized /
  cropped images, points to depth images, lens distortion;
* :mod:`.poses` -- rotations (axis-angle, quaternions) and rigid poses (pose vectors, inversion,
  chaining, interpolation, applying a transform to points).

Conventions (used throughout the project)
-----------------------------------------
* Camera frame = optical frame (REP 103 ``*_optical_frame``): x right, y down, z forward.
* Pixel coordinates: u along the width (column), v along the height (row); the centre of pixel
  (row i, column j) is at (u, v) = (j, i) -- integer pixel centres, as OpenCV, ROS CameraInfo and
  monodepth2's back-projection grid.
* A 4x4 pose ``T_a_b`` maps points from frame b into frame a: ``p_a = T_a_b @ p_b``. It is also the
  pose of frame b expressed in frame a (e.g. ``T_world_cam`` = camera->world = camera pose).
* Axis-angle vectors are rotation vectors (axis * angle, radians); ``axis_angle_to_matrix`` is the
  SO(3) exponential map (Rodrigues), as monodepth2's ``rot_from_axisangle``.
* Quaternion component order is always in the function name: ``xyzw`` is the ROS /
  geometry_msgs/TUM-file order, ``wxyz`` is the transforms3d / Eigen-constructor order.

Torch functions are batched (leading dimension B) and differentiable; the ``*_np`` functions and the
quaternion / pose helpers are numpy conveniences for I/O and evaluation code. Functions taking a
pose or an intrinsics matrix accept numpy arrays or torch tensors where stated and return the same
kind. Invalid shapes raise ``ValueError`` saying what was expected.
"""
from .camera import (backproject, backproject_np, distort_normalized_np, intrinsics_for_crop,
                     intrinsics_for_resize, pixel_grid, pixels_to_grid, points_to_depth_image,
                     project, project_np, project_points_to_image, scale_intrinsics)
from .poses import (axis_angle_to_matrix, axis_angle_to_matrix_np, chain_poses, interpolate_pose,
                    invert_pose, matrix_to_axis_angle, matrix_to_axis_angle_np, matrix_to_quat_wxyz,
                    matrix_to_quat_xyzw, pose_from_tq_xyzw, pose_to_tq_xyzw, pose_vec_to_mat,
                    quat_wxyz_to_matrix, quat_wxyz_to_xyzw, quat_xyzw_to_matrix, quat_xyzw_to_wxyz,
                    relative_poses, rotation_angle_np, transform_points_np)

__all__ = [
    'backproject', 'project', 'pixel_grid', 'pixels_to_grid',
    'axis_angle_to_matrix', 'matrix_to_axis_angle', 'pose_vec_to_mat', 'invert_pose',
    'scale_intrinsics', 'intrinsics_for_resize', 'intrinsics_for_crop', 'chain_poses',
    'relative_poses',
    'backproject_np', 'project_np', 'project_points_to_image', 'transform_points_np',
    'axis_angle_to_matrix_np', 'matrix_to_axis_angle_np', 'rotation_angle_np',
    'quat_xyzw_to_matrix', 'matrix_to_quat_xyzw', 'quat_wxyz_to_matrix', 'matrix_to_quat_wxyz',
    'quat_xyzw_to_wxyz', 'quat_wxyz_to_xyzw', 'pose_from_tq_xyzw', 'pose_to_tq_xyzw',
    'interpolate_pose', 'distort_normalized_np', 'points_to_depth_image',
]
