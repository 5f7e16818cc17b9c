"""Every perception-node parameter either applies at run time (how: RUNTIME_EFFECT, documented
in docs/perception_node.md) or is refused at run time with a reason saying why and what to do."""
import pathlib

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (run `make env` or source a ROS 2 distro)')

from depth_ego_ros.ros.perception_params import (PARAMS, RUNTIME_EFFECT,  # noqa: E402
                                                 runtime_refusal)

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_parameter_applies_at_run_time_or_is_refused_with_a_reason():
    for p in PARAMS:
        if p.read_only:
            assert p.name not in RUNTIME_EFFECT, p.name
            reason = runtime_refusal(p, p.default)
            assert reason and p.name in reason and 'restart the node' in reason, p.name
            assert 'read at start-up only' not in reason, f'{p.name}: no specific reason'
            lc = runtime_refusal(p, p.default, lifecycle=True)
            assert 'cleanup' in lc or 'clean up' in lc, p.name
            # a lifecycle node takes them while unconfigured (configure reads them)
            assert runtime_refusal(p, p.default, lifecycle=True, configured=False) is None
        else:
            assert p.name in RUNTIME_EFFECT, f'{p.name}: how does a run-time change apply?'
    assert set(RUNTIME_EFFECT) <= {p.name for p in PARAMS}


def test_refinement_values_are_refused_while_refinement_is_off():
    steps = next(p for p in PARAMS if p.name == 'online_refinement.steps')
    assert 'refinement is off' in runtime_refusal(steps, 5, refiner_on=False)
    assert runtime_refusal(steps, 5, refiner_on=True) is None


def test_docs_list_the_run_time_parameters():
    text = (REPO / 'docs' / 'perception_node.md').read_text()
    for name in RUNTIME_EFFECT:
        assert f'`{name}`' in text, name
