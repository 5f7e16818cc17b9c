#!/usr/bin/env python3
"""`make demo` N times with different seeds: is the demo's learning the same on every run?

Each run is the whole demo (``run_demo``: synth -> [record, before over DDS] -> train ->
[after over DDS] -> evaluate) with seed s (the training street is world s, the held-out street
world s + 1000; the training's data order, augmentation and initialisation follow s too). Prints
one row per run and min / median / max over the runs:

    steps, training minutes (and seconds/step), total minutes, before/after held-out AbsRel
    (median scaling), d<1.25, 5-frame ATE and whole-drive ATE (Sim(3)) before/after.

    python bench/demo_repeat.py --seeds 0 1 2 --out /tmp/repeat          # the demo as make demo
    python bench/demo_repeat.py --seeds 0 1 2 --no-ros --curve-every 100 --plot curve.png

``--curve-every N`` also records the held-out AbsRel every N training steps (offline, through
the Estimator; its time is not counted as training) and ``--plot`` draws those curves.
Every demo option of ``depth-ego demo`` that changes the recipe can be given as --set KEY=VALUE
(a DemoConfig field, e.g. --set max_steps=1200 --set anneal=cosine). Results: OUT/repeat.json.
Runs are sequential (they would only slow each other down on a small machine).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import time
from _common import cpu_model  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

COLUMNS = [('steps', 'steps', '{:.0f}'), ('train min', 'train_min', '{:.1f}'),
           ('s/step', 's_per_step', '{:.2f}'), ('total min', 'total_min', '{:.1f}'),
           ('AbsRel before', 'abs_rel_before', '{:.3f}'), ('AbsRel after', 'abs_rel_after', '{:.3f}'),
           ('x better', 'abs_rel_ratio', '{:.2f}'), ('d<1.25 after', 'a1_after', '{:.3f}'),
           ('ATE-5 before', 'ate5_before', '{:.3f}'), ('ATE-5 after', 'ate5_after', '{:.3f}'),
           ('ATE before', 'ate_before', '{:.3f}'), ('ATE after', 'ate_after', '{:.3f}')]



def load_average() -> list | None:
    try:
        return [float(x) for x in open('/proc/loadavg').read().split()[:3]]
    except OSError:
        return None


def row_of(report: dict) -> dict:
    """The figures of one demo report (live results when the nodes ran, else offline)."""
    res = report['results']['live' if 'live' in report['results'] else 'offline']
    b, a = res['before'], res['after']
    tr = report['stages']['train']
    ratio = (b['abs_rel_median'] / a['abs_rel_median']
             if b.get('abs_rel_median') and a.get('abs_rel_median') else None)
    return {'seed': report['config']['seed'], 'steps': tr['steps'],
            'train_min': tr['train_s'] / 60.0, 's_per_step': tr['train_s'] / max(tr['steps'], 1),
            'total_min': (report['timings_s']['total'] - tr.get('curve_s', 0.0)) / 60.0,
            'abs_rel_before': b.get('abs_rel_median'), 'abs_rel_after': a.get('abs_rel_median'),
            'abs_rel_ratio': ratio, 'a1_before': b.get('a1_median'), 'a1_after': a.get('a1_median'),
            'ate5_before': b.get('ate_5frame'), 'ate5_after': a.get('ate_5frame'),
            'ate_before': b.get('ate_sim3_rmse'), 'ate_after': a.get('ate_sim3_rmse'),
            'time_cap_hit': bool(tr.get('time_cap_hit')), 'curve': tr.get('curve') or []}


def print_table(rows: list[dict]) -> str:
    head = f"{'seed':>10}" + ''.join(f'{h:>14}' for h, _, _ in COLUMNS)
    lines = [head]

    def cell(v, f):
        return f'{"n/a":>14}' if v is None else f'{f.format(v):>14}'

    for r in rows:
        lines.append(f"{r['seed']:>10}" + ''.join(cell(r.get(k), f) for _, k, f in COLUMNS)
                     + ('  TIME CAP HIT' if r.get('time_cap_hit') else ''))
    for name, fn in (('min', min), ('median', statistics.median), ('max', max)):
        vals = []
        for _, k, f in COLUMNS:
            xs = [r[k] for r in rows if r.get(k) is not None]
            vals.append(cell(fn(xs) if xs else None, f))
        lines.append(f'{name:>10}' + ''.join(vals))
    return '\n'.join(lines)


def curve_title(rows: list[dict], meta: dict, overrides: dict) -> str:
    """The plot's title: seeds, date, CPU and any recipe changes (--set)."""
    title = f"held-out AbsRel vs step, {len(rows)} seeds ({meta.get('date_utc', '')} UTC, {meta.get('cpu', '')}, {'make demo over DDS' if meta.get('ros') else 'offline'})"
    if overrides:
        title += '; ' + ', '.join(f'{k}={v}' for k, v in overrides.items())
    return title


def plot_curves(rows: list[dict], path: pathlib.Path, title: str) -> bool:
    curves = [(r['seed'], r['curve']) for r in rows if r['curve']]
    if not curves:
        return False
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for seed, c in curves:
        ax.plot([p['step'] for p in c], [p['abs_rel_median'] for p in c], marker='o', ms=3,
                label=f'seed {seed}')
    before = [r['abs_rel_before'] for r in rows if r.get('abs_rel_before') is not None]
    if before:
        ax.axhline(statistics.median(before), color='grey', ls=':', label='before (random init)')
        ax.axhline(statistics.median(before) / 2.5, color='red', ls='--', lw=0.8,
                   label='2.5x better than before')
    ax.set_xlabel('training step')
    ax.set_ylabel('held-out AbsRel (median scaling)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {'true': True, 'false': False, 'none': None}.get(v.lower(), v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--out', default='demo_repeat', help='one demo_s<seed>/ per run + repeat.json')
    ap.add_argument('--no-ros', dest='ros', action='store_false',
                    help='offline demo (no nodes): train on the synthetic bag, evaluate offline')
    ap.add_argument('--quick', action='store_true', help='the quick preset (a smoke test)')
    ap.add_argument('--threads', type=int, default=0, help='torch threads for training (0: all)')
    ap.add_argument('--curve-every', type=int, default=0, help='held-out AbsRel every N steps')
    ap.add_argument('--plot', help='PNG of the learning curves (needs --curve-every)')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                    help='a DemoConfig field (repeatable), e.g. max_steps=1200')
    ap.add_argument('--keep', action='store_true', help='keep every run directory (default: '
                    'only report.json, logs and the figures)')
    args = ap.parse_args(argv)

    from depth_ego_ros.demo import DemoConfig, run_demo
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition('=')
        if k not in fields:
            ap.error(f'--set {kv}: {k} is not a DemoConfig field ({", ".join(sorted(fields))})')
        overrides[k] = parse_value(v)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta = {'date_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime()), 'cpu': cpu_model(),
            'load_before': load_average(), 'overrides': overrides, 'ros': args.ros,
            'threads': args.threads, 'argv': sys.argv}
    rows = []
    for seed in args.seeds:
        kw = dict(out=str(out / f'demo_s{seed}'), seed=seed, ros=args.ros, threads=args.threads,
                  curve_every=args.curve_every, **overrides)
        cfg = DemoConfig.quick_preset(**kw) if args.quick else DemoConfig(**kw)
        t = time.monotonic()
        rep = run_demo(cfg)
        r = row_of(rep) | {'wall_min': (time.monotonic() - t) / 60.0, 'load_after': load_average()}
        rows.append(r)
        print(f"seed {seed}: {r['steps']} steps, AbsRel {r['abs_rel_before']:.3f} -> "
              f"{r['abs_rel_after']:.3f}, d<1.25 {r['a1_after']:.3f}, ATE {r['ate_before']:.3f} -> "
              f"{r['ate_after']:.3f} m ({r['wall_min']:.1f} min, load {r['load_after']})", flush=True)
        if not args.keep:
            import shutil
            for sub in ('bags', 'recorded', 'live_before', 'live_after', 'train'):
                shutil.rmtree(pathlib.Path(cfg.out) / sub, ignore_errors=True)
        (out / 'repeat.json').write_text(json.dumps({'meta': meta, 'config': dataclasses.asdict(cfg),
                                                     'runs': rows}, indent=1, default=str))
    meta['load_after'] = load_average()
    text = print_table(rows)
    print(f"\n{len(rows)} demo runs ({'ROS nodes over DDS' if args.ros else 'offline'}), "
          f"{meta['date_utc']} UTC, {meta['cpu']}, load average before {meta['load_before']}, "
          f"after {meta['load_after']}:")
    print(text)
    if any(r['time_cap_hit'] for r in rows):
        print('WARNING: the time cap stopped at least one run before its step budget')
    (out / 'repeat.json').write_text(json.dumps({'meta': meta, 'config': dataclasses.asdict(cfg),
                                                 'runs': rows, 'table': text}, indent=1, default=str))
    if args.plot:
        title = curve_title(rows, meta, overrides)
        if plot_curves(rows, pathlib.Path(args.plot), title):
            print(f'learning curves: {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
