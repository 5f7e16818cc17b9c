"""The model zoo end to end without internet: a loopback HTTP server serves archives built in
monodepth2's and PackNet-SfM's released layouts; `depth-ego weights fetch` downloads, verifies
and installs them; predict, the Estimator and the trainer then run from the *name*. Every
failure (wrong checksum, truncated download, connection closed mid-file, wrong architecture,
write error, unknown name) gives one clear message, leaves nothing half-written, and a retry
succeeds. The perception node over DDS: test_zoo_node.py."""
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.zoo import (REGISTRY_ENV, HOME_ENV, ZooError, fetch, import_model,
                               installed_path, load_registry, models_dir, remove,
                               resolve_checkpoint)
from zoo_testing import ArchiveServer, build_archives, md5, standard_registry, write_registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    files = build_archives(tmp_path_factory.mktemp('zoo_archives'))
    server = ArchiveServer(files['mono'].parent)
    yield server, files
    server.close()
    torch.set_num_threads(n)


@pytest.fixture
def zoo(served, tmp_path, monkeypatch):
    """An empty cache and a registry of the served archives; -> (server, files, registry dict,
    registry path, env for subprocesses)."""
    server, files = served
    models = standard_registry(server, files)
    reg = write_registry(tmp_path / 'registry.json', models)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / 'home'))
    monkeypatch.setenv(REGISTRY_ENV, str(reg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    return server, files, models, reg, env


def _cli(env, *args, timeout=240, **kw):
    return subprocess.run([sys.executable, '-m', 'depth_ego_ros.cli.main', *args], env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def _main(capsys, *args):
    """`depth-ego ARGS` in this process (the CLI's own main): -> (rc, stdout, stderr)."""
    from depth_ego_ros.cli.main import main
    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _K(w, h):
    from depth_ego_ros.core.estimator import default_intrinsics
    return default_intrinsics(w, h)


def _nothing_half_written(name):
    home = models_dir().parent
    assert not (models_dir() / name).exists()
    tmp = home / '.tmp'
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())


def _set(reg_path, models, name, **changes):
    models = json.loads(json.dumps(models))
    models[name].update(changes)
    write_registry(reg_path, models)
    return models


# ----------------------------------------------------------------------------------------------
# the packaged registry
# ----------------------------------------------------------------------------------------------
def test_packaged_registry_lists_the_released_models(monkeypatch):
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    reg = load_registry()
    md2 = [e for e in reg.values() if e.method == 'monodepth2']
    assert len(md2) == 13                       # 9 README table + 2 odometry + 2 ResNet-50
    assert all(e.non_commercial for e in md2)
    table = [e for e in md2 if e.metrics]
    assert len(table) == 9 and all(e.md5 and len(e.md5) == 32 for e in table)
    assert reg['mono_640x192'].metrics['abs_rel'] == 0.115
    assert reg['mono_no_pt_640x192'].metrics['abs_rel'] == 0.132
    stereo = {e.name for e in md2 if e.stereo_scale_factor == 5.4}
    assert stereo == {e.name for e in md2 if 'stereo' in e.name}
    assert {e.model for e in md2 if 'resnet50' in e.name} == {'resnet50'}
    assert reg['resnet18_imagenet'].sha256_prefix == 'f37072fd'
    assert reg['resnet18_imagenet'].url.endswith('resnet18-f37072fd.pth')
    assert all(e.supported for e in reg.values())


def test_cache_dir_order(monkeypatch, tmp_path):
    from depth_ego_ros.zoo import cache_dir
    monkeypatch.setenv(HOME_ENV, str(tmp_path / 'a'))
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'x'))
    assert cache_dir() == tmp_path / 'a'
    monkeypatch.delenv(HOME_ENV)
    assert cache_dir() == tmp_path / 'x' / 'depth_ego_ros'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'h'))
    assert cache_dir() == tmp_path / 'h' / '.cache' / 'depth_ego_ros'


# ----------------------------------------------------------------------------------------------
# fetch -> predict / Estimator / train from the name
# ----------------------------------------------------------------------------------------------
def test_fetch_then_predict_from_the_name(zoo, tmp_path, capsys):
    server, files, models, reg, env = zoo
    from PIL import Image
    from depth_ego_ros.ros.testing import generated_frame
    imgs = []
    for i in range(2):
        p = tmp_path / f'f{i}.png'
        Image.fromarray(generated_frame(96, 64, i)).save(p)
        imgs.append(str(p))
    rc, out, err = _main(capsys, 'predict', '--checkpoint', 'tiny_mono', *imgs, '--out',
                         str(tmp_path / 'o'))
    assert rc == 2
    assert 'run `depth-ego weights fetch tiny_mono`' in err, err
    r = _cli(env, 'weights', 'fetch', 'tiny_mono')
    assert r.returncode == 0, r.stderr
    d = models_dir() / 'tiny_mono'
    assert r.stdout.strip() == str(d)
    assert 'md5' in r.stderr and 'verified' in r.stderr and 'NON-COMMERCIAL' in r.stderr
    assert 'tiny_mono: 100%' in r.stderr                      # the tqdm progress bar ran
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [ckpt.ENCODER_FILE, ckpt.DEPTH_FILE, ckpt.POSE_ENCODER_FILE, ckpt.POSE_FILE,
         ckpt.MODEL_INFO_FILE])
    for f in (ckpt.ENCODER_FILE, ckpt.POSE_FILE):            # the released files, unchanged
        assert md5(d / f) == md5(files['mono_dir'] / f)
    info = json.loads((d / ckpt.MODEL_INFO_FILE).read_text())
    assert info['name'] == 'tiny_mono' and 'verified' in info['checksum']
    _nothing_half_written('no-such')
    rc, out, err = _main(capsys, 'weights', 'list')
    row = next(line for line in out.splitlines() if line.startswith('tiny_mono '))
    assert row.rstrip().endswith('yes') and 'NON-COMMERCIAL' in row
    assert _main(capsys, 'weights', 'path', 'tiny_mono')[1].strip() == str(d)

    r = _cli(env, 'predict', '--checkpoint', 'tiny_mono', *imgs, '--out', str(tmp_path / 'o'),
             '--width', '64', '--height', '64', '--backend', 'torch', '--threads', '1')
    assert r.returncode == 0, r.stderr
    assert 'RANDOM' not in r.stderr
    depth = np.load(tmp_path / 'o' / 'f0_depth.npy')
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    est = Estimator(EstimatorConfig(width=64, height=64, device='cpu', backend='torch',
                                    num_threads=1), files['mono_dir'])
    ref = est.depth_only(generated_frame(96, 64, 0), _K(96, 64))
    np.testing.assert_allclose(depth, ref, rtol=1e-4)         # the fetched weights ran
    assert (tmp_path / 'o' / 'poses.txt').is_file()


def test_stereo_model_gets_its_published_scale_factor(zoo):
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    from depth_ego_ros.ros.testing import generated_frame
    path = fetch('tiny_stereo', progress=False)
    assert resolve_checkpoint('tiny_stereo') == path
    img = generated_frame(64, 64, 0)
    kw = dict(width=64, height=64, device='cpu', backend='torch', num_threads=1)
    plain = Estimator(EstimatorConfig(scale_mode='none', **kw), path)
    fixed = Estimator(EstimatorConfig(scale_mode='fixed', **kw), path)
    assert fixed.config.scale_factor == 5.4 and not fixed.has_pose
    np.testing.assert_allclose(fixed.depth_only(img, _K(64, 64)), 5.4 * plain.depth_only(img, _K(64, 64)), rtol=1e-5)
    override = Estimator(EstimatorConfig(scale_mode='fixed', scale_factor=2.0, **kw), path)
    assert override.config.scale_factor == 2.0
    mono = Estimator(EstimatorConfig(scale_mode='fixed', **kw), fetch('tiny_mono', progress=False))
    assert mono.config.scale_factor == 1.0


def test_packnet_ckpt_is_converted_to_the_estimators_layout(zoo):
    from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
    from depth_ego_ros.ros.testing import generated_frame
    server, files, models, reg, env = zoo
    path = fetch('tiny_packnet', progress=False)
    meta = ckpt.read_checkpoint_meta(path)
    assert meta['kind'] == 'packnet_dir' and meta['model'] == 'packnet01-w0.25'
    kw = dict(model='packnet01-w0.25', width=64, height=64, device='cpu', backend='torch',
              num_threads=1)
    img = generated_frame(64, 64, 1)
    got = Estimator(EstimatorConfig(**kw), path).depth_only(img, _K(64, 64))
    ref = Estimator(EstimatorConfig(**kw), files['packnet']).depth_only(img, _K(64, 64))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # PackNet-SfM's ResNet-18 (DepthResNet) -> monodepth2's layout, depth only
    path = fetch('tiny_packnet_resnet', progress=False)
    assert ckpt.read_checkpoint_meta(path)['model'] == 'resnet18' and not ckpt.has_pose(path)
    kw['model'] = 'resnet18'
    got = Estimator(EstimatorConfig(**kw), path).depth_only(img, _K(64, 64))
    ref = Estimator(EstimatorConfig(**kw), files['mono_dir']).depth_only(img, _K(64, 64))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_train_init_and_evaluate_from_name_and_imagenet_init(zoo, tmp_path, capsys):
    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    from depth_ego_ros.data.synth_bag import write_synth_bag
    from depth_ego_ros.training.config import TrainConfig, TrainConfigError
    from depth_ego_ros.training.trainer import Trainer
    bag = tmp_path / 'drive'
    write_synth_bag(SyntheticWorld(SynthConfig(frames=8, width=64, height=64, seed=3,
                                               supersample=1)), bag)
    base = dict(bags=[str(bag)], width=64, height=64, batch_size=2, epochs=1, val_fraction=0.0,
                augment=False, progress=False, tensorboard=False, image_every=0, seed=0,
                scales=(0,), max_steps=1, num_threads=1)
    with pytest.raises(TrainConfigError, match='depth-ego weights fetch tiny_mono'):
        TrainConfig(out=str(tmp_path / 'a'), init='tiny_mono', **base).validate()
    with pytest.raises(ZooError, match='depth-ego weights fetch resnet18_imagenet'):
        Trainer(TrainConfig(out=str(tmp_path / 'a'), weights_init='imagenet', **base))

    path = fetch('tiny_mono', progress=False)
    tr = Trainer(TrainConfig(out=str(tmp_path / 'ft'), init='tiny_mono', **base))
    enc = ckpt.read_state_dict(path / ckpt.ENCODER_FILE)
    assert torch.equal(tr.model.encoder.state_dict()['encoder.layer1.0.conv1.weight'],
                       enc['encoder.layer1.0.conv1.weight'])
    assert tr.fit()['steps'] == 1
    assert (tmp_path / 'ft' / 'weights_0' / ckpt.ENCODER_FILE).is_file()
    rc, out, err = _main(capsys, 'evaluate', '--bag', str(bag), '--checkpoint', 'tiny_mono',
                         '--gt-depth', '/ground_truth/depth', '--out', str(tmp_path / 'ev'),
                         '--width', '64', '--height', '64', '--max-frames', '3', '--no-plots',
                         '--quiet', '--threads', '1')
    assert rc == 0, err
    report = json.loads((tmp_path / 'ev' / 'report.json').read_text())
    assert report['settings']['checkpoint']['path'] == str(path)

    fetch('resnet18_imagenet', progress=False)
    tr = Trainer(TrainConfig(out=str(tmp_path / 'in'), weights_init='imagenet', **base))
    sd = torch.load(installed_path('resnet18_imagenet') / 'imagenet.pth', weights_only=True)
    depth_sd, pose_sd = tr.model.encoder.state_dict(), tr.model.pose_encoder.state_dict()
    assert torch.equal(depth_sd['encoder.layer4.1.conv2.weight'], sd['layer4.1.conv2.weight'])
    assert torch.equal(pose_sd['encoder.layer4.1.conv2.weight'], sd['layer4.1.conv2.weight'])
    w = pose_sd['encoder.conv1.weight']          # [64, 6, 7, 7]: RGB kernels per frame / 2
    assert w.shape[1] == 6
    assert torch.allclose(w[:, :3], sd['conv1.weight'] / 2) and torch.allclose(w[:, 3:], sd['conv1.weight'] / 2)
    assert any('ImageNet' in n for n in tr.init_notes)
    with pytest.raises(TrainConfigError, match='weights_init imagenet applies to training from scratch'):
        TrainConfig(out=str(tmp_path / 'b'), init='tiny_mono', weights_init='imagenet', **base).validate()


def test_import_offline_copy_and_remove(zoo, tmp_path, capsys):
    server, files, models, reg, env = zoo
    rc, out, err = _main(capsys, 'weights', 'import', str(files['mono']), '--name', 'tiny_mono')
    assert rc == 0, err
    info = json.loads((installed_path('tiny_mono') / ckpt.MODEL_INFO_FILE).read_text())
    assert 'md5' in info['checksum'] and info['imported_from'] == str(files['mono'])
    # a directory under a name of one's own
    d = import_model(files['mono_dir'], 'my_robot_model')
    assert resolve_checkpoint('my_robot_model') == d
    rc, out, err = _main(capsys, 'weights', 'list')
    assert any(line.startswith('my_robot_model ') and line.rstrip().endswith('yes')
               for line in out.splitlines()), out
    assert ckpt.has_pose(d)
    # a registry name whose file does not match the published checksum
    with pytest.raises(ZooError, match='checksum mismatch'):
        import_model(files['stereo'], 'tiny_mono', force=True)
    assert installed_path('tiny_mono') is not None            # the good copy stayed
    assert _main(capsys, 'weights', 'remove', 'tiny_mono')[0] == 0
    assert installed_path('tiny_mono') is None
    with pytest.raises(ZooError, match='not installed'):
        remove('tiny_mono')


@pytest.mark.timeout(300)
def test_two_processes_fetching_one_name(zoo):
    """Two `weights fetch` of the same name at once: one downloads and installs, the other waits
    for it and finds it installed (one download, both succeed, nothing left in .tmp); a fetch
    that finds the name locked says it is waiting."""
    import select
    from depth_ego_ros.zoo.install import _name_lock
    server, files, models, reg, env = zoo
    before = server.requests['mono.zip']
    procs = [subprocess.Popen([sys.executable, '-m', 'depth_ego_ros.cli.main', 'weights', 'fetch',
                               'tiny_mono'], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(models_dir() / 'tiny_mono')
    assert server.requests['mono.zip'] - before == 1             # downloaded once
    assert ckpt.has_pose(installed_path('tiny_mono'))
    _nothing_half_written('not_this_name')
    # the name locked by someone else: the fetch waits (and says so), then proceeds
    remove('tiny_mono')
    with _name_lock('tiny_mono'):
        p = subprocess.Popen([sys.executable, '-m', 'depth_ego_ros.cli.main', 'weights', 'fetch',
                              'tiny_mono'], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        waited = ''
        while 'waiting' not in waited and p.poll() is None:
            if select.select([p.stderr], [], [], 120)[0]:
                waited += p.stderr.readline()
            else:
                break
        assert 'another process is installing or removing it; waiting' in waited, waited
        assert installed_path('tiny_mono') is None and p.poll() is None
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    assert installed_path('tiny_mono') is not None


# ----------------------------------------------------------------------------------------------
# failures: one clear message, nothing half-written, the retry succeeds
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('case', ['wrong_checksum', 'truncated', 'closed_mid_file',
                                  'wrong_architecture', 'not_found'])
def test_failed_fetch_leaves_nothing_and_retry_succeeds(zoo, case, capsys):
    server, files, models, reg, env = zoo
    good = models['tiny_mono']
    bad = {'wrong_checksum': dict(md5='0' * 32),
           'truncated': dict(url=server.url + '/truncated/mono.zip'),
           'closed_mid_file': dict(url=server.url + '/close/mono.zip'),
           'wrong_architecture': dict(model='resnet50'),
           'not_found': dict(url=server.url + '/good/nothing.zip')}[case]
    expected = {'wrong_checksum': 'checksum mismatch: md5 of the download is',
                'truncated': 'checksum mismatch',
                'closed_mid_file': 'download interrupted',
                'wrong_architecture': 'does not hold a resnet50 monodepth2 model',
                'not_found': 'HTTP 404'}[case]
    _set(reg, models, 'tiny_mono', **bad)
    rc, out, err = _main(capsys, 'weights', 'fetch', 'tiny_mono', '--quiet')
    assert rc == 1
    errors = [line for line in err.splitlines() if 'error' in line]
    assert len(errors) == 1 and expected in errors[0], err
    if case == 'wrong_architecture':
        assert "resnet18 encoder" in errors[0]                 # says what the zip holds
    _nothing_half_written('tiny_mono')
    write_registry(reg, dict(models, tiny_mono=good))
    rc, out, err = _main(capsys, 'weights', 'fetch', 'tiny_mono', '--quiet')
    assert rc == 0, err
    assert out.strip() == str(installed_path('tiny_mono'))


def test_truncated_download_of_an_unchecksummed_zip_is_caught_by_its_structure(zoo):
    server, files, models, reg, env = zoo
    _set(reg, models, 'tiny_mono', md5=None, url=server.url + '/truncated/mono.zip')
    with pytest.raises(ZooError, match='not a valid zip archive'):
        fetch('tiny_mono', progress=False)
    _nothing_half_written('tiny_mono')


def test_write_error_full_disk(zoo):
    """A write that fails (the file-size limit stands in for a full disk: no small tmpfs can be
    mounted here) -> one message naming the cache and what to do; nothing left; retry works."""
    server, files, models, reg, env = zoo

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    r = _cli(env, 'weights', 'fetch', 'tiny_mono', '--quiet', preexec_fn=limit)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if 'error' in line]
    assert len(errors) == 1 and 'cannot write to the model cache' in errors[0], r.stderr
    assert 'DEPTH_EGO_HOME' in errors[0]
    _nothing_half_written('tiny_mono')
    assert _cli(env, 'weights', 'fetch', 'tiny_mono', '--quiet').returncode == 0


def test_unknown_and_unfetched_names(zoo, tmp_path, capsys):
    server, files, models, reg, env = zoo
    rc, out, err = _main(capsys, 'weights', 'fetch', 'tiny_mnoo')
    assert rc == 1 and "'tiny_mnoo' is not a model-zoo name" in err
    assert 'did you mean tiny_mono' in err
    with pytest.raises(ZooError, match='neither an existing checkpoint path nor a model-zoo name'):
        resolve_checkpoint('tiny_mnoo')
    with pytest.raises(ZooError, match='run `depth-ego weights fetch tiny_stereo`'):
        resolve_checkpoint('tiny_stereo')
    with pytest.raises(ZooError, match='ImageNet encoder weights'):
        resolve_checkpoint('resnet18_imagenet')
    assert resolve_checkpoint(None) is None and resolve_checkpoint('') is None
    assert resolve_checkpoint(str(files['mono_dir'])) == files['mono_dir']   # a path wins
    assert str(resolve_checkpoint('missing/dir')) == 'missing/dir'           # the loader says
    rc, out, err = _main(capsys, 'export', '--format', 'onnx', '--checkpoint', 'tiny_stereo',
                         '--out', str(tmp_path / 'x'))
    assert rc == 2 and 'depth-ego weights fetch tiny_stereo' in err
