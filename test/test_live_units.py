"""The live view's ROS-free pieces: the path of the odometry, the rate limiter, the layout."""
import json
import math
import pathlib

from depth_ego_ros.live.layout import DEFAULT_TOPICS, layout, layout_json
from depth_ego_ros.live.path import PathAccumulator, RateLimiter

REPO = pathlib.Path(__file__).resolve().parents[1]
Q = (0.0, 0.0, 0.0, 1.0)


def test_path_keeps_poses_in_order_thinned_by_distance_and_bounded():
    acc = PathAccumulator(min_step=0.099, max_poses=100)
    kept = [acc.add(i * 10, 'odom', (0.05 * i, 0.0, 0.0), Q) for i in range(11)]
    assert kept == [True, False, True, False, True, False, True, False, True, False, True]
    assert acc.positions()[-1] == (0.5, 0.0, 0.0)
    assert math.isclose(acc.length(), 0.5)
    # a turn in place is kept although the position did not move
    yaw = 0.3
    assert acc.add(200, 'odom', (0.5, 0.0, 0.0), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))
    assert not acc.add(210, 'odom', (math.nan, 0.0, 0.0), Q)
    # bounded: the old half gets thinned, the extent stays
    for i in range(1000):
        acc.add(300 + i, 'odom', (1.0 + i, 0.0, 0.0), Q)
    assert len(acc.poses) <= 100
    assert acc.positions()[0] == (0.0, 0.0, 0.0) and acc.positions()[-1] == (1000.0, 0.0, 0.0)
    stamps = [t for t, _, _ in acc.poses]
    assert stamps == sorted(stamps)


def test_path_restarts_on_time_jump_back_or_new_frame():
    acc = PathAccumulator(min_step=0.0)
    for i in range(5):
        acc.add(100 + i, 'odom', (i, 0, 0), Q)
    acc.add(50, 'odom', (0, 0, 0), Q)          # the node restarted its trajectory
    assert len(acc.poses) == 1 and acc.restarts == 1
    acc.add(60, 'other_odom', (0, 0, 0), Q)
    assert acc.frame_id == 'other_odom' and acc.restarts == 2


def test_rate_limiter_caps_the_rate():
    lim = RateLimiter(10.0)
    passed = sum(lim.ready(t / 1000.0) for t in range(0, 2000, 5))     # 200 Hz for 2 s
    assert passed == 20 and lim.skipped == 380
    assert all(RateLimiter(0).ready(t) for t in range(5))
    lim = RateLimiter(10.0)                  # slower input than the cap: everything passes
    assert all(lim.ready(t * 0.2) for t in range(10))


def test_shipped_layout_is_the_generated_one_and_shows_the_channels():
    shipped = (REPO / 'config' / 'foxglove_layout.json').read_text()
    assert shipped == layout_json()
    cfg = json.loads(shipped)['configById']
    assert cfg['Image!camera']['imageMode']['imageTopic'] == DEFAULT_TOPICS['camera']
    assert cfg['Image!depth']['imageMode']['imageTopic'] == '/depth/colored'
    assert set(cfg['3D!scene']['topics']) == {'/points', '/path', '/odom'}
    ns = layout({'points': '/cam/points', 'path': '/cam/path'}, fixed_frame='map')
    assert '/cam/points' in ns['configById']['3D!scene']['topics']
    assert ns['configById']['3D!scene']['followTf'] == 'map'
