"""`depth-ego export` with the method options: PoseExpNet + learned intrinsics to ONNX passes
its own torch-match check, the manifest records the options (from the command line or the
checkpoint), and the Estimator runs the exported files without camera intrinsics."""
import json

import numpy as np
import pytest

from depth_ego_ros.cli.main import main
from depth_ego_ros.core.estimator import Estimator, EstimatorConfig
from depth_ego_ros.core.models import build_networks, save_networks

W, H = 128, 64
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures('torch_one_thread')]


def _check_manifest(out, stdout):
    m = json.loads((out / 'export.json').read_text())
    assert m['pose_model'] == 'posexp' and m['learned_intrinsics'] is True
    assert (m['width'], m['height']) == (W, H)
    assert {'intrinsics', 'explainability'} <= set(m['pose_outputs'])
    c = m['check']
    assert c['passed'] is True
    assert c['pose_max_abs'] <= c['tolerance']['pose']
    assert c['explainability_max_abs'] <= c['tolerance']['disparity']
    assert 'PASS' in stdout and 'explainability max |err|' in stdout
    assert 'resnet18/posexp + learned intrinsics' in stdout
    return m


def test_posexp_learned_intrinsics_onnx_from_the_command_line(tmp_path, capsys):
    out = tmp_path / 'onnx'
    rc = main(['export', '--format', 'onnx', '--out', str(out), '--width', str(W), '--height',
               str(H), '--pose-model', 'posexp', '--learned-intrinsics', '--device', 'cpu',
               '--threads', '1'])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    _check_manifest(out, cap.out)
    # the exported files run in the Estimator without any K: the learned one is used
    est = Estimator(EstimatorConfig(exported_model_dir=str(out), device='cpu', num_threads=1))
    assert est.config.pose_model == 'posexp' and est.config.learned_intrinsics
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 160, 3), dtype=np.uint8) for _ in range(2)]
    est.infer(frames[0])
    o = est.infer(frames[1])
    assert o.relative_pose is not None and o.depth.shape == (96, 160)
    K = o.K
    assert K.shape == (3, 3) and np.all(np.isfinite(K)) and K[0, 0] > 0 and 0 < K[0, 2] < 160
    assert o.explainability.shape == (H, W) and o.explainability.dtype == np.float32


def test_options_default_to_what_the_checkpoint_holds(tmp_path, capsys):
    depth, pose, _ = build_networks('resnet18', pose_model='posexp', learned_intrinsics=True)
    ck = save_networks(tmp_path / 'ckpt', depth, pose, model='resnet18', height=H, width=W)
    out = tmp_path / 'onnx'
    rc = main(['export', '--checkpoint', str(ck), '--format', 'onnx', '--out', str(out),
               '--device', 'cpu', '--threads', '1'])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    m = _check_manifest(out, cap.out)
    assert m['checkpoint'] and m.get('random_weights') in (None, False)
