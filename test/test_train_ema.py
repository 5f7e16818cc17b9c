"""The weight average (``ema_decay``, training/ema.py): the arithmetic (parameters and BatchNorm
buffers, warm-up of the decay), checkpoints holding the averaged networks while the raw weights
keep training, and a resumed run continuing the very same average."""
import pytest
import torch

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.training.config import TrainConfig, TrainConfigError
from depth_ego_ros.training.ema import WeightAverage
from depth_ego_ros.training.trainer import STATE_FILE, Trainer
from train_testing import drive_bag  # test/train_testing.py

W, H = 64, 64


@pytest.fixture(autouse=True, scope='module')
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_average_of_parameters_and_buffers_with_warmup():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    ema = WeightAverage(net, 0.9)
    w0 = net[0].weight.detach().clone()
    assert ema.current_decay() == pytest.approx(1 / 10)          # warm-up: (1+n)/(10+n)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()
    net(torch.randn(4, 1, 3, 3))                                  # moves the BN running stats
    rm = net[1].running_mean.detach().clone()
    ema.update()
    d = 0.1
    assert torch.allclose(ema.shadow['0.weight'], d * w0 + (1 - d) * (w0 + 1))
    assert torch.allclose(ema.shadow['1.running_mean'], (1 - d) * rm)   # started at 0
    assert int(ema.shadow['1.num_batches_tracked']) == 1          # integers copied
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9                             # warm-up over
    raw = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(5.0)
    with ema.swapped() as m:
        assert m is net
        assert torch.allclose(net[0].weight, ema.shadow['0.weight'])
    assert torch.allclose(net[0].weight, raw + 5.0)               # raw weights back
    with pytest.raises(ValueError):
        WeightAverage(net, 1.0)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    return drive_bag(tmp_path_factory, 'ema_data', 12, W, H, seed=5)


def _cfg(bag, out, **kw):
    base = dict(bags=[str(bag)], out=str(out), width=W, height=H, batch_size=2, epochs=2,
                lr=3e-4, val_fraction=0.0, augment=True, progress=False, tensorboard=False,
                image_every=0, seed=0, scales=(0, 1), odometry_warp_steps=-1, ema_decay=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_config_checks_the_decay(bag, tmp_path):
    for bad in (1.0, -0.1):
        with pytest.raises(TrainConfigError, match='ema_decay'):
            _cfg(bag, tmp_path, ema_decay=bad).validate()


@pytest.mark.timeout(400)
def test_checkpoint_holds_the_average_and_resume_continues_it(bag, tmp_path):
    straight = Trainer(_cfg(bag, tmp_path / 'a'))
    sa = straight.fit()
    assert sa['steps'] >= 4 and straight.ema.updates == sa['steps']
    # the checkpoint's networks are the averaged ones, not the raw weights
    saved = ckpt.read_state_dict(tmp_path / 'a' / 'latest' / ckpt.ENCODER_FILE)
    with straight.averaged_weights():
        avg = {k: v.clone() for k, v in straight.model.encoder.state_dict().items()}
    raw = straight.model.encoder.state_dict()
    common = [k for k in avg if k in saved and avg[k].dtype.is_floating_point]
    assert len(common) > 10
    for k in common:
        assert torch.allclose(saved[k], avg[k]), k
    assert any(not torch.allclose(saved[k], raw[k]) for k in common)
    state = torch.load(tmp_path / 'a' / 'latest' / STATE_FILE, weights_only=True)
    assert state['ema']['updates'] == sa['steps']

    # one epoch, then --resume for the second: the average goes on from the saved networks
    # and the raw weights from adam.pth (not from the averaged checkpoint)
    first = Trainer(_cfg(bag, tmp_path / 'b', epochs=1))
    first.fit()
    resumed = Trainer(_cfg(bag, tmp_path / 'b'), resume=tmp_path / 'b')
    assert resumed.ema.updates == first.step
    for k, v in first.model.state_dict().items():
        if v.dtype.is_floating_point and not k.startswith('pose.'):
            # (the pose rows are saved x c and read / c: equal up to rounding)
            assert torch.allclose(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-7), k
            assert torch.allclose(resumed.ema.shadow[k], first.ema.shadow[k],
                                  rtol=1e-5, atol=1e-7), k
    sb = resumed.fit()
    assert sb['steps'] == sa['steps'] and resumed.ema.updates == sa['steps']
