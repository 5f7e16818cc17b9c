"""What an evaluation run is asked to do: :class:`EvaluateConfig` (all of it goes into
report.json) and its checks. Used by :mod:`.evaluate` and the ``depth-ego evaluate`` CLI."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .bag_inputs import EvaluationError, parse_extrinsic
from .metrics import DepthEvalConfig

__all__ = ['EvaluateConfig', 'EvaluationError', 'SCALINGS', 'ALIGNS', 'POSE_ASSOCIATIONS']

SCALINGS = ('median', 'none', 'fixed')
ALIGNS = ('se3', 'sim3', 'scale', 'none')
POSE_ASSOCIATIONS = ('nearest', 'interpolate')


@dataclass
class EvaluateConfig:
    """Everything that defines an evaluation run (all of it goes into report.json)."""
    bag: str
    out: str
    pred_bag: str | None = None            # bag with recorded node outputs (default: ``bag``)
    checkpoint: str | None = None
    # topics (None = auto-detect where possible)
    camera_topic: str | None = None
    camera_info_topic: str | None = None
    camera_frame: str | None = None        # optical frame id (default: from the image headers)
    gt_depth: str | None = None
    gt_cloud: str | None = None
    gt_poses: str | None = None            # topic or TUM/KITTI/EuRoC file
    gt_poses_format: str = 'auto'
    gt_times: str | None = None            # KITTI times.txt for a GT file without stamps
    gt_tf_parent: str | None = None        # TF GT: parent frame (default: auto)
    gt_tf_child: str | None = None         # TF GT: child frame (default: camera frame)
    pred_depth: str | None = None
    pred_odom: str | None = None
    lidar_to_camera: list | None = None    # T_cam_lidar override: 7 (x y z qx qy qz qw) or 16 numbers
    speed_topic: str | None = None         # estimator scale_mode 'speed'
    # frame selection
    max_frames: int = 0                    # 0 = all
    stride: int = 1
    # depth metrics
    min_depth: float = 1e-3
    max_depth: float = 80.0
    garg_crop: bool = False
    scaling: str = 'median'                # median | none | fixed
    scale_factor: float = 1.0              # for scaling 'fixed'
    # trajectory metrics
    align: str = 'sim3'
    rpe_delta: float = 1.0
    rpe_unit: str = 'frames'
    pose_association: str = 'nearest'
    # association tolerances (seconds)
    depth_max_dt: float = 0.05
    pose_max_dt: float = 0.02
    # report
    n_examples: int = 4
    progress: bool = True
    plots: bool = True
    # estimator (used in estimator mode only)
    estimator: dict = field(default_factory=dict)   # EstimatorConfig fields
    # online refinement (estimator mode only): RefinerConfig fields, None = off. The refiner is
    # driven synchronously: one round after every ``refine_every`` frames, so the figures do
    # not depend on the machine's speed (the node runs rounds in a background thread)
    online_refinement: dict | None = None
    refine_every: int = 1

    def validate(self) -> 'EvaluateConfig':
        if self.gt_depth and self.gt_cloud:
            raise EvaluationError('give either gt_depth or gt_cloud, not both')
        if not (self.gt_depth or self.gt_cloud or self.gt_poses):
            raise EvaluationError('nothing to compare with: give ground truth (--gt-depth TOPIC, '
                                  '--gt-cloud TOPIC and/or --gt-poses TOPIC|FILE)')
        if self.scaling not in SCALINGS:
            raise EvaluationError(f'scaling must be one of {SCALINGS}, got {self.scaling!r}')
        if self.align not in ALIGNS:
            raise EvaluationError(f'align must be one of {ALIGNS}, got {self.align!r}')
        if self.pose_association not in POSE_ASSOCIATIONS:
            raise EvaluationError(f'pose_association must be one of {POSE_ASSOCIATIONS}')
        if self.stride < 1:
            raise EvaluationError(f'stride must be >= 1, got {self.stride}')
        if self.max_frames < 0:
            raise EvaluationError(f'max_frames must be >= 0 (0 = all), got {self.max_frames}')
        for name in ('depth_max_dt', 'pose_max_dt'):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise EvaluationError(f'{name} must be a finite number >= 0, got {v}')
        if self.scaling == 'fixed' and not (math.isfinite(self.scale_factor) and self.scale_factor > 0):
            raise EvaluationError(f'scale_factor must be > 0, got {self.scale_factor}')
        if self.rpe_unit not in ('frames', 'm'):
            raise EvaluationError(f"rpe_unit must be 'frames' or 'm', got {self.rpe_unit!r}")
        if self.lidar_to_camera is not None:
            parse_extrinsic(self.lidar_to_camera)
        if self.online_refinement is not None:
            if self.pred_depth or self.pred_odom:
                raise EvaluationError('online refinement adapts the estimator: it cannot be used '
                                      'with recorded outputs (--pred-depth/--pred-odom)')
            if not isinstance(self.refine_every, int) or self.refine_every < 1:
                raise EvaluationError(f'refine_every must be an integer >= 1, got {self.refine_every!r}')
            from ..core.online_refinement import RefinerConfig
            try:
                RefinerConfig(**self.online_refinement)
            except (TypeError, ValueError) as exc:
                raise EvaluationError(f'online refinement: {exc}') from None
        try:
            DepthEvalConfig(self.min_depth, self.max_depth)
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
        return self

    @property
    def recorded_mode(self) -> bool:
        return bool(self.pred_depth or self.pred_odom)
