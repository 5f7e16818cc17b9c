"""Estimator: outputs, input validation, backends (torch / channels_last / ONNX Runtime), scale modes."""
import logging
import os

import numpy as np
import pytest
import torch

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.core.cameras import default_intrinsics
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig, EstimatorOutput
from depth_ego_ros.core.scale import fit_ground_plane
from depth_ego_ros.core.visualize import colorize_disparity
from depth_ego_ros.core.models import build_networks
from depth_ego_ros.core.networks.depth_decoder import disp_to_depth

pytestmark = pytest.mark.timeout(180)
torch.set_num_threads(2)

W, H = 128, 64          # network resolution used throughout (tiny, fast)


def _cfg(**kw):
    base = dict(width=W, height=H, device='cpu')
    base.update(kw)
    return EstimatorConfig(**base)


def _images(n=3, h=50, w=90, seed=0):
    """A smooth moving pattern (so the pose net sees structured input)."""
    rng = np.random.default_rng(seed)
    base = rng.random((h // 5 + 2, w // 5 + 2, 3))
    big = np.kron(base, np.ones((5, 5, 1)))
    return [np.ascontiguousarray((big[:h, i:i + w] * 255).astype(np.uint8)) for i in range(n)]


@pytest.fixture(scope='module')
def est():
    return Estimator(_cfg())


@pytest.fixture
def K():
    return default_intrinsics(90, 50)


def test_output_types_shapes_and_pose_chain(est, K):
    est.reset()
    imgs = _images(3)
    out = est.infer(imgs[0], K, stamp=0.0)
    assert isinstance(out, EstimatorOutput)
    assert out.depth.shape == (50, 90) and out.depth.dtype == np.float32
    assert out.disparity.shape == (H, W) and out.disparity.dtype == np.float32
    assert np.all(np.isfinite(out.depth))
    assert out.depth.min() >= 0.1 - 1e-4 and out.depth.max() <= 100.0 + 1e-3
    assert out.relative_pose is None           # first frame
    assert out.scale == 1.0
    assert set(out.timings) == {'preprocess', 'depth', 'pose', 'postprocess', 'total'}
    assert all(v >= 0 for v in out.timings.values())

    out2 = est.infer(imgs[1], K, stamp=0.1)
    T = out2.relative_pose
    assert T.shape == (4, 4) and T.dtype == np.float64
    assert np.allclose(T[3], [0, 0, 0, 1])
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(T[:3, :3]), 1.0)
    assert out2.timings['pose'] > 0

    est.reset()
    assert est.infer(imgs[2], K).relative_pose is None


def test_depth_is_disparity_upsampled(est, K):
    """depth at input size = 1 / (bilinear upsampling of the net-res disparity)."""
    img = _images(1)[0]
    out = est.infer(img, K)
    up = torch.nn.functional.interpolate(torch.from_numpy(out.disparity)[None, None], size=(50, 90),
                                         mode='bilinear', align_corners=False)[0, 0].numpy()
    assert np.allclose(out.depth, 1.0 / up, rtol=1e-5)


def test_pose_is_inverse_of_network_prediction(est, K):
    """T_prev_curr = inverse of the pose net's prediction for the pair [prev, curr]."""
    from depth_ego_ros.core.geometry import pose_vec_to_mat
    est.reset()
    a, b = _images(2)
    est.infer(a, K)
    T = est.infer(b, K).relative_pose
    with torch.inference_mode():
        pair = torch.cat([est._preprocess(a), est._preprocess(b)], 1)
        aa, t = est.runner.pose_net(pair)
    M = pose_vec_to_mat(aa.double(), t.double())[0].numpy()   # T_curr_prev
    assert np.allclose(T @ M, np.eye(4), atol=1e-6)


def test_depth_only_matches_infer_and_keeps_state(est, K):
    est.reset()
    a, b = _images(2)
    d = est.depth_only(a, K)
    assert d.dtype == np.float32 and d.shape == (50, 90)
    first = est.infer(a, K)
    assert first.relative_pose is None          # depth_only did not store a previous frame
    assert np.array_equal(d, first.depth)
    est.depth_only(b, K)
    assert est.infer(b, K).relative_pose is not None


def test_read_only_and_non_contiguous_images(est, K):
    img = _images(1)[0]
    ro = img.copy()
    ro.flags.writeable = False
    strided = np.ascontiguousarray(np.concatenate([img, img], axis=1))[:, ::2]
    assert np.array_equal(est.depth_only(ro, K), est.depth_only(img, K))
    assert est.depth_only(strided, K).shape == (50, 90)


@pytest.mark.parametrize('image, match', [
    (np.zeros((50, 90, 3), np.float32), 'uint8'),
    (np.zeros((50, 90), np.uint8), 'HxWx3.*2-D grey'),
    (np.zeros((50, 90, 4), np.uint8), r'HxWx3.*\(50, 90, 4\)'),
    (np.zeros((0, 90, 3), np.uint8), 'zero size'),
    (np.zeros((50, 0, 3), np.uint8), 'zero size'),
    ([[1, 2, 3]], 'numpy array'),
])
def test_bad_images_raise_value_error(est, K, image, match):
    with pytest.raises(ValueError, match=match):
        est.infer(image, K)
    with pytest.raises(ValueError, match=match):
        est.depth_only(image, K)


def _k_with(**changes):
    K = default_intrinsics(90, 50)
    for (i, j), v in changes.get('set', {}).items():
        K[i, j] = v
    return K


@pytest.mark.parametrize('K, match', [
    (_k_with(set={(0, 0): np.nan}), 'finite'),
    (_k_with(set={(1, 2): np.inf}), 'finite'),
    (np.zeros((3, 3)), 'focal'),
    (_k_with(set={(1, 1): -5.0}), 'focal'),
    (np.eye(4), r'3x3.*\(4, 4\)'),
    (np.ones(9), r'3x3.*\(9,\)'),
    (_k_with(set={(2, 2): 0.0}), 'last row'),
    ('K', '3x3'),
])
def test_bad_intrinsics_raise_value_error(est, K, match):
    with pytest.raises(ValueError, match=match):
        est.infer(_images(1)[0], K)


def test_bad_stamp_and_speed(est, K):
    img = _images(1)[0]
    with pytest.raises(ValueError, match='stamp'):
        est.infer(img, K, stamp=float('nan'))
    with pytest.raises(ValueError, match='speed'):
        est.infer(img, K, speed='fast')


@pytest.mark.parametrize('kw, match', [
    (dict(width=100), 'multiple of 32'),
    (dict(height=0), 'multiple of 32'),
    (dict(model='resnet34'), 'model'),
    (dict(precision='fp8'), 'precision'),
    (dict(backend='tensorrt9'), 'backend'),
    (dict(device='tpu'), 'device'),
    (dict(min_depth=5.0, max_depth=1.0), 'min_depth'),
    (dict(scale_mode='magic'), 'scale_mode'),
    (dict(scale_factor=0.0), 'scale_factor'),
    (dict(camera_height=float('nan')), 'camera_height'),
    (dict(num_threads=-1), 'num_threads'),
    (dict(scale_smoothing=1.0), 'scale_smoothing'),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error when CUDA is absent')
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match='CUDA is not available'):
        Estimator(_cfg(device='cuda'))


def test_fp16_on_cpu_falls_back_to_fp32(K, caplog):
    with pytest.warns(RuntimeWarning, match='fp16'):
        e = Estimator(_cfg(precision='fp16'))
    assert e.config.precision == 'fp32' and e.dtype == torch.float32
    assert e.device.type == 'cpu'
    assert next(e.runner.depth_net.parameters()).dtype == torch.float32
    assert e.depth_only(_images(1)[0], K).dtype == np.float32


def test_random_weights_warn_and_are_reproducible(caplog, K):
    with caplog.at_level(logging.WARNING, logger='depth_ego_ros.core.estimator'):
        e = Estimator(_cfg())
    assert 'RANDOM weights' in caplog.text
    img = _images(1)[0]
    assert np.array_equal(e.depth_only(img, K), Estimator(_cfg()).depth_only(img, K))


def test_checkpoint_is_used(tmp_path, est, K):
    depth_net, pose_net, _ = build_networks('resnet18', seed=99)
    ckpt.save_monodepth2(tmp_path, depth_net.encoder, depth_net.decoder, pose_net.encoder,
                         pose_net.decoder, height=H, width=W)
    e = Estimator(_cfg(), checkpoint=tmp_path)
    img = _images(1)[0]
    d = e.depth_only(img, K)
    with torch.inference_mode():
        disp = depth_net(e._preprocess(img))
    scaled, _ = disp_to_depth(disp, 0.1, 100.0)
    assert np.allclose(e.infer(img, K).disparity, scaled[0, 0].numpy(), rtol=1e-6)
    assert not np.allclose(d, est.depth_only(img, K))
    # a depth-only checkpoint: no poses
    for name in (ckpt.POSE_FILE, ckpt.POSE_ENCODER_FILE):
        (tmp_path / name).unlink()
    e2 = Estimator(_cfg(), checkpoint=tmp_path)
    assert not e2.has_pose
    e2.infer(img, K)
    assert e2.infer(img, K).relative_pose is None


def test_channels_last_matches_eager(est, K):
    e = Estimator(_cfg(channels_last=True))
    a, b = _images(2)
    est.reset()
    ref = [est.infer(a, K), est.infer(b, K)]
    got = [e.infer(a, K), e.infer(b, K)]
    for r, g in zip(ref, got):
        assert np.allclose(r.depth, g.depth, rtol=1e-4)
    assert np.allclose(ref[1].relative_pose, got[1].relative_pose, atol=1e-6)


def test_onnxruntime_matches_torch_and_caches_export(est, K, tmp_path):
    pytest.importorskip('onnxruntime')
    e = Estimator(_cfg(backend='onnxruntime', cache_dir=str(tmp_path)))
    files = sorted(tmp_path.glob('*.onnx'))
    assert [f.name.split('_')[0] for f in files] == ['depth', 'pose']
    a, b = _images(2)
    est.reset()
    ref = [est.infer(a, K), est.infer(b, K)]
    got = [e.infer(a, K), e.infer(b, K)]
    for r, g in zip(ref, got):
        assert g.depth.shape == r.depth.shape and g.depth.dtype == np.float32
        assert np.allclose(r.depth, g.depth, rtol=1e-4, atol=1e-5)
    assert np.allclose(ref[1].relative_pose, got[1].relative_pose, atol=1e-6)
    # a second estimator with the same weights reuses the exported files
    mtimes = [f.stat().st_mtime_ns for f in files]
    e2 = Estimator(_cfg(backend='onnxruntime', cache_dir=str(tmp_path)))
    assert sorted(tmp_path.glob('*.onnx')) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert np.array_equal(e2.depth_only(a, K), e.depth_only(a, K))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_fp16_matches_cpu(est, K):
    e = Estimator(_cfg(device='cuda', precision='fp16'))
    img = _images(1)[0]
    assert e.device.type == 'cuda'
    d = e.depth_only(img, K)
    assert d.dtype == np.float32
    assert np.allclose(d, est.depth_only(img, K), rtol=2e-2)


# ---------------------------------------------------------------------------------------------
# scale modes. The networks are replaced by an analytic backend (same interface as the real
# runners) so that the true scale is known: a flat ground plane and a fixed forward motion.
# ---------------------------------------------------------------------------------------------
class _PlaneRunner:
    """Disparity of a ground plane ``rel_height`` (relative units) below the camera, and a
    pose net predicting T_curr_prev = translation ``t``."""

    def __init__(self, K, rel_height=0.5, t=(0.0, 0.0, -0.2), min_depth=0.1, max_depth=100.0):
        v = np.arange(H, dtype=np.float64)[:, None] * np.ones((1, W))
        with np.errstate(divide='ignore'):
            z = np.where(v - K[1, 2] > 0.5, rel_height * K[1, 1] / (v - K[1, 2]), 50.0)
        z = np.clip(z, min_depth, max_depth)
        disp = (1.0 / z - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)
        self.disp = torch.from_numpy(disp).float()[None, None]
        self.true_depth = z
        self.t = torch.tensor([t], dtype=torch.float32)

    def depth(self, image):
        return self.disp

    def pose(self, pair):
        return torch.zeros(1, 3), self.t


def _net_res_image():
    return np.full((H, W, 3), 128, np.uint8)


def test_fixed_scale(K):
    img = _images(2)
    plain = Estimator(_cfg())
    fixed = Estimator(_cfg(scale_mode='fixed', scale_factor=5.4))
    o = [plain.infer(i, K) for i in img]
    f = [fixed.infer(i, K) for i in img]
    assert f[1].scale == 5.4
    assert np.allclose(f[0].depth, 5.4 * o[0].depth, rtol=1e-5)
    assert np.allclose(f[1].relative_pose[:3, 3], 5.4 * o[1].relative_pose[:3, 3], rtol=1e-5)
    assert np.allclose(f[1].relative_pose[:3, :3], o[1].relative_pose[:3, :3])


def test_relative_scale_gives_median_one_depth(K):
    """scale_mode 'relative' (the relative-depth output mode): every depth map has median 1 at
    network resolution, and the frame's translation is divided by the same median."""
    img = _images(3)
    plain = Estimator(_cfg())
    rel = Estimator(_cfg(scale_mode='relative'))
    for i in img:
        o, r = plain.infer(i, K), rel.infer(i, K)
        # o.disparity is the network-resolution inverse depth: its median is 1 / median depth
        assert r.scale == pytest.approx(float(torch.from_numpy(o.disparity).median()), rel=1e-5)
        assert np.allclose(r.depth, o.depth * r.scale, rtol=1e-5)
        assert float(np.median(r.depth)) == pytest.approx(1.0, rel=0.05)
        if o.relative_pose is not None:
            assert np.allclose(r.relative_pose[:3, 3], o.relative_pose[:3, 3] * r.scale, rtol=1e-4)
            assert np.allclose(r.relative_pose[:3, :3], o.relative_pose[:3, :3], atol=1e-6)


def test_camera_height_scale_recovers_metric_depth():
    K = np.array([[60.0, 0, 63.5], [0, 60.0, 31.5], [0, 0, 1]])
    e = Estimator(_cfg(scale_mode='camera_height', camera_height=1.5, scale_smoothing=0.5))
    runner = _PlaneRunner(K, rel_height=0.5)
    e.runner = runner
    img = _net_res_image()
    # depth_only fits this frame without storing the estimate
    d0 = e.depth_only(img, K)
    assert e._scale is None
    assert np.allclose(d0[40:], 3.0 * runner.true_depth[40:], rtol=0.02)
    outs = [e.infer(img, K, stamp=0.1 * i) for i in range(3)]
    for o in outs:
        assert o.scale == pytest.approx(3.0, rel=0.02)        # 1.5 m / 0.5 relative units
        assert np.allclose(o.depth[40:], 3.0 * runner.true_depth[40:], rtol=0.02)
    assert np.linalg.norm(outs[1].relative_pose[:3, 3]) == pytest.approx(0.6, rel=0.02)


def test_camera_height_keeps_last_scale_without_ground():
    K = np.array([[60.0, 0, 63.5], [0, 60.0, 31.5], [0, 0, 1]])
    e = Estimator(_cfg(scale_mode='camera_height', camera_height=1.0))
    e.runner = _PlaneRunner(K, rel_height=0.25)
    img = _net_res_image()
    assert e.infer(img, K).scale == pytest.approx(4.0, rel=0.02)
    flat = _PlaneRunner(K)
    flat.disp = torch.full((1, 1, H, W), 0.01)    # a fronto-parallel wall: no ground plane
    e.runner = flat
    assert e.infer(img, K).scale == pytest.approx(4.0, rel=0.02)


def test_speed_scale():
    K = np.array([[60.0, 0, 63.5], [0, 60.0, 31.5], [0, 0, 1]])
    e = Estimator(_cfg(scale_mode='speed', scale_smoothing=0.0))
    e.runner = _PlaneRunner(K, t=(0.0, 0.0, -0.2))     # |t| = 0.2 relative units per frame
    img = _net_res_image()
    assert e.infer(img, K, stamp=10.0, speed=5.0).scale == 1.0        # no pose yet
    o = e.infer(img, K, stamp=10.1, speed=5.0)                          # 0.5 m travelled
    assert o.scale == pytest.approx(2.5)
    assert np.linalg.norm(o.relative_pose[:3, 3]) == pytest.approx(0.5)
    assert o.relative_pose[2, 3] == pytest.approx(0.5)                  # inverse of -0.2 * 2.5
    assert e.infer(img, K, stamp=10.2, speed=0.0).scale == pytest.approx(2.5)    # standing: kept
    assert e.infer(img, K, stamp=10.3, speed=None).scale == pytest.approx(2.5)   # no speed: kept
    assert e.infer(img, K, stamp=10.3, speed=5.0).scale == pytest.approx(2.5)    # dt = 0: kept
    # smoothing: geometric running average
    s = Estimator(_cfg(scale_mode='speed', scale_smoothing=0.5))
    s.runner = e.runner
    s.infer(img, K, stamp=0.0, speed=5.0)
    assert s.infer(img, K, stamp=0.1, speed=5.0).scale == pytest.approx(2.5)
    assert s.infer(img, K, stamp=0.2, speed=10.0).scale == pytest.approx(np.sqrt(2.5 * 5.0))


def test_fit_ground_plane_with_tilt_and_outliers():
    rng = np.random.default_rng(3)
    pitch = np.radians(12.0)
    up = np.array([0.0, -np.cos(pitch), -np.sin(pitch)])       # plane normal (towards the camera)
    # points on the plane n.p + h = 0 with h = 1.3, spread in front of the camera
    a = np.cross(up, [1.0, 0, 0]); a /= np.linalg.norm(a)
    b = np.cross(up, a)
    s, t = rng.uniform(-3, 3, 700), rng.uniform(2, 15, 700)
    ground = -1.3 * up + s[:, None] * b + t[:, None] * a
    ground = ground[ground[:, 2] > 0.5]
    ground += rng.normal(0, 0.01, ground.shape)
    clutter = rng.uniform([-3, -2, 1], [3, 1, 15], (300, 3))
    n, h = fit_ground_plane(np.concatenate([ground, clutter]))
    assert h == pytest.approx(1.3, rel=0.02)
    assert np.degrees(np.arccos(abs(n @ up))) < 2.0
    wall = np.stack([rng.uniform(-2, 2, 500), rng.uniform(-1, 1, 500), np.full(500, 4.0)], 1)
    assert fit_ground_plane(wall) is None
    assert fit_ground_plane(np.zeros((5, 3))) is None


def test_colorize_disparity():
    depth = np.tile(np.linspace(1.0, 50.0, 40, dtype=np.float32), (8, 1))
    depth[0, 0] = np.nan
    rgb = colorize_disparity(depth)
    assert rgb.shape == (8, 40, 3) and rgb.dtype == np.uint8
    assert rgb[4, 1].astype(int).sum() > rgb[4, -1].astype(int).sum()   # near is brighter
    with pytest.raises(ValueError, match='HxW'):
        colorize_disparity(np.zeros((2, 2, 2)))


def test_default_intrinsics():
    K = default_intrinsics(1242, 375)
    assert K[0, 0] == pytest.approx(0.58 * 1242) and K[1, 1] == pytest.approx(1.92 * 375)
    assert K[0, 2] == pytest.approx(621) and K[2, 2] == 1
