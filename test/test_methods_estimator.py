"""Estimator-side selection of the methods of docs/methods.md: PackNet01 depth (+ released-layout
.ckpt and the project's depth.pth), PoseExpNet pose with the explainability mask, learned
intrinsics (K=None), across the torch / ONNX Runtime / TorchScript backends; `depth-ego predict`
with them; errors that name the valid choices."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig, Frame
from depth_ego_ros.core.models import (MODELS, POSE_MODELS, PackNetDepth, PoseExpPose, build_networks,
                                       save_networks)
from depth_ego_ros.core.geometry import pose_vec_to_mat
from depth_ego_ros.core.networks.packnet import PackNet01, packnet_disp_to_depth
from depth_ego_ros.core.packnet_checkpoint import save_packnet_checkpoint

pytestmark = pytest.mark.timeout(120)
torch.set_num_threads(1)

W, H = 128, 64              # network resolution (multiples of 32; PoseExpNet/PackNet need 32)
IMG_H, IMG_W = 60, 100      # camera images (resized to the network)
K_CAM = np.array([[60.0, 0.0, 49.5], [0.0, 60.0, 29.5], [0.0, 0.0, 1.0]])
LIGHT = 'packnet01-w0.25'


def _cfg(**kw):
    base = dict(width=W, height=H, device='cpu', backend='torch', num_threads=1)
    base.update(kw)
    return EstimatorConfig(**base)


def _images(n=3, h=IMG_H, w=IMG_W, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((h // 5 + 2, w // 5 + n + 2, 3))
    big = np.kron(base, np.ones((5, 5, 1)))
    return [np.ascontiguousarray((big[:h, 2 * i:2 * i + w] * 255).astype(np.uint8)) for i in range(n)]


def _check_output(o, image, pose_expected, mask_expected):
    assert o.depth.shape == image.shape[:2] and o.depth.dtype == np.float32
    assert np.all(np.isfinite(o.depth)) and np.all(o.depth > 0)
    assert o.disparity.shape == (H, W) and o.disparity.dtype == np.float32
    assert o.K.shape == (3, 3) and o.K.dtype == np.float64
    if pose_expected:
        assert o.relative_pose.shape == (4, 4) and o.relative_pose.dtype == np.float64
        assert np.allclose(o.relative_pose[3], [0, 0, 0, 1])
        R = o.relative_pose[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-6)
    else:
        assert o.relative_pose is None
    if mask_expected:
        assert o.explainability.shape == (H, W) and o.explainability.dtype == np.float32
        assert 0.0 <= o.explainability.min() and o.explainability.max() <= 1.0
    else:
        assert o.explainability is None


@pytest.mark.parametrize('model,pose_model,learned', [
    ('resnet18', 'monodepth2', False),
    ('resnet18', 'posexp', True),
    (LIGHT, 'monodepth2', True),
    (LIGHT, 'posexp', False),
])
def test_combinations_infer_and_batch(model, pose_model, learned):
    """Every depth/pose combination through infer and infer_batch; infer_batch equals infer."""
    imgs = _images(3)
    K = None if learned else K_CAM
    est = Estimator(_cfg(model=model, pose_model=pose_model, learned_intrinsics=learned))
    outs = [est.infer(im, K, stamp=0.1 * i) for i, im in enumerate(imgs)]
    for i, o in enumerate(outs):
        _check_output(o, imgs[i], pose_expected=i > 0, mask_expected=pose_model == 'posexp' and i > 0)
        if not learned:
            np.testing.assert_array_equal(o.K, K_CAM)
    # the same frames as a batch over two cameras (a: frames 0, 1; b: frame 2 then 0)
    est2 = Estimator(_cfg(model=model, pose_model=pose_model, learned_intrinsics=learned))
    batch = est2.infer_batch([Frame(imgs[0], K, 0.0, None, 'a'), Frame(imgs[2], K, 0.0, None, 'b')])
    batch += est2.infer_batch([Frame(imgs[1], K, 0.1, None, 'a'), Frame(imgs[0], K, 0.1, None, 'b')])
    for o, im, pose in zip(batch, [imgs[0], imgs[2], imgs[1], imgs[0]], [False, False, True, True]):
        _check_output(o, im, pose, pose and pose_model == 'posexp')
    np.testing.assert_allclose(batch[2].depth, outs[1].depth, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(batch[2].relative_pose, outs[1].relative_pose, atol=1e-6)
    if pose_model == 'posexp':
        np.testing.assert_allclose(batch[2].explainability, outs[1].explainability, atol=1e-5)
    if learned:
        np.testing.assert_allclose(batch[2].K, outs[1].K, rtol=1e-6)


def test_packnet_depth_convention_and_released_ckpt(tmp_path):
    """A released-layout .ckpt (model.depth_net.* + yacs-like config) loads; depth is PackNet's
    inverse-depth convention of the net's finest output, identical to the bare network."""
    torch.manual_seed(3)
    net = PackNet01(width=0.25).eval()
    path = save_packnet_checkpoint(net, tmp_path / 'PackNet01_test.ckpt',
                                   extra_state={'model.pose_net.conv1.weight': torch.zeros(2)})
    est = Estimator(_cfg(model=LIGHT, min_depth=0.1, max_depth=80.0, optimize=False,
                         channels_last=False), path)     # the network exactly as loaded
    assert est.has_pose is False                     # a .ckpt holds no pose net of ours
    img = _images(1, h=H, w=W)[0]                    # network size: no resize
    out = est.infer(img, K_CAM)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        ref_disp = net(x)[0]
    inv, depth = packnet_disp_to_depth(ref_disp, 0.1, 80.0)
    np.testing.assert_allclose(out.disparity, inv[0, 0].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out.depth, depth[0, 0].numpy(), rtol=1e-6)
    assert out.relative_pose is None
    # the checkpoint's width must match the model name (hint names the right one)
    with pytest.raises(ckpt.CheckpointError, match="model='packnet01-w0.25'"):
        Estimator(_cfg(model='packnet01-w0.5'), path)
    # and the ResNet models do not take a .ckpt file
    with pytest.raises(ValueError, match='PackNet-SfM .ckpt'):
        Estimator(_cfg(model='resnet18'), path)
    assert ckpt.read_checkpoint_meta(path)['model'] == LIGHT


def test_saved_directory_roundtrip_and_backends(tmp_path):
    """save_networks -> directory (depth.pth with model key, pose.pth posexp, intrinsics.pth)
    -> Estimator gives identical outputs on torch, ONNX Runtime and TorchScript."""
    depth_net, pose_net, _ = build_networks(LIGHT, pose_model='posexp', learned_intrinsics=True, seed=4)
    assert isinstance(depth_net, PackNetDepth) and isinstance(pose_net, PoseExpPose)
    with torch.no_grad():                          # move the head off its prior
        pose_net.intrinsics.focal.bias.add_(torch.tensor([0.2, -0.1]))
        pose_net.intrinsics.offset.bias.add_(torch.tensor([0.03, -0.02]))
    d = save_networks(tmp_path / 'ck', depth_net, pose_net, model=LIGHT, height=H, width=W)
    assert {p.name for p in d.iterdir()} == {'depth.pth', 'pose.pth', 'intrinsics.pth'}
    meta = ckpt.read_checkpoint_meta(d)
    assert meta == {'model': LIGHT, 'pose_model': 'posexp', 'height': H, 'width': W,
                    'learned_intrinsics': True, 'kind': 'packnet_dir'}
    imgs = _images(2)
    results = {}
    for backend in ('torch', 'onnxruntime', 'torchscript'):
        est = Estimator(_cfg(model=LIGHT, pose_model='posexp', learned_intrinsics=True,
                             backend=backend, cache_dir=str(tmp_path / 'onnx')), d)
        assert est.backend_info['backend'] == backend
        results[backend] = [est.infer(im, None) for im in imgs]
    ref = results['torch']
    # the loaded head gives its shifted prediction, not the prior
    assert not np.allclose(ref[1].K[0, 0], IMG_W * 1.0, rtol=1e-3)
    for backend in ('onnxruntime', 'torchscript'):
        for a, b in zip(results[backend], ref):
            np.testing.assert_allclose(a.depth, b.depth, rtol=1e-3)
            np.testing.assert_allclose(a.K, b.K, rtol=1e-5)
        np.testing.assert_allclose(results[backend][1].relative_pose, ref[1].relative_pose, atol=1e-5)
        np.testing.assert_allclose(results[backend][1].explainability, ref[1].explainability, atol=1e-4)
    # a PackNet directory asked for as ResNet: the error says what it holds
    with pytest.raises(ckpt.CheckpointError, match="model='packnet01-w0.25'"):
        Estimator(_cfg(model='resnet18', pose_model='posexp'), d)
    with pytest.raises(ckpt.CheckpointError, match="pose_model='posexp'"):
        Estimator(_cfg(model=LIGHT, pose_model='monodepth2'), d)


def test_posexp_pose_convention():
    """posexp: T_prev_curr = pose_vec_to_mat of PoseExpNet(target=current, source=previous),
    no inversion; the mask is PoseExpNet's scale-0 mask of that source."""
    imgs = _images(2, h=H, w=W)
    est = Estimator(_cfg(pose_model='posexp'))
    est.infer(imgs[0], K_CAM)
    out = est.infer(imgs[1], K_CAM)
    _, pose_net, _ = build_networks('resnet18', pose_model='posexp')
    x = [torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255.0 for im in imgs]
    with torch.no_grad():
        r = pose_net.net(x[1], [x[0]])
    T = pose_vec_to_mat(r['axisangle'][:, 0].double(), r['translation'][:, 0].double())[0].numpy()
    np.testing.assert_allclose(out.relative_pose, T, atol=1e-6)
    np.testing.assert_allclose(out.explainability, r['masks'][0][0, 0].numpy(), atol=1e-5)
    assert 0.0 <= out.explainability.min() <= out.explainability.max() <= 1.0


def test_learned_intrinsics_k_none():
    """K=None uses the learned K (the head's prior fx = W, fy = H, centred, on random weights),
    scaled to each input size; the K of later frames is the camera's running mean; a given K is
    used as is; without learned_intrinsics K=None is a clear error."""
    est = Estimator(_cfg(learned_intrinsics=True))
    small, big = _images(1)[0], _images(1, h=2 * IMG_H, w=2 * IMG_W)[0]
    o1 = est.infer(small, None)
    for o, (h, w) in ((o1, (IMG_H, IMG_W)),):
        np.testing.assert_allclose(o.K, [[w, 0, (w - 1) / 2], [0, h, (h - 1) / 2], [0, 0, 1]], atol=1e-4)
    o2 = est.infer(big, None)                     # a pair: the running estimate, at 2x size
    assert o2.relative_pose is not None
    K_small = est.learned_K(None, IMG_W, IMG_H)
    np.testing.assert_allclose(o2.K[:2, :2], 2 * K_small[:2, :2], rtol=1e-9)
    np.testing.assert_allclose(o2.K[:2, 2] + 0.5, 2 * (K_small[:2, 2] + 0.5), rtol=1e-9)
    assert np.all(np.isfinite(o2.K)) and o2.K[0, 0] > 0 and o2.K[1, 1] > 0
    np.testing.assert_array_equal(o2.K[2], [0, 0, 1])
    d = est.depth_only(small, None)               # depth_only with the learned K too
    assert d.shape == small.shape[:2]
    assert est.point_cloud(stride=4).shape[1] == 4      # ... which the point cloud uses
    est.reset()                                   # no pair, but an estimate: no pose call needed
    o_reset = est.infer(small, None)
    assert o_reset.relative_pose is None
    np.testing.assert_allclose(o_reset.K, K_small, rtol=1e-9)
    o3 = est.infer(small, K_CAM)                  # camera_info present: used as given
    np.testing.assert_array_equal(o3.K, K_CAM)
    # point cloud with the learned K
    est.infer(small, None)
    assert est.point_cloud(stride=4).shape[1] == 4
    fresh = Estimator(_cfg(learned_intrinsics=True))
    fresh.depth_only(small, None)
    assert fresh.learned_K() is None              # depth_only changed no state
    plain = Estimator(_cfg())
    with pytest.raises(ValueError, match='learned_intrinsics=True'):
        plain.infer(small, None)
    assert plain.learned_K() is None


def test_learned_intrinsics_needs_pose(tmp_path):
    depth_net, _, _ = build_networks('resnet18', with_pose=False, seed=1)
    ckpt.save_monodepth2(tmp_path, depth_net.encoder, depth_net.decoder, height=H, width=W)
    with pytest.raises(ValueError, match='intrinsics head'):
        Estimator(_cfg(learned_intrinsics=True), tmp_path)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError) as info:
        EstimatorConfig(model='packnet02')
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(ValueError) as info:
        EstimatorConfig(pose_model='sfmlearner')
    for name in POSE_MODELS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match='learned_intrinsics must be a bool'):
        EstimatorConfig(learned_intrinsics='yes')
    from depth_ego_ros.cli import predict
    assert predict.MODELS == MODELS and predict.POSE_MODELS == POSE_MODELS


def test_predict_cli_with_methods(tmp_path, capsys):
    """`depth-ego predict` picks model / pose model / learned intrinsics from the checkpoint."""
    from depth_ego_ros.cli.main import main
    depth_net, pose_net, _ = build_networks(LIGHT, pose_model='posexp', learned_intrinsics=True, seed=2)
    d = save_networks(tmp_path / 'ck', depth_net, pose_net, model=LIGHT, height=H, width=W)
    paths = []
    for i, im in enumerate(_images(2)):
        p = tmp_path / f'f{i}.png'
        Image.fromarray(im).save(p)
        paths.append(str(p))
    out = tmp_path / 'out'
    assert main(['predict', '--checkpoint', str(d), *paths, '--out', str(out),
                 '--device', 'cpu', '--threads', '1']) == 0
    assert np.load(out / 'f0_depth.npy').shape == (IMG_H, IMG_W)
    mask = np.asarray(Image.open(out / 'f1_explainability.png'))
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    K = np.loadtxt(out / 'intrinsics.txt')
    assert K.shape == (3, 3) and K[0, 0] > 0
    assert (out / 'poses.txt').is_file()
    assert 'learned intrinsics' in capsys.readouterr().out


def test_exported_directory_runs_the_methods(tmp_path):
    """export_estimator_models (ONNX) -> EstimatorConfig(exported_model_dir=...) takes the pose
    model, learned intrinsics and PackNet's depth convention from the manifest and matches torch."""
    from depth_ego_ros.core.models import export_estimator_models
    depth_net, pose_net, _ = build_networks(LIGHT, pose_model='posexp', learned_intrinsics=True, seed=6)
    d = save_networks(tmp_path / 'ck', depth_net, pose_net, model=LIGHT, height=H, width=W)
    manifest = export_estimator_models(tmp_path / 'exp', 'onnx', model=LIGHT, pose_model='posexp',
                                       learned_intrinsics=True, checkpoint=d, width=W, height=H,
                                       device='cpu', num_threads=1)
    assert manifest['check']['passed'], manifest['check']
    assert manifest['pose_outputs'] == ['axisangle', 'translation', 'intrinsics', 'explainability']
    exp = Estimator(EstimatorConfig(exported_model_dir=str(tmp_path / 'exp'), device='cpu',
                                    num_threads=1, width=W, height=H))
    assert exp.config.model == LIGHT and exp.config.pose_model == 'posexp'
    assert exp.config.learned_intrinsics
    ref = Estimator(_cfg(model=LIGHT, pose_model='posexp', learned_intrinsics=True), d)
    for im in _images(2):
        a, b = exp.infer(im, None), ref.infer(im, None)
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-3)
        np.testing.assert_allclose(a.K, b.K, rtol=1e-5)
    np.testing.assert_allclose(a.relative_pose, b.relative_pose, atol=1e-5)
    np.testing.assert_allclose(a.explainability, b.explainability, atol=1e-4)


def test_backend_failure_falls_back_to_torch(monkeypatch, caplog):
    """A PackNet/PoseExpNet that ONNX Runtime cannot take runs on torch, with the reason logged
    and in backend_info (the ResNet baseline keeps raising: its export must work)."""
    from depth_ego_ros.core.backends import OrtRunner

    def broken(*args, **kwargs):
        raise RuntimeError('simulated export failure')
    monkeypatch.setattr(OrtRunner, 'from_nets', broken)
    with caplog.at_level(logging.WARNING):
        est = Estimator(_cfg(model=LIGHT, pose_model='posexp', backend='onnxruntime'))
    assert est.backend_info['backend'] == 'torch' and est.config.backend == 'torch'
    assert 'simulated export failure' in est.backend_info['reason']
    assert 'falling back to torch' in caplog.text
    im = _images(1)[0]
    assert est.infer(im, K_CAM).depth.shape == im.shape[:2]
    with pytest.raises(RuntimeError, match='simulated'):
        Estimator(_cfg(backend='onnxruntime'))
