"""Self-supervised losses for monocular depth and ego-motion, one module per subject.

==========================  =====================================================================
module                      what a loss there is about
==========================  =====================================================================
:mod:`.warping`             synthesising the target view from a source: rigid inverse warp,
                            object-aware warp (moving objects), the shared sampler
:mod:`.photometric`         comparing a warped source with the target: SSIM, photometric error,
                            min-reprojection with auto-masking, explainability-weighted errors
:mod:`.regularizers`        priors on the outputs: edge-aware smoothness, explainability
                            regulariser
:mod:`.depth_scale`         the scale of depth and motion: velocity loss (metric), depth
                            normalisation and scale-invariant comparison (mixed depth ranges)
:mod:`.alignment`           3-D alignment of consecutive depth maps' point clouds (vid2depth)
:mod:`.object_size`         struct2depth's object size constraint
:mod:`.self_supervised`     :class:`SelfSupervisedLoss`: the terms composed as monodepth2 trains
                            (+ PackNet-SfM's velocity term and the other methods' hooks)
==========================  =====================================================================

Every public name is re-exported here: ``from depth_ego_ros.core.losses import X``. The modules
import each other one way only: warping is the base (photometric and alignment use it,
alignment also uses depth_scale) and self_supervised composes the others; none of them imports
this ``__init__``.

Adding a loss: a function in the module of its subject (or a new module here, re-exported
below), then either a weight in :class:`LossConfig` and a term in
:class:`SelfSupervisedLoss` (a term every method uses) or a term the trainer adds beside it
(a method's extra).

Conventions (shared with :mod:`depth_ego_ros.core.geometry`):

* images are float tensors [B,3,H,W] in [0, 1];
* ``T_src_tgt`` ([B,4,4]) maps points of the *target* camera into a *source* camera, i.e. the pose
  of the target camera in the source camera's frame -- what monodepth2's
  ``transformation_from_parameters`` / our ``pose_vec_to_mat`` give for each source;
* depth is z-depth along the optical axis [B,1,H,W]; K are the intrinsics at the image
  resolution used ([B,3,3]).
"""
from .alignment import (ROBUST_KINDS, AlignmentOutput, alignment_loss_3d, planarity_edges,
                        robust_distance)
from .depth_scale import (SequenceDepthNormalizer, depth_statistics, masked_median,
                          normalize_depth, relative_depth, relative_depth_fn,
                          scale_invariant_depth_loss, velocity_loss,
                          camera_yaw, yaw_rate_loss)
from .object_size import mask_row_extent, object_size_loss
from .photometric import (dssim, explainability_photometric_loss, masked_photometric_loss,
                          min_reprojection, photometric_error, ssim)
from .regularizers import explainability_regularization, smoothness_loss
from .self_supervised import LossConfig, LossOutput, SelfSupervisedLoss, disp_to_depth
from .warping import (apply_object_motion, safe_grid, sample_source, warp_image,
                      warp_image_with_objects)

__all__ = [
    # warping
    'warp_image', 'sample_source', 'safe_grid', 'apply_object_motion', 'warp_image_with_objects',
    # photometric
    'ssim', 'dssim', 'photometric_error', 'min_reprojection', 'masked_photometric_loss',
    'explainability_photometric_loss',
    # regularisers
    'smoothness_loss', 'explainability_regularization',
    # depth scale
    'velocity_loss', 'camera_yaw', 'yaw_rate_loss', 'masked_median', 'depth_statistics', 'normalize_depth', 'relative_depth',
    'relative_depth_fn', 'scale_invariant_depth_loss', 'SequenceDepthNormalizer',
    # 3-D alignment
    'AlignmentOutput', 'alignment_loss_3d', 'planarity_edges', 'robust_distance', 'ROBUST_KINDS',
    # object size
    'mask_row_extent', 'object_size_loss',
    # the composed loss
    'LossConfig', 'LossOutput', 'SelfSupervisedLoss', 'disp_to_depth',
]
