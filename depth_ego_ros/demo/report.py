"""The demo's summary: the before / after table, the improvement ratios, the verdict and what is
printed at the end. A new table column = one entry in :data:`TABLE_COLUMNS` (the figure comes
from :func:`~.stages.summarise`)."""
from __future__ import annotations

__all__ = ['TABLE_COLUMNS', 'IMPROVEMENT_KEYS', 'fmt', 'table', 'improvement', 'verdict',
           'print_summary']

# (header, key of the summarised evaluation)
TABLE_COLUMNS = [('AbsRel(median)', 'abs_rel_median'), ('d<1.25', 'a1_median'),
                 ('AbsRel(metric)', 'abs_rel_metric'), ('RMSE m(metric)', 'rmse_metric'),
                 ('ATE-5 m', 'ate_5frame'), ('RPE-t m', 'rpe_translation_rmse'),
                 ('ATE m(Sim3)', 'ate_sim3_rmse')]
# figures whose before / after ratio the report gives
IMPROVEMENT_KEYS = ('abs_rel_median', 'abs_rel_metric', 'ate_5frame', 'ate_sim3_rmse')


def fmt(v, nd=3) -> str:
    return 'n/a' if v is None else f'{v:.{nd}f}'


def table(rows: dict) -> str:
    cols = TABLE_COLUMNS
    w0 = max(len(k) for k in rows) + 2
    head = ' ' * w0 + ''.join(f'{c:>15}' for c, _ in cols)
    lines = [head]
    for name, s in rows.items():
        lines.append(f'{name:<{w0}}' + ''.join(f'{fmt(s.get(k)):>15}' for _, k in cols))
    return '\n'.join(lines)


def improvement(b: dict, a: dict) -> dict:
    """before / after of each of :data:`IMPROVEMENT_KEYS` (None where undefined)."""
    def ratio(key):
        if b.get(key) is None or a.get(key) is None or not a[key] > 0:
            return None
        return b[key] / a[key]

    return {k: ratio(k) for k in IMPROVEMENT_KEYS}


def verdict(cfg, b: dict, a: dict, ratios: dict, learned: bool) -> str:
    """One honest line: quick mode, learning shown (>= 2x better AbsRel), or not shown."""
    if cfg.quick:
        return ('quick mode: a pipeline smoke test with a few training steps; it is not '
                'expected to show learning')
    if learned:
        return (f"learning shown: held-out AbsRel (median scaling) {b['abs_rel_median']:.3f} -> "
                f"{a['abs_rel_median']:.3f} ({ratios['abs_rel_median']:.1f}x better)")
    r = ratios['abs_rel_median']
    return ('NOT shown within the time budget: held-out AbsRel (median scaling) '
            f"{fmt(b['abs_rel_median'])} -> {fmt(a['abs_rel_median'])}"
            + (f' ({r:.2f}x)' if r else '') + ' -- below the 2x target; a longer training '
            'budget (--train-minutes) or a faster machine is needed')


def print_summary(cfg, report: dict, out) -> None:
    timings = report['timings_s']
    source = 'perception node over DDS (recorded outputs)' if cfg.ros else 'Estimator offline'
    print(f'\nheld-out drive ({cfg.heldout_frames} frames, a street the training never saw), '
          f'{source}:')
    print(report['table'])
    print('(AbsRel, d<1.25 and RMSE over depth pixels up to 80 m; median = per-image median '
          'scaling, metric = none; ATE-5: 5-frame snippets; RPE-t: per-frame translation error '
          'after the Sim(3) scale; ATE over the whole drive after Sim(3) alignment)')
    print(report['verdict'])
    print(f"total {timings['total'] / 60:.1f} min (training {timings['train'] / 60:.1f} min); "
          f"report: {out / 'report.json'}")
