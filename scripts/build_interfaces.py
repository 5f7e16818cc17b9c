#!/usr/bin/env python3
"""Build the ROS 2 interface packages that no package registry has (tf2_msgs) into a venv.

Used by scripts/setup_env.sh on machines WITHOUT a ROS 2 distro, where ROS comes from the PyPI
ROS wheels. Each folder of interfaces/ is a normal ament_cmake interface package with the
upstream message definitions (so the RIHS01 type hashes and the wire format are the upstream
ones); it is generated with the wheels' own rosidl generators and installed into the venv prefix.
A package that already imports is left alone, so on a distro nothing is ever built (and colcon
never sees these packages: interfaces/COLCON_IGNORE).

The rosidl wheels' exported CMake files name the Python/NumPy include directories of the machine
that built the wheels; they are rewritten to this interpreter's before configuring.
"""
import argparse
import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
INTERFACES = ROOT / 'interfaces'


def log(msg):
    print(f'[build_interfaces] {msg}', file=sys.stderr, flush=True)


def packages():
    for pkg_xml in sorted(INTERFACES.glob('*/package.xml')):
        pkg = pkg_xml.parent
        msgs = sorted(p.stem for p in (pkg / 'msg').glob('*.msg'))
        yield pkg.name, pkg, msgs


def importable(venv_python, name, msgs):
    code = f'from {name}.msg import {", ".join(msgs)}'
    return subprocess.run([venv_python, '-c', code], capture_output=True).returncode == 0


def fix_exported_include_dirs(prefix):
    """Point the wheels' CMake exports at this interpreter's Python and NumPy headers."""
    py_inc = sysconfig.get_paths()['include']
    np_inc = importlib.import_module('numpy').get_include()
    py_re = re.compile(r'/[^";\s]*?/include/python3\.\d+')
    np_re = re.compile(r'/[^";\s]*?/numpy/(?:_core|core)/include')
    fixed = 0
    for cmake_file in (prefix / 'share').glob('*/cmake/*.cmake'):
        text = cmake_file.read_text()
        new = np_re.sub(lambda m: m.group(0) if os.path.isdir(m.group(0)) else np_inc, text)
        new = py_re.sub(lambda m: m.group(0) if os.path.isdir(m.group(0)) else py_inc, new)
        if new != text:
            cmake_file.write_text(new)
            fixed += 1
    if fixed:
        log(f'rewrote Python/NumPy include dirs in {fixed} exported CMake files')


def run(cmd, cwd, logfile):
    with open(logfile, 'a') as out:
        out.write('$ ' + ' '.join(map(str, cmd)) + '\n')
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = pathlib.Path(logfile).read_text().splitlines()[-40:]
        log('FAILED: ' + ' '.join(map(str, cmd)) + '\n' + '\n'.join(tail))
        sys.exit(1)


def build(name, src, prefix, venv_python):
    cmake = shutil.which('cmake')
    if cmake is None:
        subprocess.check_call([venv_python, '-m', 'pip', 'install', '-q', 'cmake'])
        cmake = str(prefix / 'bin' / 'cmake')
    if shutil.which('c++') is None and shutil.which('g++') is None:
        log('ERROR: a C/C++ compiler is needed to build interface packages '
            '(Debian/Ubuntu: apt-get install g++)')
        sys.exit(1)
    with tempfile.TemporaryDirectory(prefix=f'build_{name}_') as build_dir:
        logfile = pathlib.Path(build_dir) / 'build.log'
        env_prefix = str(prefix)
        run([cmake, str(src), f'-DCMAKE_PREFIX_PATH={env_prefix}',
             f'-DCMAKE_INSTALL_PREFIX={env_prefix}', f'-DPython3_EXECUTABLE={venv_python}',
             '-DBUILD_TESTING=OFF', '-DCMAKE_BUILD_TYPE=Release'], build_dir, logfile)
        run([cmake, '--build', '.', '-j', str(os.cpu_count() or 2)], build_dir, logfile)
        run([cmake, '--install', '.'], build_dir, logfile)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--venv', default=str(ROOT / '.venv'))
    args = parser.parse_args()
    prefix = pathlib.Path(args.venv).resolve()
    venv_python = str(prefix / 'bin' / 'python')

    todo = [(n, p, m) for n, p, m in packages() if not importable(venv_python, n, m)]
    if not todo:
        log('interface packages present: nothing to build')
        return 0
    log('building ' + ', '.join(n for n, _, _ in todo) + ' with the rosidl wheels')
    subprocess.check_call([venv_python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                           '-r', str(ROOT / 'requirements' / 'interface-build.txt')])
    fix_exported_include_dirs(prefix)
    for name, src, msgs in todo:
        build(name, src, prefix, venv_python)
        if not importable(venv_python, name, msgs):
            log(f'ERROR: {name} was built but does not import')
            return 1
        log(f'{name} built and installed into {prefix}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
