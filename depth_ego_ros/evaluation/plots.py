"""The PNGs of an evaluation report (report.json itself is :mod:`.report`).

Plots are drawn with matplotlib's object API on Agg canvases (``Figure`` + ``FigureCanvasAgg``),
so nothing here touches pyplot's global state or needs a display:

* ``trajectory_top.png`` — top view of the ground truth and of the aligned estimate. "Top" = the
  two axes of the ground-truth world along which the path extends most (the axis with the
  smallest extent is taken as "up": z for map/odom frames, y for camera-chain frames).
* ``trajectory_error.png`` — ATE per pose and translational RPE per pair over time.
* ``depth_abs_rel.png`` — AbsRel per frame (and the median-scaling ratio per frame).
* ``depth_examples.png`` — a few frames: RGB | GT depth | predicted depth | AbsRel error map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ['plot_trajectory_top', 'plot_trajectory_error', 'plot_abs_rel', 'plot_examples',
           'make_plots', 'top_view_axes', 'figure']

_AXES = 'xyz'


def figure(w, h):
    """A matplotlib Figure on its own Agg canvas (no pyplot state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> str:
    fig.savefig(path)
    return Path(path).name


def top_view_axes(positions: np.ndarray) -> tuple[int, int]:
    """Indices of the two world axes of the top view: all but the one of smallest extent."""
    p = np.asarray(positions, dtype=np.float64)
    up = int(np.argmin(np.ptp(p, axis=0))) if len(p) else 2
    a, b = [k for k in range(3) if k != up]
    return a, b


def plot_trajectory_top(path, gt_xyz, est_xyz, title='') -> str:
    gt_xyz, est_xyz = np.asarray(gt_xyz), np.asarray(est_xyz)
    a, b = top_view_axes(gt_xyz)
    fig = figure(6.4, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(gt_xyz[:, a], gt_xyz[:, b], '-', color='0.2', lw=2, label='ground truth')
    ax.plot(est_xyz[:, a], est_xyz[:, b], '-', color='tab:orange', lw=1.5, label='estimate (aligned)')
    ax.plot(gt_xyz[:1, a], gt_xyz[:1, b], 'o', color='tab:green', label='start')
    for k in range(0, len(gt_xyz), max(1, len(gt_xyz) // 30)):        # error segments
        ax.plot([gt_xyz[k, a], est_xyz[k, a]], [gt_xyz[k, b], est_xyz[k, b]], '-', color='tab:red',
                lw=0.5, alpha=0.6)
    ax.set_xlabel(f'{_AXES[a]} [m]')
    ax.set_ylabel(f'{_AXES[b]} [m]')
    ax.set_aspect('equal', adjustable='datalim')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='best', fontsize=8)
    ax.set_title(title or 'trajectory, top view', fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_trajectory_error(path, stamps, ate, rpe_stamps=None, rpe=None, rpe_label='RPE') -> str:
    t0 = float(stamps[0]) if len(stamps) else 0.0
    rows = 2 if rpe is not None and len(rpe) else 1
    fig = figure(8.0, 2.6 * rows + 0.4)
    ax = fig.add_subplot(rows, 1, 1)
    ax.plot(np.asarray(stamps) - t0, ate, '-', color='tab:red', lw=1.2)
    ax.axhline(float(np.sqrt(np.mean(np.square(ate)))), color='0.3', ls='--', lw=1,
               label=f'RMSE {np.sqrt(np.mean(np.square(ate))):.3g} m')
    ax.set_ylabel('ATE [m]')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='upper left', fontsize=8)
    ax.set_title('absolute trajectory error after alignment', fontsize=10)
    if rows == 2:
        ax2 = fig.add_subplot(rows, 1, 2, sharex=ax)
        ax2.plot(np.asarray(rpe_stamps) - t0, rpe, '.-', color='tab:blue', lw=1, ms=3)
        ax2.set_ylabel(rpe_label)
        ax2.grid(True, alpha=0.3)
        ax2.set_xlabel('time since the first frame [s]')
    else:
        ax.set_xlabel('time since the first frame [s]')
    fig.tight_layout()
    return _save(fig, path)


def plot_abs_rel(path, stamps, abs_rel, ratios=None) -> str:
    t = np.asarray(stamps, dtype=np.float64)
    t = t - t[0] if t.size else t
    rows = 2 if ratios is not None and any(r is not None for r in ratios) else 1
    fig = figure(8.0, 2.6 * rows + 0.4)
    ax = fig.add_subplot(rows, 1, 1)
    ax.plot(t, abs_rel, '.-', color='tab:purple', lw=1, ms=4)
    ax.axhline(float(np.mean(abs_rel)), color='0.3', ls='--', lw=1, label=f'mean {np.mean(abs_rel):.3f}')
    ax.set_ylabel('AbsRel')
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc='upper left', fontsize=8)
    ax.set_title('depth AbsRel per frame', fontsize=10)
    if rows == 2:
        ax2 = fig.add_subplot(rows, 1, 2, sharex=ax)
        r = np.array([np.nan if v is None else v for v in ratios], dtype=np.float64)
        ax2.plot(t, r, '.-', color='tab:gray', lw=1, ms=3)
        ax2.set_ylabel('median-scaling ratio')
        ax2.grid(True, alpha=0.3)
        ax2.set_xlabel('time since the first frame [s]')
    else:
        ax.set_xlabel('time since the first frame [s]')
    fig.tight_layout()
    return _save(fig, path)


def _dilate_sparse(depth: np.ndarray, valid: np.ndarray, radius: int = 1) -> np.ndarray:
    """Grow each valid pixel of a sparse map to its neighbours (display only; nearest wins)."""
    out = np.where(valid, depth, np.inf)
    H, W = depth.shape
    src = out.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = np.full_like(src, np.inf)
            ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
            xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
            shifted[yd, xd] = src[ys, xs]
            out = np.minimum(out, shifted)
    return np.where(np.isfinite(out), out, np.nan)


def plot_examples(path, examples, max_depth=None) -> str:
    """Rows of RGB | GT depth | predicted depth (scaled as evaluated) | AbsRel error map."""
    n = len(examples)
    if n == 0:
        return ''
    H, W = examples[0]['gt'].shape
    aspect = H / max(W, 1)
    fig = figure(13.0, max(1.6, 13.0 / 4 * aspect * n * 1.08 + 0.5))
    for r, ex in enumerate(examples):
        gt = ex['gt'].astype(np.float64)
        gvalid = np.isfinite(gt) & (gt > 0)
        sparse = gvalid.mean() < 0.3
        gshow = _dilate_sparse(gt, gvalid, 1 if max(H, W) < 800 else 2) if sparse else np.where(gvalid, gt, np.nan)
        pred = ex['pred'].astype(np.float64)
        lo = np.nanpercentile(gt[gvalid], 2) if gvalid.any() else 0.1
        hi = np.nanpercentile(gt[gvalid], 98) if gvalid.any() else 10.0
        hi = max(hi, lo * 1.01 + 1e-6)
        err = np.full(gt.shape, np.nan)
        v = ex['valid']
        err[v] = np.abs(pred[v] - gt[v]) / gt[v]
        if sparse:
            err = _dilate_sparse(err, np.isfinite(err), 1 if max(H, W) < 800 else 2)
        panels = [('RGB', ex['rgb'], None), ('ground-truth depth [m]', gshow, ('magma_r', lo, hi)),
                  ('predicted depth [m]', pred, ('magma_r', lo, hi)),
                  ('|pred - gt| / gt', err, ('inferno', 0.0, 0.5))]
        for c, (name, img, cm) in enumerate(panels):
            ax = fig.add_subplot(n, 4, r * 4 + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.text(0.5, 0.5, 'no camera image', ha='center', va='center', fontsize=8,
                        transform=ax.transAxes)
                ax.set_facecolor('0.9')
            elif cm is None:
                ax.imshow(img, interpolation='nearest')
            else:
                import matplotlib
                cmap = matplotlib.colormaps[cm[0]].with_extremes(bad='black')
                im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=cm[1], vmax=cm[2],
                               interpolation='nearest')
                fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02).ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                label = f"frame {ex['frame']}"
                if ex.get('abs_rel') is not None:
                    label += f"\nAbsRel {ex['abs_rel']:.3f}"
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def make_plots(out_dir, depth: dict | None, traj: dict | None, trajectories=None,
               frame_records=(), examples=()) -> dict:
    """All PNGs of an evaluation run; returns {name: file name} of those written.

    ``depth`` / ``traj``: the report's sections; ``trajectories``: the
    :class:`~.trajectory_results.AlignedTrajectories` behind ``traj``; ``frame_records``: the
    report's per-frame records (their stamps); ``examples``: the example frames of
    :class:`~.depth_results.DepthResults`."""
    out = Path(out_dir)
    files = {}
    if traj is not None:
        t = trajectories
        files['trajectory_top'] = plot_trajectory_top(
            out / 'trajectory_top.png', t.gt.positions, t.est_aligned.positions,
            title=f"top view, {traj['alignment']['mode']} alignment, ATE RMSE "
                  f"{traj['ate']['stats']['rmse']:.3g} m")
        rpe = t.rpe_t
        files['trajectory_error'] = plot_trajectory_error(
            out / 'trajectory_error.png', t.gt.stamps, t.ate.errors, rpe.stamps, rpe.errors,
            rpe_label=f"RPE transl. [m] (Δ={rpe.settings['delta']:g} {rpe.settings['delta_unit']})")
    if depth is not None and depth.get('per_frame'):
        stamps = {r['frame']: r['stamp'] for r in frame_records}
        pf = depth['per_frame']
        files['depth_abs_rel'] = plot_abs_rel(
            out / 'depth_abs_rel.png', [stamps[p['frame']] for p in pf], [p['abs_rel'] for p in pf],
            [p.get('ratio') for p in pf])
    if examples:
        files['depth_examples'] = plot_examples(out / 'depth_examples.png',
                                                sorted(examples, key=lambda e: e['frame']))
    return {k: v for k, v in files.items() if v}
