"""Training configuration: one dataclass, validated, written beside every checkpoint.

:class:`TrainConfig` groups everything a run depends on (data, networks, optimisation, loss,
output). ``validate()`` checks every field (the checks are in :mod:`.config_checks`) and raises
:class:`TrainConfigError` (a ``ValueError``) listing *all* problems at once, so a bad command
line is fixed in one go. ``to_dict`` / ``from_dict`` / ``save`` / ``load`` round-trip it
through JSON (``train_config.json``) or YAML.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config_checks import field_problems
from .errors import TrainConfigError

__all__ = ['TrainConfig', 'TrainConfigError', 'CONFIG_FILE']

CONFIG_FILE = 'train_config.json'


@dataclass
class TrainConfig:
    """A training run (defaults: monodepth2's KITTI recipe at 640x192, plus the velocity loss).

    data
      bags: rosbag2 directories (recorder or ``depth-ego synth`` bags); at least one.
      image_topic / camera_info_topic / odom_topic: as :class:`~depth_ego_ros.data.dataset.
        DatasetConfig` (None = auto-detect; odom_topic '' = no odometry).
      val_fraction: share of sequences held out for validation (one bag: its tail); 0 = none.
      augment: monodepth2's colour jitter + horizontal flip on the training split.
      mask_topic: instance-mask image topic for object_motion (None = auto: the Image topic
        named *mask*, e.g. ``/camera/instance_mask`` of ``depth-ego synth --moving-objects N``).
        Read only with object_motion (masks are not loaded otherwise).
      frame_offsets: source frames relative to the target (default t-1, t+1).
    networks
      model: depth network: 'resnet18' | 'resnet50' (monodepth2) | 'packnet01' |
        'packnet01-w0.5' | 'packnet01-w0.25' (PackNet01 at that channel width; the Estimator's
        names). width, height: network resolution (multiples of 32).
      pose_model: 'monodepth2' (ResNet pose encoder + decoder on each pair; ResNet-18 with
        PackNet) | 'posexp' (SfMLearner's PoseExpNet on the whole snippet, with explainability
        masks when explainability_weight > 0).
      explainability_weight: posexp only: weight of the explainability regulariser (SfMLearner
        0.2); > 0 also weights every source's photometric error by its mask (before the
        per-pixel minimum). 0 = PoseExpNet without masks.
      learned_intrinsics: K from an intrinsics head on the pose network's bottleneck replaces the
        bags' camera_info K in the loss (camera_info is still read, for logging the error; bags
        without any camera_info are accepted then, with no K error logged for them).
      intrinsics_init_focal: prior of a fresh intrinsics head: fx/W = fy/H (one number; 1.0 ~
        53 deg horizontal field of view) or (fx/W, fy/H).
      intrinsics_lr_factor: the intrinsics head's biases (which carry the camera's K) learn at
        lr x this (at the networks' lr K barely moves in a run).
      init: checkpoint to start from (None = random weights): a directory in any layout the
        Estimator loads (monodepth2, or the project's PackNet/PoseExpNet files), a
        PackNet-SfM .ckpt file for the packnet models, or a model-zoo name (e.g. mono_640x192,
        fetched beforehand with `depth-ego weights fetch NAME`; :meth:`init_path`).
      weights_init: from scratch only: 'imagenet' = the ResNet encoders (depth, and the pose
        encoder with its first convolution adapted to the stacked frames) start from
        torchvision's ImageNet weights out of the model zoo (`depth-ego weights fetch
        resnet18_imagenet`); 'none' = random (training/weights_init.py).
      init_depth: from scratch only: metres the depth decoder outputs at the start (the
        disparity convolutions' bias is set so). 'auto' = 10 m when the bags have odometry
        (metric training: monodepth2's default start, sigmoid 0.5 = 0.2 m with min/max depth
        0.1/100, would put every warp with metric motion outside the image), else 'off';
        'off' = the default initialisation.
      pose_init: from scratch only: 'forward' = the pose decoder starts predicting a forward
        step of the median odometry distance between frames (needs odometry), 'zero' = the
        default initialisation, 'auto' = forward when the bags have odometry.
      translation_scale: training-time reparametrisation of the pose decoder's translation
        outputs (see :mod:`depth_ego_ros.training.model`; checkpoints are unaffected). 'auto' =
        the median odometry step / 0.05 (clipped to 1..100) with odometry, else 1 (monodepth2).
      rotation_scale: the same for the rotation (axis-angle) outputs; default 1 (monodepth2).
      odometry_warp_steps: curriculum: during the first N optimiser steps the photometric warps
        take the translation *length* from odometry (the pose network decides direction and
        rotation; the velocity loss keeps training its length). Needs odometry; 0 = off
        (monodepth2 + PackNet-SfM as published), -1 = for the whole run.
      min_depth, max_depth: disparity -> depth bounds (must match the node's parameters).
    optimisation
      epochs, batch_size, lr (Adam), lr_step (epochs between multiplications of the learning
      rate by lr_gamma: monodepth2's step schedule), weight_decay.
      max_steps: stop after this many optimiser steps in total (0 = no limit): the budget a
        repeatable run is given (the same steps give the same result on any machine).
      time_budget: stop after this many seconds of training (0 = no limit); the current epoch
        is cut short and saved. With max_steps it is only a safety cap (the schedule follows
        the steps; the summary's ``time_cap_hit`` says when it stopped a run).
      anneal_fraction: with max_steps or time_budget: the last fraction of that budget runs at
        lower lr (0 = off), see anneal. Progress is step / max_steps when max_steps is set,
        else elapsed / time_budget (training/schedule.py). A short run ends much more stably
        this way than on a constant learning rate.
      anneal: 'step' = one drop to lr x lr_gamma when the anneal starts; 'cosine' = a half cosine
        from lr to lr x lr_gamma over the anneal_fraction.
      warmup_steps: linear learning-rate warm-up over the first N steps (0 = off).
      ema_decay: exponential moving average of the weights (0 = off; e.g. 0.99): checkpoints,
        validation and sample images use the averaged networks, which wander far less than the
        raw weights of a short small-batch run (training/ema.py).
      amp: mixed precision (float16 autocast + GradScaler) on CUDA; ignored on the CPU.
      device: 'auto' | 'cpu' | 'cuda' | 'cuda:N' (under torchrun each rank takes its LOCAL_RANK).
      num_workers: DataLoader workers (0 = in the main process; the frames are in memory).
      num_threads: torch CPU threads (0 = library default).
      seed: random seed (initialisation, shuffling, augmentation).
    loss
      smoothness_weight, velocity_weight (PackNet-SfM, used when odometry is present and depth
      is not normalised), automask, scales (disparity scales used by the loss, subset of 0..3).
      yaw_rate_weight: rotation supervision from the odometry's yaw rate (twist.angular.z,
        integrated between the frames): |pose net's turn about the camera's y axis - odometry's|;
        0 = off. Pins the heading that the photometric loss leaves loose in drives with few turns.
      alignment_weight: vid2depth's 3-D alignment loss between the target's and every source's
        depth (one more depth forward per source), scale 0; 0 = off.
      object_motion: struct2depth's object-motion term: an ObjectMotionNet predicts each
        masked object's own motion per source, and the photometric warp moves the object's
        pixels with ``T_src_tgt @ T_obj`` (core/object_motion.py). A switch, not a weight: it
        changes the warp inside the photometric loss and adds no loss term of its own. Needs an
        instance-mask topic in every bag (see mask_topic).
      object_size_weight: struct2depth's object size constraint (needs object_motion: it reads
        the same masks): + weight x mean over untruncated objects of |log (mean depth in the
        mask) - log (fy h / mask rows)| with h a learned height prior (one class), which pins
        the depth of moving objects that the photometric loss leaves ambiguous. 0 = off.
      object_height_init: the prior's start (metres with odometry; normalised units with
        depth_normalization). Saved as object_size.pth.
      depth_normalization: 'none' | 'sample' (every sample's depth divided by its median before
        the warps) | 'sequence' (by a running median per sequence): scenes of very different
        depth range trained together (RealMonoDepth). Depth and translation are then relative:
        no velocity loss, no metric start (odometry_warp_steps and pose_init 'forward' refused).
    output
      out: directory for weights_N/ checkpoints, the ``latest`` link, train_config.json and the
        TensorBoard logs (out/tensorboard).
      log_every: steps between TensorBoard scalar points; image_every: epochs between sample
        depth images (0 = never); tensorboard: write TensorBoard logs; progress: tqdm bar.
      save_every: epochs between checkpoints (the last epoch is always saved).
      keep_checkpoints: how many weights_N directories to keep (0 = all). The optimiser state
        (adam.pth, twice the size of the networks) is kept in the newest checkpoint only.
    """
    bags: list = field(default_factory=list)
    out: str = ''
    # data
    image_topic: str | None = None
    camera_info_topic: str | None = None
    odom_topic: str | None = None
    val_fraction: float = 0.1
    augment: bool = True
    frame_offsets: tuple = (-1, 1)
    mask_topic: str | None = None
    # networks
    model: str = 'resnet18'
    pose_model: str = 'monodepth2'
    explainability_weight: float = 0.2
    learned_intrinsics: bool = False
    intrinsics_init_focal: float | tuple = 1.0
    intrinsics_lr_factor: float = 10.0
    width: int = 640
    height: int = 192
    init: str | None = None
    weights_init: str = 'none'
    init_depth: float | str = 'auto'
    pose_init: str = 'auto'
    translation_scale: float | str = 'auto'
    rotation_scale: float = 1.0
    odometry_warp_steps: int = 0
    min_depth: float = 0.1
    max_depth: float = 100.0
    # optimisation
    epochs: int = 20
    batch_size: int = 12
    lr: float = 1e-4
    lr_step: int = 15
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    max_steps: int = 0
    time_budget: float = 0.0
    anneal_fraction: float = 0.0
    anneal: str = 'step'
    warmup_steps: int = 0
    ema_decay: float = 0.0
    amp: bool = True
    device: str = 'auto'
    num_workers: int = 0
    num_threads: int = 0
    seed: int = 0
    # loss
    smoothness_weight: float = 1e-3
    velocity_weight: float = 0.1
    yaw_rate_weight: float = 0.0
    automask: bool = True
    scales: tuple = (0, 1, 2, 3)
    alignment_weight: float = 0.0
    depth_normalization: str = 'none'
    object_motion: bool = False
    object_size_weight: float = 0.0
    object_height_init: float = 1.5
    # output
    log_every: int = 10
    image_every: int = 1
    save_every: int = 1
    keep_checkpoints: int = 0
    tensorboard: bool = True
    progress: bool = True

    def init_path(self) -> Path | None:
        """``init`` as a path: a model-zoo name gives its cached directory (ZooError, a
        ValueError, naming the `depth-ego weights fetch` command when it is not downloaded)."""
        from ..zoo import resolve_checkpoint
        return resolve_checkpoint(self.init)

    def validate(self) -> 'TrainConfig':
        """Check every field; raise TrainConfigError listing all problems. Returns self."""
        errs = field_problems(self)
        if errs:
            raise TrainConfigError('invalid training configuration:\n  - ' + '\n  - '.join(errs))
        return self

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d['frame_offsets'] = list(self.frame_offsets)
        d['scales'] = list(self.scales)
        if isinstance(self.intrinsics_init_focal, tuple):
            d['intrinsics_init_focal'] = list(self.intrinsics_init_focal)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> 'TrainConfig':
        """Build from a dict (e.g. a saved train_config.json); unknown keys are an error."""
        if not isinstance(data, dict):
            raise TrainConfigError(f'a training configuration must be a mapping, got {type(data).__name__}')
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TrainConfigError(f'unknown training configuration keys: {", ".join(unknown)} '
                                   f'(known: {", ".join(sorted(names))})')
        d = dict(data)
        for k in ('frame_offsets', 'scales', 'intrinsics_init_focal'):
            if k in d and isinstance(d[k], list):
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, path) -> Path:
        """Write as JSON (or YAML when the name ends in .yaml/.yml)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        if path.suffix in ('.yaml', '.yml'):
            import yaml
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + '\n')
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> 'TrainConfig':
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise TrainConfigError(f'cannot read training configuration {path}: {exc}') from exc
        try:
            if path.suffix in ('.yaml', '.yml'):
                import yaml
                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - json/yaml errors
            raise TrainConfigError(f'{path}: not valid {path.suffix[1:] or "json"}: {exc}') from exc
        return cls.from_dict(data)
