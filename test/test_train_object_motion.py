"""Trainer with object motion (issue 9 item 7) and learned intrinsics on bags without camera_info
(item 3).

Object motion: a synthetic street with 2 moving objects and its instance-mask topic; the
object-motion net trains with the rest (gradients reach it, the loss on a fixed batch falls),
its checkpoint file is save_object_motion's format (the translation scale folded in: the file's
net predicts what the model predicts), --init and --resume restore it, resume with a changed
setting and object motion on bags without masks are refused with a clear message.
Learned intrinsics: a bag written without any camera_info trains, and its checkpoint runs in
the Estimator with K=None; without learned intrinsics such a bag stays an error.
(96x64, a few frames, batch 2, one thread.)"""
import numpy as np
import pytest
import torch

from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
from depth_ego_ros.core.object_motion import (OBJECT_MOTION_FILE, OBJECT_SIZE_FILE, load_object_motion,
                                              load_object_size)
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
from depth_ego_ros.data.synth_bag import write_synth_bag
from depth_ego_ros.training.config import TrainConfigError
from depth_ego_ros.training.trainer import STATE_FILE, Trainer, TrainingError, find_checkpoint
from train_testing import augmented_batch, loss_on, method_config  # test/train_testing.py

pytestmark = pytest.mark.usefixtures('torch_one_thread')

W, H = 96, 64


def _world(moving_objects=2, frames=8, seed=0):
    return SyntheticWorld(SynthConfig(frames=frames, width=W, height=H, seed=seed, supersample=1,
                                      moving_objects=moving_objects))


def _copy_without(src, dst, drop: str):
    """Copy a bag, leaving out one topic (a real rosbag2 directory, as a recorder without that
    topic would write it)."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    with Reader(src) as r, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for c in r.connections:
            if c.topic != drop:
                conns[c.id] = w.add_connection(c.topic, c.msgtype, typestore=ts)
        for c, t, raw in r.messages(connections=[c for c in r.connections if c.id in conns]):
            w.write(conns[c.id], t, raw)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """Street with 2 moving objects (instance-mask topic), the same without camera_info, and a
    rigid street without masks."""
    d = tmp_path_factory.mktemp('om_data')
    write_synth_bag(_world(), d / 'traffic')
    _copy_without(d / 'traffic', d / 'nocalib', '/camera/camera_info')
    write_synth_bag(_world(moving_objects=0, frames=6), d / 'rigid')
    return d


def _config(bag, out, **kw):
    return method_config(bag, out, W, H, **kw)


def _object_outputs(tr, batch):
    """The model's per-object motion on a batch (eval mode, no gradient)."""
    with torch.no_grad():
        return tr.model.object_motion(batch['image'], batch['sources'], batch['instance_masks'],
                                      batch['source_instance_masks'])


@pytest.fixture(scope='module')
def om_run(bags, tmp_path_factory):
    """2 epochs x 3 steps with object motion (translation scale 5: folded into the file)."""
    out = tmp_path_factory.mktemp('om') / 'run'
    tr = Trainer(_config(bags / 'traffic', out, object_motion=True, translation_scale=5.0))
    batch = augmented_batch(tr)
    assert float(batch['instance_masks'].sum()) > 0        # the batch has objects
    before = loss_on(tr, batch)
    net = tr.model.extras['object_motion']
    omp = {'head': net.head.weight, 'conv1': net.encoder[0].weight}
    start = {k: p.detach().clone() for k, p in omp.items()}
    tr.optimizer.zero_grad(set_to_none=True)
    o, _ = tr.compute_loss(batch, train=True)
    o.total.backward()
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in omp.items()}
    tr.optimizer.zero_grad(set_to_none=True)
    summary = tr.fit()
    after = loss_on(tr, batch)
    moved = {k: float((p.detach() - start[k]).abs().max()) for k, p in omp.items()}
    return dict(tr=tr, out=out, batch=batch, before=before, after=after, summary=summary,
                grads=grads, moved=moved)


@pytest.mark.timeout(120)
def test_object_motion_trains(om_run):
    tr, summary = om_run['tr'], om_run['summary']
    assert tr.use_object_motion and 'object-motion net from random weights' in tr.init_notes
    # the net's parameters are in the optimiser, get gradients through the warp and move
    opt_ids = {id(p) for g in tr.optimizer.param_groups for p in g['params']}
    assert all(id(p) in opt_ids for p in tr.model.extras['object_motion'].parameters())
    for k, g in om_run['grads'].items():
        assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0, k
    assert all(v > 0 for v in om_run['moved'].values()), om_run['moved']
    assert summary['steps'] == 2 * tr.steps_per_epoch >= 6
    before, after = float(om_run['before'].total), float(om_run['after'].total)
    assert after < 0.92 * before, (before, after)
    # logged: mean |t_obj|, |r_obj| and the number of objects (history = TensorBoard train/*)
    rec = summary['history'][-1]['train']
    assert rec['object_translation'] > 0 and np.isfinite(rec['object_rotation'])
    assert 0 < rec['objects'] <= 2
    assert 'object_translation' in om_run['after'].terms


@pytest.mark.timeout(60)
def test_object_motion_checkpoint(om_run):
    """object_motion.pth in save_object_motion's format; the translation scale is folded in, so
    the file's net alone predicts the model's object motion."""
    tr, out, batch = om_run['tr'], om_run['out'], om_run['batch']
    d = find_checkpoint(out)
    assert (d / OBJECT_MOTION_FILE).is_file()
    net = load_object_motion(d)
    tr.model.eval()
    aa, t = _object_outputs(tr, batch)
    tr.model.train()
    with torch.no_grad():
        aa_f, t_f = net(batch['image'], batch['sources'][:, 0], batch['instance_masks'],
                        batch['source_instance_masks'][:, 0])
    assert float(t[:, 0].abs().max()) > 0
    assert torch.allclose(t_f, t[:, 0], rtol=1e-4, atol=1e-7)
    assert torch.allclose(aa_f, aa[:, 0], rtol=1e-4, atol=1e-7)
    # the rest of the checkpoint is unchanged: the Estimator loads it (object motion is
    # training-only)
    est = Estimator(EstimatorConfig(width=W, height=H, device='cpu', backend='torch'), d)
    f = _world(frames=2).frame(0)
    assert np.all(np.isfinite(est.depth_only(f.rgb, f.K)))


@pytest.mark.timeout(120)
def test_object_motion_init_and_resume(om_run, bags, tmp_path):
    tr, out, batch = om_run['tr'], om_run['out'], om_run['batch']
    tr.model.eval()
    ref = _object_outputs(tr, batch)
    tr.model.train()
    # --init: a new run starts with the saved object-motion net (its own translation scale)
    tr_init = Trainer(_config(bags / 'traffic', tmp_path / 'ft', object_motion=True,
                              init=str(out / 'latest'), translation_scale=2.0))
    assert any(n.startswith('object-motion net from') and 'random' not in n for n in tr_init.init_notes)
    tr_init.model.eval()
    got = _object_outputs(tr_init, batch)
    assert torch.allclose(got[1], ref[1], rtol=1e-4, atol=1e-7)
    # --resume: the same net, optimiser state and progress; it goes on training
    steps = om_run['summary']['steps']
    tr2 = Trainer(_config(bags / 'traffic', out, object_motion=True, translation_scale=5.0,
                          epochs=3, max_steps=steps + 1), resume=out)
    assert (tr2.epoch, tr2.step) == (2, steps)
    for k, v in tr.model.extras.state_dict().items():
        assert torch.allclose(tr2.model.extras.state_dict()[k], v, rtol=1e-5, atol=1e-8), k
    s2 = tr2.fit()
    assert s2['steps'] == steps + 1 and (out / 'weights_2' / STATE_FILE).is_file()
    assert (out / 'weights_2' / OBJECT_MOTION_FILE).is_file()
    # a changed setting is refused, both ways
    with pytest.raises(TrainConfigError, match='cannot resume: the run was trained with object_motion=True'):
        Trainer(_config(bags / 'traffic', out, epochs=4), resume=out)
    plain = tmp_path / 'plain'
    Trainer(_config(bags / 'traffic', plain, epochs=1, max_steps=1)).fit()
    assert not (plain / 'latest' / OBJECT_MOTION_FILE).exists()
    with pytest.raises(TrainConfigError, match='object_motion=False'):
        Trainer(_config(bags / 'traffic', plain, epochs=2, object_motion=True), resume=plain)


def test_object_motion_needs_masks(bags, tmp_path):
    with pytest.raises(TrainConfigError) as e:
        Trainer(_config(bags / 'rigid', tmp_path / 'o', object_motion=True))
    msg = str(e.value)
    for part in ('object_motion needs instance masks', 'rigid', '--mask-topic',
                 'depth-ego synth --moving-objects'):
        assert part in msg, (part, msg)
    with pytest.raises(TrainConfigError, match="mask_topic '' switches them off"):
        _config(bags / 'traffic', tmp_path / 'o', object_motion=True, mask_topic='').validate()
    # object motion off: masks are not even read (a mask bag trains as a plain one)
    tr = Trainer(_config(bags / 'traffic', tmp_path / 'p'))
    assert not tr.use_object_motion and 'instance_masks' not in tr.train_set[0]


def test_cli_flags(bags, tmp_path):
    import argparse

    from depth_ego_ros.cli import train as cli
    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    args = p.parse_args(['train', '--bags', str(bags / 'traffic'), '--out', str(tmp_path / 'o'),
                         '--object-motion', '--mask-topic', '/camera/instance_mask'])
    cfg = cli.config_from_args(args).validate()
    assert cfg.object_motion is True and cfg.mask_topic == '/camera/instance_mask'
    cfg = cli.config_from_args(p.parse_args(['train', '--bags', str(bags / 'traffic'), '--out',
                                             str(tmp_path / 'o')])).validate()
    assert cfg.object_motion is False and cfg.mask_topic is None and cfg.object_size_weight == 0
    args = p.parse_args(['train', '--bags', str(bags / 'traffic'), '--out', str(tmp_path / 'o'),
                         '--object-motion', '--object-size-weight', '0.1', '--object-height-init', '1.6'])
    cfg = cli.config_from_args(args).validate()
    assert (cfg.object_size_weight, cfg.object_height_init) == (0.1, 1.6)


@pytest.mark.timeout(120)
def test_object_size_prior_trains_saves_and_resumes(bags, tmp_path):
    """object_size_weight: the height prior gets gradients, the size term and the loss on a
    fixed batch fall, the learned height is logged, object_size.pth holds it, --init and
    --resume restore it, switching it on or off at resume is refused."""
    out = tmp_path / 'sz'
    cfg = dict(object_motion=True, object_size_weight=0.5, object_height_init=3.0, epochs=1)
    tr = Trainer(_config(bags / 'traffic', out, **cfg))
    assert tr.use_object_size and any(n.startswith('object height prior 3') for n in tr.init_notes)
    prior = tr.model.extras['object_size']
    groups = [g for g in tr.optimizer.param_groups if any(p is prior.log_height for p in g['params'])]
    assert len(groups) == 1 and len(groups[0]['params']) == 1          # its own (faster) group
    batch = augmented_batch(tr)
    before = loss_on(tr, batch)
    assert float(before.terms['object_size']) > 0.5                  # 3 m is far from the cars
    assert float(before.terms['object_height']) == pytest.approx(3.0, rel=1e-5)
    tr.optimizer.zero_grad(set_to_none=True)
    o, _ = tr.compute_loss(batch, train=True)
    o.total.backward()
    assert prior.log_height.grad is not None and float(prior.log_height.grad.abs().sum()) > 0
    tr.optimizer.zero_grad(set_to_none=True)
    summary = tr.fit()
    after = loss_on(tr, batch)
    assert float(after.terms['object_size']) < float(before.terms['object_size'])
    assert float(after.total) < float(before.total)
    rec = summary['history'][-1]['train']
    h = float(prior.height[0])
    assert h < 3.0 and rec['object_height'] < 3.0 and np.isfinite(rec['object_size'])
    # checkpoint: object_size.pth beside object_motion.pth
    d = find_checkpoint(out)
    assert (d / OBJECT_SIZE_FILE).is_file() and (d / OBJECT_MOTION_FILE).is_file()
    assert float(load_object_size(d).height[0]) == pytest.approx(h, rel=1e-6)
    # --init: a new run starts at the saved height (not at object_height_init)
    tr_init = Trainer(_config(bags / 'traffic', tmp_path / 'ft', **{**cfg, 'init': str(d)}))
    assert float(tr_init.model.extras['object_size'].height[0]) == pytest.approx(h, rel=1e-6)
    # --resume: the same prior, and it goes on training
    steps = summary['steps']
    tr2 = Trainer(_config(bags / 'traffic', out, **{**cfg, 'epochs': 2, 'max_steps': steps + 1}),
                  resume=out)
    assert float(tr2.model.extras['object_size'].height[0]) == pytest.approx(h, rel=1e-6)
    assert tr2.fit()['steps'] == steps + 1
    with pytest.raises(TrainConfigError, match='cannot resume: the run was trained with object_size_weight'):
        Trainer(_config(bags / 'traffic', out, object_motion=True, epochs=3), resume=out)


def test_object_size_needs_object_motion(bags, tmp_path):
    with pytest.raises(TrainConfigError, match='object_size_weight needs object_motion'):
        _config(bags / 'traffic', tmp_path / 'o', object_size_weight=0.1).validate()
    with pytest.raises(TrainConfigError, match='object_size_weight must be a finite number'):
        _config(bags / 'traffic', tmp_path / 'o', object_motion=True, object_size_weight=-1.0).validate()
    with pytest.raises(TrainConfigError, match='object_height_init'):
        _config(bags / 'traffic', tmp_path / 'o', object_motion=True, object_size_weight=0.1,
                object_height_init=0.0).validate()
    # off by default: no prior, no file
    assert _config(bags / 'traffic', tmp_path / 'o').object_size_weight == 0.0


@pytest.mark.timeout(120)
def test_learned_intrinsics_without_camera_info(bags, tmp_path):
    from rosbags.highlevel import AnyReader
    with AnyReader([bags / 'nocalib']) as r:
        assert not any(c.msgtype == 'sensor_msgs/msg/CameraInfo' for c in r.connections)
    # without learned intrinsics: the dataset's error, as before
    with pytest.raises(TrainingError, match='no sensor_msgs/CameraInfo for camera topic'):
        Trainer(_config(bags / 'nocalib', tmp_path / 'x'))
    out = tmp_path / 'li'
    tr = Trainer(_config(bags / 'nocalib', out, learned_intrinsics=True, epochs=1))
    assert any('no camera_info in nocalib' in n for n in tr.init_notes), tr.init_notes
    item = tr.train_set[0]
    assert not item['has_K'] and torch.isnan(item['K']).all()
    summary = tr.fit()
    intr = summary['history'][-1]['intrinsics']
    assert all(np.isfinite(intr[k]) and intr[k] > 0 for k in ('fx', 'fy', 'cx', 'cy'))
    assert not any(k.endswith('_error') for k in intr)          # nothing to compare with
    assert np.isfinite(summary['history'][-1]['train']['total'])
    # the checkpoint runs without any K
    d = find_checkpoint(out)
    est = Estimator(EstimatorConfig(learned_intrinsics=True, width=W, height=H, device='cpu',
                                    backend='torch'), d)
    world = _world(frames=2)
    est.infer(world.frame(0).rgb, None)
    o = est.infer(world.frame(1).rgb, None)
    assert o.depth.shape == (H, W) and np.all(np.isfinite(o.depth)) and o.depth.min() > 0
    assert o.K is not None and np.all(np.isfinite(o.K)) and o.K[0, 0] > 0
    assert o.relative_pose is not None and np.all(np.isfinite(o.relative_pose))
