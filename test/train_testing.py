"""Helpers shared by the trainer tests (test_train*.py): a fixed batch and the loss on it.

Measuring a loss must not change the model: BatchNorm runs in training mode (batch statistics,
as during training) with momentum 0 so its running statistics stay as they are, and the
auto-mask's tie-break noise is seeded.
"""
import torch


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
