"""Small thread-safe pieces of a node's runtime: the latest-frame slot between a DDS callback and
a worker thread, rate/latency statistics and a per-kind log throttle. No ROS imports."""
from __future__ import annotations

import collections
import threading
import time


class LatestSlot:
    """Holds at most one item: ``put`` replaces what the worker has not taken yet (latest wins)
    and counts it as dropped; ``take`` blocks until an item arrives or the slot is closed."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._has_item = False
        self._closed = False
        self.dropped = 0

    def put(self, item) -> bool:
        """Store ``item``; True when it replaced an untaken one (a drop)."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None):
        """The newest item, or None on timeout / after ``close()``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class RateMeter:
    """Events per second over a sliding window (seconds): (n - 1) / (last - first) of the events
    in the window, 0 when fewer than two (so a stalled stream reads 0 after one window)."""

    def __init__(self, window: float = 5.0, clock=time.monotonic):
        self._window = window
        self._clock = clock
        self._times = collections.deque()
        self._lock = threading.Lock()
        self.count = 0

    def tick(self):
        now = self._clock()
        with self._lock:
            self.count += 1
            self._times.append(now)
            self._trim(now)

    def _trim(self, now):
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (n - 1) / span if span > 0 else 0.0


class Stats:
    """Running summary of a value (e.g. a latency in ms) over the last ``size`` samples."""

    def __init__(self, size: int = 100):
        self._values = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self.last = float('nan')

    def add(self, value: float):
        with self._lock:
            self._values.append(float(value))
            self.last = float(value)

    def summary(self) -> dict:
        with self._lock:
            v = sorted(self._values)
        if not v:
            return {'mean': float('nan'), 'max': float('nan'), 'p50': float('nan'), 'n': 0}
        return {'mean': sum(v) / len(v), 'max': v[-1], 'p50': v[len(v) // 2], 'n': len(v)}


class KeyedThrottle:
    """``ready(key)`` is True at most once per ``period`` seconds per key, so each kind of problem
    gets its own throttled log line; ``suppressed(key)`` counts the calls swallowed since."""

    def __init__(self, period: float = 5.0, clock=time.monotonic):
        self.period = period
        self._clock = clock
        self._last = {}
        self._suppressed = collections.Counter()
        self._lock = threading.Lock()

    def ready(self, key) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last >= self.period:
                self._last[key] = now
                return True
            self._suppressed[key] += 1
            return False

    def take_suppressed(self, key) -> int:
        with self._lock:
            return self._suppressed.pop(key, 0)


class KeyedSlots:
    """One latest-item slot per key (e.g. per camera) with a single waiting worker: ``put(key,
    item)`` replaces that key's untaken item (a drop, counted in ``dropped[key]``);
    ``take_batch`` returns the items of every key that has one, optionally waiting a short
    ``window`` for the other recently active keys so that frames arriving together are taken
    together."""

    def __init__(self, keys, active_for: float = 1.0, clock=time.monotonic):
        self.keys = list(keys)
        self._cond = threading.Condition()
        self._items = {}
        self._last_put = {}
        self._closed = False
        self._clock = clock
        self.active_for = active_for
        self.dropped = collections.Counter()

    def put(self, key, item) -> bool:
        with self._cond:
            replaced = key in self._items
            if replaced:
                self.dropped[key] += 1
            self._items[key] = item
            self._last_put[key] = self._clock()
            self._cond.notify_all()
            return replaced

    def take_batch(self, timeout: float | None = None, window: float = 0.0) -> dict:
        """{key: item} in ``keys`` order; {} on timeout / after ``close()``. After the first item
        arrives, waits up to ``window`` seconds until every key that put something within the
        last ``active_for`` seconds has an item (a silent camera does not delay the others)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return {}
            if window > 0 and not self._closed:
                now = self._clock()
                active = [k for k, t in self._last_put.items() if now - t <= self.active_for]
                self._cond.wait_for(lambda: self._closed or all(k in self._items for k in active),
                                    window)
            if self._closed:
                return {}
            items = {k: self._items[k] for k in self.keys if k in self._items}
            self._items.clear()
            return items

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
