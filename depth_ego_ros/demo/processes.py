"""The demo's child processes: the perception node, the recorder and `depth-ego play` as
separate processes with their own logs, their ROS environment (own domain, localhost discovery),
the demo's log, and what the player and the recorded bag report afterwards."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ['DemoLog', 'Proc', 'StageError', 'node_cmd', 'ros_environment', 'played_counts',
           'bag_counts', 'REPO_ROOT']

REPO_ROOT = Path(__file__).resolve().parents[2]


class DemoLog:
    """The demo's log: stderr and logs/demo.log, with the seconds since the start."""

    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, 'a')

    def __call__(self, text: str):
        line = f'[demo {time.monotonic() - self.t0:7.1f}s] {text}'
        print(line, file=sys.stderr, flush=True)
        self.f.write(line + '\n')
        self.f.flush()


class Proc:
    """A child process with its output in a log file; stopped with SIGINT (nodes close bags)."""

    def __init__(self, name: str, cmd: list, env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f'{name}.log'
        self._f = open(self.log_path, 'w')
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._f, stderr=subprocess.STDOUT,
                                     cwd=str(log_dir))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors='replace')
        except OSError:
            return ''

    def wait_for(self, needle: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.text():
                return True
            if not self.alive():
                return False
            time.sleep(0.1)
        return False

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.proc.wait(5)
        self._f.close()
        return self.proc.returncode

    def tail(self, n: int = 15) -> str:
        return '\n'.join(self.text().splitlines()[-n:])


def ros_arg(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(ros_arg(v) for v in value) + ']'
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def node_cmd(module: str, params: dict, remaps: dict | None = None) -> list:
    cmd = [sys.executable, '-m', module, '--ros-args']
    for k, v in params.items():
        cmd += ['-p', f'{k}:={ros_arg(v)}']
    for a, b in (remaps or {}).items():
        cmd += ['-r', f'{a}:={b}']
    return cmd


def ros_environment(log_dir: Path, domain_id: int | None) -> dict:
    """Environment of the demo's ROS processes: localhost-only discovery, own log dir, the
    package importable, and a ROS_DOMAIN_ID that other graphs on the machine do not use
    (``domain_id``, else the caller's ROS_DOMAIN_ID, else one derived from the process id)."""
    env = dict(os.environ)
    if domain_id is None:
        domain_id = int(env['ROS_DOMAIN_ID']) if env.get('ROS_DOMAIN_ID', '').isdigit() \
            else 1 + (os.getpid() * 7919) % 200
    env.update({'ROS_DOMAIN_ID': str(domain_id), 'ROS_LOG_DIR': str(log_dir / 'ros'),
                'RCUTILS_LOGGING_BUFFERED_STREAM': '0', 'PYTHONUNBUFFERED': '1'})
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH', '')]))
    return env


class StageError(RuntimeError):
    """A stage failed; the message says which and where its log is."""


def played_counts(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith('played '):
            out = {}
            for part in line.split(':', 1)[1].split(','):
                bits = part.split()
                if len(bits) == 2 and bits[1].isdigit():
                    out[bits[0]] = int(bits[1])
            return out
    return {}


def bag_counts(path: Path) -> dict:
    import yaml
    try:
        meta = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        return {t['topic_metadata']['name']: int(t['message_count'])
                for t in meta['topics_with_message_count']}
    except Exception:  # noqa: BLE001 - informative only
        return {}
