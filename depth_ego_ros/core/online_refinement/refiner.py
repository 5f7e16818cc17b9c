"""The :class:`OnlineRefiner`: its rounds (evaluate, optimiser steps, evaluate, accept or
reject), the cost pacing and the background thread. Frames: :mod:`.window`; loss and weights:
:mod:`.weights`; settings: :mod:`.config`.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Hashable

import numpy as np
import torch

from .config import RefinerConfig, RoundResult, check_supported
from .weights import RefinerWeights
from .window import FrameWindow

__all__ = ['OnlineRefiner']

# the package's name (the module's before the split), so log filters/levels still match
log = logging.getLogger('depth_ego_ros.core.online_refinement')


class _Stopped(Exception):
    """stop() was called during a paced round."""


class OnlineRefiner(FrameWindow, RefinerWeights):
    """Test-time adaptation of ``estimator``'s networks on a sliding window of recent frames.

    Feed it the frames the estimator serves (:meth:`add_frame`, cheap: one image copy), then
    either :meth:`start` the background thread (rounds every ``interval`` s, paced to
    ``max_share``) or drive it yourself with :meth:`refine_round` (synchronous, e.g. for
    deterministic experiments). :meth:`stats` gives counts, the measured share and timings;
    :meth:`save` writes the current weights as a monodepth2 checkpoint; :meth:`reset_weights`
    goes back to the original ones.
    """

    def __init__(self, estimator, config: RefinerConfig | None = None):
        check_supported(estimator)
        self.estimator = estimator
        self.config = dataclasses.replace(config) if config is not None else RefinerConfig()
        self.config.validate()
        self.device = estimator.device
        depth_net, pose_net = estimator.trainable_networks()
        self.depth_net = depth_net.to(self.device).eval()      # BatchNorm frozen (eval mode)
        self.pose_net = pose_net.to(self.device).eval()
        for enc in (self.depth_net.encoder, self.pose_net.encoder):   # unused ResNet fc heads
            for p in enc.encoder.fc.parameters():
                p.requires_grad_(False)
        self._original = self._snapshot()
        self._accepted = self._snapshot()
        self._loss_fn = None
        self._eval_loss_fn = None
        self._make_losses()
        self._optimizer = None
        self._opt_key = None
        self._rng = np.random.default_rng(self.config.seed)
        self._stream = torch.cuda.Stream(self.device) if self.device.type == 'cuda' else None
        # the ONNX files (+ OpenVINO blobs) of each rebuilt runner live here (deleted on close)
        self._cache_dir = (Path(tempfile.mkdtemp(prefix='depth_ego_refine_'))
                           if estimator.config.backend in ('onnxruntime', 'openvino') else None)
        self._lock = threading.Lock()                 # window + pending frames
        self._round_lock = threading.Lock()           # one round at a time
        self._pending: collections.deque = collections.deque()
        self._windows: dict[Hashable, collections.deque] = {}
        self._offered: collections.Counter = collections.Counter()
        self._new_frames = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._t_start = time.perf_counter()
        self._busy = 0.0
        self._cpu = 0.0
        #: end of the idle time the pacing owes for the last unit of work (stop() may cut it)
        self.paced_until = 0.0
        self._round_busy = 0.0
        self._round_wall = 0.0
        self._rejects_in_row = 0
        self.history: list[RoundResult] = []
        self.counts = collections.Counter()
        self.last_error: str | None = None
        self.swap_ms_max = 0.0

    # -- configuration -----------------------------------------------------------------------
    def update_config(self, **changes) -> RefinerConfig:
        """Change settings at run time (validated; applied from the next round on)."""
        new = dataclasses.replace(self.config, **changes).validate()
        self.config = new
        self._make_losses()
        self._wake.set()
        return new

    # -- a round -----------------------------------------------------------------------------
    def _timed(self, fn, pace: bool):
        """Run fn(), count its busy time (CUDA: after the stream finished) and sleep so that
        busy / wall stays <= max_share. Returns fn's result."""
        if pace and self._stop.is_set():
            raise _Stopped()
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            if self._stream is not None:
                with torch.cuda.stream(self._stream):
                    out = fn()
                self._stream.synchronize()
            else:
                out = fn()
        finally:
            busy = time.perf_counter() - t0
            self._busy += busy
            self._cpu += time.thread_time() - c0
            self._round_busy += busy
            share = self.config.max_share
            if pace and share < 1.0:
                owed = busy * (1.0 - share) / share
                self.paced_until = time.perf_counter() + owed
                self._stop.wait(owed)
        return out

    def refine_round(self, pace: bool = False) -> RoundResult | None:
        """One round now (in the calling thread): ingest new frames, evaluate, ``steps``
        optimiser steps, evaluate again, accept (swap the weights in) or reject (restore them).
        ``pace``: sleep between units of work to keep within ``max_share`` (the background
        thread does). None when no camera has three frames yet."""
        with self._round_lock:
            try:
                return self._round(pace)
            except _Stopped:                  # stop() during a paced round: drop its steps
                self._restore(self._accepted)
                return None

    def _round(self, pace: bool) -> RoundResult | None:
        cfg = self.config
        t_round = time.perf_counter()
        self._round_busy = 0.0
        if cfg.threads and self.device.type == 'cpu' and torch.get_num_threads() != cfg.threads:
            torch.set_num_threads(cfg.threads)          # this thread's intra-op threads
        with self._lock:
            self._new_frames = 0
        self._timed(self._ingest, pace)
        trips = self._triplets()
        if not trips:
            return None
        index = self.counts['rounds']
        n_eval = min(cfg.eval_triplets, len(trips))
        eval_idx = np.unique(np.linspace(0, len(trips) - 1, n_eval).round().astype(int))
        eval_set = [trips[i] for i in eval_idx]

        def finish(accepted, reason, before, after, build_ms=0.0, swap_ms=0.0, reset=False):
            wall = time.perf_counter() - t_round
            self._round_wall += wall
            r = RoundResult(index, accepted, reason, before, after, len(trips),
                            self._round_busy * 1e3, wall * 1e3, build_ms, swap_ms, reset)
            self.history.append(r)
            if len(self.history) > 1000:
                del self.history[:-1000]
            self.counts['rounds'] += 1
            self.counts['accepted' if accepted else 'rejected'] += 1
            return r

        before = self._timed(lambda: self._eval(eval_set), pace)
        if not math.isfinite(before):
            self.counts['nonfinite'] += 1
            self._restore(self._original)           # the running weights are broken: start over
            self._accepted = self._snapshot()
            b, s = self._timed(self._swap_in, pace)
            return finish(False, 'non-finite loss before the round: original weights restored',
                          before, math.nan, b, s, reset=True)

        opt = self._opt()
        params = self._params()
        bad = None
        for _ in range(cfg.steps):
            pick = self._rng.choice(len(trips), size=min(cfg.batch, len(trips)), replace=False)

            seed = int(self._rng.integers(2 ** 31))

            def step(pick=pick, seed=seed):
                opt.zero_grad(set_to_none=True)
                with torch.random.fork_rng(devices=[]):    # auto-mask noise: reproducible
                    torch.manual_seed(seed)
                    loss = self._loss([trips[i] for i in pick], self._loss_fn).total
                if not torch.isfinite(loss):
                    return 'non-finite loss'
                loss.backward()
                if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
                    return 'non-finite gradient'
                opt.step()
                return None
            bad = self._timed(step, pace)
            if bad:
                break
        after = math.nan if bad else self._timed(lambda: self._eval(eval_set), pace)
        if bad or not math.isfinite(after) or not after < before:
            reason = bad or ('non-finite loss after the round' if not math.isfinite(after)
                             else 'loss on the window did not decrease')
            if bad or not math.isfinite(after):
                self.counts['nonfinite'] += 1
            self._restore(self._accepted)
            self._rejects_in_row += 1
            reset, b, s = False, 0.0, 0.0
            if cfg.reset_after_rejects and self._rejects_in_row >= cfg.reset_after_rejects:
                self._restore(self._original)
                self._accepted = self._snapshot()
                self._rejects_in_row = 0
                b, s = self._timed(self._swap_in, pace)
                self.counts['resets'] += 1
                reset = True
                reason += f'; original weights restored after {cfg.reset_after_rejects} rejected rounds'
            return finish(False, reason, before, after, b, s, reset)
        self._accepted = self._snapshot()
        self._rejects_in_row = 0
        b, s = self._timed(self._swap_in, pace)
        return finish(True, 'loss decreased', before, after, b, s)

    # -- background thread -------------------------------------------------------------------
    def start(self) -> 'OnlineRefiner':
        """Start the background thread (rounds every ``interval`` seconds once frames arrive)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._t_start = time.perf_counter()
        self._busy = self._cpu = self._round_wall = 0.0
        self._thread = threading.Thread(target=self._loop, name='depth_ego_refiner', daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self):
        last = -math.inf
        while not self._stop.is_set():
            cfg = self.config
            wait = last + cfg.interval - time.perf_counter()
            if wait > 0:
                self._stop.wait(min(wait, 0.5))
                continue
            with self._lock:
                new = self._new_frames
            if new < max(1, cfg.min_new_frames) or not self.ready():
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            last = time.perf_counter()
            try:
                r = self.refine_round(pace=True)
            except Exception as exc:        # the refiner never takes the node down
                self.counts['errors'] += 1
                self.last_error = f'{type(exc).__name__}: {exc}'
                log.warning('online refinement round failed: %s', self.last_error)
                self._restore(self._accepted)
                continue
            if r is not None:
                log.debug('online refinement round %d: %s (%.4f -> %.4f, %.0f ms busy)', r.index,
                          'accepted' if r.accepted else f'rejected: {r.reason}', r.loss_before,
                          r.loss_after, r.busy_ms)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background thread (a round in progress ends at its next unit of work)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop and remove the refiner's temporary ONNX files (the estimator keeps running)."""
        self.stop()
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    # -- statistics --------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counts and measured costs: rounds / accepted / rejected / nonfinite / resets /
        errors / frames; share = busy / wall since start (the limit applies to it; wall includes the
        pause owed for the last unit of work, which stop() cuts short), round_share
        = busy / wall within rounds, cpu_share = the refiner thread's CPU time / wall;
        round_ms_mean (busy per round), swap_ms_max (the reference swap), build_ms_mean;
        last losses."""
        # the idle time owed for the last unit of work counts (stop() may have cut it short)
        wall = max(max(time.perf_counter(), self.paced_until) - self._t_start, 1e-9)
        rounds = [r for r in self.history]
        acc = [r for r in rounds if r.build_ms > 0]
        last = rounds[-1] if rounds else None
        return {
            'rounds': self.counts['rounds'], 'accepted': self.counts['accepted'],
            'rejected': self.counts['rejected'], 'nonfinite': self.counts['nonfinite'],
            'resets': self.counts['resets'], 'errors': self.counts['errors'],
            'frames': self.counts['frames'], 'invalid_frames': self.counts['invalid_frames'],
            'share': self._busy / wall, 'round_share': (self._busy / self._round_wall
                                                        if self._round_wall > 0 else 0.0),
            'cpu_share': self._cpu / wall,
            'round_ms_mean': float(np.mean([r.busy_ms for r in rounds])) if rounds else 0.0,
            'build_ms_mean': float(np.mean([r.build_ms for r in acc])) if acc else 0.0,
            'swap_ms_max': self.swap_ms_max,
            'last_loss_before': last.loss_before if last else math.nan,
            'last_loss_after': last.loss_after if last else math.nan,
            'last_reason': last.reason if last else '',
            'weights_version': self.estimator.weights_version,
        }
