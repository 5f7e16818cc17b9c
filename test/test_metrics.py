"""Depth metrics on hand-computed cases (monodepth2 / Eigen conventions)."""
import math

import numpy as np
import pytest

from depth_ego_ros.evaluation.metrics import (METRIC_NAMES, DepthEvalConfig, DepthMetricsAccumulator,
                                              compute_depth_errors, depth_metrics, evaluate_depth_frames,
                                              garg_crop_mask)

pytestmark = pytest.mark.timeout(30)

NO_SCALING = DepthEvalConfig(median_scaling=False)


def _scene(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(2.0, 60.0, size=(h, w))


def test_perfect_prediction():
    gt = _scene()
    for cfg in (NO_SCALING, DepthEvalConfig()):
        m = depth_metrics(gt, gt.copy(), cfg)
        assert m.abs_rel == 0 and m.sq_rel == 0 and m.rmse == 0 and m.rmse_log == 0
        assert m.a1 == m.a2 == m.a3 == 1.0
        assert m.n_valid == gt.size
    assert depth_metrics(gt, gt).ratio == pytest.approx(1.0)


def test_hand_computed_values():
    gt = np.array([1.0, 2.0, 4.0])
    pred = np.array([1.0, 1.0, 5.0])
    e = compute_depth_errors(gt, pred)
    # |diff| = 0, 1, 1 ; ratios max(gt/pred, pred/gt) = 1, 2, 1.25
    assert e['abs_rel'] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert e['sq_rel'] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert e['rmse'] == pytest.approx(math.sqrt(2 / 3))
    assert e['rmse_log'] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(4 / 5) ** 2) / 3))
    assert e['a1'] == pytest.approx(1 / 3)        # 1.25 is not < 1.25
    assert e['a2'] == pytest.approx(2 / 3)
    assert e['a3'] == pytest.approx(2 / 3)        # 2 > 1.25^3 = 1.953
    # same numbers through depth_metrics on a 1x3 image without scaling
    m = depth_metrics(gt[None], pred[None], NO_SCALING)
    assert m.values() == pytest.approx(e)


def test_uniform_scale_error_removed_by_median_scaling():
    gt = _scene()
    pred = gt / 2.0                                   # right shape, wrong scale
    raw = depth_metrics(gt, pred, NO_SCALING)
    assert raw.abs_rel == pytest.approx(0.5)
    assert raw.rmse_log == pytest.approx(math.log(2))
    assert raw.a1 == 0 and raw.a2 == 0 and raw.a3 == 0   # ratio 2 > 1.25^3
    scaled = depth_metrics(gt, pred)                  # median scaling is the default
    assert scaled.ratio == pytest.approx(2.0)
    assert scaled.abs_rel == pytest.approx(0, abs=1e-12) and scaled.rmse == pytest.approx(0, abs=1e-9)
    assert scaled.a1 == 1.0
    # a fixed scale factor (metric models with a known scale) does the same
    fixed = depth_metrics(gt, pred, DepthEvalConfig(median_scaling=False, pred_scale_factor=2.0))
    assert fixed.abs_rel == pytest.approx(0, abs=1e-12)


def test_min_max_depth_and_clipping():
    gt = np.array([[0.0, 5.0, 10.0, 100.0, np.nan]])
    pred = np.array([[3.0, 5.0, 1000.0, 7.0, 2.0]])
    m = depth_metrics(gt, pred, NO_SCALING)
    # gt 0 (no return), 100 (>= 80 m) and NaN are not evaluated: 2 valid pixels
    assert m.n_valid == 2
    # pred 1000 is clipped to max_depth 80
    assert m.abs_rel == pytest.approx((0 + 70 / 10) / 2)
    # custom range
    m2 = depth_metrics(gt, pred, DepthEvalConfig(min_depth=1.0, max_depth=200.0, median_scaling=False))
    assert m2.n_valid == 3
    # tiny predictions are clipped up to min_depth (no log(0))
    m3 = depth_metrics(np.array([[1.0, 2.0]]), np.array([[0.0, -1.0]]), NO_SCALING)
    assert np.isfinite(m3.rmse_log)


def test_garg_crop_bounds_match_monodepth2():
    # KITTI raw 375x1242: monodepth2 crops rows 153:371, columns 44:1197
    m = garg_crop_mask(375, 1242)
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    gt = np.full((375, 1242), 10.0)
    pred = gt.copy()
    pred[:153] = 1.0                                  # errors only outside the crop
    assert depth_metrics(gt, pred, DepthEvalConfig(garg_crop=True, median_scaling=False)).abs_rel == 0
    assert depth_metrics(gt, pred, NO_SCALING).abs_rel > 0


def test_sequence_means_and_ratio_statistics():
    acc = DepthMetricsAccumulator()
    gts = [_scene(seed=s) for s in range(3)]
    scales = [0.5, 0.25, 0.125]                       # ratios 2, 4, 8
    for g, s in zip(gts, scales):
        acc.add(g, g * s)
    acc.add(np.zeros((4, 4)), np.ones((4, 4)), frame_id='empty')   # no GT -> skipped, not averaged
    summ = acc.summary()
    assert summ['n_frames'] == 3 and summ['n_skipped'] == 1
    assert summ['ratio_median'] == pytest.approx(4.0)
    assert summ['ratio_std'] == pytest.approx(np.std([0.5, 1.0, 2.0]))     # std(ratios / median)
    assert summ['ratio_std_abs'] == pytest.approx(np.std([2.0, 4.0, 8.0]))
    assert summ['abs_rel'] == pytest.approx(0, abs=1e-12)
    rep = acc.report()
    assert rep['settings']['max_depth'] == 80.0 and rep['settings']['min_depth'] == 1e-3
    assert [f['frame'] for f in rep['per_frame']] == [0, 1, 2] and rep['skipped'][0]['frame'] == 'empty'


def test_mean_is_over_frames_not_pixels():
    small_gt, small_pred = np.full((1, 2), 10.0), np.full((1, 2), 5.0)     # AbsRel 0.5, 2 px
    big_gt = np.full((10, 10), 10.0)                                      # AbsRel 0, 100 px
    rep = evaluate_depth_frames([small_gt, big_gt], [small_pred, big_gt], NO_SCALING)
    assert rep['mean']['abs_rel'] == pytest.approx(0.25)
    assert set(METRIC_NAMES) <= set(rep['mean'])
    assert 'ratio_median' not in rep['mean']


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match='differ in size'):
        depth_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match='no valid ground-truth'):
        depth_metrics(np.zeros((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match='min_depth'):
        DepthEvalConfig(min_depth=10, max_depth=5)
    with pytest.raises(ValueError, match='no frame'):
        DepthMetricsAccumulator().summary()
    with pytest.raises(ValueError, match='median'):
        depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
