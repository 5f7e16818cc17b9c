"""Pieces of the perception node without DDS: the parameter table vs config/depth_ego.yaml and
the estimator's defaults, the odometry chain, the base->camera transform, the RViz layout."""
import math
import pathlib

import numpy as np
import pytest
import yaml

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
pytest.importorskip('torch', reason='the perception node needs torch')

from depth_ego_ros.core.geometry import axis_angle_to_matrix_np  # noqa: E402
from depth_ego_ros.ros.odometry import PoseChain  # noqa: E402
from depth_ego_ros.ros.perception_params import PARAMS, rpy_to_matrix as _rpy_to_matrix  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def _flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[prefix + k] = v
    return out


def test_params_file_documents_every_parameter_with_its_default():
    text = (REPO / 'config' / 'depth_ego.yaml').read_text()
    values = _flatten(yaml.safe_load(text)['/**']['ros__parameters'])
    declared = {p.name: p.default for p in PARAMS}
    assert set(values) == set(declared)
    for name, default in declared.items():
        assert values[name] == pytest.approx(default) if isinstance(default, (float, list)) \
            else values[name] == default, name
    lines = text.splitlines()
    for p in PARAMS:                         # a comment line right above each key
        key = p.name.split('.')[-1]
        idx = next(i for i, line in enumerate(lines) if line.strip().startswith(f'{key}:'))
        assert lines[idx - 1].strip().startswith('#'), p.name


def test_network_defaults_are_the_estimators():
    """The node's estimator parameters default to EstimatorConfig's defaults (one truth)."""
    import dataclasses
    from depth_ego_ros.core.estimator import EstimatorConfig
    est = {f.name: f.default for f in dataclasses.fields(EstimatorConfig)}
    node = {p.name: p.default for p in PARAMS}
    pairs = {'model': 'model', 'width': 'width', 'height': 'height', 'device': 'device',
             'precision': 'precision', 'backend': 'backend', 'min_depth': 'min_depth',
             'max_depth': 'max_depth', 'scale.mode': 'scale_mode',
             'scale.camera_height': 'camera_height', 'num_threads': 'num_threads',
             'pose_model': 'pose_model', 'learned_intrinsics': 'learned_intrinsics'}
    for node_name, est_name in pairs.items():
        assert node[node_name] == est[est_name], node_name
    # scale.factor 0 (a ROS double cannot be None) = EstimatorConfig's None: the checkpoint's factor
    assert node['scale.factor'] == 0.0 and est['scale_factor'] is None
    from depth_ego_ros.core.estimator import MODELS, POSE_MODELS
    choices = {p.name: p.choices for p in PARAMS}
    assert tuple(choices['model']) == tuple(MODELS)
    assert tuple(choices['pose_model']) == tuple(POSE_MODELS)


def test_every_parameter_has_description_and_valid_default():
    for p in PARAMS:
        assert len(p.description) > 10, p.name
        assert p.check(p.default) is None, p.name
        d = p.descriptor()
        if p.range is not None and isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
            assert d.integer_range or d.floating_point_range, p.name


def _T(aa, t):
    T = np.eye(4)
    T[:3, :3] = axis_angle_to_matrix_np(np.asarray(aa, float))
    T[:3, 3] = t
    return T


def test_pose_chain_composes_twist_and_covariance():
    chain = PoseChain(translation_noise=0.1, rotation_noise=0.2)
    chain.update(None, None)
    assert np.allclose(chain.pose, np.eye(4)) and chain.twist_var[0] == PoseChain.UNKNOWN_VARIANCE
    rels = [_T([0, 0.02 * k, 0], [0.01, 0, 0.5]) for k in range(1, 4)]
    expected = np.eye(4)
    last_var = np.zeros(6)
    for rel in rels:
        chain.update(rel, 0.1)
        expected = expected @ rel
        assert np.allclose(chain.pose, expected)
        var = np.diag(chain.pose_covariance)
        assert np.all(var > last_var)
        last_var = var
    assert np.allclose(chain.linear, rels[-1][:3, 3] / 0.1)
    assert np.allclose(chain.angular, [0, 0.06 / 0.1, 0])
    assert chain.twist_var[0] == pytest.approx(((0.1 * np.linalg.norm(rels[-1][:3, 3])) ** 2 + 1e-8) / 0.01)
    chain.reset()
    assert np.allclose(chain.pose, np.eye(4)) and chain.steps == 0


def test_pose_chain_in_base_frame():
    """Camera looking along base x: a camera step 1 m forward along optical z moves base_link
    1 m along its x; the camera's pose in odom stays T_base_cam-consistent."""
    T_bc = _rpy_to_matrix([0.2, 0.0, 1.0], [-math.pi / 2, 0.0, -math.pi / 2])
    assert np.allclose(T_bc[:3, :3] @ [0, 0, 1], [1, 0, 0])
    chain = PoseChain(T_bc)
    chain.update(_T([0, 0, 0], [0, 0, 1.0]), 1.0)
    assert np.allclose(chain.pose[:3, 3], [1.0, 0, 0])
    assert np.allclose(chain.linear, [1.0, 0, 0])
    # a camera rotation about optical -y (= up = base +z) is a base yaw about +z (to the left)
    chain.reset()
    chain.update(_T([0, -0.1, 0], [0, 0, 0]), 1.0)
    assert np.allclose(chain.angular, [0, 0, 0.1])
    assert np.allclose(chain.camera_pose(), chain.pose @ T_bc)


def test_rviz_layout_shows_the_node_outputs():
    """rviz/depth_ego.rviz parses and points at the topics the node publishes in the launch
    file's default namespace, with odom as the fixed frame."""
    cfg = yaml.safe_load((REPO / 'rviz' / 'depth_ego.rviz').read_text())
    vm = cfg['Visualization Manager']
    topics = {d['Class'].split('/')[-1] + ':' + d['Topic']['Value']
              for d in vm['Displays'] if 'Topic' in d}
    assert topics == {'PointCloud2:/camera/points', 'Odometry:/camera/odom',
                      'Image:/camera/depth/colored', 'Image:/camera/depth'}
    assert {d['Class'] for d in vm['Displays']} >= {'rviz_default_plugins/TF'}
    assert vm['Global Options']['Fixed Frame'] == 'odom'
    points = next(d for d in vm['Displays'] if d['Class'].endswith('PointCloud2'))
    assert points['Color Transformer'] == 'RGB8'            # the packed rgb field
    launch_text = (REPO / 'launch' / 'depth_ego.launch.py').read_text()
    assert "('camera_namespace', 'camera'," in launch_text


def test_keyed_slots_batch_the_waiting_cameras_and_count_drops_per_camera():
    import threading
    import time
    from depth_ego_ros.ros.runtime import KeyedSlots
    slots = KeyedSlots(['front', 'left', 'rear'])
    assert slots.take_batch(timeout=0.01) == {}
    slots.put('left', 1)
    assert not slots.put('front', 2)
    assert slots.put('front', 3)                      # replaced before being taken: a drop
    assert slots.dropped == {'front': 1}
    assert slots.take_batch(timeout=0.1) == {'front': 3, 'left': 1}   # camera order, newest
    # window: front and left were active, so a frame of front waits for left's (not rear's)
    slots.put('front', 4)
    threading.Timer(0.05, lambda: slots.put('left', 5)).start()
    t0 = time.monotonic()
    assert slots.take_batch(timeout=1.0, window=2.0) == {'front': 4, 'left': 5}
    assert time.monotonic() - t0 < 1.5
    # a camera silent for longer than active_for does not delay the others
    slots.active_for = 0.05
    time.sleep(0.1)
    slots.put('front', 6)
    t0 = time.monotonic()
    assert slots.take_batch(timeout=1.0, window=2.0) == {'front': 6}
    assert time.monotonic() - t0 < 0.5
    slots.close()
    assert slots.take_batch(timeout=1.0) == {} and slots.closed
