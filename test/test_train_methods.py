"""Trainer with the methods of issue 9: PackNet01 depth, PoseExpNet pose with explainability,
learned intrinsics, the 3-D alignment loss, per-sample / per-sequence depth normalisation.

For each: configuration errors, gradients reach the method's parameters, a few steps lower the
loss on a fixed batch, the checkpoint loads in the Estimator under the same names and predicts
finite depth / pose (/ K / mask) consistent with the trained model, --init and --resume work, and
resume refuses changed networks. Plus: the learned K moves toward the synthetic camera's K in
training (tiny synthetic bags, 64x64, a few steps)."""
import numpy as np
import pytest
import torch

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
from depth_ego_ros.data.synth_bag import write_synth_bag
from depth_ego_ros.training.config import TrainConfig, TrainConfigError
from depth_ego_ros.training.trainer import STATE_FILE, Trainer, find_checkpoint
from train_testing import augmented_batch, drive_bag, loss_on, method_config  # test/train_testing.py

pytestmark = pytest.mark.usefixtures('torch_one_thread')

W, H = 64, 64

METHODS = {
    # PackNet01 (width 0.25) with monodepth2's ResNet-18 pose net beside it, learned intrinsics
    # on that pose encoder's 512-channel bottleneck
    'packnet_intrinsics': dict(model='packnet01-w0.25', learned_intrinsics=True),
    # PoseExpNet with explainability + learned intrinsics on its 256-channel bottleneck; output
    # reparametrisation on (folded into the checkpoint)
    'posexp_intrinsics': dict(pose_model='posexp', learned_intrinsics=True,
                              translation_scale=5.0, rotation_scale=2.0),
    # per-sample normalisation + the 3-D alignment loss (source depths in the target's units)
    # (velocity_weight > 0 with odometry: the velocity loss must be left out)
    'sample_norm_alignment': dict(depth_normalization='sample', alignment_weight=0.1,
                                  velocity_weight=0.1),
    'sequence_norm': dict(depth_normalization='sequence', velocity_weight=0.1),
}


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """8 frames of a synthetic street drive with odometry and camera_info, at 64x64."""
    return drive_bag(tmp_path_factory, 'methods_data', 8, W, H)


@pytest.fixture(scope='module')
def frames():
    world = SyntheticWorld(SynthConfig(frames=2, width=W, height=H, seed=3, supersample=1))
    return world.frame(0), world.frame(1)


def _config(bag, out, **kw):
    return method_config(bag, out, W, H, **kw)


def _new_parameters(tr, name):
    """The parameters the method adds, by name (must all receive a gradient)."""
    m = tr.model
    params = {}
    if m.packnet:
        params.update({f'packnet.{k}': p for k, p in m.depth.named_parameters()
                       if k.startswith(('pack1', 'unpack1', 'disp1_layer', 'disp2_layer'))})
    if m.posexp:
        params.update({f'posexp.{k}': p for k, p in m.pose.named_parameters()
                       if k.startswith(('pose_pred', 'conv1.', 'upconv1', 'predict_mask1', 'predict_mask2'))})
    if m.intrinsics is not None:
        params.update({f'intrinsics.{k}': p for k, p in m.intrinsics.named_parameters()
                       if k.endswith('bias')})
    if 'norm' in name:        # the normalised depth still trains both networks
        params.update({'depth': m.depth.decoder[m.depth._dispconv_index[0]].conv.weight,
                       'pose': m._last_pose_conv().weight})
    return params


@pytest.fixture(scope='module', params=list(METHODS))
def run(request, bag, tmp_path_factory):
    """One short run per method (2 epochs of 3 steps, batch 2) and the loss on a fixed batch
    (4 samples) before/after."""
    name = request.param
    out = tmp_path_factory.mktemp(name) / 'run'
    tr = Trainer(_config(bag, out, **METHODS[name]))
    batch = augmented_batch(tr)
    before = loss_on(tr, batch)
    # gradients reach the method's own parameters
    tr.optimizer.zero_grad(set_to_none=True)
    o, _ = tr.compute_loss(batch, train=True)
    if tr.use_alignment:      # the alignment term alone reaches the depth and the pose network
        fwd = tr.last_forward
        al = tr.extras['alignment'].loss(fwd['disps'][0].float(), fwd['source_disps'],
                                         fwd['poses'].float(), tr.last_K, tr.loss_fn.depth_fn,
                                         tr.base_depth)
        nets = {'alignment->depth': tr.model.depth.decoder[tr.model.depth._dispconv_index[0]].conv.weight,
                'alignment->depth_encoder': tr.model.encoder.encoder.conv1.weight,
                'alignment->pose': tr.model._last_pose_conv().weight}
        g = torch.autograd.grad(al, list(nets.values()), retain_graph=True, allow_unused=True)
        align_grads = dict(zip(nets, g))
    o.total.backward()
    grads = {k: p.grad for k, p in _new_parameters(tr, name).items()}
    if tr.use_alignment:
        grads.update(align_grads)
    tr.optimizer.zero_grad(set_to_none=True)
    summary = tr.fit()
    after = loss_on(tr, batch)
    return dict(name=name, tr=tr, out=out, before=before, after=after, summary=summary,
                grads=grads, batch=batch)


@pytest.mark.timeout(120)
def test_method_trains(run):
    name, tr, summary = run['name'], run['tr'], run['summary']
    assert run['grads'], name
    for k, g in run['grads'].items():
        assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0, (name, k)
    assert summary['steps'] == 2 * tr.steps_per_epoch >= 6
    before, after = float(run['before'].total), float(run['after'].total)
    assert after < 0.92 * before, (name, before, after)
    terms = run['after'].terms
    cfg = tr.config
    if cfg.alignment_weight:
        assert 0 < float(terms['alignment']) < 1
    if cfg.pose_model == 'posexp':
        assert 'explainability' in terms and 0 < float(terms['mask_mean']) < 1
        # the regulariser keeps the masks from switching off: it falls as training goes on
        assert float(terms['explainability']) < float(run['before'].terms['explainability'])
    assert not summary['velocity_loss'] and 'velocity' not in terms
    if cfg.depth_normalization != 'none':
        assert any('velocity loss off' in n for n in tr.init_notes), tr.init_notes
        if cfg.depth_normalization == 'sample':
            assert float(run['after'].depth.flatten(1).median(1).values.mean()) == pytest.approx(1.0, rel=1e-3)
    if cfg.learned_intrinsics:
        intr = summary['history'][-1]['intrinsics']
        for k in ('fx', 'fy', 'cx', 'cy', 'fx_error', 'fy_error', 'cx_error', 'cy_error'):
            assert np.isfinite(intr[k]), k
        # prior fx = W, fy = H; the synthetic camera's fx = fy = 36.8 px at 64x64
        assert intr['fx_error'] == pytest.approx(abs(intr['fx'] - 36.8), abs=3.0)


@pytest.mark.timeout(120)
def test_checkpoint_runs_in_the_estimator(run, frames):
    """The saved directory is in the layout the Estimator loads; with the same names it predicts
    what the trained model predicts."""
    tr, out = run['tr'], run['out']
    cfg = tr.config
    d = find_checkpoint(out)
    assert d == (out / 'weights_1').resolve()
    meta = ckpt.read_checkpoint_meta(d)
    assert (meta['model'], meta['pose_model'], meta['learned_intrinsics'], meta['height'],
            meta['width']) == (cfg.model, cfg.pose_model, cfg.learned_intrinsics, H, W)
    files = {p.name for p in d.iterdir()}
    assert ('encoder.pth' in files) == (not cfg.model.startswith('packnet'))
    assert ('pose_encoder.pth' in files) == (cfg.pose_model == 'monodepth2')
    assert ('intrinsics.pth' in files) == cfg.learned_intrinsics
    est = Estimator(EstimatorConfig(model=cfg.model, pose_model=cfg.pose_model,
                                    learned_intrinsics=cfg.learned_intrinsics, width=W, height=H,
                                    device='cpu', backend='torch'), d)
    f0, f1 = frames
    K = None if cfg.learned_intrinsics else f0.K
    est.infer(f0.rgb, K)
    o = est.infer(f1.rgb, K)
    assert o.depth.shape == (H, W) and np.all(np.isfinite(o.depth)) and o.depth.min() > 0
    assert o.relative_pose is not None and np.all(np.isfinite(o.relative_pose))
    # the same pose as the trained model (output scales folded back into the saved weights)
    m = tr.model.eval()
    prev = torch.from_numpy(f0.rgb).permute(2, 0, 1)[None].float() / 255
    cur = torch.from_numpy(f1.rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        srcs = torch.stack([prev] * len(cfg.frame_offsets), 1)
        fwd = m(cur, srcs, (-1,) * len(cfg.frame_offsets), return_dict=True)
        depth = m.disp_to_depth(m.depth_disps(cur)[0], cfg.min_depth, cfg.max_depth)[1]
    m.train()
    assert np.allclose(o.relative_pose, fwd['poses'][0, 0].double().numpy(), atol=1e-4)
    assert np.allclose(o.disparity.squeeze(), (1 / depth).squeeze().numpy(), rtol=1e-3, atol=1e-5)
    if cfg.learned_intrinsics:
        assert o.K is not None and np.all(np.isfinite(o.K)) and o.K[0, 0] > 0
        # the Estimator averages the camera's pair predictions with the estimate stored in
        # intrinsics.pth (the last epoch's mean K, counted as one sample)
        from depth_ego_ros.core.networks.intrinsics_head import RunningIntrinsics
        stored = ckpt.read_state_dict(d / ckpt.INTRINSICS_FILE)['running_value']
        ri = RunningIntrinsics()
        ri.load_state_dict({'count': 1, 'value': stored})
        intr = run['summary']['history'][-1]['intrinsics']
        Ks = ri.K(W, H)
        assert np.allclose([Ks[0, 0], Ks[1, 1], Ks[0, 2], Ks[1, 2]],
                           [intr['fx'], intr['fy'], intr['cx'], intr['cy']], atol=1e-4)
        assert np.allclose(o.K, (ri.K(W, H) + fwd['K'][0].double().numpy()) / 2, atol=1e-3)
    if cfg.pose_model == 'posexp':
        assert o.explainability is not None and o.explainability.shape == (H, W)
        assert np.all((o.explainability >= 0) & (o.explainability <= 1))


@pytest.mark.timeout(120)
def test_init_and_resume(run, bag, tmp_path):
    tr, out, name = run['tr'], run['out'], run['name']
    kw = METHODS[name]
    # --init: a new run starting from the checkpoint's weights (all networks)
    tr_init = Trainer(_config(bag, tmp_path / 'ft', init=str(out / 'weights_0'), **kw))
    assert not any('random weights' in n for n in tr_init.init_notes), tr_init.init_notes
    d1 = out / 'weights_0'
    dep = ckpt.read_state_dict(d1 / ckpt.DEPTH_FILE)
    for k, v in tr_init.model.depth.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            assert torch.equal(dep[k], v), k
    if tr_init.model.intrinsics is not None:
        assert torch.equal(ckpt.read_state_dict(d1 / ckpt.INTRINSICS_FILE)['focal.bias'],
                           tr_init.model.intrinsics.focal.bias.detach())
    # --resume: networks, optimiser, progress (and the sequence scales) continue
    tr2 = Trainer(_config(bag, out, epochs=3, max_steps=run['summary']['steps'] + 1, **kw),
                  resume=out)
    assert (tr2.epoch, tr2.step) == (2, run['summary']['steps'])
    for k, v in tr.model.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            assert torch.allclose(tr2.model.state_dict()[k], v, rtol=1e-5, atol=1e-8), k
    if tr.normalizer is not None:
        assert tr2.normalizer.state_dict() == tr.normalizer.state_dict()
    s2 = tr2.fit()
    assert [h['epoch'] for h in s2['history']] == [2] and s2['steps'] == run['summary']['steps'] + 1
    assert (out / 'weights_2' / STATE_FILE).is_file()


@pytest.mark.timeout(60)
def test_resume_refuses_other_networks(bag, tmp_path):
    """A run's checkpoint cannot be resumed with another model, pose model or intrinsics
    setting (checked before anything is built)."""
    out = tmp_path / 'run'
    Trainer(_config(bag, out, model='packnet01-w0.25', pose_model='posexp', epochs=1,
                    max_steps=1, explainability_weight=0.0)).fit()
    assert (out / 'latest' / ckpt.DEPTH_FILE).is_file() and not (out / 'latest' / 'encoder.pth').exists()
    assert find_checkpoint(out) == (out / 'weights_0').resolve()
    for change, word in ((dict(model='resnet18', pose_model='posexp'), 'model='),
                         (dict(model='packnet01-w0.25', pose_model='monodepth2'), 'pose_model='),
                         (dict(model='packnet01-w0.25', pose_model='posexp', learned_intrinsics=True),
                          'learned_intrinsics=')):
        with pytest.raises(TrainConfigError, match=f'cannot resume: the run was trained with {word}'):
            Trainer(_config(bag, out, epochs=2, explainability_weight=0.0, **change), resume=out)
    # --init from a checkpoint with another pose network: depth loaded, pose fresh (noted)
    tr = Trainer(_config(bag, tmp_path / 'ft', model='packnet01-w0.25', init=str(out / 'latest')))
    assert any('monodepth2 pose network from random weights' in n for n in tr.init_notes)


def test_config_errors(bag, tmp_path):
    with pytest.raises(TrainConfigError) as e:
        _config(bag, tmp_path / 'o', model='packnet02', pose_model='flownet',
                explainability_weight=-1.0, alignment_weight=float('nan'),
                depth_normalization='global', learned_intrinsics='yes',
                intrinsics_init_focal=(1.0, 2.0, 3.0), intrinsics_lr_factor=0.0).validate()
    msg = str(e.value)
    for part in ('model must be one of', 'packnet01-w0.25', 'pose_model must be one of',
                 'explainability_weight must be', 'alignment_weight must be',
                 'depth_normalization must be one of', 'learned_intrinsics must be true or false',
                 'intrinsics_init_focal must be', 'intrinsics_lr_factor must be'):
        assert part in msg, part
    with pytest.raises(TrainConfigError) as e:
        _config(bag, tmp_path / 'o', depth_normalization='sequence', odometry_warp_steps=-1,
                pose_init='forward').validate()
    assert 'odometry_warp_steps needs metric depth' in str(e.value)
    assert "pose_init 'forward' needs metric depth" in str(e.value)
    # init: a ResNet run cannot start from a file, PackNet not from a monodepth2 directory
    f = tmp_path / 'x.ckpt'
    f.write_bytes(b'')
    with pytest.raises(TrainConfigError, match='only a PackNet-SfM .ckpt'):
        _config(bag, tmp_path / 'o', init=str(f)).validate()
    md2 = tmp_path / 'md2'
    md2.mkdir()
    (md2 / 'encoder.pth').write_bytes(b'')
    (md2 / 'depth.pth').write_bytes(b'')
    with pytest.raises(TrainConfigError, match='holds a monodepth2'):
        _config(bag, tmp_path / 'o', init=str(md2), model='packnet01').validate()
    # good values pass and round-trip through JSON
    cfg = _config(bag, tmp_path / 'o', model='packnet01-w0.5', pose_model='posexp',
                  learned_intrinsics=True, intrinsics_init_focal=[0.6, 1.2], alignment_weight=0.1,
                  depth_normalization='sample').validate()
    assert cfg.intrinsics_init_focal == (0.6, 1.2)
    cfg.save(tmp_path / 'c.json')
    assert TrainConfig.load(tmp_path / 'c.json').validate().to_dict() == cfg.to_dict()


def test_cli_flags_reach_the_config(bag, tmp_path):
    import argparse

    from depth_ego_ros.cli import train as cli
    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    args = p.parse_args(['train', '--bags', str(bag), '--out', str(tmp_path / 'o'), '--model',
                         'packnet01-w0.25', '--pose-model', 'posexp', '--explainability-weight',
                         '0.3', '--learned-intrinsics', '--intrinsics-init-focal', '0.6', '1.1',
                         '--intrinsics-lr-factor', '5', '--alignment-weight', '0.1',
                         '--depth-normalization', 'sequence'])
    cfg = cli.config_from_args(args).validate()
    assert (cfg.model, cfg.pose_model, cfg.explainability_weight, cfg.learned_intrinsics,
            cfg.intrinsics_init_focal, cfg.intrinsics_lr_factor, cfg.alignment_weight,
            cfg.depth_normalization) == ('packnet01-w0.25', 'posexp', 0.3, True, (0.6, 1.1), 5.0,
                                         0.1, 'sequence')


@pytest.mark.timeout(120)
def test_learned_K_moves_toward_the_true_K(tmp_path):
    """Joint training from random weights (metric start, odometry-length warps): the intrinsics
    head starts 25 % off on both focal lengths and moves toward the synthetic camera's K within
    ~20 steps (full convergence takes longer: bench/learned_intrinsics_train.py)."""
    bag = tmp_path / 'drive'
    world = SyntheticWorld(SynthConfig(frames=18, width=64, height=64, seed=3, supersample=1))
    write_synth_bag(world, bag)
    K_true = world.frame(0).K
    foc = (1.25 * K_true[0, 0] / 64, 1.25 * K_true[1, 1] / 64)
    cfg = TrainConfig(bags=[str(bag)], out=str(tmp_path / 'run'), width=64, height=64,
                      batch_size=4, epochs=5, lr=1e-3, val_fraction=0.0, scales=(0, 1),
                      learned_intrinsics=True, intrinsics_init_focal=foc, intrinsics_lr_factor=20.0,
                      odometry_warp_steps=-1, progress=False, tensorboard=False, image_every=0,
                      save_every=100, seed=0)
    tr = Trainer(cfg)

    def K_now():
        """Mean K over the training frames (BatchNorm on batch statistics, as in training:
        after 20 steps the running statistics still hold much of their initial values)."""
        bns = [m for m in tr.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.momentum = 0.0
        K = []
        with torch.no_grad():
            for b in torch.utils.data.DataLoader(tr.train_set, batch_size=8):
                K.append(tr.model(b['image'], b['sources'], cfg.frame_offsets, return_dict=True)['K'])
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        return torch.cat(K).mean(0).double().numpy()

    K0 = K_now()
    assert K0[0, 0] == pytest.approx(1.25 * K_true[0, 0], rel=1e-4)
    summary = tr.fit()
    K1 = K_now()
    err0 = np.abs(K0 - K_true)[[0, 1], [0, 1]]
    err1 = np.abs(K1 - K_true)[[0, 1], [0, 1]]
    assert np.all(err1 < 0.8 * err0), (err0, err1, summary['steps'])
    # the principal point (started at the true centre) stays near it
    assert np.all(np.abs(K1 - K_true)[[0, 1], [2, 2]] < 3.0), K1
    # the history logs the learned K and its error against camera_info every epoch
    hist = [h['intrinsics'] for h in summary['history']]
    assert len(hist) == cfg.epochs and hist[-1]['fx_error'] < hist[0]['fx_error']


@pytest.mark.timeout(120)
def test_normalised_run_from_a_metric_checkpoint_gets_relative_translations(bag, tmp_path):
    """--init with a metric checkpoint into a depth-normalised run: the pose net's translations
    are divided by the start model's median depth (metres -> units of the median depth); from a
    checkpoint trained normalised they are left alone."""
    import re
    metric = Trainer(_config(bag, tmp_path / 'metric', epochs=1, max_steps=1, init_depth=10.0))
    metric.fit()
    ck = tmp_path / 'metric' / 'weights_0'
    rows = metric.model._rows('translation')
    start = metric.model._last_pose_conv()
    tr = Trainer(_config(bag, tmp_path / 'norm', init=str(ck), depth_normalization='sample'))
    note = next(n for n in tr.init_notes if 'median depth' in n)
    med = float(re.search(r'median depth ([0-9.]+)', note).group(1))
    assert 5.0 < med < 20.0, note                      # the metric start put depth near 10 m
    new = tr.model._last_pose_conv()
    np.testing.assert_allclose(new.bias[rows].detach(), start.bias[rows].detach() / med, rtol=2e-3)
    np.testing.assert_allclose(new.weight[rows].detach(), start.weight[rows].detach() / med,
                               rtol=2e-3, atol=1e-9)
    rot = metric.model._rows('rotation')
    assert torch.equal(new.bias[rot].detach(), start.bias[rot].detach())     # rotation unchanged
    # a checkpoint trained normalised already predicts relative translations
    tr.config.max_steps, tr.config.epochs = 1, 1
    tr.fit()
    tr3 = Trainer(_config(bag, tmp_path / 'norm2', init=str(tmp_path / 'norm' / 'weights_0'),
                          depth_normalization='sequence'))
    assert not any('median depth' in n for n in tr3.init_notes), tr3.init_notes
    # a metric run from a metric checkpoint is untouched
    tr4 = Trainer(_config(bag, tmp_path / 'metric2', init=str(ck)))
    assert torch.equal(tr4.model._last_pose_conv().bias.detach(), start.bias.detach())
