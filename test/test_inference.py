"""Fast inference (issue 8): export + check, exported-model backends, backend 'auto', multi-camera
batching, device functions (upload / colour / resize / point packing) against numpy/PIL
references, autocast path; CUDA-only checks skip without a GPU."""
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from depth_ego_ros.cli.main import main
from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.core import export as export_mod
from depth_ego_ros.core.backends import FastELU, TorchRunner, onnxruntime_available
from depth_ego_ros.core.device_ops import (Uploader, depth_to_cloud, pack_rgb, split_cloud,
                                           to_network_input, to_rgb)
from depth_ego_ros.core.cameras import default_intrinsics
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig, Frame
from depth_ego_ros.core.models import build_networks

pytestmark = pytest.mark.timeout(240)
torch.set_num_threads(2)

W, H = 96, 64           # network resolution (tiny; >= 64: 2 pixels at 1/32 scale)
CUDA = torch.cuda.is_available()
needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason='onnxruntime not installed')
needs_cuda = pytest.mark.skipif(not CUDA, reason='needs a CUDA device (none on this machine)')


def _cfg(**kw):
    base = dict(width=W, height=H, device='cpu')
    base.update(kw)
    return EstimatorConfig(**base)


def _images(n=3, h=50, w=90, seed=0):
    """A smooth moving pattern (so the pose net sees structured input)."""
    rng = np.random.default_rng(seed)
    base = rng.random((h // 5 + 2, w // 5 + n + 2, 3))
    big = np.kron(base, np.ones((5, 5, 1)))
    return [np.ascontiguousarray((big[:h, 2 * i:2 * i + w] * 255).astype(np.uint8)) for i in range(n)]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpt')
    depth_net, pose_net, _ = build_networks('resnet18', seed=7)
    ckpt.save_monodepth2(d, depth_net.encoder, depth_net.decoder, pose_net.encoder,
                         pose_net.decoder, height=H, width=W)
    return d


@pytest.fixture(scope='module')
def reference(checkpoint):
    """Plain eager torch (networks exactly as built) with the checkpoint."""
    return Estimator(_cfg(backend='torch', optimize=False), checkpoint)


def _run_sequence(est, frames, K, **kw):
    est.reset()
    return [est.infer(f, K, **kw) for f in frames]


def _assert_same(ref, got, rtol=1e-4, pose_atol=1e-6):
    for r, g in zip(ref, got):
        assert g.depth.shape == r.depth.shape and g.depth.dtype == np.float32
        assert np.allclose(g.depth, r.depth, rtol=rtol)
        assert (g.relative_pose is None) == (r.relative_pose is None)
        if r.relative_pose is not None:
            assert np.allclose(g.relative_pose, r.relative_pose, atol=pose_atol)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def exported(checkpoint, tmp_path_factory):
    """fmt -> (directory, stdout of `depth-ego export`), exported once per module."""
    cache = {}

    def get(fmt):
        if fmt not in cache:
            out = tmp_path_factory.mktemp('export') / fmt
            capture = __import__('io').StringIO()
            from contextlib import redirect_stdout
            with redirect_stdout(capture):
                rc = main(['export', '--checkpoint', str(checkpoint), '--format', fmt, '--out',
                           str(out), '--threads', '2'])
            cache[fmt] = (out, rc, capture.getvalue())
        return cache[fmt]
    return get


@pytest.mark.parametrize('fmt, backend', [pytest.param('onnx', 'onnxruntime', marks=needs_ort),
                                          ('torchscript', 'torchscript')])
def test_export_matches_torch_and_loads_by_config(fmt, backend, checkpoint, reference, exported):
    out, rc, text = exported(fmt)
    assert rc == 0, text
    assert 'PASS' in text and 'disparity max |err|' in text and 'tolerance' in text
    m = json.loads((out / 'export.json').read_text())
    assert (m['format'], m['width'], m['height'], m['precision']) == (fmt, W, H, 'fp32')
    assert m['check']['passed'] and m['check']['disparity_max_abs'] <= 1e-4
    assert m['check']['pose_max_abs'] <= 1e-5 and m['check']['batch'] == 2
    ext = '.onnx' if fmt == 'onnx' else '.pt'
    assert m['files'] == {'depth': 'depth' + ext, 'pose': 'pose' + ext}
    assert m['checkpoint'] == str(checkpoint) and not m['random_weights']

    # the exported directory replaces the checkpoint: backend auto picks the format's runtime
    est = Estimator(_cfg(exported_model_dir=str(out)))
    assert est.backend_info['backend'] == backend and est.config.backend == backend
    if backend == 'onnxruntime':
        assert est.backend_info['providers'][0] == 'CPUExecutionProvider'
    frames, K = _images(3), default_intrinsics(90, 50)
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(est, frames, K))
    with pytest.raises(ValueError, match='cannot run the exported'):
        Estimator(_cfg(exported_model_dir=str(out), backend='torch'))


@needs_ort
def test_export_fp16_onnx_within_tolerance(checkpoint, reference, tmp_path, capsys):
    out = tmp_path / 'fp16'
    assert main(['export', '--checkpoint', str(checkpoint), '--format', 'onnx', '--fp16',
                 '--out', str(out), '--threads', '2']) == 0
    m = json.loads((out / 'export.json').read_text())
    assert m['precision'] == 'fp16' and m['check']['tolerance'] == export_mod.TOLERANCES['fp16']
    est = Estimator(_cfg(exported_model_dir=str(out)))
    assert est.config.precision == 'fp16'
    frames, K = _images(2), default_intrinsics(90, 50)
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(est, frames, K),
                 rtol=2e-2, pose_atol=1e-3)


def test_export_check_detects_other_weights(exported):
    out, rc, _ = exported('torchscript')
    assert rc == 0
    other_d, other_p, _ = build_networks('resnet18', seed=123)
    report = export_mod.verify_export(out, other_d, other_p, device='cpu')
    assert not report['passed']
    assert report['disparity_max_abs'] > report['tolerance']['disparity']


def test_export_cli_exit_codes(checkpoint, tmp_path, monkeypatch, capsys):
    real = export_mod.verify_export

    def failing(*a, **kw):        # what verify_export reports for a mismatching model
        return dict(passed=False, disparity_max_abs=0.5, pose_max_abs=0.1, batch=2,
                    tolerance=dict(export_mod.TOLERANCES['fp32']), device='cpu', runtime='x')
    monkeypatch.setattr(export_mod, 'verify_export', failing)
    rc = main(['export', '--checkpoint', str(checkpoint), '--format', 'torchscript', '--out',
               str(tmp_path / 'bad')])
    assert rc == 1
    assert 'FAIL' in capsys.readouterr().out
    monkeypatch.setattr(export_mod, 'verify_export', real)
    assert main(['export', '--format', 'onnx', '--out', str(tmp_path / 'x'), '--width', '50']) == 2
    assert 'multiple of 32' in capsys.readouterr().err
    bad = tmp_path / 'empty'
    bad.mkdir()
    assert main(['export', '--checkpoint', str(bad), '--format', 'onnx', '--out', str(tmp_path / 'y')]) == 2
    assert 'encoder.pth' in capsys.readouterr().err


def test_tensorrt_is_skipped_with_a_reason(tmp_path, capsys):
    reason = export_mod.tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip('TensorRT is available here: see test_cuda_tensorrt_export')
    assert main(['export', '--format', 'tensorrt', '--out', str(tmp_path / 'trt')]) == 2
    err = capsys.readouterr().err
    assert 'TensorRT' in err and reason in err
    assert not (tmp_path / 'trt' / 'export.json').exists()
    with pytest.raises(ValueError, match='exported_model_dir'):
        Estimator(_cfg(backend='tensorrt'))


def test_exported_dir_errors(tmp_path):
    with pytest.raises(ValueError, match='export.json'):
        Estimator(_cfg(exported_model_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------
@needs_ort
def test_backend_auto_on_cpu(checkpoint, reference, tmp_path):
    est = Estimator(_cfg(cache_dir=str(tmp_path)), checkpoint)
    assert EstimatorConfig().backend == 'auto'
    # the measured choice among the fp32 CPU runtimes (OpenVINO present: ORT or OpenVINO fp32)
    assert est.config.backend in ('onnxruntime', 'openvino') and est.config.precision == 'fp32'
    assert est.backend_info['requested'] == 'auto' and 'auto' in est.backend_info['reason']
    if est.config.backend == 'onnxruntime':
        assert est.backend_info['providers'] == ['CPUExecutionProvider']
    assert torch.get_num_threads() == 1          # torch only pre/post-processes next to ORT
    frames, K = _images(2), default_intrinsics(90, 50)
    seen = []

    def worker():                                # OpenMP thread counts are per thread
        torch.set_num_threads(2)
        est.depth_only(frames[0], K)
        seen.append(torch.get_num_threads())
    t = __import__('threading').Thread(target=worker)
    t.start()
    t.join()
    assert seen == [1]
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(est, frames, K))
    # torch-only options make auto choose torch; an explicit torch still works
    assert Estimator(_cfg(channels_last=True), checkpoint).config.backend == 'torch'
    assert Estimator(_cfg(precision='bf16'), checkpoint).config.backend == 'torch'
    explicit = Estimator(_cfg(backend='torch', num_threads=2), checkpoint)
    assert explicit.config.backend == 'torch' and torch.get_num_threads() == 2
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(explicit, frames, K))


@pytest.mark.parametrize('kw', [dict(backend='torch'), dict(backend='torch', channels_last=True),
                                dict(backend='torchscript')],
                         ids=['torch-optimized', 'channels_last', 'torchscript'])
def test_torch_backends_match_plain_eager(kw, checkpoint, reference):
    est = Estimator(_cfg(**kw), checkpoint)
    frames, K = _images(3), default_intrinsics(90, 50)
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(est, frames, K))


def test_fast_elu_and_batchnorm_folding():
    x = torch.linspace(-20, 20, 10001)
    assert torch.allclose(FastELU()(x), F.elu(x), atol=1e-7, rtol=0)
    d, p, _ = build_networks('resnet18', seed=3)
    d2, p2, _ = build_networks('resnet18', seed=3)
    r = TorchRunner(d2, p2, 'cpu', optimize=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in r.depth_net.modules())
    assert not any(isinstance(m, torch.nn.ELU) for m in r.depth_net.modules())
    x = torch.rand(2, 3, H, W)
    pair = torch.rand(2, 6, H, W)
    with torch.inference_mode():
        assert torch.allclose(r.depth(x), d(x), atol=1e-5)
        for a, b in zip(r.pose(pair), p(pair)):
            assert torch.allclose(a, b, atol=1e-7)


def test_bf16_autocast_keeps_pose_decoder_and_depth_in_fp32(checkpoint, reference):
    """The autocast code path of CUDA fp16, run on the CPU with bf16."""
    est = Estimator(_cfg(backend='torch', precision='bf16'), checkpoint)
    assert est.dtype == torch.bfloat16 and est.backend_info['precision'] == 'bf16'
    x = torch.rand(1, 3, H, W)
    with torch.inference_mode():
        assert est.runner.depth(x).dtype == torch.float32
        aa, t = est.runner.pose(torch.rand(1, 6, H, W))
        assert aa.dtype == t.dtype == torch.float32
    frames, K = _images(2), default_intrinsics(90, 50)
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(est, frames, K),
                 rtol=5e-2, pose_atol=1e-3)


# ---------------------------------------------------------------------------------------------
# multi-camera batching
# ---------------------------------------------------------------------------------------------
class _Counting:
    """Wraps a runner, counting network calls and batch sizes."""

    def __init__(self, runner):
        self.runner, self.calls = runner, []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def depth(self, x):
        self.calls.append(('depth', x.shape[0]))
        return self.runner.depth(x)

    def pose(self, pair):
        self.calls.append(('pose', pair.shape[0]))
        return self.runner.pose(pair)


@pytest.mark.parametrize('backend', ['torch', pytest.param('onnxruntime', marks=needs_ort)])
def test_infer_batch_equals_separate_infer(backend, checkpoint, tmp_path):
    cams = {  # camera id -> (frames, K, encoding); different sizes, one bgr8 camera
        'front': (_images(3, 50, 90, seed=1), default_intrinsics(90, 50), 'rgb8'),
        'left': (_images(3, 40, 72, seed=2), default_intrinsics(72, 40), 'bgr8'),
        7: (_images(3, 50, 90, seed=3), default_intrinsics(90, 50) * [[1.1], [1.1], [1]], 'rgb8'),
    }
    cfg = _cfg(backend=backend, cache_dir=str(tmp_path), scale_mode='speed', scale_smoothing=0.5)
    batched = Estimator(cfg, checkpoint)
    batched.runner = _Counting(batched.runner)
    single = {c: Estimator(cfg, checkpoint) for c in cams}
    order = [['front', 'left', 7], [7, 'front', 'left'], ['left', 7, 'front']]
    for step, ids in enumerate(order):
        frames = []
        for c in ids:
            imgs, K, enc = cams[c]
            img = imgs[step][..., ::-1] if enc == 'bgr8' else imgs[step]
            frames.append(Frame(img, K, 0.1 * step, 2.0 + step, c, enc))
        batched.runner.calls.clear()
        outs = batched.infer_batch(frames)
        # one depth call for all cameras, one pose call for those with a previous frame
        assert batched.runner.calls == [('depth', 3)] + ([('pose', 3)] if step else [])
        assert [o.camera_id for o in outs] == ids                       # input order
        for c, o in zip(ids, outs):
            imgs, K, enc = cams[c]
            ref = single[c].infer(imgs[step], K, stamp=0.1 * step, speed=2.0 + step)
            assert o.depth.shape == imgs[step].shape[:2] and o.stamp == pytest.approx(0.1 * step)
            assert np.allclose(o.depth, ref.depth, rtol=1e-4)
            assert np.allclose(o.disparity, ref.disparity, rtol=1e-4)
            assert o.scale == pytest.approx(ref.scale, rel=1e-4)
            if step == 0:
                assert o.relative_pose is None and ref.relative_pose is None
            else:                                   # each camera continues its own chain
                assert np.allclose(o.relative_pose, ref.relative_pose, atol=1e-6)
    assert sorted(map(str, batched.cameras)) == ['7', 'front', 'left']
    # one camera reset: only its chain restarts
    batched.reset('left')
    outs = batched.infer_batch([(cams['front'][0][0], cams['front'][1], 1.0, None, 'front'),
                                (cams['left'][0][0], cams['left'][1], 1.0, None, 'left')])
    assert outs[0].relative_pose is not None and outs[1].relative_pose is None


def test_infer_batch_same_camera_twice_is_chained_in_order(checkpoint):
    est_b = Estimator(_cfg(backend='torch'), checkpoint)
    est_s = Estimator(_cfg(backend='torch'), checkpoint)
    frames, K = _images(3), default_intrinsics(90, 50)
    outs = est_b.infer_batch([(f, K) for f in frames])
    _assert_same([est_s.infer(f, K) for f in frames], outs)
    assert outs[0].relative_pose is None and outs[2].relative_pose is not None


def test_infer_batch_bad_frame_changes_nothing(checkpoint):
    est = Estimator(_cfg(backend='torch'), checkpoint)
    img, K = _images(1)[0], default_intrinsics(90, 50)
    est.infer(img, K, camera_id='a')
    with pytest.raises(ValueError, match=r'frame 1: .*uint8'):
        est.infer_batch([(img, K, None, None, 'a'), (img.astype(np.float32), K, None, None, 'b')])
    with pytest.raises(ValueError, match=r'frame 0: K must be 3x3'):
        est.infer_batch([(img, np.eye(4)), (img, K)])
    with pytest.raises(ValueError, match='hashable'):
        est.infer_batch([(img, K, None, None, ['not', 'hashable'])])
    assert est.infer_batch([]) == []
    assert est.cameras == ['a']                     # 'b' never started
    assert est.infer(img, K, camera_id='a').relative_pose is not None


# ---------------------------------------------------------------------------------------------
# device functions vs numpy / PIL references (the CUDA path runs these same functions)
# ---------------------------------------------------------------------------------------------
def _numpy_to_rgb(img, enc):
    if enc == 'rgb8':
        return img
    if enc == 'bgr8':
        return img[..., ::-1]
    if enc == 'rgba8':
        return img[..., :3]
    if enc == 'bgra8':
        return img[..., [2, 1, 0]]
    return np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)


@pytest.mark.parametrize('enc, channels', [('rgb8', 3), ('bgr8', 3), ('rgba8', 4), ('bgra8', 4),
                                           ('mono8', 1)])
def test_upload_and_colour_conversion_match_numpy(enc, channels):
    rng = np.random.default_rng(1)
    imgs = [(rng.random((7, 11, channels)) * 255).astype(np.uint8) for _ in range(3)]
    up = Uploader('cpu')
    u8 = up(imgs)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 7, 11, channels)
    rgb = to_rgb(u8, enc).numpy()
    for i, im in enumerate(imgs):
        assert np.array_equal(rgb[i], _numpy_to_rgb(im, enc))
    strided = np.repeat(imgs[0], 2, axis=1)[:, ::2]                 # not contiguous
    ro = imgs[1].copy()
    ro.flags.writeable = False
    assert np.array_equal(up([strided])[0].numpy(), imgs[0])
    assert np.array_equal(up([ro])[0].numpy(), imgs[1])
    with pytest.raises(ValueError, match='same shape'):
        up([imgs[0], imgs[0][:5]])


@pytest.mark.parametrize('size', [(32, 64), (64, 128), (20, 30)], ids=['down', 'up', 'down-odd'])
def test_resize_matches_pil(size):
    rng = np.random.default_rng(2)
    img = (rng.random((50, 90, 3)) * 255).astype(np.uint8)
    got = to_network_input(torch.from_numpy(img)[None], size)[0].numpy()
    h, w = size
    ref = np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32) / 255.0, mode='F')
                               .resize((w, h), Image.BILINEAR)) for c in range(3)])
    assert got.shape == (3, h, w)
    assert np.abs(got - ref).max() < 1e-5


def _numpy_cloud(depth, rgb, K, stride, min_range, max_range):
    """The numpy reference: pixels (i*stride, j*stride), ray K^-1 (u, v, 1) * depth."""
    v, u = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    d = depth[::stride, ::stride].ravel().astype(np.float64)
    pts = (rays * d).T
    with np.errstate(invalid='ignore'):
        rng_ = np.linalg.norm(pts, axis=1)
        keep = np.isfinite(d) & (d > 0) & (rng_ >= min_range) & (rng_ <= max_range)
    c = rgb[::stride, ::stride].reshape(-1, 3)[keep].astype(np.uint32)
    packed = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    return pts[keep].astype(np.float32), rgb[::stride, ::stride].reshape(-1, 3)[keep], packed


@pytest.mark.parametrize('stride, min_range, max_range', [(1, 0.0, np.inf), (3, 2.0, 6.0)])
def test_point_packing_matches_numpy(stride, min_range, max_range):
    rng = np.random.default_rng(4)
    depth = rng.uniform(0.5, 9.0, (23, 31)).astype(np.float32)
    depth[0, 0], depth[3, 3], depth[6, 9] = np.nan, 0.0, np.inf
    rgb = (rng.random((23, 31, 3)) * 255).astype(np.uint8)
    K = np.array([[20.0, 0.3, 15.2], [0, 22.0, 11.7], [0, 0, 1]])
    pts, cols, packed = _numpy_cloud(depth, rgb, K, stride, min_range, max_range)
    got = depth_to_cloud(torch.from_numpy(depth), torch.from_numpy(rgb), K, stride, min_range,
                         max_range).numpy()
    assert got.shape == (len(pts), 4) and got.dtype == np.float32
    assert np.allclose(got[:, :3], pts, rtol=1e-5, atol=1e-6)
    assert np.array_equal(got[:, 3].view(np.uint32), packed.view(np.uint32))   # bit exact
    xyz, c = split_cloud(got)
    assert np.array_equal(c, cols) and np.array_equal(xyz, got[:, :3])
    assert np.array_equal(pack_rgb(torch.from_numpy(rgb)).numpy().view(np.uint32)[0, :3],
                          (rgb[0, :3, 0].astype(np.uint32) << 16) | (rgb[0, :3, 1].astype(np.uint32) << 8)
                          | rgb[0, :3, 2])
    xyz_only = depth_to_cloud(torch.from_numpy(depth), None, K, stride, min_range, max_range)
    assert xyz_only.shape == (len(pts), 3)


def test_estimator_point_cloud(checkpoint):
    est = Estimator(_cfg(backend='torch', scale_mode='fixed', scale_factor=3.0), checkpoint)
    frames, K = _images(2), default_intrinsics(90, 50)
    with pytest.raises(ValueError, match='no frame'):
        est.point_cloud()
    out_a = est.infer(frames[0], K, camera_id='a')
    est.depth_only(frames[1], K, camera_id='b')
    got = est.point_cloud('a', stride=2, min_range=0.0, max_range=30.0)
    pts, cols, packed = _numpy_cloud(out_a.depth, frames[0], K, 2, 0.0, 30.0)
    assert got.shape == (len(pts), 4) and len(pts) > 0
    assert np.allclose(got[:, :3], pts, rtol=1e-5, atol=1e-6)
    assert np.array_equal(split_cloud(got)[1], cols)
    d_b = est.depth_only(frames[1], K, camera_id='b')
    assert np.allclose(est.point_cloud('b', max_range=None)[:, :3],
                       _numpy_cloud(d_b, frames[1], K, 1, 0.0, np.inf)[0], rtol=1e-5, atol=1e-6)
    assert est.point_cloud('b', with_rgb=False).shape[1] == 3
    with pytest.raises(ValueError, match='stride'):
        est.point_cloud('a', stride=0)
    with pytest.raises(ValueError, match='min_range'):
        est.point_cloud('a', min_range=5.0, max_range=1.0)


def test_encodings_through_the_estimator(checkpoint):
    est = Estimator(_cfg(backend='torch'), checkpoint)
    img, K = _images(1)[0], default_intrinsics(90, 50)
    ref = est.depth_only(img, K)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(est.depth_only(np.ascontiguousarray(img[..., ::-1]), K, encoding='bgr8'), ref)
    assert np.array_equal(est.depth_only(rgba, K, encoding='rgba8'), ref)
    grey = img[..., 1].copy()
    assert np.array_equal(est.depth_only(grey, K, encoding='mono8'),
                          est.depth_only(np.repeat(grey[..., None], 3, axis=2), K))
    with pytest.raises(ValueError, match='encoding'):
        est.depth_only(img, K, encoding='yuv422')
    with pytest.raises(ValueError, match='HxWx4'):
        est.depth_only(img, K, encoding='rgba8')


# ---------------------------------------------------------------------------------------------
# CUDA (skipped here: no GPU)
# ---------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize('kw', [dict(precision='fp32'), dict(precision='fp16'),
                                dict(precision='fp16', cuda_graphs=True)],
                         ids=['fp32', 'fp16', 'fp16-graphs'])
def test_cuda_matches_cpu(kw, checkpoint, reference):
    est = Estimator(_cfg(device='cuda', **kw), checkpoint)
    assert est.device.type == 'cuda' and est.config.backend == 'torch'
    frames, K = _images(3), default_intrinsics(90, 50)
    tol = dict(rtol=1e-3, pose_atol=1e-5) if kw['precision'] == 'fp32' else dict(rtol=3e-2, pose_atol=1e-3)
    _assert_same(_run_sequence(reference, frames, K), _run_sequence(est, frames, K), **tol)
    outs = est.infer_batch([(f, K, None, None, i) for i, f in enumerate(frames)])
    assert [o.camera_id for o in outs] == [0, 1, 2]
    cpu_cloud = reference.point_cloud(stride=2)
    assert abs(len(est.point_cloud(stride=2)) - len(cpu_cloud)) <= 0.01 * len(cpu_cloud) + 1


@needs_cuda
def test_cuda_pinned_upload_matches_cpu():
    imgs = [np.random.default_rng(i).integers(0, 255, (9, 13, 3), dtype=np.uint8) for i in range(2)]
    up = Uploader('cuda')
    assert up.pin
    for _ in range(3):                               # reuses the staging buffer
        got = to_network_input(to_rgb(up(imgs), 'bgr8'), (64, 96)).cpu()
        ref = to_network_input(to_rgb(Uploader('cpu')(imgs), 'bgr8'), (64, 96))
        assert torch.allclose(got, ref, atol=1e-5)


@needs_cuda
def test_cuda_tensorrt_export(checkpoint, tmp_path, capsys):
    if export_mod.tensorrt_unavailable_reason('cuda'):
        pytest.skip(export_mod.tensorrt_unavailable_reason('cuda'))
    rc = main(['export', '--checkpoint', str(checkpoint), '--format', 'tensorrt', '--fp16',
               '--out', str(tmp_path / 'trt'), '--device', 'cuda'])
    assert rc == 0, capsys.readouterr().out
    est = Estimator(_cfg(device='cuda', exported_model_dir=str(tmp_path / 'trt')))
    assert est.config.backend == 'tensorrt'


def test_random_weights_export_warns(tmp_path, caplog):
    d, p, _ = build_networks('resnet18')
    export_mod.export_models(d, None, tmp_path / 'ts', 'torchscript', W, H, device='cpu')
    with caplog.at_level(logging.WARNING, logger='depth_ego_ros.core.estimator'):
        est = Estimator(_cfg(exported_model_dir=str(tmp_path / 'ts')))
    assert 'RANDOM weights' in caplog.text and not est.has_pose
    img, K = _images(1)[0], default_intrinsics(90, 50)
    est.infer(img, K)
    assert est.infer(img, K).relative_pose is None
