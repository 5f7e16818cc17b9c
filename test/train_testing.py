"""Helpers shared by the trainer tests (test_train*.py): a fixed batch and the loss on it.

Measuring a loss must not change the model: BatchNorm runs in training mode (batch statistics,
as during training) with momentum 0 so its running statistics stay as they are, and the
auto-mask's tie-break noise is seeded.
"""
import torch

from depth_ego_ros.training.config import TrainConfig


def drive_bag(tmp_path_factory, name: str, frames: int, width: int, height: int, seed: int = 3):
    """A rosbag2 of a synthetic street drive (odometry, camera_info, ground truth) rendered at
    ``width`` x ``height`` without supersampling, in a fresh temporary folder -> its path."""
    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    from depth_ego_ros.data.synth_bag import write_synth_bag
    path = tmp_path_factory.mktemp(name) / 'drive'
    write_synth_bag(SyntheticWorld(SynthConfig(frames=frames, width=width, height=height, seed=seed,
                                               supersample=1)), path)
    return path


def fixed_batch(trainer, batch_size: int, seed: int | None = None) -> dict:
    """The first ``batch_size`` samples of the training set, in order (``seed``: the same
    flips / colour jitter every time when the set augments)."""
    if seed is not None:
        torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(trainer.train_set, batch_size=batch_size, shuffle=False)
    return next(iter(loader))


def loss_on(trainer, batch):
    """``trainer.compute_loss`` on ``batch`` without a gradient and without touching the
    BatchNorm running statistics -> the LossOutput."""
    trainer.model.train()
    bns = [m for m in trainer.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    torch.manual_seed(0)
    try:
        with torch.no_grad():
            out, _ = trainer.compute_loss(batch, train=False)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
    return out


def method_config(bag, out, width: int, height: int, **kw) -> TrainConfig:
    """A two-epoch run on one small bag from random weights with the extras off (no metric
    start, zero pose init, no velocity loss), so a method's own terms decide the loss; ``kw``
    overrides anything."""
    base = dict(bags=[str(bag)], out=str(out), width=width, height=height, batch_size=2, epochs=2,
                lr=1e-3, val_fraction=0.0, augment=True, progress=False, tensorboard=False,
                image_every=0, seed=0, scales=(0, 1), init_depth='off', pose_init='zero',
                translation_scale=1.0, velocity_weight=0.0)
    base.update(kw)
    return TrainConfig(**base)


def augmented_batch(trainer) -> dict:
    """Four samples with the same flips / colour jitter every time (seeded)."""
    return fixed_batch(trainer, 4, seed=1)
