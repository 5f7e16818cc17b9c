"""The demo's figures: held-out depth before / after fine-tuning (the networks run offline) and
the top view of the trajectories before / after (from the evaluations' files)."""
from __future__ import annotations

from pathlib import Path

from .config import DemoConfig

__all__ = ['depth_figure', 'trajectory_figure']


def depth_figure(cfg: DemoConfig, heldout_bag: Path, before_ckpt, after_ckpt, path: Path,
                 n: int = 3) -> list:
    """RGB | GT depth | before | after for n held-out frames (metric depth, one colour scale per
    row taken from the ground truth; the networks run offline through the Estimator)."""
    import numpy as np
    from ..core.estimator import Estimator, EstimatorConfig
    from ..data.synth import SynthConfig, SyntheticWorld
    from ..evaluation.metrics import DepthEvalConfig, depth_metrics
    from ..evaluation.plots import figure

    world = SyntheticWorld(SynthConfig(frames=cfg.heldout_frames, width=cfg.camera_width,
                                       height=cfg.camera_height, seed=cfg.seed + 1000,
                                       scene=cfg.scene, supersample=1 if cfg.quick else 2))
    idx = np.linspace(1, cfg.heldout_frames - 1, n).round().astype(int)
    ecfg = EstimatorConfig(width=cfg.width, height=cfg.height, device='cpu', backend='torch')
    results = []
    frames = [world.frame(int(i)) for i in idx]        # rendered once, used by every panel
    preds = {}
    for key, ck in (('before', before_ckpt), ('after', after_ckpt)):
        est = Estimator(ecfg, ck)
        preds[key] = [est.depth_only(f.rgb, f.K) for f in frames]
    import matplotlib
    fig = figure(12.0, 0.6 + n * 12.0 / 4 * cfg.camera_height / cfg.camera_width * 1.25)
    cmap = matplotlib.colormaps['magma_r'].with_extremes(bad='black')
    for r, (i, f) in enumerate(zip(idx, frames)):
        gt = np.where(np.isfinite(f.depth), f.depth, np.nan)
        lo, hi = np.nanpercentile(gt, 2), min(np.nanpercentile(gt, 98), 80.0)
        rec = {'frame': int(i)}
        panels = [('RGB', f.rgb, None), ('ground truth [m]', gt, None)]
        for key in ('before', 'after'):
            p = preds[key][r]
            m = depth_metrics(f.depth, p, DepthEvalConfig(max_depth=80.0, median_scaling=False))
            rec[key] = m.abs_rel
            panels.append((f'{key} [m], AbsRel {m.abs_rel:.2f}', p, None))
        results.append(rec)
        for c, (title, img, _) in enumerate(panels):
            ax = fig.add_subplot(n, 4, r * 4 + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.imshow(img)
                ax.set_ylabel(f'frame {i}', fontsize=8)
            else:
                im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=lo, vmax=hi)
                if c == 3:
                    fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02).ax.tick_params(labelsize=6)
            ax.set_title(title, fontsize=8)
    fig.suptitle('held-out drive: metric depth before / after fine-tuning (no rescaling)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return results


def trajectory_figure(eval_dirs: dict, path: Path) -> bool:
    """Top view: ground truth and the Sim(3)-aligned estimates before and after."""
    from ..evaluation import trajectory as tr
    from ..evaluation.plots import figure, top_view_axes
    gt_file = None
    est = {}
    for key, d in eval_dirs.items():
        f = Path(d) / 'trajectories' / 'estimate_aligned.tum'
        if f.is_file():
            est[key] = tr.read_tum(f).positions
            gt_file = gt_file or Path(d) / 'trajectories' / 'ground_truth.tum'
    if gt_file is None or not gt_file.is_file():
        return False
    gt = tr.read_tum(gt_file).positions
    a, b = top_view_axes(gt)
    fig = figure(6.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(gt[:, a], gt[:, b], '-', color='0.15', lw=2.5, label='ground truth')
    for key, colour in (('before', 'tab:red'), ('after', 'tab:blue')):
        if key in est:
            ax.plot(est[key][:, a], est[key][:, b], '-', color=colour, lw=1.5,
                    label=f'{key} fine-tuning (Sim(3) aligned)')
    ax.plot(gt[:1, a], gt[:1, b], 'o', color='0.15')
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel(f'{"xyz"[a]} [m]')
    ax.set_ylabel(f'{"xyz"[b]} [m]')
    ax.legend(fontsize=8)
    ax.set_title('held-out drive, top view', fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return True

