"""Trainer: a few steps on a tiny synthetic bag lower the loss; checkpoints in monodepth2's layout
load in the Estimator; resume continues from the saved epoch/step with the optimiser state;
fine-tuning from a checkpoint; bad configurations give clear errors (API and CLI)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
from depth_ego_ros.training.config import TrainConfig, TrainConfigError
from depth_ego_ros.training.trainer import STATE_FILE, Trainer, TrainingError, find_checkpoint
from train_testing import drive_bag, fixed_batch, loss_on  # test/train_testing.py

W, H = 64, 64          # network resolution (multiples of 32, >= 64)


@pytest.fixture(autouse=True, scope='module')
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """20 frames of a synthetic street drive with odometry (every frame moves: seed 3 starts
    driving), rendered at the network resolution."""
    return drive_bag(tmp_path_factory, 'train_data', 20, W, H)


def _config(bag, out, **kw):
    base = dict(bags=[str(bag)], out=str(out), width=W, height=H, batch_size=4, epochs=1,
                lr=2e-4, val_fraction=0.0, augment=False, progress=False, tensorboard=False,
                image_every=0, seed=0, scales=(0, 1))
    base.update(kw)
    return TrainConfig(**base)


def _fixed_batch(trainer):
    return fixed_batch(trainer, 8)



def _loss(trainer, batch):
    """Loss on a fixed batch (see train_testing.loss_on)."""
    return float(loss_on(trainer, batch).total)



TRAINED = dict(tensorboard=True, image_every=1, val_fraction=0.2, log_every=2)


@pytest.fixture(scope='module')
def trained(bag, tmp_path_factory):
    """One short run from scratch (2 epochs of 4 steps): the trainer, its summary, loss before
    and after on a fixed batch."""
    out = tmp_path_factory.mktemp('run') / 'run'
    tr = Trainer(_config(bag, out, epochs=2, **TRAINED))
    batch = _fixed_batch(tr)
    before = _loss(tr, batch)
    summary = tr.fit()
    after = _loss(tr, batch)
    return tr, summary, before, after, out


@pytest.mark.timeout(300)
def test_a_few_steps_lower_the_loss(bag, tmp_path):
    """monodepth2's own initialisation (sigmoid 0.5 disparity, zero-ish poses): 8 steps on the
    tiny bag lower the loss on a fixed batch clearly."""
    tr = Trainer(_config(bag, tmp_path / 'run', epochs=2, lr=1e-3, init_depth='off',
                         pose_init='zero', translation_scale=1.0))
    batch = _fixed_batch(tr)
    before = _loss(tr, batch)
    summary = tr.fit()
    after = _loss(tr, batch)
    assert summary['steps'] == 2 * tr.steps_per_epoch >= 6
    assert summary['velocity_loss'] and summary['odometry']        # synth bags carry /odom
    assert after < 0.9 * before, (before, after)
    hist = summary['history']
    assert [h['epoch'] for h in hist] == [0, 1]
    assert hist[-1]['train']['total'] < hist[0]['train']['total']


def test_tensorboard_scalars_and_depth_images(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, summary, _, _, out = trained
    files = list((out / 'tensorboard').glob('events.out.tfevents.*'))
    assert files
    acc = EventAccumulator(str(out / 'tensorboard'), size_guidance={'images': 0, 'scalars': 0})
    acc.Reload()
    tags = acc.Tags()
    for t in ('train/total', 'train/photometric', 'train/velocity', 'train/lr',
              'train/translation_norm', 'val/total', 'val/photometric'):
        assert t in tags['scalars'], (t, tags['scalars'])
    assert len(acc.Scalars('train/total')) == summary['steps'] // 2
    assert len(acc.Scalars('val/total')) == 3                   # before training + 2 epochs
    imgs = [t for t in tags['images'] if t.startswith('depth/samples')]
    assert imgs and len(acc.Images(imgs[0])) == 2               # one per epoch
    assert summary['val_before'] is not None and summary['val_after'] is not None


def test_metric_initialisation_starts_near_the_answer(trained):
    """The project's default start for bags with odometry (depth output at 10 m, pose output at
    the median odometry step forward, translation reparametrised) has a low loss from the start,
    and training lowers it further."""
    tr, summary, before, after, _ = trained
    assert any('depth output initialised at 10 m' in n for n in tr.init_notes)
    assert any('forward step' in n for n in tr.init_notes)
    assert before < 0.06 and after < before, (before, after)
    assert summary['history'][0]['train']['velocity'] < 0.1


@pytest.mark.timeout(120)
def test_checkpoint_layout_loads_in_estimator(trained):
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    tr, summary, _, _, out = trained
    for n in (0, 1):
        d = out / f'weights_{n}'
        for f in (ckpt.ENCODER_FILE, ckpt.DEPTH_FILE, ckpt.POSE_ENCODER_FILE, ckpt.POSE_FILE,
                  'train_config.json'):
            assert (d / f).is_file(), f
    # optimiser state only in the newest checkpoint; `latest` points at it
    assert (out / 'weights_1' / STATE_FILE).is_file()
    assert not (out / 'weights_0' / STATE_FILE).exists()
    assert os.readlink(out / 'latest') == 'weights_1'
    assert find_checkpoint(out) == (out / 'weights_1').resolve()
    assert ckpt.read_encoder_meta(out / 'latest') == {'height': H, 'width': W, 'use_stereo': False,
                                                      'num_layers': 18}
    assert TrainConfig.load(out / 'weights_1' / 'train_config.json').to_dict() == tr.config.to_dict()
    assert (out / 'history.jsonl').read_text().count('\n') == 2

    # the saved weights are the trained ones, and the perception node's Estimator runs them
    enc = ckpt.read_state_dict(out / 'latest' / ckpt.ENCODER_FILE)
    for k, v in tr.model.encoder.state_dict().items():
        if not k.endswith('num_batches_tracked'):      # counts the measuring passes too
            assert torch.equal(enc[k], v.cpu()), k
    est = Estimator(EstimatorConfig(width=W, height=H, device='cpu', backend='torch'), out / 'latest')
    world = SyntheticWorld(SynthConfig(frames=2, width=2 * W, height=2 * H, seed=3, supersample=1))
    f0, f1 = world.frame(0), world.frame(1)
    est.infer(f0.rgb, f0.K)
    o = est.infer(f1.rgb, f1.K)
    assert o.depth.shape == (2 * H, 2 * W) and np.all(np.isfinite(o.depth)) and o.depth.min() > 0
    assert o.relative_pose is not None and np.all(np.isfinite(o.relative_pose))
    # metric training from scratch: the pose net started at the median odometry step, so it
    # predicts a forward motion of the right order of magnitude
    true_step = np.linalg.norm(world.relative_pose(0, 1)[:3, 3])
    assert 0.3 * true_step < np.linalg.norm(o.relative_pose[:3, 3]) < 3 * true_step


@pytest.mark.timeout(300)
def test_resume_continues_from_saved_epoch_and_step(trained, bag):
    tr, summary, _, _, out = trained
    saved = torch.load(out / 'weights_1' / STATE_FILE, weights_only=True)
    assert saved['epoch'] == 1 and saved['step'] == summary['steps']
    cfg = _config(bag, out, epochs=3, **TRAINED)
    tr2 = Trainer(cfg, resume=out)
    assert (tr2.epoch, tr2.step) == (2, summary['steps'])
    # networks and optimiser state are the saved ones
    for k, v in tr.model.state_dict().items():
        if not k.endswith('num_batches_tracked'):     # (x c / c on the translation rows)
            assert torch.allclose(tr2.model.state_dict()[k], v, rtol=1e-5, atol=1e-9), k
    p0 = next(iter(tr2.model.trainable_parameters()))
    assert float(tr2.optimizer.state[p0]['step']) == summary['steps']
    s2 = tr2.fit()
    assert [h['epoch'] for h in s2['history']] == [2]
    assert s2['steps'] == summary['steps'] + tr2.steps_per_epoch
    assert os.readlink(out / 'latest') == 'weights_2'
    assert not (out / 'weights_1' / STATE_FILE).exists()
    # a finished run has nothing left to do
    s3 = Trainer(_config(bag, out, epochs=3, **TRAINED), resume=out).fit()
    assert s3['epochs_run'] == 0 and s3['stopped'] == 'done'


@pytest.mark.timeout(300)
def test_fine_tune_from_checkpoint(trained, bag, tmp_path):
    _, _, _, _, out = trained
    src = out / 'weights_0'
    tr = Trainer(_config(bag, tmp_path / 'ft', init=str(src), max_steps=2, anneal_fraction=0.5))
    enc = ckpt.read_state_dict(src / ckpt.ENCODER_FILE)
    w = tr.model.encoder.state_dict()['encoder.conv1.weight']
    assert torch.equal(w, enc['encoder.conv1.weight'])           # loaded, not re-initialised
    assert not any('initialised' in n for n in tr.init_notes)   # no from-scratch initialisation
    s = tr.fit()
    assert s['stopped'].startswith('max_steps') and s['steps'] == 2
    assert (tmp_path / 'ft' / 'weights_0' / ckpt.POSE_FILE).is_file()
    # the last half of the step budget ran at lr x lr_gamma
    assert tr.optimizer.param_groups[0]['lr'] == pytest.approx(2e-5)
    state = torch.load(tmp_path / 'ft' / 'weights_0' / STATE_FILE, weights_only=True)
    assert state['annealed'] is True


def test_bad_config_lists_every_problem(trained, bag, tmp_path):
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(bags=[str(tmp_path / 'missing')], out=str(tmp_path / 'o'), width=100,
                    height=64, lr=-1.0, batch_size=0, model='vgg', device='tpu',
                    scales=(1, 2)).validate()
    msg = str(e.value)
    for part in ('missing does not exist', 'width must be a multiple of 32 and at least 64', 'lr must be',
                 'batch_size must be an integer >= 1', "model must be one of", "device must be",
                 'scales must'):
        assert part in msg, part
    with pytest.raises(TrainConfigError, match='give at least one bag'):
        TrainConfig(out=str(tmp_path)).validate()
    with pytest.raises(TrainConfigError, match='not a monodepth2-layout checkpoint'):
        _config(bag, tmp_path / 'o', init=str(tmp_path)).validate()
    with pytest.raises(TrainConfigError, match='unknown training configuration keys: colour'):
        TrainConfig.from_dict({'colour': 1})
    with pytest.raises(TrainConfigError, match='either init'):
        Trainer(_config(bag, tmp_path / 'o', init=str(trained[4] / 'weights_0')), resume=tmp_path)
    with pytest.raises(TrainingError, match='no checkpoint in'):
        Trainer(_config(bag, tmp_path / 'o'), resume=tmp_path)


def test_config_round_trip(tmp_path):
    cfg = TrainConfig(bags=['a', 'b'], out='o', init_depth=4.0, scales=(0, 2))
    for name in ('c.json', 'c.yaml'):
        cfg.save(tmp_path / name)
        assert TrainConfig.load(tmp_path / name).to_dict() == cfg.to_dict()


@pytest.mark.timeout(120)
def test_cli_bad_config_clear_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(__import__('pathlib').Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, '-m', 'depth_ego_ros.cli.main', 'train', '--bags',
                        str(tmp_path / 'nobag'), '--out', str(tmp_path / 'o'), '--width', '100',
                        '--lr', '0'], capture_output=True, text=True, env=env, timeout=100)
    assert r.returncode == 2, r.stderr
    for part in ('nobag does not exist', 'width must be a multiple of 32 and at least 64',
                 'lr must be in (0, 1)'):
        assert part in r.stderr, (part, r.stderr)
    assert 'Traceback' not in r.stderr


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes_gloo(bag, tmp_path):
    """The same command under torchrun: 2 CPU processes (gloo), DistributedSampler, only rank 0
    writes the checkpoint."""
    pytest.importorskip('torch.distributed.run')
    if not torch.distributed.is_gloo_available():
        pytest.skip('torch built without gloo')
    out = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONPATH=str(__import__('pathlib').Path(__file__).resolve().parents[1]),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--standalone',
           '-m', 'depth_ego_ros.cli.main', 'train', '--bags', str(bag), '--out', str(out),
           '--width', str(W), '--height', str(H), '--batch-size', '2', '--epochs', '1',
           '--max-steps', '2', '--val-fraction', '0.2', '--device', 'cpu', '--threads', '1',
           '--scales', '0', '--quiet', '--no-tensorboard', '--log-every', '1']
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout[:r.stdout.rindex('}') + 1])
    assert summary['world_size'] == 2 and summary['steps'] == 2
    assert summary['val_before'] is not None and summary['val_after'] is not None
    assert (out / 'weights_0' / ckpt.ENCODER_FILE).is_file()
    assert (out / 'weights_0' / STATE_FILE).is_file()
    assert r.stdout.count('checkpoint:') == 1              # only rank 0 reports / writes
    assert not list(out.glob('.*.tmp'))
