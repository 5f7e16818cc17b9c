"""Shared pytest fixtures.

* ``shared_data``: the read-only ../shared/data folder (skips the test when it is absent:
  a user's checkout has no ../shared).
* ``ros_env``: an isolated ROS 2 environment for one test — its own ROS_DOMAIN_ID, discovery
  limited to localhost, logs in a temp dir. Sets it in ``os.environ`` (for in-process rclpy) and
  returns the dict to pass to subprocesses. Real rclpy + Fast DDS, never a mock.
"""
import itertools
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Domain IDs 1..200, spread by pid so that concurrent pytest runs on one machine do not meet.
_domain_ids = itertools.count((os.getpid() * 37) % 200)


def next_domain_id():
    return 1 + next(_domain_ids) % 200


@pytest.fixture(scope='session')
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f'../shared/data not found at {SHARED_DATA} (test data lives beside the '
                    'checkout in CI and developer machines only)')
    return SHARED_DATA


@pytest.fixture
def ros_env(tmp_path, monkeypatch):
    pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
    values = {
        'ROS_DOMAIN_ID': str(next_domain_id()),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'ROS_LOG_DIR': str(tmp_path / 'ros_log'),
        'RCUTILS_LOGGING_BUFFERED_STREAM': '0',
        'PYTHONUNBUFFERED': '1',
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH', '')]))
    return env
