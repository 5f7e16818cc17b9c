"""colorize_disparity (the node's depth/colored output) after its vectorisation (issue 16): the
same image as the straightforward implementation it replaced, up to float32 rounding at a
colour-level boundary."""
import numpy as np

from depth_ego_ros.core.visualize import _magma_lut, colorize_disparity


def _reference(depth, vmax_percentile=95.0):
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    disp = np.zeros_like(depth)
    disp[valid] = 1.0 / depth[valid]
    if not np.any(valid):
        return np.zeros(depth.shape + (3,), np.uint8) + _magma_lut()[0]
    vmin = float(disp[valid].min())
    vmax = float(np.percentile(disp[valid], vmax_percentile))
    norm = np.clip((disp - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    norm[~valid] = 0.0
    return _magma_lut()[np.round(norm * 255).astype(np.int64)]


def test_matches_the_reference_implementation():
    rng = np.random.default_rng(0)
    differing = total = 0
    for trial in range(20):
        d = (rng.random((48 + trial, 64)) * rng.uniform(1, 50) + 0.1).astype(np.float32)
        d[:3] = np.nan
        d[5, :7] = 0.0
        d[6, :3] = np.inf
        d[7, :2] = -1.0
        for pct in (95.0, 50.0, 100.0):
            a, b = _reference(d, pct), colorize_disparity(d, pct)
            assert a.shape == b.shape and b.dtype == np.uint8
            lut = _magma_lut()
            # any difference is one rounding step of the colour index
            ia = np.abs(lut[None, None].astype(int) - a[:, :, None].astype(int)).sum(-1).argmin(-1)
            ib = np.abs(lut[None, None].astype(int) - b[:, :, None].astype(int)).sum(-1).argmin(-1)
            assert np.abs(ia - ib).max() <= 1
            differing += int((ia != ib).sum())
            total += ia.size
            assert (b[:3] == lut[0]).all() and (b[5, :7] == lut[0]).all()   # invalid -> dark
    assert differing <= 1e-3 * total


def test_all_invalid_and_constant():
    lut = _magma_lut()
    assert (colorize_disparity(np.full((4, 5), np.nan, np.float32)) == lut[0]).all()
    c = colorize_disparity(np.full((4, 5), 3.0, np.float32))
    assert c.shape == (4, 5, 3) and (c == c[0, 0]).all()
