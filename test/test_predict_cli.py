"""`depth-ego predict` end to end on small generated images."""
import numpy as np
import pytest
import torch
from PIL import Image

from depth_ego_ros.cli.main import main
from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
from depth_ego_ros.core.models import build_networks
from depth_ego_ros.core.geometry import chain_poses, pose_from_tq_xyzw

pytestmark = pytest.mark.timeout(180)
torch.set_num_threads(2)

SIZES = [(60, 100), (60, 100), (70, 90)]     # (H, W); the last image has another size


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    big = np.kron(base, np.ones((5, 5, 1), np.uint8))
    paths = []
    for i, (h, w) in enumerate(SIZES):
        p = tmp_path / 'in' / f'frame_{i:02d}.png'
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(big[:h, 2 * i:2 * i + w])).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpt')
    depth_net, pose_net, _ = build_networks('resnet18', seed=5)
    ckpt.save_monodepth2(d, depth_net.encoder, depth_net.decoder, pose_net.encoder,
                         pose_net.decoder, height=64, width=128)
    return d


def _read_poses(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith('#') and 'camera->world' in lines[0]
    rows = [ln.split() for ln in lines[1:]]
    assert all(len(r) == 8 for r in rows)
    return np.array([[float(v) for v in r] for r in rows])


def test_predict_end_to_end(images, checkpoint, tmp_path, capsys):
    out = tmp_path / 'out'
    fx = 80.0
    rc = main(['predict', '--checkpoint', str(checkpoint), '--out', str(out), '--device', 'cpu',
               '--fx', str(fx), *map(str, images)])
    assert rc == 0
    for p, (h, w) in zip(images, SIZES):
        d = np.load(out / f'{p.stem}_depth.npy')
        assert d.dtype == np.float32 and d.shape == (h, w)
        assert np.all(np.isfinite(d)) and d.min() > 0
        with Image.open(out / f'{p.stem}_depth.png') as im:
            assert im.mode == 'RGB' and im.size == (w, h)

    rows = _read_poses(out / 'poses.txt')
    assert rows.shape == (3, 8)
    assert np.array_equal(rows[:, 0], [0, 1, 2])
    assert np.allclose(rows[0, 1:], [0, 0, 0, 0, 0, 0, 1])
    assert np.allclose(np.linalg.norm(rows[:, 4:], axis=1), 1.0, atol=1e-6)

    # same numbers as the Estimator run directly with the checkpoint's resolution (128x64)
    est = Estimator(EstimatorConfig(width=128, height=64, device='cpu'), checkpoint)
    rel = []
    for p, (h, w) in zip(images, SIZES):
        img = np.asarray(Image.open(p).convert('RGB'))
        K = np.array([[fx, 0, (w - 1) / 2], [0, fx, (h - 1) / 2], [0, 0, 1]])
        o = est.infer(img, K)
        assert np.allclose(o.depth, np.load(out / f'{p.stem}_depth.npy'), rtol=1e-5)
        if o.relative_pose is not None:
            rel.append(o.relative_pose)
    expected = chain_poses(np.stack(rel))              # camera -> first camera
    got = pose_from_tq_xyzw(rows[:, 1:4], rows[:, 4:8])
    assert np.allclose(got, expected, atol=1e-7)
    assert 'poses.txt' in capsys.readouterr().out


def test_predict_single_image_random_weights(images, tmp_path, capsys):
    out = tmp_path / 'o'
    rc = main(['predict', str(images[0]), '--out', str(out), '--width', '128', '--height', '64',
               '--device', 'cpu', '--K', '80', '0', '49.5', '0', '80', '29.5', '0', '0', '1'])
    assert rc == 0
    err = capsys.readouterr().err
    assert 'RANDOM weights' in err
    assert 'KITTI' not in err                    # K was given
    assert (out / 'frame_00_depth.npy').is_file() and (out / 'frame_00_depth.png').is_file()
    assert not (out / 'poses.txt').exists()      # one image: no trajectory


def test_predict_default_K_note_and_scale(images, tmp_path, capsys):
    out = tmp_path / 'o'
    rc = main(['predict', *map(str, images[:2]), '--out', str(out), '--width', '128',
               '--height', '64', '--device', 'cpu', '--scale-mode', 'fixed',
               '--scale-factor', '5.4'])
    assert rc == 0
    assert "KITTI" in capsys.readouterr().err
    assert _read_poses(out / 'poses.txt').shape == (2, 8)


def test_predict_errors(images, tmp_path, capsys):
    assert main(['predict', str(tmp_path / 'missing.png'), '--out', str(tmp_path / 'o')]) == 2
    assert 'not found' in capsys.readouterr().err
    bad = tmp_path / 'badckpt'
    bad.mkdir()
    assert main(['predict', str(images[0]), '--out', str(tmp_path / 'o'), '--checkpoint', str(bad)]) == 2
    assert 'encoder.pth' in capsys.readouterr().err
    assert main(['predict', str(images[0]), '--out', str(tmp_path / 'o'), '--width', '100',
                 '--device', 'cpu']) == 2
    assert 'multiple of 32' in capsys.readouterr().err


def test_predict_help_states_pose_direction(capsys):
    with pytest.raises(SystemExit):
        main(['predict', '--help'])
    text = capsys.readouterr().out
    assert 'camera->world' in text and 'index tx ty tz qx qy qz qw' in text


def test_predict_learned_intrinsics_on_by_checkpoint_and_off_by_flag(images, tmp_path, capsys):
    """A checkpoint with an intrinsics head: the learned K is used by default (no note about
    assuming KITTI's K); --no-learned-intrinsics ignores the head and falls back to that K."""
    from depth_ego_ros.core.models import save_networks
    depth, pose, _ = build_networks('resnet18', learned_intrinsics=True, seed=5)
    ck = save_networks(tmp_path / 'ckpt', depth, pose, model='resnet18', height=64, width=128)
    runs = {}
    for name, flags in (('learned', []), ('off', ['--no-learned-intrinsics'])):
        out = tmp_path / name
        rc = main(['predict', *map(str, images[:2]), '--out', str(out), '--checkpoint', str(ck),
                   '--device', 'cpu', '--threads', '1', *flags])
        err = capsys.readouterr().err
        assert rc == 0, err
        runs[name] = (err, _read_poses(out / 'poses.txt'))
    assert 'KITTI' not in runs['learned'][0]
    assert 'KITTI' in runs['off'][0]
    # K does not enter the networks: the same poses either way
    np.testing.assert_allclose(runs['learned'][1], runs['off'][1], atol=1e-6)
