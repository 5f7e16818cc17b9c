"""Write rosbag2 bags (MCAP or sqlite3) with the `rosbags` storage plugins, made to survive crashes.

No rclpy here: the recorder node (``ros/recorder_node.py``) feeds serialized CDR bytes, this module
stores them. What it adds to ``rosbags.rosbag2.Writer``:

* **split** into several files inside one bag directory, the rosbag2 way (``<bag>_0.mcap``,
  ``<bag>_1.mcap`` …, one ``metadata.yaml`` listing them), by size, by duration or on request;
* **crash safety**: MCAP chunks are closed when they reach ``chunk_size`` bytes or are older than
  ``flush_period`` seconds and go straight to the kernel (no user-space buffer), sqlite3 commits
  on the same period. ``metadata.yaml`` is rewritten (atomically) at every split so that after a
  SIGKILL the finished files are readable as they are and `depth-ego bag-repair` salvages the
  file that was open (see ``bags.repair_bag``);
* **write errors** (disk full, file size limit): the open file is cut back to its last complete
  chunk and finalised, ``metadata.yaml`` is written, then :class:`BagWriteError` is raised — the
  bag on disk stays valid;
* the topic's RIHS01 hash also goes into the MCAP channel metadata (``topic_type_hash``), as
  rosbag2's own MCAP plugin does, so a single ``.mcap`` file is self-describing.

The storage files themselves and metadata.yaml live in :mod:`.bag_storage`; this module decides
when to split, flush and give up.
"""
from __future__ import annotations

import shutil
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
)

try:  # rosbags itself depends on one of these
    from compression import zstd  # Python >= 3.14
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd

from .bag_storage import (
    BAG_VERSION,
    FileStats,
    _McapFile,
    _qos_list,
    _Sqlite3File,
    file_stats,
    metadata_dict,
    write_metadata,
)
from .bag_types import TopicSpec

STORAGES = ('mcap', 'sqlite3')
COMPRESSIONS = ('none', 'zstd')
MAX_CHUNK_SIZE = 2 ** 20  # rosbags closes MCAP chunks at 1 MiB on its own; we may close earlier
WRITE_ERRORS = (OSError, sqlite3.Error)   # disk full, file too large, I/O error


class BagWriteError(RuntimeError):
    """Writing failed (disk full, I/O error); the bag was finalised up to the last good chunk."""


@dataclass
class BagWriterConfig:
    """How to write. Sizes in bytes, durations in seconds; 0 disables a limit."""

    storage: str = 'mcap'            # 'mcap' | 'sqlite3'
    compression: str = 'none'        # 'none' | 'zstd' (MCAP: chunk compression; sqlite3: per message)
    chunk_size: int = 768 * 1024     # MCAP chunk size (at most 1 MiB)
    flush_period: float = 1.0        # close the open chunk / commit at least this often
    max_bag_size: int = 0            # split when the open file reaches this many bytes
    max_bag_duration: float = 0.0    # split when the open file spans this many seconds

    def validate(self):
        if self.storage not in STORAGES:
            raise ValueError(f'storage must be one of {STORAGES}, got {self.storage!r}')
        if self.compression not in COMPRESSIONS:
            raise ValueError(f'compression must be one of {COMPRESSIONS}, got {self.compression!r}')
        if not 1024 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f'chunk_size must be within 1 KiB..1 MiB, got {self.chunk_size}')
        if self.flush_period <= 0:
            raise ValueError(f'flush_period must be > 0, got {self.flush_period}')
        if self.max_bag_size < 0 or self.max_bag_duration < 0:
            raise ValueError('max_bag_size and max_bag_duration must be >= 0 (0 = no split)')
        return self


@dataclass
class BagSummary:
    """What a closed bag holds (also what the recorder logs on stop)."""

    path: Path
    files: list
    duration: float
    messages: dict
    nbytes: int
    error: str = ''

    def text(self):
        lines = [f'bag {self.path}: {len(self.files)} file(s), {self.duration:.2f} s, '
                 f'{sum(self.messages.values())} messages, {self.nbytes / 1e6:.2f} MB']
        lines += [f'  {topic}: {count}' for topic, count in sorted(self.messages.items())]
        if self.error:
            lines.append(f'  error: {self.error}')
        return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# the writer


class BagWriter:
    """One rosbag2 bag directory, possibly split into several files.

    Not thread-safe: one thread (the recorder's writer thread) owns it.

    >>> w = BagWriter(Path('/tmp/bag'), BagWriterConfig())          # doctest: +SKIP
    >>> w.add_topic(TopicSpec('/cam', 'sensor_msgs/msg/Image', msgdef, rihs01))
    >>> w.write('/cam', stamp_ns, cdr_bytes); w.close()
    """

    def __init__(self, path: Path, config: BagWriterConfig | None = None,
                 custom_data: dict | None = None):
        self.path = Path(path)
        self.config = (config or BagWriterConfig()).validate()
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists already, not overwriting')
        self.path.mkdir(parents=True)
        self.custom_data = dict(custom_data or {})
        self.topics: dict[str, TopicSpec] = {}
        self._connections: dict[str, Connection] = {}
        self._finished: list[FileStats] = []
        self._file = None      # open storage file (_McapFile | _Sqlite3File)
        self._stats: FileStats | None = None
        self._compress_messages = (self.config.storage == 'sqlite3'
                                   and self.config.compression == 'zstd')
        self.closed = False
        self.error = ''
        # called as on_new_file(stamp_ns) after a split opened a new file (e.g. to repeat
        # latched messages there); it may call write()
        self.on_new_file = None
        self._open_file()

    # -- public API ------------------------------------------------------------------------

    @property
    def current_file(self) -> Path | None:
        return self._stats.path if self._stats else None

    def add_topic(self, spec: TopicSpec):
        """Declare a topic (once; later calls with the same name are ignored)."""
        if spec.name in self.topics:
            return
        self.topics[spec.name] = spec
        self._add_connection(spec)

    def write(self, topic: str, timestamp: int, data: bytes):
        """Store one serialized message (CDR bytes as received) with its timestamp (ns)."""
        if self.closed:
            raise BagWriteError(f'bag {self.path} is closed')
        cfg = self.config
        stats = self._stats
        if stats.message_count and (
                (cfg.max_bag_size and self._file.size() >= cfg.max_bag_size) or
                (cfg.max_bag_duration and timestamp - stats.start >= cfg.max_bag_duration * 1e9)):
            self.split(timestamp)
            if self.closed:      # writing the repeated messages of the new file failed
                raise BagWriteError(f'writing {self.path} failed ({self.error})')
            stats = self._stats
        if self._compress_messages:
            data = zstd.compress(data)
        try:
            self._file.write(self._connections[topic], timestamp, data)
        except WRITE_ERRORS as exc:
            self._fail(exc)
        stats.counts[topic] += 1
        stats.start = min(stats.start, timestamp)
        stats.end = max(stats.end, timestamp)
        stats.nbytes += len(data)

    def flush(self, max_age: float | None = None):
        """Push data older than ``max_age`` s (default: the configured flush_period) to disk."""
        if self._file is None:
            return
        try:
            self._file.flush(self.config.flush_period if max_age is None else max_age)
        except WRITE_ERRORS as exc:
            self._fail(exc)

    def split(self, stamp: int | None = None):
        """Finish the open file and continue in a new one (same topics).

        ``stamp`` (ns) is passed to ``on_new_file``; default: now.
        """
        try:
            self._close_file()
        except WRITE_ERRORS as exc:
            self._fail(exc)
        self._open_file()
        for spec in self.topics.values():
            self._add_connection(spec)
        if self.on_new_file is not None:
            self.on_new_file(time.time_ns() if stamp is None else stamp)

    def close(self) -> BagSummary:
        """Finish the open file and write the complete metadata.yaml."""
        if not self.closed:
            try:
                self._close_file()
            except WRITE_ERRORS as exc:
                self._fail(exc)
            self._write_metadata()
            self.closed = True
        return self.summary()

    def summary(self) -> BagSummary:
        files = self._finished + ([self._stats] if self._stats else [])
        totals = defaultdict(int)
        for f in files:
            for topic, count in f.counts.items():
                totals[topic] += count
        counted = [f for f in files if f.message_count]
        duration = (max(f.end for f in counted) - min(f.start for f in counted)) / 1e9 \
            if counted else 0.0
        nbytes = sum(f.path.stat().st_size for f in files if f.path.exists())
        return BagSummary(self.path, [f.path for f in files], duration,
                          {t: totals.get(t, 0) for t in self.topics}, nbytes, self.error)

    # -- internals --------------------------------------------------------------------------

    def _open_file(self):
        index = len(self._finished)
        cfg = self.config
        ext = '.mcap' if cfg.storage == 'mcap' else '.db3'
        file_path = self.path / f'{self.path.name}_{index}{ext}'
        if cfg.storage == 'mcap':
            self._file = _McapFile(file_path, cfg.compression == 'zstd', cfg.chunk_size)
        else:
            self._file = _Sqlite3File(file_path)
        self._stats = FileStats(file_path)
        self._types_in_file = set()
        self._connections = {}
        # finished files are readable from now on, even if this process is killed
        self._write_metadata()

    def _add_connection(self, spec: TopicSpec):
        fmt = (MessageDefinitionFormat.IDL if spec.msgdef.startswith('=' * 80 + '\nIDL: ')
               else MessageDefinitionFormat.MSG)
        conn = Connection(
            id=len(self._connections) + 1,
            topic=spec.name,
            msgtype=spec.msgtype,
            msgdef=MessageDefinition(fmt, spec.msgdef),
            digest=spec.rihs01,
            msgcount=0,
            ext=ConnectionExtRosbag2(serialization_format='cdr',
                                     offered_qos_profiles=list(spec.qos)),
            owner=self,
        )
        qos_text = yaml.safe_dump(_qos_list(spec.qos), sort_keys=False).strip() \
            if spec.qos else ''
        try:
            if spec.msgtype not in self._types_in_file:
                self._file.add_msgtype(conn)
                self._types_in_file.add(spec.msgtype)
            self._file.add_connection(conn, qos_text)
        except WRITE_ERRORS as exc:
            self._fail(exc)
        self._connections[spec.name] = conn

    def _file_metadata_text(self, stats: FileStats):
        info = metadata_dict(self.config.storage, list(self.topics.values()), [stats],
                             *self._compression_fields(), custom_data=self.custom_data)
        return yaml.safe_dump(info, sort_keys=False).strip()

    def _compression_fields(self):
        if self._compress_messages:
            return 'zstd', 'message'
        return '', ''

    def _close_file(self):
        if self._file is None:
            return
        storage, stats = self._file, self._stats
        self._file = None
        try:
            storage.close(BAG_VERSION, self._file_metadata_text(stats))
        except BaseException:
            self._file, self._stats = storage, stats
            raise
        self._finished.append(stats)
        self._stats = None

    def _write_metadata(self):
        info = metadata_dict(self.config.storage, list(self.topics.values()), self._finished,
                             *self._compression_fields(), custom_data=self.custom_data)
        write_metadata(self.path, info)

    def _finalise_after_error(self, storage, stats):
        """Write the file's summary after a failed write, dropping chunks until it fits."""
        try:
            storage.recover()
            while True:
                try:
                    storage.close(BAG_VERSION, self._file_metadata_text(stats))
                    return
                except WRITE_ERRORS:
                    if not storage.drop_last_chunk():
                        raise
        except Exception:  # noqa: BLE001 - nothing fits: leave it cut at a chunk boundary
            try:
                storage.abort()
            except Exception:  # noqa: BLE001
                pass

    def _fail(self, exc: Exception):
        """A write failed: keep what is complete on disk, finalise, raise BagWriteError."""
        self.error = f'{type(exc).__name__}: {exc}'
        storage, stats = self._file, self._stats
        self._file = None
        if storage is not None:
            self._finalise_after_error(storage, stats)
            # count what really is in the file now
            try:
                self._finished.append(file_stats(stats.path))
            except Exception:  # noqa: BLE001 - unreadable without repair
                self._finished.append(FileStats(stats.path))
            self._stats = None
        try:
            self._write_metadata()
        except WRITE_ERRORS:
            pass   # no room even for metadata.yaml: `depth-ego bag-repair` rebuilds it
        self.closed = True
        raise BagWriteError(f'writing {self.path} failed ({self.error}); the bag was closed '
                            'with what was safely on disk') from exc


def disk_free(path: Path) -> int:
    """Free bytes for an unprivileged writer on the file system holding ``path``."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free

__all__ = ['BAG_VERSION', 'BagSummary', 'BagWriteError', 'BagWriter', 'BagWriterConfig',
           'COMPRESSIONS', 'STORAGES', 'TopicSpec', 'disk_free']
