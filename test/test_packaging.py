"""The one layout serves both worlds: colcon (ament_python) and pip; the stand-in interface
package stays invisible to colcon; package.xml names what a distro user needs."""
import os
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PKG = 'depth_ego_ros'


def _colcon():
    exe = shutil.which('colcon') or str(pathlib.Path(sys.executable).parent / 'colcon')
    if not os.path.exists(exe):
        pytest.skip('colcon not installed (pip install colcon-common-extensions)')
    return exe


def test_package_xml_format3_ament_python_with_declared_dependencies():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == PKG
    assert root.find('export/build_type').text == 'ament_python'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    for dep in ['rclpy', 'sensor_msgs', 'geometry_msgs', 'nav_msgs', 'std_msgs', 'std_srvs',
                'diagnostic_msgs', 'tf2_ros', 'tf2_msgs', 'cv_bridge', 'sensor_msgs_py',
                'python3-numpy', 'python3-torch', 'python3-transforms3d']:
        assert dep in exec_deps, f'package.xml lacks exec_depend {dep}'
    test_deps = {e.text for e in root.findall('test_depend')}
    assert {'launch_pytest', 'launch_ros', 'python3-pytest'} <= test_deps
    assert (REPO / 'resource' / PKG).is_file()


@pytest.mark.timeout(300)
def test_colcon_build_installs_entry_points_and_share_files(tmp_path):
    colcon = _colcon()
    ws = tmp_path / 'ws'
    (ws / 'src').mkdir(parents=True)
    (ws / 'src' / PKG).symlink_to(REPO)
    # The stand-in tf2_msgs under interfaces/ must not be discovered (it would shadow a distro's).
    listed = subprocess.run([colcon, 'list', '--names-only'], cwd=ws, capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == [PKG]
    proc = subprocess.run([colcon, 'build', '--event-handlers', 'console_direct-'],
                          cwd=ws, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = ws / 'install' / PKG
    share = prefix / 'share' / PKG
    assert (share / 'package.xml').is_file()
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PKG).is_file()
    for sub, pattern in [('launch', '*.launch.py'), ('config', '*.yaml'), ('config', '*.json'),
                         ('rviz', '*.rviz')]:
        expected = sorted(p.name for p in (REPO / sub).glob(pattern))
        assert expected, f'no {pattern} in {sub}/'
        assert sorted(p.name for p in (share / sub).glob(pattern)) == expected
    for exe in ['depth_ego_node', 'recorder_node', 'depth-ego', 'depth_ego_view',
                'depth_ego_lifecycle_node']:
        assert os.access(prefix / 'lib' / PKG / exe, os.X_OK), f'missing lib/{PKG}/{exe}'
    # The installed entry point runs from the install space (not from the source tree).
    site = next(prefix.glob('lib/python3*/site-packages'))
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([str(prefix / 'lib' / PKG / 'depth-ego'), '--help'], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'predict' in out.stdout
    # the model zoo's registry is package data: installed beside the code and readable there
    out = subprocess.run([str(prefix / 'lib' / PKG / 'depth-ego'), 'weights', 'list', '--json'],
                         cwd=tmp_path, env={k: v for k, v in env.items()
                                            if k != 'DEPTH_EGO_ZOO_REGISTRY'},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'mono_640x192' in out.stdout


def test_pip_metadata_lists_console_scripts():
    import importlib.metadata as md
    try:
        dist = md.distribution(PKG)
    except md.PackageNotFoundError:
        pytest.skip('depth_ego_ros is not pip-installed in this environment (make env does it)')
    names = {ep.name for ep in dist.entry_points if ep.group == 'console_scripts'}
    assert {'depth_ego_node', 'recorder_node', 'depth-ego'} <= names
