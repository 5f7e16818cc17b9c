"""Online refinement (struct2depth's test-time adaptation) for a running :class:`Estimator`.

While the estimator serves frames, an :class:`OnlineRefiner` keeps a sliding window of the
recent frames (network-resolution images, intrinsics, stamps and, when known, the platform
speed) and every so often runs a few optimiser steps of the self-supervised loss
(:class:`~depth_ego_ros.core.losses.SelfSupervisedLoss`: photometric min-reprojection with
auto-masking + edge-aware smoothness, + PackNet-SfM's velocity term when speeds are known) on
frame triplets ``(t-1, t, t+1)`` of that window, on its own private copy of the depth and pose
networks. A round is **accepted** only when the loss on a fixed set of the window's triplets
went down and every number stayed finite; its weights are then built into a fresh runner of
the estimator's backend (ONNX Runtime: exported and opened in the refiner's thread) and swapped
in with one reference assignment (:meth:`Estimator.swap_runner`): inference is never blocked
and never sees half-updated weights. A rejected round restores the last accepted weights;
after ``reset_after_rejects`` rejected rounds in a row the original weights come back.

Cost control: the refiner's busy time is measured per unit of work (an evaluation, an optimiser
step, a runner build) and followed by a sleep that keeps busy / wall time at most
``max_share``; its torch intra-op threads are capped (``threads``); on CUDA it works on its own
stream. BatchNorm statistics stay frozen (eval mode): windows are a few frames, far too few to
re-estimate them.

Supported networks: the monodepth2 ResNet-18/50 depth + pose networks (``model`` resnet18 /
resnet50, ``pose_model`` monodepth2, without learned intrinsics); anything else is refused with
a ValueError saying so. Pure torch/numpy: no ROS here (the node wires it in ros/perception_node).
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

import numpy as np
import torch

from .device_ops import check_image, to_network_input, to_rgb
from .geometry import intrinsics_for_resize, pose_vec_to_mat
from .losses import LossConfig, SelfSupervisedLoss

__all__ = ['RefinerConfig', 'OnlineRefiner', 'RoundResult', 'NETWORK_CHOICES',
           'SUPPORTED_MODELS']

log = logging.getLogger(__name__)

NETWORK_CHOICES = ('both', 'depth', 'pose')
SUPPORTED_MODELS = ('resnet18', 'resnet50')
_ALL = object()


@dataclass
class RefinerConfig:
    """Online-refinement settings (validated; ValueError says what is wrong).

    window: frames kept per camera (>= 3: a triplet needs three consecutive frames).
    steps: optimiser steps per round; batch: triplets per step.
    learning_rate: Adam learning rate of the refinement (kept small: the base model is good).
    interval: seconds between the starts of two rounds (background thread); a round also waits
        for ``min_new_frames`` new frames since the previous one.
    networks: which networks adapt: 'both', 'depth' or 'pose'.
    max_share: the refiner's busy time is at most this fraction of wall time (it sleeps
        ``busy * (1 - share) / share`` after every unit of work); 1 = no limit.
    threads: torch intra-op threads of the refiner's thread (CPU).
    eval_triplets: triplets of the window the accept/reject decision is measured on (the same
        ones before and after the round, evenly spread over the window).
    reset_after_rejects: after this many rejected rounds in a row the original weights are
        restored (0 = never).
    frame_stride: keep every n-th frame offered (fast cameras move too little between frames).
    smoothness_weight, velocity_weight: loss weights (monodepth2 / PackNet-SfM defaults); the
        velocity term needs speeds (``add_frame(..., speed=)``).
    seed: of the triplet sampling (the demo drives the refiner deterministically).
    """
    window: int = 8
    steps: int = 3
    batch: int = 2
    learning_rate: float = 1e-4
    interval: float = 1.0
    min_new_frames: int = 1
    networks: str = 'both'
    max_share: float = 0.3
    threads: int = 1
    eval_triplets: int = 4
    reset_after_rejects: int = 0
    frame_stride: int = 1
    smoothness_weight: float = 1e-3
    velocity_weight: float = 0.1
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> 'RefinerConfig':
        errs = []

        def intval(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                errs.append(f'{name} must be an int >= {lo}, got {v!r}')

        intval('window', 3)
        intval('steps', 1)
        intval('batch', 1)
        intval('min_new_frames', 0)
        intval('threads', 1)
        intval('eval_triplets', 1)
        intval('reset_after_rejects', 0)
        intval('frame_stride', 1)
        intval('seed', 0)
        if not (_finite(self.learning_rate) and 0 < self.learning_rate <= 1):
            errs.append(f'learning_rate must be in (0, 1], got {self.learning_rate!r}')
        if not (_finite(self.interval) and self.interval >= 0):
            errs.append(f'interval must be >= 0 seconds, got {self.interval!r}')
        if not (_finite(self.max_share) and 0 < self.max_share <= 1):
            errs.append(f'max_share must be in (0, 1], got {self.max_share!r}')
        if self.networks not in NETWORK_CHOICES:
            errs.append(f'networks must be one of {NETWORK_CHOICES}, got {self.networks!r}')
        for name in ('smoothness_weight', 'velocity_weight'):
            if not (_finite(getattr(self, name)) and getattr(self, name) >= 0):
                errs.append(f'{name} must be >= 0, got {getattr(self, name)!r}')
        if errs:
            raise ValueError('invalid RefinerConfig: ' + '; '.join(errs))
        return self


@dataclass
class RoundResult:
    """What one round did. ``accepted``: its weights now run in the estimator; ``reason`` says
    why not otherwise ('loss did not decrease', 'non-finite loss', ...). Losses are on the
    round's evaluation triplets; times in ms (busy = work, excluding the pacing sleeps)."""
    index: int
    accepted: bool
    reason: str
    loss_before: float
    loss_after: float
    triplets: int
    busy_ms: float
    wall_ms: float
    build_ms: float = 0.0
    swap_ms: float = 0.0
    reset: bool = False


class _Stopped(Exception):
    """stop() was called during a paced round."""


class _Frame:
    __slots__ = ('x', 'K', 'stamp', 'speed')

    def __init__(self, x, K, stamp, speed):
        self.x, self.K, self.stamp, self.speed = x, K, stamp, speed


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def check_supported(estimator) -> None:
    """ValueError with the reason when ``estimator`` runs networks the refiner cannot adapt."""
    cfg = estimator.config
    if cfg.exported_model_dir is not None:
        raise ValueError('online refinement needs torch weights: the estimator runs exported '
                         'models (exported_model_dir); give it the checkpoint instead')
    if cfg.model not in SUPPORTED_MODELS or cfg.pose_model != 'monodepth2' or cfg.learned_intrinsics:
        raise ValueError(
            f'online refinement supports the monodepth2 ResNet networks (model resnet18/resnet50, '
            f'pose_model monodepth2, no learned intrinsics); got model={cfg.model!r}, '
            f'pose_model={cfg.pose_model!r}, learned_intrinsics={cfg.learned_intrinsics}')
    if not estimator.has_pose:
        raise ValueError('online refinement needs a pose network (the checkpoint has no '
                         'pose_encoder.pth / pose.pth): the photometric loss warps with it')
    if cfg.compile or cfg.cuda_graphs or cfg.backend == 'tensorrt':
        raise ValueError('online refinement rebuilds the runner after every accepted round: '
                         "turn off compile / cuda_graphs (backend 'tensorrt' runs exported engines "
                         'only)')


class OnlineRefiner:
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
    def _make_losses(self):
        ecfg = self.estimator.config
        lc = LossConfig(smoothness_weight=self.config.smoothness_weight,
                        velocity_weight=self.config.velocity_weight,
                        min_depth=ecfg.min_depth, max_depth=ecfg.max_depth)
        self._loss_fn = SelfSupervisedLoss(lc)
        self._eval_loss_fn = SelfSupervisedLoss(dataclasses.replace(lc, identity_noise=0.0))

    def update_config(self, **changes) -> RefinerConfig:
        """Change settings at run time (validated; applied from the next round on)."""
        new = dataclasses.replace(self.config, **changes).validate()
        self.config = new
        self._make_losses()
        self._wake.set()
        return new

    # -- frames ------------------------------------------------------------------------------
    def add_frame(self, image: np.ndarray, K: np.ndarray, stamp: float | None = None,
                  speed: float | None = None, camera_id: Hashable = None,
                  encoding: str = 'rgb8') -> bool:
        """Offer a frame the estimator served (the image is copied; conversion to network
        resolution happens in the refiner's thread). Frames of one ``camera_id`` must come in
        time order. Returns False when it was skipped (``frame_stride``) or invalid (bad K or
        image: counted as ``invalid_frames``, never raised)."""
        n = self._offered[camera_id]
        self._offered[camera_id] += 1
        if n % self.config.frame_stride:
            return False
        try:
            image = check_image(image, encoding)
            K = np.asarray(K, dtype=np.float64)
            if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ValueError(f'bad K {K.tolist()}')
        except (ValueError, TypeError):
            self.counts['invalid_frames'] += 1
            return False
        stamp = float(stamp) if stamp is not None and _finite(stamp) else None
        speed = abs(float(speed)) if speed is not None and _finite(speed) else None
        with self._lock:
            self._pending.append((np.array(image, copy=True), K, stamp, speed, camera_id, encoding))
            while len(self._pending) > 2 * self.config.window:
                self._pending.popleft()
            self._new_frames += 1
        self.counts['frames'] += 1
        return True

    def reset_window(self, camera_id=_ALL) -> None:
        """Forget the window of ``camera_id`` (all cameras without argument), e.g. after a jump
        in time or a size change: no triplet spans it."""
        with self._lock:
            if camera_id is _ALL:
                self._windows.clear()
                self._pending.clear()
            else:
                self._windows.pop(camera_id, None)
                self._pending = collections.deque(p for p in self._pending if p[4] != camera_id)

    def window_size(self, camera_id: Hashable = None) -> int:
        with self._lock:
            return len(self._windows.get(camera_id, ())) + sum(1 for p in self._pending
                                                                if p[4] == camera_id)

    def _ingest(self):
        """Pending frames -> network-resolution tensors in the per-camera windows."""
        with self._lock:
            pending, self._pending = list(self._pending), collections.deque()
        if not pending:
            return
        ecfg = self.estimator.config
        size = (ecfg.height, ecfg.width)
        entries = []
        with torch.no_grad():
            for image, K, stamp, speed, cid, encoding in pending:
                t = torch.from_numpy(image).unsqueeze(0).to(self.device)
                x = to_network_input(to_rgb(t, encoding), size)[0]
                K_net = intrinsics_for_resize(K, (image.shape[1], image.shape[0]), (ecfg.width, ecfg.height))
                entries.append((cid, _Frame(x, np.asarray(K_net, np.float64), stamp, speed)))
        with self._lock:
            for cid, f in entries:
                w = self._windows.get(cid)
                if w is None or w.maxlen != self.config.window:
                    w = self._windows[cid] = collections.deque(w or (), maxlen=self.config.window)
                w.append(f)

    def _triplets(self):
        """[(camera_id, frames[i-1], frames[i], frames[i+1])] of the current windows."""
        out = []
        with self._lock:
            for cid, w in self._windows.items():
                frames = list(w)
                out.extend((cid, frames[i - 1], frames[i], frames[i + 1])
                           for i in range(1, len(frames) - 1))
        return out

    # -- the loss ----------------------------------------------------------------------------
    def _batch(self, trips):
        prev = torch.stack([t[1].x for t in trips])
        tgt = torch.stack([t[2].x for t in trips])
        nxt = torch.stack([t[3].x for t in trips])
        K = torch.as_tensor(np.stack([t[2].K for t in trips]), dtype=torch.float32, device=self.device)
        dist = []
        any_known = False
        for _, a, b, c in trips:
            row = []
            for src in (a, c):
                d = math.nan
                if b.speed is not None and b.stamp is not None and src.stamp is not None:
                    v = b.speed if src.speed is None else 0.5 * (b.speed + src.speed)
                    d = v * abs(b.stamp - src.stamp)
                    any_known = True
                row.append(d)
            dist.append(row)
        distances = torch.tensor(dist, dtype=torch.float32, device=self.device) if any_known else None
        return tgt, prev, nxt, K, distances

    def _loss(self, trips, loss_fn):
        tgt, prev, nxt, K, distances = self._batch(trips)
        outs = self.depth_net.decoder(self.depth_net.encoder(tgt))
        disps = [outs[s] for s in sorted(outs)]
        B = tgt.shape[0]
        # pairs in temporal order: [prev, tgt] predicts T_tgt_prev (inverted), [tgt, next] T_next_tgt
        aa, tr = self.pose_net(torch.cat([torch.cat([prev, tgt], 1), torch.cat([tgt, nxt], 1)], 0))
        T_prev = pose_vec_to_mat(aa[:B], tr[:B], invert=True)
        T_next = pose_vec_to_mat(aa[B:], tr[B:], invert=False)
        return loss_fn(tgt, [prev, nxt], disps, [T_prev, T_next], K, distances)

    def _eval(self, trips) -> float:
        with torch.no_grad():
            return float(self._loss(trips, self._eval_loss_fn).total)

    # -- weights -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict, dict]:
        return ({k: v.detach().clone() for k, v in self.depth_net.state_dict().items()},
                {k: v.detach().clone() for k, v in self.pose_net.state_dict().items()})

    def _restore(self, snap):
        with torch.no_grad():
            self.depth_net.load_state_dict(snap[0])
            self.pose_net.load_state_dict(snap[1])
        self._optimizer = None            # Adam's moments belong to the discarded steps

    def _params(self):
        nets = {'both': (self.depth_net, self.pose_net), 'depth': (self.depth_net,),
                'pose': (self.pose_net,)}[self.config.networks]
        return [p for n in nets for p in n.parameters() if p.requires_grad]

    def _opt(self):
        key = (self.config.networks, self.config.learning_rate)
        if self._optimizer is None or self._opt_key != key:
            self._optimizer = torch.optim.Adam(self._params(), lr=self.config.learning_rate)
            self._opt_key = key
        return self._optimizer

    def _swap_in(self) -> tuple[float, float]:
        """Build a runner with the private weights and swap it into the estimator."""
        info = self.estimator.set_networks(self.depth_net, self.pose_net, cache_dir=self._cache_dir)
        for f in self._ort_files():         # the sessions hold their models in memory
            try:
                f.unlink()
            except OSError:
                pass
        self.swap_ms_max = max(self.swap_ms_max, info['swap_ms'])
        return info['build_ms'], info['swap_ms']

    def _ort_files(self) -> set:
        return set(self._cache_dir.glob('*.onnx')) if self._cache_dir is not None else set()

    def reset_weights(self) -> dict:
        """Back to the original (checkpoint) weights, swapped into the estimator."""
        with self._round_lock:
            self._restore(self._original)
            self._accepted = self._snapshot()
            self._rejects_in_row = 0
            build_ms, swap_ms = self._swap_in()
            self.counts['resets'] += 1
            return {'build_ms': build_ms, 'swap_ms': swap_ms}

    def save(self, directory) -> Path:
        """Write the last accepted weights (what the estimator runs) as a monodepth2 checkpoint."""
        from .estimator import save_networks
        ecfg = self.estimator.config
        with self._round_lock:
            d_net, p_net = copy.deepcopy(self.depth_net).cpu(), copy.deepcopy(self.pose_net).cpu()
            d_net.load_state_dict({k: v.cpu() for k, v in self._accepted[0].items()})
            p_net.load_state_dict({k: v.cpu() for k, v in self._accepted[1].items()})
        return save_networks(directory, d_net, p_net, model=ecfg.model, height=ecfg.height,
                             width=ecfg.width)

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

    def ready(self) -> bool:
        """A round can run: some camera has three frames (pending ones count)."""
        with self._lock:
            counts = collections.Counter({c: len(w) for c, w in self._windows.items()})
            for p in self._pending:
                counts[p[4]] += 1
        return any(n >= 3 for n in counts.values())

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
