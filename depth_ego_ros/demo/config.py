"""What `depth-ego demo` does: :class:`DemoConfig` (the full run and the quick preset) and the
topics of the synthetic drive and of the perception node."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ['DemoConfig', 'NAMESPACE', 'CAMERA', 'CAMERA_INFO', 'ODOM', 'GT_DEPTH', 'GT_POSE']

NAMESPACE = 'depth_ego'
CAMERA = '/camera/image_raw'
CAMERA_INFO = '/camera/camera_info'
ODOM = '/odom'
GT_DEPTH = '/ground_truth/depth'
GT_POSE = '/ground_truth/pose'


@dataclass
class DemoConfig:
    """What the demo does (defaults: the full run, ~14 minutes on 2 CPU cores)."""
    out: str = 'demo_out'
    quick: bool = False
    ros: bool = True                      # False: no DDS stages (offline equivalents)
    scene: str = 'street'
    seed: int = 0                         # training world; the held-out world uses seed + 1000
    train_frames: int = 600               # one 60 s training drive (300 frames: seed 2 stalls at 0.21)
    heldout_frames: int = 100
    camera_width: int = 384               # rendered camera images
    camera_height: int = 128
    width: int = 192                      # network resolution
    height: int = 64
    batch_size: int = 4
    lr: float = 3e-4
    max_steps: int = 1500                 # THE training budget: steps, not seconds (repeatable)
    train_seconds: float = 1800.0         # safety cap only (reported when it stops a run)
    anneal_fraction: float = 0.3          # the last 30 % of the steps anneal ...
    anneal: str = 'step'                  # ... in one drop to lr x 0.1 ('cosine': half cosine)
    warmup_steps: int = 0                 # linear lr warm-up
    ema_decay: float = 0.0                # >0: save the moving average of the weights
    yaw_rate_weight: float = 1.0          # rotation supervision from the odometry's yaw rate
    curve_every: int = 0                  # >0: held-out AbsRel every N steps (learning curve)
    odometry_warp_steps: int = -1         # curriculum (TrainConfig.odometry_warp_steps): whole run
    offline_eval: bool = False            # also run the checkpoints offline through the Estimator
    init: str | None = None               # start from this checkpoint instead of random weights
    threads: int = 0                      # torch threads for training (0 = default)
    node_threads: int = 1                 # the perception node's torch threads
    play_rate: float = 1.0                # held-out drives into the node (before / after)
    record_rate: float = 2.0              # the training drive into the recorder: the bag keeps the
                                          # header stamps, so the data is the same in half the time
    domain_id: int | None = None          # ROS_DOMAIN_ID of the demo's nodes (None: see run())
    device: str = 'auto'

    @classmethod
    def quick_preset(cls, **kw) -> 'DemoConfig':
        base = dict(quick=True, train_frames=16, camera_width=128,
                    camera_height=64, width=96, height=64, batch_size=2, train_seconds=120.0,
                    max_steps=3, play_rate=1.0, heldout_frames=10)
        base.update(kw)
        return cls(**base)

    def validate(self) -> 'DemoConfig':
        errs = []
        if self.scene not in ('street', 'corridor'):
            errs.append(f"scene must be 'street' or 'corridor', got {self.scene!r}")
        if self.train_frames < 8 or self.heldout_frames < 6:
            errs.append('need at least 8 training and 6 held-out frames')
        for n in ('width', 'height'):
            v = getattr(self, n)
            if v <= 0 or v % 32:
                errs.append(f'{n} must be a positive multiple of 32, got {v}')
        if self.camera_width < 16 or self.camera_height < 16:
            errs.append('camera size must be at least 16x16')
        if not (self.play_rate > 0 and self.record_rate > 0):
            errs.append('play_rate and record_rate must be > 0')
        if not self.train_seconds >= 0 or self.max_steps < 1:
            errs.append('max_steps (the training budget) must be >= 1 and train_seconds (a '
                        'safety cap, 0 = none) >= 0')
        if self.curve_every < 0 or self.warmup_steps < 0:
            errs.append('curve_every and warmup_steps must be >= 0')
        if self.init is not None and not (Path(self.init) / 'encoder.pth').is_file():
            errs.append(f'init: {self.init} is not a monodepth2-layout checkpoint directory')
        if errs:
            raise ValueError('invalid demo configuration: ' + '; '.join(errs))
        return self

