"""Trajectory metrics: parity with evo 1.38.1 on real trajectories, and hand-made cases."""
import json
import pathlib

import numpy as np
import pytest

from depth_ego_ros.core import geometry as g
from depth_ego_ros.evaluation import trajectory as tr

pytestmark = pytest.mark.timeout(60)

# evo reference rows -> the files they were computed on
CASE_FILES = {
    'fr1_xyz gt vs rgbdslam': ('freiburg1_xyz-groundtruth.txt', 'freiburg1_xyz-rgbdslam.txt'),
    'fr1_xyz gt vs ORB_kf_mono (sim3)': ('freiburg1_xyz-groundtruth.txt', 'freiburg1_xyz-ORB_kf_mono.txt'),
    'fr2_desk gt vs ORB': ('fr2_desk_groundtruth.txt', 'fr2_desk_ORB.txt'),
    'fr2_desk gt vs ORB_kf_mono (sim3)': ('fr2_desk_groundtruth.txt', 'fr2_desk_ORB_kf_mono.txt'),
    'KITTI00 gt vs ORB': ('KITTI_00_gt.txt', 'KITTI_00_ORB.txt'),
    'KITTI00 gt vs SPTAM': ('KITTI_00_gt.txt', 'KITTI_00_SPTAM.txt'),
    'EuRoC V102 gt vs est': ('V102_groundtruth.csv', 'V102.txt'),
}
RELATIONS = {'translation part': 'translation', 'rotation angle in degrees': 'rotation_deg',
             'rotation angle in radians': 'rotation_rad'}
REF_FILE = 'reference_results_evo_1.38.1.json'
N_REF_ROWS = 12


def _reference_rows():
    """Rows of the evo reference file, read lazily (the file lives in ../shared)."""
    path = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'trajectories' / REF_FILE
    if not path.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f'{path} not found (../shared absent)'))]
    rows = json.loads(path.read_text())['results']
    return [pytest.param(r, id=f"{r['case']}|{r['metric']}|{r['config']}") for r in rows]


_cache = {}


def _load(path):
    if path not in _cache:
        _cache[path] = tr.read_trajectory(path)
    return _cache[path]


def _align_mode(cfg):
    if cfg['align']:
        return 'sim3' if cfg['correct_scale'] else 'se3'
    return 'scale' if cfg['correct_scale'] else 'none'


@pytest.mark.parametrize('row', _reference_rows())
def test_matches_evo_reference(shared_data, row):
    root = shared_data / 'trajectories'
    meta = json.loads((root / REF_FILE).read_text())
    gt_name, est_name = CASE_FILES[row['case']]
    ref, est = _load(root / gt_name), _load(root / est_name)
    # evo associated TUM/EuRoC pairs by timestamp (max 0.01 s); KITTI files pair by index
    max_diff = None if gt_name.startswith('KITTI') else meta['association_max_diff_s']
    cfg = row['config']
    relation = RELATIONS[cfg['relation']]
    if row['metric'] == 'ape':
        res = tr.ape(ref, est, align_mode=_align_mode(cfg), relation=relation, max_diff=max_diff)
    else:
        res = tr.rpe(ref, est, delta=cfg['delta'], delta_unit={'frames': 'frames', 'm': 'm'}[cfg['delta_unit']],
                     relation=relation, all_pairs=cfg['all_pairs'], align_mode=_align_mode(cfg),
                     max_diff=max_diff)
    assert res.errors.size == row['n_pairs']
    for key, value in row['stats'].items():
        assert res.stats[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_reference_file_is_fully_covered(shared_data):
    rows = json.loads((shared_data / 'trajectories' / REF_FILE).read_text())['results']
    assert len(rows) == N_REF_ROWS and {r['case'] for r in rows} == set(CASE_FILES)


# ----------------------------------------------------------------------------------------------
# file formats
# ----------------------------------------------------------------------------------------------
def _random_traj(n=20, seed=0, stamps=True):
    rng = np.random.default_rng(seed)
    aa = rng.normal(scale=0.3, size=(n, 3))
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = g.axis_angle_to_matrix_np(aa)
    poses[:, :3, 3] = np.cumsum(rng.normal(size=(n, 3)), axis=0)
    return tr.Trajectory(poses, 1000.0 + 0.1 * np.arange(n) if stamps else None)


@pytest.mark.parametrize('fmt', ['tum', 'kitti', 'euroc'])
def test_write_read_round_trip(tmp_path, fmt):
    traj = _random_traj()
    path = tmp_path / ('traj.csv' if fmt == 'euroc' else 'traj.txt')
    tr.write_trajectory(path, traj, fmt)
    back = tr.read_trajectory(path)          # format detected automatically
    np.testing.assert_allclose(back.poses, traj.poses, atol=1e-8)
    if fmt != 'kitti':
        np.testing.assert_allclose(back.stamps, traj.stamps, atol=1e-6)
    else:
        assert back.stamps is None


def test_tum_quaternion_order_and_kitti_layout(tmp_path):
    # 90 deg about z, TUM stores qx qy qz qw
    s = np.sqrt(0.5)
    (tmp_path / 'a.txt').write_text(f'# comment\n1.5 1 2 3 0 0 {s} {s}\n')
    t = tr.read_tum(tmp_path / 'a.txt')
    np.testing.assert_allclose(t.poses[0, :3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(t.positions[0], [1, 2, 3])
    assert t.stamps[0] == 1.5
    (tmp_path / 'k.txt').write_text('1 0 0 4 0 1 0 5 0 0 1 6\n')
    k = tr.read_kitti(tmp_path / 'k.txt')
    np.testing.assert_allclose(k.positions[0], [4, 5, 6])
    (tmp_path / 'e.csv').write_text('#timestamp,x,y,z,qw,qx,qy,qz\n1500000000,1,2,3,1,0,0,0\n')
    e = tr.read_euroc_csv(tmp_path / 'e.csv')
    assert e.stamps[0] == pytest.approx(1.5) and np.allclose(e.poses[0, :3, :3], np.eye(3))


def test_bad_files_raise(tmp_path):
    (tmp_path / 'bad.txt').write_text('1 2 3\n')
    with pytest.raises(tr.TrajectoryError, match='columns'):
        tr.read_trajectory(tmp_path / 'bad.txt')
    (tmp_path / 'empty.txt').write_text('# nothing\n')
    with pytest.raises(tr.TrajectoryError, match='no poses'):
        tr.read_tum(tmp_path / 'empty.txt')
    (tmp_path / 'nan.txt').write_text('0 1 2 x 0 0 0 1\n0 1 2 3 0 0 0 1\n')
    with pytest.raises(tr.TrajectoryError):
        tr.read_tum(tmp_path / 'nan.txt')


# ----------------------------------------------------------------------------------------------
# association / interpolation
# ----------------------------------------------------------------------------------------------
def test_associate_evo_semantics():
    long_ = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    short = np.array([0.104, 0.25, 0.298, 0.9])
    ia, ib = tr.associate(long_, short, max_diff=0.01)
    # for each stamp of the shorter list the nearest of the longer one, if within max_diff
    assert ia.tolist() == [1, 3] and ib.tolist() == [0, 2]
    ia, ib = tr.associate(short, long_, max_diff=0.06)     # argument order does not matter
    assert ia.tolist() == [0, 1, 2] and ib.tolist() == [1, 2, 3]
    ia, ib = tr.associate(long_, short - 0.05, max_diff=0.01, offset_b=0.05)
    assert ia.tolist() == [1, 3]
    ref = tr.Trajectory(np.tile(np.eye(4), (6, 1, 1)), long_)
    est = tr.Trajectory(np.tile(np.eye(4), (2, 1, 1)), np.array([5.0, 6.0]))
    with pytest.raises(tr.TrajectoryError, match='no matching timestamps'):
        tr.associate_trajectories(ref, est, max_diff=0.01)
    with pytest.raises(tr.TrajectoryError, match='length'):
        tr.ape(ref, est)                                    # no stamps association, lengths differ


def test_interpolate_trajectory():
    traj = _random_traj(5)
    mid = tr.interpolate_trajectory(traj, [traj.stamps[1], 0.5 * (traj.stamps[2] + traj.stamps[3])])
    np.testing.assert_allclose(mid.poses[0], traj.poses[1])
    np.testing.assert_allclose(mid.positions[1], 0.5 * (traj.positions[2] + traj.positions[3]))
    with pytest.raises(tr.TrajectoryError, match='outside'):
        tr.interpolate_trajectory(traj, [traj.stamps[-1] + 1])
    with pytest.raises(tr.TrajectoryError, match='gap'):
        tr.interpolate_trajectory(traj, [traj.stamps[0] + 0.05], max_gap=0.01)


# ----------------------------------------------------------------------------------------------
# alignment and metrics on synthetic cases
# ----------------------------------------------------------------------------------------------
def _sim3(traj, s, aa, t):
    T = np.eye(4)
    T[:3, :3] = g.axis_angle_to_matrix_np(aa)
    T[:3, 3] = t
    return traj.scaled(s).transformed(T)


def test_umeyama_recovers_similarity():
    ref = _random_traj(30, seed=3)
    est = _sim3(ref, 0.3, [0.2, -0.5, 1.0], [4, -2, 7])        # est = S(ref)
    R, t, s = tr.umeyama(est.positions, ref.positions, with_scale=True)
    np.testing.assert_allclose(s * est.positions @ R.T + t, ref.positions, atol=1e-9)
    assert s == pytest.approx(1 / 0.3)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_ape_alignment_modes():
    ref = _random_traj(30, seed=4)
    rigid = _sim3(ref, 1.0, [0.1, 0.2, -0.3], [1, 2, 3])
    similar = _sim3(ref, 2.5, [0.1, 0.2, -0.3], [1, 2, 3])
    assert tr.ape(ref, rigid, 'se3').stats['rmse'] < 1e-9
    assert tr.ape(ref, rigid, 'none').stats['rmse'] > 1.0
    assert tr.ape(ref, similar, 'se3').stats['rmse'] > 1.0
    res = tr.ape(ref, similar, 'sim3')
    assert res.stats['rmse'] < 1e-9 and res.alignment.scale == pytest.approx(1 / 2.5)
    # scale only: a pure scaling about the origin is undone, a rotation is not
    assert tr.ape(ref, ref.scaled(3.0), 'scale').stats['rmse'] < 1e-9
    assert tr.ape(ref, similar, 'scale').stats['rmse'] > 0.1
    # after SE(3) alignment the rotation part of APE vanishes too
    assert tr.ape(ref, rigid, 'se3', relation='rotation_deg').stats['max'] < 1e-6
    assert res.as_dict()['alignment']['mode'] == 'sim3'


def test_error_stats():
    s = tr.error_stats([3.0, 4.0])
    assert s == pytest.approx({'rmse': np.sqrt(12.5), 'mean': 3.5, 'median': 3.5, 'std': 0.5,
                               'min': 3.0, 'max': 4.0, 'sse': 25.0})


def test_rpe_pairs_and_values():
    n = 11
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)                 # 1 m per frame along x
    ref = tr.Trajectory(poses)
    assert tr.pair_indices(poses, 3).tolist() == [[0, 3], [3, 6], [6, 9]]
    assert len(tr.pair_indices(poses, 3, all_pairs=True)) == 8
    # metres, consecutive: kept indices 0, 2.5m-> 3, 6, 9
    assert tr.pair_indices(poses, 2.5, 'm').tolist() == [[0, 3], [3, 6], [6, 9]]
    # metres, all pairs: for each i the j whose path length is closest to 2 m (within 10 %)
    assert tr.pair_indices(poses, 2.0, 'm', all_pairs=True).tolist() == [[i, i + 2] for i in range(9)]
    # an estimate that drives 10 % too far each frame: RPE translation 0.1 m per 1-frame pair
    est_poses = poses.copy()
    est_poses[:, 0, 3] *= 1.1
    res = tr.rpe(ref, tr.Trajectory(est_poses), delta=1)
    np.testing.assert_allclose(res.errors, 0.1, atol=1e-12)
    assert res.pairs.shape == (10, 2)
    # ... which scale alignment removes; rotation errors are zero
    assert tr.rpe(ref, tr.Trajectory(est_poses), delta=1, align_mode='sim3').stats['max'] < 1e-9
    assert tr.rpe(ref, tr.Trajectory(est_poses), delta=2, relation='rotation_deg').stats['max'] == 0
    # a yaw drift of 1 degree per frame shows up in the rotation RPE
    drift = est_poses.copy()
    drift[:, :3, :3] = g.axis_angle_to_matrix_np(np.outer(np.arange(n), [0, 0, np.radians(1.0)]))
    rot = tr.rpe(ref, tr.Trajectory(drift), delta=1, relation='rotation_deg')
    np.testing.assert_allclose(rot.errors, 1.0, atol=1e-9)
    with pytest.raises(tr.TrajectoryError, match='no pose pairs'):
        tr.rpe(ref, ref, delta=100)


def test_snippet_ate_monodepth2():
    # compute_ate by hand: gt (0,0,0),(0,0,1),(0,0,2); pred at half scale -> scale 2 fixes it
    gt = np.array([[0, 0, 0], [0, 0, 1.0], [0, 0, 2.0]])
    assert tr.compute_ate_snippet(gt, gt / 2 + 5) == pytest.approx(0, abs=1e-12)
    pred = np.array([[0, 0, 0], [0, 0, 1.0], [1.0, 0, 2.0]])
    # scale = sum(gt*pred)/sum(pred^2) = 5/6 ; err = 5/6*pred - gt
    err = 5 / 6 * pred - gt
    assert tr.compute_ate_snippet(gt, pred) == pytest.approx(np.sqrt(np.sum(err ** 2)) / 3)
    # full snippet evaluation: relative poses at the wrong scale give 0, noisy ones don't
    traj = _random_traj(12, seed=5, stamps=False)
    rel = g.relative_poses(traj.poses)
    small = rel.copy()
    small[:, :3, 3] *= 0.01                                      # monocular: unknown scale
    res = tr.snippet_ate(traj.poses, small)
    assert res['mean'] < 1e-9 and res['n_snippets'] == 11 and res['track_length'] == 5
    noisy = small.copy()
    noisy[:, :3, 3] += np.random.default_rng(0).normal(scale=0.01, size=(11, 3))
    assert tr.snippet_ate(traj.poses, noisy)['mean'] > 1e-3
    with pytest.raises(tr.TrajectoryError):
        tr.snippet_ate(traj.poses, rel[:5])
