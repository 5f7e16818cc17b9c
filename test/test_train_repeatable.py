"""Repeatable, step-budgeted training (issue 15): the same seed gives the same losses step by
step (data order, colour jitter, initialisation all seeded), another seed does not; the budget
and the learning-rate schedule follow steps, never seconds (a time budget beside max_steps is
only a reported safety cap)."""
import pytest
import torch

from depth_ego_ros.training.config import TrainConfig, TrainConfigError
from depth_ego_ros.training.schedule import budget_progress, lr_factor
from depth_ego_ros.training.trainer import Trainer
from train_testing import drive_bag  # test/train_testing.py

W, H = 64, 64


@pytest.fixture(autouse=True, scope='module')
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)           # same thread count in both runs: same float reductions
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    return drive_bag(tmp_path_factory, 'rep_data', 14, W, H)


def _config(bag, out, **kw) -> TrainConfig:
    base = dict(bags=[str(bag)], out=str(out), width=W, height=H, batch_size=2, epochs=50,
                lr=3e-4, val_fraction=0.0, augment=True, progress=False, tensorboard=False,
                image_every=0, seed=0, scales=(0, 1), odometry_warp_steps=-1, max_steps=4)
    base.update(kw)
    return TrainConfig(**base)


def _run(bag, out, resume=None, **kw):
    """A fresh (or resumed) Trainer (augmentation on: the colour jitter draws random numbers)
    for a few steps; returns (summary, [(step, total loss, lr) after every step])."""
    tr = Trainer(_config(bag, out, **kw), resume=resume)
    seen = []
    tr.step_hook = lambda t: seen.append((t.step, float(t.last_loss),
                                          t.optimizer.param_groups[0]['lr']))
    return tr.fit(), seen


@pytest.mark.timeout(300)
def test_same_seed_same_losses_other_seed_other_losses(bag, tmp_path):
    s1, a = _run(bag, tmp_path / 'a')
    s2, b = _run(bag, tmp_path / 'b')
    assert [x[0] for x in a] == [1, 2, 3, 4]
    assert a == b                                  # bit-identical losses, step by step
    _, c = _run(bag, tmp_path / 'c', seed=1)
    assert [x[1] for x in c] != [x[1] for x in a]
    for s in (s1, s2):
        assert s['steps'] == 4 and s['stopped'].startswith('max_steps') and not s['time_cap_hit']


@pytest.mark.timeout(300)
def test_budget_and_schedule_are_steps_not_seconds(bag, tmp_path):
    """max_steps 6 with a generous time cap: 6 steps; the warm-up and the cosine anneal of the
    last half follow the step count (lr_factor of the step), whatever the time taken; a tiny
    time cap beside it stops the run and says so."""
    s, seen = _run(bag, tmp_path / 'cos', max_steps=6, time_budget=3600.0, warmup_steps=2,
                   anneal='cosine', anneal_fraction=0.5)
    assert s['steps'] == 6 and not s['time_cap_hit']
    want = [3e-4 * lr_factor(k, k / 6, warmup_steps=2, anneal_fraction=0.5, anneal='cosine')
            for k in range(6)]
    assert [x[2] for x in seen] == pytest.approx(want)
    assert want[0] == pytest.approx(1.5e-4) and want[-1] < want[2]   # warm-up, then anneal
    capped, _ = _run(bag, tmp_path / 'cap', max_steps=1000, time_budget=1e-6)
    assert capped['time_cap_hit'] and capped['steps'] < 1000
    assert capped['stopped'].startswith('time budget')


def test_schedule_arithmetic():
    assert budget_progress(30, 100, 999.0, 10.0) == 0.3          # steps win over seconds
    assert budget_progress(30, 0, 5.0, 10.0) == 0.5              # time budget only: seconds
    assert lr_factor(0, 0.0) == 1.0
    assert lr_factor(69, 0.69, anneal_fraction=0.3) == 1.0
    assert lr_factor(70, 0.70, anneal_fraction=0.3) == pytest.approx(0.1)
    assert lr_factor(70, 0.70, anneal_fraction=0.3, anneal='cosine') == pytest.approx(1.0)
    assert lr_factor(85, 0.85, anneal_fraction=0.3, anneal='cosine') == pytest.approx(0.55)
    assert lr_factor(100, 1.0, anneal_fraction=0.3, anneal='cosine') == pytest.approx(0.1)
    assert lr_factor(4, 0.0, warmup_steps=10) == pytest.approx(0.5)
    with pytest.raises(TrainConfigError, match='anneal must be one of'):
        TrainConfig(bags=['x'], out='o', anneal='linear').validate()


@pytest.mark.timeout(300)
def test_resume_from_an_epoch_checkpoint_is_bit_exact(bag, tmp_path):
    """Two epochs in one run == one epoch, then --resume for the second: the same losses step by
    step and the same final weights (data order, colour jitter and the generators' states are
    restored from adam.pth), with augmentation on."""
    _, whole = _run(bag, tmp_path / 'whole', max_steps=0, epochs=2)
    _, first = _run(bag, tmp_path / 'split', max_steps=0, epochs=1)
    n1 = len(first)
    assert 0 < n1 < len(whole) and first == whole[:n1]
    resumed, rest = _run(bag, tmp_path / 'split', resume=str(tmp_path / 'split' / 'latest'),
                         max_steps=0, epochs=2)
    assert resumed['resumed_from']['step'] == n1
    assert first + rest == whole                       # bit-identical, step by step
    a = torch.load(tmp_path / 'whole' / 'latest' / 'encoder.pth', weights_only=True)
    b = torch.load(tmp_path / 'split' / 'latest' / 'encoder.pth', weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
