"""The demo's stages, each a function of a :class:`~.config.DemoConfig` (callable on its own,
e.g. from a bench script): synthetic drives, a live run of the perception node over DDS with the
recorder, training, and the evaluations of one prediction source."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from .config import CAMERA, CAMERA_INFO, GT_DEPTH, GT_POSE, NAMESPACE, ODOM, DemoConfig
from .processes import Proc, StageError, bag_counts, node_cmd, played_counts
from .report import fmt

__all__ = ['stage_synth', 'stage_live', 'stage_train', 'stage_evaluate', 'evaluate_pair',
           'summarise']


def stage_synth(cfg: DemoConfig, bag_dir: Path, log) -> dict:
    """Render the training drive (seed) and the held-out drive (seed + 1000) into bags."""
    from ..data.synth import SynthConfig, SyntheticWorld
    from ..data.synth_bag import render_workers, write_synth_bag
    out = {}
    for name, seed, frames in (('train', cfg.seed, cfg.train_frames),
                               ('heldout', cfg.seed + 1000, cfg.heldout_frames)):
        path = bag_dir / f'drive_{name}'
        sc = SynthConfig(frames=frames, width=cfg.camera_width, height=cfg.camera_height,
                         seed=seed, scene=cfg.scene, supersample=1 if cfg.quick else 2)
        stats = write_synth_bag(SyntheticWorld(sc), path, overwrite=True,
                                workers=render_workers())
        log(f"synth: {path} ({frames} frames {cfg.camera_width}x{cfg.camera_height}, seed {seed}, "
            f"{stats['total_s']:.1f} s)")
        out[name] = {'bag': str(path), 'frames': frames, 'seed': seed, 'seconds': stats['total_s']}
    return out


def _node_params(cfg: DemoConfig, checkpoint: str | None) -> dict:
    return {'checkpoint': checkpoint or '', 'width': cfg.width, 'height': cfg.height,
            'device': 'cpu' if cfg.device == 'auto' else cfg.device, 'backend': 'torch',
            'num_threads': cfg.node_threads, 'publish.points': False, 'publish.colored': False,
            'publish.tf': False, 'diagnostics.period': 1.0}


def stage_live(cfg: DemoConfig, name: str, bag: Path, checkpoint: str | None, record: str,
               out_dir: Path, env: dict, log_dir: Path, log) -> dict:
    """Play ``bag`` into the perception node (separate process) while recorder_node records.

    record='camera': camera, camera_info, odometry and /tf_static (a training bag);
    record='outputs': the node's depth, depth/camera_info and odometry (+ the camera) for the
    evaluation. Returns {'bag': recorded bag, 'played': {topic: n}, 'seconds': ...}.
    """
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_name = 'recording'
    if (out_dir / bag_name).exists():
        shutil.rmtree(out_dir / bag_name)
    node = recorder = player = None
    ns = f'/{NAMESPACE}'
    rate = cfg.record_rate if record == 'camera' else cfg.play_rate
    try:
        node = Proc(f'{name}_perception_node', node_cmd(
            'depth_ego_ros.ros.perception_node', _node_params(cfg, checkpoint),
            {'__ns': ns, 'image': CAMERA, 'camera_info': CAMERA_INFO}), env, log_dir)
        rec_params = {'camera_topic': CAMERA, 'camera_info_topic': CAMERA_INFO,
                      'output_dir': str(out_dir), 'bag_name': bag_name,
                      'min_free_space': 64 * 2 ** 20, 'diagnostics_period': 0.0}
        if record == 'camera':
            rec_params.update(odom_topic=ODOM, record_tf=True)
            topics = [CAMERA, CAMERA_INFO, ODOM, '/tf_static']
        else:
            rec_params.update(record_tf=False, extra_topics=[
                f'{ns}/depth', f'{ns}/depth/camera_info', f'{ns}/odom'])
            topics = [CAMERA, CAMERA_INFO]
        recorder = Proc(f'{name}_recorder', node_cmd('depth_ego_ros.ros.recorder_node', rec_params),
                         env, log_dir)
        if not node.wait_for('ready:', 180):
            raise StageError(f'{name}: the perception node did not start (log {node.log_path}):\n'
                             + node.tail())
        player = Proc(f'{name}_player', [
            sys.executable, '-m', 'depth_ego_ros.cli.main', 'play', str(bag), '--topics', *topics,
            '--rate', str(rate), '--wait-for-subscribers', '1' if record == 'camera' else '2',
            '--wait-timeout', '60', '--delay', '1.0'], env, log_dir)
        limit = 120 + 3 * (cfg.train_frames + cfg.heldout_frames) / 10.0 / rate
        if player.wait(limit) is None:
            raise StageError(f'{name}: the player did not finish in {limit:.0f} s (log {player.log_path})')
        if player.proc.returncode != 0:
            raise StageError(f'{name}: depth-ego play failed (log {player.log_path}):\n' + player.tail())
        time.sleep(2.0)           # the node's last frames reach the recorder
    finally:
        for p in (player, recorder, node):
            if p is not None:
                p.stop()
    recorded = out_dir / bag_name
    if not (recorded / 'metadata.yaml').is_file():
        raise StageError(f'{name}: the recorder wrote no bag at {recorded} (log {recorder.log_path}):\n'
                         + recorder.tail())
    played = played_counts(player.text())
    counts = bag_counts(recorded)
    log(f'{name}: played {sum(played.values())} messages into the node at {rate:g}x; recorded '
        f'{recorded}: ' + ', '.join(f'{t} {n}' for t, n in sorted(counts.items())))
    # camera_info is written once per change by design (camera_info_on_change)
    lost = {t: n - counts.get(t, 0) for t, n in played.items()
            if counts.get(t, 0) < n and t != CAMERA_INFO}
    if record == 'camera' and lost:
        log(f'{name}: WARNING: the recorder missed messages the player sent: '
            + ', '.join(f'{t} {n}' for t, n in sorted(lost.items()))
            + ' (a slow disk or an overloaded machine: try --record-rate 1)')
    return {'bag': str(recorded), 'played': played, 'recorded': counts, 'checkpoint': checkpoint,
            'seconds': time.monotonic() - t0,
            'logs': [str(p.log_path) for p in (node, recorder, player)]}



def stage_train(cfg: DemoConfig, bag: Path, out: Path, log, heldout: Path | None = None) -> dict:
    """Fine-tune on the recorded bag (in this process) for ``cfg.max_steps`` steps, seeded:
    the result does not depend on the machine's speed (``cfg.train_seconds`` is only a safety
    cap; ``time_cap_hit`` says when it stopped the run). With ``cfg.curve_every`` and a held-out
    bag: the held-out AbsRel every that many steps (``curve``; evaluation time counts neither as
    training time nor against the cap, and it draws no random numbers from the training's generators)."""
    from ..training.config import TrainConfig
    from ..training.trainer import Trainer
    tc = TrainConfig(bags=[str(bag)], out=str(out), width=cfg.width, height=cfg.height,
                     batch_size=cfg.batch_size, lr=cfg.lr, epochs=100_000, lr_step=100_000,
                     time_budget=cfg.train_seconds, max_steps=cfg.max_steps, init=cfg.init,
                     odometry_warp_steps=cfg.odometry_warp_steps, lr_gamma=0.1,
                     anneal_fraction=cfg.anneal_fraction, anneal=cfg.anneal,
                     warmup_steps=cfg.warmup_steps, ema_decay=cfg.ema_decay,
                     yaw_rate_weight=cfg.yaw_rate_weight,
                     val_fraction=0.0, device=cfg.device, num_threads=cfg.threads,
                     save_every=100_000, keep_checkpoints=1, image_every=0, seed=cfg.seed,
                     progress=sys.stderr.isatty(), odom_topic=ODOM, image_topic=CAMERA,
                     camera_info_topic=CAMERA_INFO)
    if out.exists():
        shutil.rmtree(out)
    trainer = Trainer(tc, log_fn=log)
    curve: list[dict] = []
    hook_s = [0.0]
    if cfg.curve_every and heldout is not None:
        trainer.step_hook = _curve_hook(cfg, heldout, out / 'curve', curve, hook_s, log)
    summary = trainer.fit()
    trainer.ctx.shutdown()
    if not summary.get('checkpoint'):
        raise StageError('training wrote no checkpoint')
    # the demo never resumes: drop the optimiser state (twice the size of the networks)
    from ..training.trainer import STATE_FILE
    (Path(summary['checkpoint']) / STATE_FILE).unlink(missing_ok=True)
    h = summary['history']
    log(f"train: {summary['steps']} of {cfg.max_steps} steps in {summary['train_s']:.0f} s "
        f"({summary['train_s'] / max(summary['steps'], 1):.2f} s/step; "
        f"{summary['train_samples']} samples, batch {cfg.batch_size}); loss "
        f"{h[0]['train']['total']:.4f} (first epoch) -> {h[-1]['train']['total']:.4f} (last); "
        f"checkpoint {summary['checkpoint']}")
    if summary.get('time_cap_hit'):
        log(f'train: WARNING the {cfg.train_seconds:.0f} s safety cap stopped training at step '
            f"{summary['steps']} of {cfg.max_steps}: this result is not the step-budgeted one")
    return {k: v for k, v in summary.items() if k != 'history'} | {
        'loss_first_epoch': h[0]['train'], 'loss_last_epoch': h[-1]['train'],
        'epochs': len(h), 'config': tc.to_dict(), 'curve': curve, 'curve_s': hook_s[0]}


def _curve_hook(cfg: DemoConfig, heldout: Path, tmp: Path, curve: list, hook_s: list, log):
    """A Trainer.step_hook: every cfg.curve_every steps, the networks as they are evaluated on
    the held-out drive (offline, median scaling) and appended to ``curve``."""
    import random

    import numpy as np
    import torch

    def hook(trainer):
        if trainer.step % cfg.curve_every and trainer.step != trainer.config.max_steps:
            return
        t = time.monotonic()
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            with trainer.averaged_weights():    # what a checkpoint at this step would hold
                trainer.model.save(tmp, height=cfg.height, width=cfg.width)
            try:
                rep = stage_evaluate(cfg, heldout, tmp / 'eval', checkpoint=str(tmp), plots=False)
            finally:
                random.setstate(py)
                np.random.set_state(npy)
        s = summarise(rep, {})
        point = {'step': trainer.step, 'abs_rel_median': s['abs_rel_median'],
                 'a1_median': s['a1_median'], 'ate_sim3_rmse': s['ate_sim3_rmse'],
                 'ate_5frame': s['ate_5frame']}
        curve.append(point)
        hook_s[0] += time.monotonic() - t
        log(f"curve: step {point['step']}: held-out AbsRel {fmt(point['abs_rel_median'])}, "
            f"d<1.25 {fmt(point['a1_median'])}, ATE {fmt(point['ate_sim3_rmse'])} m")
    return hook


def stage_evaluate(cfg: DemoConfig, gt_bag: Path, out: Path, *, pred_bag: Path | None = None,
                   checkpoint: str | None = None, scaling: str = 'median', plots: bool = True) -> dict:
    """depth-ego evaluate: recorded node outputs (pred_bag) or the Estimator offline."""
    from ..evaluation.evaluate import EvaluateConfig, evaluate
    ec = EvaluateConfig(bag=str(gt_bag), out=str(out), gt_depth=GT_DEPTH, gt_poses=GT_POSE,
                        camera_topic=CAMERA, camera_info_topic=CAMERA_INFO, scaling=scaling,
                        max_depth=80.0, progress=False, plots=plots, n_examples=3)
    if pred_bag is not None:
        ec.pred_bag = str(pred_bag)
        ec.pred_depth = f'/{NAMESPACE}/depth'
        ec.pred_odom = f'/{NAMESPACE}/odom'
    else:
        ec.checkpoint = checkpoint
        ec.estimator = {'width': cfg.width, 'height': cfg.height, 'backend': 'torch',
                        'device': 'cpu' if cfg.device == 'auto' else cfg.device,
                        'num_threads': cfg.threads}
    return evaluate(ec, log_fn=lambda _t: None, argv=['(depth-ego demo)'])


def summarise(median_rep: dict, metric_rep: dict) -> dict:
    """The figures of the table from two evaluate reports (median scaling and none)."""
    d, m = median_rep.get('depth') or {}, metric_rep.get('depth') or {}
    t = median_rep.get('trajectory') or {}
    dm, mm = d.get('mean', {}), m.get('mean', {})
    return {
        'abs_rel_median': dm.get('abs_rel'), 'rmse_median': dm.get('rmse'), 'a1_median': dm.get('a1'),
        'abs_rel_metric': mm.get('abs_rel'), 'rmse_metric': mm.get('rmse'), 'a1_metric': mm.get('a1'),
        'scale_ratio_median': dm.get('ratio_median'),
        'ate_sim3_rmse': (t.get('ate') or {}).get('stats', {}).get('rmse'),
        'ate_5frame': (t.get('snippet_ate_5') or {}).get('mean'),
        'rpe_translation_rmse': (t.get('rpe_translation') or {}).get('stats', {}).get('rmse'),
        'frames_depth': dm.get('n_frames'),
        'frames_trajectory': (t.get('association') or {}).get('n_associated'),
    }


def evaluate_pair(cfg, gt_bag: Path, out: Path, name: str, *, pred_bag=None, checkpoint=None,
                  log=print) -> dict:
    """Two evaluations of one prediction source: median scaling (+ trajectory) and metric."""
    from ..evaluation.evaluate import EvaluationError
    try:
        med = stage_evaluate(cfg, gt_bag, out / f'{name}', pred_bag=pred_bag, checkpoint=checkpoint)
        met = stage_evaluate(cfg, gt_bag, out / f'{name}_metric', pred_bag=pred_bag,
                             checkpoint=checkpoint, scaling='none', plots=False)
    except EvaluationError as exc:
        log(f'evaluate {name}: FAILED: {exc}')
        return {'error': str(exc)}
    s = summarise(med, met)
    log(f"evaluate {name}: AbsRel {fmt(s['abs_rel_median'])} (median scaling) / "
        f"{fmt(s['abs_rel_metric'])} (metric), d<1.25 {fmt(s['a1_median'])}, ATE-5 "
        f"{fmt(s['ate_5frame'])} m, ATE {fmt(s['ate_sim3_rmse'])} m")
    return s


