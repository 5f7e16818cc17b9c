"""Online refinement's frame window: frames offered by the caller wait as pending copies, are
converted to network-resolution tensors in the refiner's thread and kept per camera in a sliding
window, from which the training triplets ``(t-1, t, t+1)`` are taken. :class:`FrameWindow` holds
these methods of :class:`~depth_ego_ros.core.online_refinement.OnlineRefiner` (a mixin; it uses
the refiner's ``config``, ``estimator``, ``device``, locks and counters).
"""
from __future__ import annotations

import collections
from typing import Hashable

import numpy as np
import torch

from ..device_ops import check_image, to_network_input, to_rgb
from ..geometry import intrinsics_for_resize
from .config import _finite

__all__ = ['FrameWindow']

_ALL = object()


class _Frame:
    __slots__ = ('x', 'K', 'stamp', 'speed')

    def __init__(self, x, K, stamp, speed):
        self.x, self.K, self.stamp, self.speed = x, K, stamp, speed


class FrameWindow:
    """The refiner's frame-window methods (a mixin of :class:`OnlineRefiner`)."""

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

    def ready(self) -> bool:
        """A round can run: some camera has three frames (pending ones count)."""
        with self._lock:
            counts = collections.Counter({c: len(w) for c, w in self._windows.items()})
            for p in self._pending:
                counts[p[4]] += 1
        return any(n >= 3 for n in counts.values())
