"""The Nav2 recipe: launch/nav2_costmap.launch.py compiles (CI on a distro launches it), the
node parameters it sets exist and pass their checks, and config/nav2_costmap.yaml observes the
node's outputs with the REP 105 frames."""
import ast
import importlib.util
import pathlib
import py_compile

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'nav2_costmap.launch.py'


def _functions(names):
    """Functions of the launch file without importing launch (absent without a distro)."""
    tree = ast.parse(LAUNCH.read_text())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    ns = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(LAUNCH), 'exec'), ns)
    return ns


def _args():
    tree = ast.parse(LAUNCH.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], 'id', '') == 'ARGUMENTS')
    return {name: default for name, default, _ in ast.literal_eval(node.value)}


def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH), doraise=True)


def test_node_parameters_of_the_recipe_are_valid():
    pytest.importorskip('rclpy', reason='the parameter table imports rclpy')
    from depth_ego_ros.ros.perception_params import PARAMS
    specs = {p.name: p for p in PARAMS}
    f = _functions({'_true', 'node_overrides'})
    args = _args()
    for wheel, tf in (('true', False), ('false', True)):
        p = f['node_overrides'](dict(args, wheel_odometry=wheel, scale_mode='camera_height',
                                     camera_height='0.45', checkpoint='/ckpt'))
        assert p['publish.tf'] is tf                 # who owns odom -> base_link (REP 105)
        assert p['frames.odom'] == 'odom' and p['frames.base'] == 'base_link'
        assert p['scale.mode'] == 'camera_height' and p['scale.camera_height'] == 0.45
        for name, value in p.items():
            if name == 'use_sim_time':
                continue
            assert name in specs, name
            assert specs[name].check(value) is None, (name, value)


def test_costmap_observes_the_node_outputs():
    cfg = yaml.safe_load((REPO / 'config' / 'nav2_costmap.yaml').read_text())['/**']['ros__parameters']
    assert cfg['global_frame'] == 'odom' and cfg['robot_base_frame'] == 'base_link'
    layer = cfg['voxel_layer']
    sources = layer['observation_sources'].split()
    assert layer[sources[0]]['data_type'] == 'PointCloud2'
    assert layer[sources[0]]['topic'] == '/camera/points'
    assert layer[sources[1]]['topic'] == '/camera/scan'


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installed (ROS 2 distro only)')
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location('nav2_costmap_launch', LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    names = {a.name for a in ld.entities if hasattr(a, 'name')}
    assert {'wheel_odometry', 'scale_mode', 'costmap', 'lifecycle'} <= names
