"""The demo run: the stages in order (:mod:`.stages`), the evaluations, the figures
(:mod:`.figures`) and the report (:mod:`.report`) written to OUT/report.json."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .config import DemoConfig
from .figures import depth_figure, trajectory_figure
from .processes import DemoLog, ros_environment
from .report import heading_note, improvement, learned as targets_met, print_summary, table, verdict
from .stages import evaluate_pair, stage_live, stage_synth, stage_train

__all__ = ['run_demo']


def run_demo(cfg: DemoConfig) -> dict:
    """The whole demo for ``cfg`` in ``cfg.out``; returns the report (as written, before JSON
    cleaning). Raises :class:`~.processes.StageError` when a stage fails."""
    cfg.validate()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ('report.json', 'depth_before_after.png', 'trajectory_before_after.png'):
        (out / stale).unlink(missing_ok=True)
    log_dir = out / 'logs'
    log_dir.mkdir(exist_ok=True)
    log = DemoLog(log_dir / 'demo.log')
    try:
        return _run(cfg, out, log_dir, log)
    finally:
        log.f.close()


def _run(cfg: DemoConfig, out: Path, log_dir: Path, log) -> dict:
    t0 = time.monotonic()
    timings = {}
    report = {'config': dataclasses.asdict(cfg), 'stages': {}}

    def timed(name, fn, *a, **kw):
        t = time.monotonic()
        res = fn(*a, **kw)
        timings[name] = time.monotonic() - t
        return res

    log(f"depth_ego_ros demo: {'QUICK smoke test' if cfg.quick else 'full run'}, "
        f"{'ROS nodes over DDS' if cfg.ros else 'offline (no ROS)'}, output {out}")
    heldout, before_ckpt, after_ckpt = _stages(cfg, out, log_dir, log, report['stages'], timed)

    t = time.monotonic()
    ev = out / 'eval'
    results = _evaluations(cfg, heldout, ev, report['stages'], before_ckpt, after_ckpt, log)
    timings['evaluate'] = time.monotonic() - t
    report['results'] = results
    main = results['live' if cfg.ros else 'offline']
    b, a = main['before'], main['after']
    ratios = improvement(b, a)
    learned = targets_met(ratios, a)
    report['improvement'] = ratios
    report['learned'] = learned
    report['learned_2x'] = ratios['abs_rel_median'] is not None and ratios['abs_rel_median'] >= 2.0

    t = time.monotonic()
    report['files'] = _figures(cfg, heldout, ev, before_ckpt, after_ckpt, out, report, log)
    timings['figures'] = time.monotonic() - t
    timings['total'] = time.monotonic() - t0
    report['timings_s'] = timings
    before_name = 'before (random init)' if cfg.init is None else 'before (--init)'
    report['table'] = table({before_name: b, 'after fine-tuning': a})
    report['verdict'] = verdict(cfg, b, a, ratios, learned, report['stages'].get('train'))
    report['heading'] = None if cfg.quick else heading_note(b, a)
    from ..evaluation.report import clean, write_json
    write_json(out / 'report.json', clean(report))
    print_summary(cfg, report, out)
    return report


def _stages(cfg: DemoConfig, out: Path, log_dir: Path, log, stages: dict, timed):
    """synth, (record, before), train, (after): fills ``stages``; returns the held-out bag and
    the checkpoints before / after training."""
    synth = timed('synth', stage_synth, cfg, out / 'bags', log)
    stages['synth'] = synth
    train_bag, heldout = Path(synth['train']['bag']), Path(synth['heldout']['bag'])
    before_ckpt = cfg.init

    if cfg.ros:
        env = ros_environment(log_dir, cfg.domain_id)
        log(f"ROS graph: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, discovery "
            f"{env.get('ROS_AUTOMATIC_DISCOVERY_RANGE')}")
        rec = timed('record', stage_live, cfg, 'record', train_bag, before_ckpt, 'camera',
                    out / 'recorded', env, log_dir, log)
        stages['record'] = rec
        before_live = timed('before', stage_live, cfg, 'before', heldout, before_ckpt, 'outputs',
                            out / 'live_before', env, log_dir, log)
        stages['before'] = before_live
        training_bag = Path(rec['bag'])
    else:
        training_bag = train_bag
        log('offline: training on the synthetic bag directly')

    train = timed('train', stage_train, cfg, training_bag, out / 'train', log, heldout=heldout)
    stages['train'] = train
    after_ckpt = str(Path(train['checkpoint']))

    if cfg.ros:
        after_live = timed('after', stage_live, cfg, 'after', heldout, after_ckpt, 'outputs',
                           out / 'live_after', env, log_dir, log)
        stages['after'] = after_live
    return heldout, before_ckpt, after_ckpt


def _evaluations(cfg: DemoConfig, heldout: Path, ev: Path, stages: dict, before_ckpt, after_ckpt,
                 log) -> dict:
    """{'live': ..., 'offline': ...} -> {'before': summary, 'after': summary}."""
    results = {}
    if cfg.ros:
        results['live'] = {
            'before': evaluate_pair(cfg, heldout, ev, 'live_before',
                                    pred_bag=Path(stages['before']['bag']), log=log),
            'after': evaluate_pair(cfg, heldout, ev, 'live_after',
                                   pred_bag=Path(stages['after']['bag']), log=log)}
    if cfg.offline_eval or not cfg.ros:
        results['offline'] = {
            'before': evaluate_pair(cfg, heldout, ev, 'offline_before', checkpoint=before_ckpt, log=log),
            'after': evaluate_pair(cfg, heldout, ev, 'offline_after', checkpoint=after_ckpt, log=log)}
    return results


def _figures(cfg: DemoConfig, heldout: Path, ev: Path, before_ckpt, after_ckpt, out: Path,
             report: dict, log) -> dict:
    """The two PNGs; ``report['depth_examples']`` gets the per-frame AbsRel of the depth figure.
    Returns {figure: file name} of those written."""
    files = {}
    try:
        report['depth_examples'] = depth_figure(cfg, heldout, before_ckpt, after_ckpt,
                                                out / 'depth_before_after.png')
        files['depth'] = 'depth_before_after.png'
    except Exception as exc:  # noqa: BLE001 - a picture must not sink the report
        log(f'warning: depth figure failed: {type(exc).__name__}: {exc}')
    src = 'live' if cfg.ros else 'offline'
    if trajectory_figure({'before': ev / f'{src}_before', 'after': ev / f'{src}_after'},
                         out / 'trajectory_before_after.png'):
        files['trajectory'] = 'trajectory_before_after.png'
    return files
