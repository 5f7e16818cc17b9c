"""The demo's summary: the before / after table, the improvement ratios, the verdict and what is
printed at the end. A new table column = one entry in :data:`TABLE_COLUMNS` (the figure comes
from :func:`~.stages.summarise`)."""
from __future__ import annotations

__all__ = ['TABLE_COLUMNS', 'IMPROVEMENT_KEYS', 'TARGET_RATIO', 'TARGET_A1', 'fmt', 'table',
           'improvement', 'learned', 'verdict', 'heading_note', 'print_summary']

# (header, key of the summarised evaluation)
TABLE_COLUMNS = [('AbsRel(median)', 'abs_rel_median'), ('d<1.25', 'a1_median'),
                 ('AbsRel(metric)', 'abs_rel_metric'), ('RMSE m(metric)', 'rmse_metric'),
                 ('ATE-5 m', 'ate_5frame'), ('RPE-t m', 'rpe_translation_rmse'),
                 ('ATE m(Sim3)', 'ate_sim3_rmse')]
# figures whose before / after ratio the report gives
IMPROVEMENT_KEYS = ('abs_rel_median', 'abs_rel_metric', 'ate_5frame', 'ate_sim3_rmse')
# what the full demo must show on the held-out drive: AbsRel (median scaling) this many times
# lower than before training, and delta < 1.25 at least this
TARGET_RATIO = 2.5
TARGET_A1 = 0.70


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


def learned(ratios: dict, a: dict) -> bool:
    """The full demo's target: AbsRel TARGET_RATIO x lower and d<1.25 >= TARGET_A1."""
    r = ratios.get('abs_rel_median')
    return r is not None and r >= TARGET_RATIO and (a.get('a1_median') or 0.0) >= TARGET_A1


def verdict(cfg, b: dict, a: dict, ratios: dict, learned: bool, train: dict | None = None) -> str:
    """One honest line: quick mode, learning shown (the targets met), or not shown."""
    if cfg.quick:
        return ('quick mode: a pipeline smoke test with a few training steps; it is not '
                'expected to show learning')
    train = train or {}
    steps = f"{train.get('steps', cfg.max_steps)} steps"
    if learned:
        return (f"learning shown: held-out AbsRel (median scaling) {b['abs_rel_median']:.3f} -> "
                f"{a['abs_rel_median']:.3f} ({ratios['abs_rel_median']:.1f}x better), d<1.25 "
                f"{a['a1_median']:.3f}, in {steps}")
    r = ratios['abs_rel_median']
    why = ('the training time cap (--train-minutes) stopped the run before its '
           f'{cfg.max_steps} steps: raise the cap' if train.get('time_cap_hit') else
           'more steps (--max-steps) are needed')
    return (f'NOT shown in {steps}: held-out AbsRel (median scaling) '
            f"{fmt(b['abs_rel_median'])} -> {fmt(a['abs_rel_median'])}"
            + (f' ({r:.2f}x)' if r else '') + f", d<1.25 {fmt(a.get('a1_median'))} -- below the "
            f'{TARGET_RATIO:g}x / {TARGET_A1:.2f} target; {why}')


def heading_note(b: dict, a: dict) -> str | None:
    """One line on the whole-drive trajectory (ATE after Sim(3) alignment), said plainly."""
    tb, ta = b.get('ate_sim3_rmse'), a.get('ate_sim3_rmse')
    if tb is None or ta is None:
        return None
    if ta < tb:
        return f'whole-drive ATE improved: {tb:.3f} -> {ta:.3f} m'
    return (f'whole-drive ATE NOT improved ({tb:.3f} -> {ta:.3f} m): over a whole drive the '
            "error is mostly the speed profile, not the heading (the odometry's yaw rate "
            'supervises the turns): the pose network learns its step length only from the '
            'velocity loss, and from one 300-frame drive it ties it to the places it saw rather '
            'than to the image motion, so on a new street its step hardly follows the speed '
            'changes. More drives with speed changes would fix it (see docs/training.md, Heading '
            'and speed)')


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
    if report.get('heading'):
        print(report['heading'])
    tr = report.get('stages', {}).get('train') or {}
    if tr.get('steps'):
        print(f"training: {tr['steps']} steps (seed {cfg.seed}) in {tr['train_s'] / 60:.1f} min, "
              f"{tr['train_s'] / tr['steps']:.2f} s/step on this machine"
              + (' -- STOPPED BY THE TIME CAP' if tr.get('time_cap_hit') else ''))
    print(f"total {timings['total'] / 60:.1f} min (training {timings['train'] / 60:.1f} min); "
          f"report: {out / 'report.json'}")
