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


def isolated_ros_environment(log_dir):
    """Set an isolated ROS graph in os.environ (own domain id, localhost discovery, logs in
    ``log_dir``). Returns ``(monkeypatch, env)``: call ``monkeypatch.undo()`` when done; ``env`` is
    the dict to pass to subprocesses. Module-scoped fixtures (one node process serving many tests)
    call this directly; single tests use the ``ros_env`` fixture."""
    pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')
    from depth_ego_ros.ros.testing import isolated_ros_env, python_path_env
    mp = pytest.MonkeyPatch()
    for key, value in isolated_ros_env(next_domain_id(), log_dir).items():
        mp.setenv(key, value)
    return mp, python_path_env(os.environ, REPO)


@pytest.fixture
def ros_env(tmp_path):
    mp, env = isolated_ros_environment(tmp_path / 'ros_log')
    yield env
    mp.undo()


@pytest.fixture(scope='module')
def torch_one_thread():
    """Tiny tensors: one torch thread is fastest and leaves the other core to parallel work.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures('torch_one_thread')``."""
    torch = pytest.importorskip('torch')
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
