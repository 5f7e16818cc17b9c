"""The recorder's writer thread: a bounded queue in front of one :class:`BagWriter`.

Subscription callbacks only ``put`` serialized messages (never block, never wait for the disk);
this thread writes them. The queue is bounded by message count *and* bytes: when a burst comes
faster than the disk takes it, new messages are refused and counted (``queue_full``) — memory
never grows without bound. Commands (start, stop, split, resume) travel through the same queue,
so they apply exactly between the messages received before and after them.

Also here: the disk-space floor (checked before a bag opens and every second while recording),
write errors (the bag is finalised at its last complete chunk, recording stops with an error),
and *latched* topics (camera_info, /tf_static): their latest messages are cached and written again
at the start of every bag and every split file, so each file is usable on its own.

No rclpy in this module: the node passes a logger function and a clock.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..data.bag_writer import BagWriteError, BagWriter, BagWriterConfig, TopicSpec, disk_free

# Testing aid: seconds to sleep after each written message (makes "the disk is slower than the
# camera" reproducible). Not a parameter on purpose: nobody wants it on a robot.
_TEST_WRITE_DELAY = float(os.environ.get('DEPTH_EGO_RECORDER_TEST_WRITE_DELAY', '0') or 0)

LATCH_ALL_MAX = 64     # cached messages per 'all'-latched topic (/tf_static)


@dataclass
class WorkerConfig:
    output_dir: Path
    bag_name: str = 'depth_ego_%Y%m%d_%H%M%S'
    writer: BagWriterConfig = field(default_factory=BagWriterConfig)
    queue_size: int = 200
    queue_max_bytes: int = 512 * 2 ** 20
    min_free_space: int = 512 * 2 ** 20


class _Command:
    def __init__(self, name, *args):
        self.name, self.args = name, args
        self.done = threading.Event()
        self.result = (False, 'not processed')


class RecordingWorker:
    """Owns the bag; one thread. ``log(level, text)`` with level in debug/info/warn/error."""

    TICK = 0.05

    def __init__(self, config: WorkerConfig, log, now_ns=time.time_ns, custom_data=None):
        self.config = config
        self._log = log
        self._now_ns = now_ns
        self._custom_data = custom_data or (lambda: {})
        self._queue = deque()
        self._queued_bytes = 0
        self._queued_msgs = 0
        self._cond = threading.Condition()
        self._closing = False
        self.bag: BagWriter | None = None
        self.state = 'idle'          # idle | recording | error
        self.error = ''
        self.last_summary = None
        self._topics: dict[str, TopicSpec] = {}
        self._latched: dict[str, dict] = {}   # topic -> {'mode', 'msgs', 'dirty'}
        self.written = Counter()              # topic -> messages written (all bags)
        self.dropped = Counter()              # reason -> messages
        self.peak_queue_msgs = 0
        self.peak_queue_bytes = 0
        self.bags: list[Path] = []
        self._next_disk_check = 0.0
        self._bytes_written = 0
        self._checked_at_bytes = 0
        self._thread = threading.Thread(target=self._run, name='recorder-writer', daemon=True)
        self._thread.start()

    # -- called from other threads ---------------------------------------------------------

    def put(self, topic: str, stamp: int, data: bytes) -> str | None:
        """Queue one message for writing. None when queued, else the reason it was refused."""
        if self.state != 'recording':
            return 'not_recording'
        n = len(data)
        cfg = self.config
        with self._cond:
            if self._queued_msgs >= cfg.queue_size or \
                    self._queued_bytes + n > cfg.queue_max_bytes:
                return 'queue_full'
            self._queue.append(('msg', topic, stamp, data))
            self._queued_msgs += 1
            self._queued_bytes += n
            self.peak_queue_msgs = max(self.peak_queue_msgs, self._queued_msgs)
            self.peak_queue_bytes = max(self.peak_queue_bytes, self._queued_bytes)
            self._cond.notify()
        return None

    def cache(self, topic: str, stamp: int, data: bytes):
        """Update a latched topic's cache without writing (recording paused or stopped)."""
        self._enqueue(('cache', topic, stamp, data))

    def add_topic(self, spec: TopicSpec, latch: str | None = None):
        """Declare a topic; ``latch`` 'last' (camera_info) or 'all' (/tf_static) caches it."""
        self._enqueue(('topic', spec, latch))

    def start(self, timeout=30.0):
        return self._call('start', timeout=timeout)

    def stop(self, timeout=60.0):
        return self._call('stop', timeout=timeout)

    def split(self, timeout=30.0):
        return self._call('split', timeout=timeout)

    def resume(self, timeout=30.0):
        return self._call('resume', timeout=timeout)

    def queue_depth(self):
        return self._queued_msgs, self._queued_bytes

    def shutdown(self, timeout=60.0):
        """Write what is queued, close the bag (complete metadata.yaml), end the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return self.last_summary

    # -- internals ---------------------------------------------------------------------------

    def _enqueue(self, item):
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _call(self, name, *args, timeout=30.0):
        cmd = _Command(name, *args)
        self._enqueue(('cmd', cmd))
        if not cmd.done.wait(timeout):
            return False, f'{name}: the writer thread did not answer within {timeout} s'
        return cmd.result

    def _run(self):
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(self.TICK)
                item = self._queue.popleft() if self._queue else None
                if item is not None and item[0] == 'msg':
                    self._queued_msgs -= 1
                    self._queued_bytes -= len(item[3])
                closing = self._closing
            if item is None and closing:
                break
            try:
                if item is not None:
                    self._handle(item)
                self._periodic()
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                self._log('error', f'writer thread: {type(exc).__name__}: {exc}')
        if self.bag is not None:
            self._close_bag()

    def _handle(self, item):
        kind = item[0]
        if kind == 'msg':
            _, topic, stamp, data = item
            if self.bag is None:
                self.dropped['not_recording'] += 1
                return
            self._remember(topic, data, dirty=False)
            self._write(topic, stamp, data)
            if _TEST_WRITE_DELAY:
                time.sleep(_TEST_WRITE_DELAY)
        elif kind == 'cache':
            self._remember(item[1], item[3], dirty=True)
        elif kind == 'topic':
            _, spec, latch = item
            self._topics[spec.name] = spec
            if latch:
                self._latched.setdefault(spec.name, {'mode': latch, 'msgs': [], 'dirty': False})
            if self.bag is not None:
                self.bag.add_topic(spec)
        elif kind == 'cmd':
            cmd = item[1]
            try:
                cmd.result = getattr(self, f'_cmd_{cmd.name}')(*cmd.args)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                cmd.result = (False, f'{cmd.name} failed: {type(exc).__name__}: {exc}')
            cmd.done.set()

    def _remember(self, topic, data, dirty):
        entry = self._latched.get(topic)
        if entry is None:
            return
        if entry['mode'] == 'last':
            entry['msgs'] = [data]
        elif data not in entry['msgs']:
            entry['msgs'] = (entry['msgs'] + [data])[-LATCH_ALL_MAX:]
        entry['dirty'] = entry['dirty'] or dirty

    def _write_latched(self, stamp, only_dirty=False):
        if self.bag is None:
            return
        for topic, entry in self._latched.items():
            if only_dirty and not entry['dirty']:
                continue
            entry['dirty'] = False
            for data in entry['msgs']:
                self._write(topic, stamp, data)

    def _write(self, topic, stamp, data):
        bag = self.bag
        if bag is None:            # an earlier write in this batch failed
            self.dropped['write_error'] += 1
            return
        try:
            bag.write(topic, stamp, data)
            self._bytes_written += len(data)
        except BagWriteError as exc:
            if self.bag is bag:
                self._fail(exc)
            self.dropped['write_error'] += 1
            return
        self.written[topic] += 1

    def _fail(self, exc):
        self.state, self.error = 'error', str(exc)
        self._log('error', f'recording stopped: {exc}')
        self._finish_bag(self.bag.summary())

    def _periodic(self):
        if self.bag is None:
            return
        try:
            self.bag.flush()
        except BagWriteError as exc:
            self._fail(exc)
            return
        # the floor is checked every second and every min_free_space/8 bytes written, so that
        # a burst cannot run through the margin between two checks
        floor = self.config.min_free_space
        now = time.monotonic()
        written = self._bytes_written
        if floor and (now >= self._next_disk_check or
                      written - self._checked_at_bytes >= floor // 8):
            self._next_disk_check, self._checked_at_bytes = now + 1.0, written
            free = disk_free(self.bag.path)
            if free < self.config.min_free_space:
                self.error = (f'free disk space {free / 2**20:.0f} MiB is below min_free_space '
                              f'{self.config.min_free_space / 2**20:.0f} MiB')
                self._log('error', f'recording stopped: {self.error}')
                self._close_bag()
                self.state = 'error'

    # -- commands ------------------------------------------------------------------------------

    def _bag_path(self):
        out = Path(os.path.expanduser(str(self.config.output_dir)))
        name = datetime.now().strftime(self.config.bag_name)
        path, n = out / name, 1
        while path.exists():
            path, n = out / f'{name}_{n}', n + 1
        return path

    def _cmd_start(self):
        if self.bag is not None:
            return False, f'already recording to {self.bag.path}'
        path = self._bag_path()
        if self.config.min_free_space:
            free = disk_free(path.parent)
            if free < self.config.min_free_space:
                self.state = 'error'
                self.error = (f'free disk space {free / 2**20:.0f} MiB at {path.parent} is below '
                              f'min_free_space {self.config.min_free_space / 2**20:.0f} MiB')
                return False, f'not recording: {self.error}'
        path.parent.mkdir(parents=True, exist_ok=True)
        bag = BagWriter(path, self.config.writer, custom_data=self._custom())
        for spec in self._topics.values():
            bag.add_topic(spec)
        bag.on_new_file = self._on_new_file
        self.bag, self.state, self.error = bag, 'recording', ''
        self.bags.append(path)
        self._write_latched(self._now_ns())
        return True, f'recording to {path}'

    def _on_new_file(self, stamp):
        self._log('info', f'split: now writing {self.bag.current_file.name}')
        self._write_latched(stamp)

    def _cmd_resume(self):
        if self.bag is None:
            return self._cmd_start()
        self._write_latched(self._now_ns(), only_dirty=True)
        return True, f'recording to {self.bag.path}'

    def _cmd_split(self):
        if self.bag is None:
            return False, 'not recording'
        try:
            self.bag.split(self._now_ns())
        except BagWriteError as exc:
            if self.bag is not None:
                self._fail(exc)
            return False, str(exc)
        if self.bag is None:   # a write of the latched messages failed
            return False, self.error
        return True, f'now writing {self.bag.current_file}'

    def _cmd_stop(self):
        if self.bag is None:
            return False, 'not recording' + (f' ({self.error})' if self.error else '')
        summary = self._close_bag()
        self.state = 'idle'
        return True, summary.text()

    def _custom(self):
        return {'depth_ego.recorder': json.dumps(self._custom_data(), sort_keys=True)}

    def _close_bag(self):
        bag = self.bag
        bag.custom_data.update(self._custom())
        try:
            summary = bag.close()
        except BagWriteError as exc:
            self.state, self.error = 'error', str(exc)
            summary = bag.summary()
        self._finish_bag(summary)
        return summary

    def _finish_bag(self, summary):
        self.bag = None
        if self.state == 'recording':
            self.state = 'idle'
        self.last_summary = summary
        self._log('info', 'recording finished\n' + summary.text())
