"""The files of a rosbag2 bag: crash-safe storage files, their statistics, and metadata.yaml.

The layer under both the writer (:mod:`.bag_writer`) and the repair (:mod:`.bags`):

* ``_McapFile`` / ``_Sqlite3File``: the rosbags storage writers with an exact file name (for the
  rosbag2 split naming), chunks that go straight to the kernel, periodic flushing and the
  cut-back-to-the-last-complete-chunk recovery after a write error;
* :func:`file_topics_and_stats` / :func:`file_stats`: what one storage file really holds, read
  back from disk (after a write error, or to rebuild metadata.yaml);
* :func:`metadata_dict` / :func:`write_metadata`: metadata.yaml (version 9), written atomically.
"""
from __future__ import annotations

import io
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.interfaces import Connection
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.metadata import dump_qos_v9
from rosbags.rosbag2.storage_mcap import (
    Channel,
    McapReader,
    McapWriter,
    PendingChunk,
    write_channel,
    write_string,
)
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader, Sqlite3Writer

from .bag_types import TopicSpec, TypeCatalog

BAG_VERSION = 9          # rosbag2 metadata version (Jazzy and later read it)


@dataclass
class FileStats:
    """What one storage file holds: messages per topic, first/last stamp (ns), bytes written."""

    path: Path
    counts: dict = field(default_factory=lambda: defaultdict(int))   # topic -> messages
    start: int = 2 ** 63 - 1
    end: int = 0
    nbytes: int = 0

    @property
    def message_count(self):
        return sum(self.counts.values())


# ---------------------------------------------------------------------------------------------
# storage files


class _ExactPath:
    """Path stand-in for the rosbags storage writers, which name their file ``dir / f'{dir.name}.ext'``.

    Whatever is joined to it, it gives the exact file path: that allows rosbag2's split naming
    (``bag/bag_0.mcap``, ``bag/bag_1.mcap`` …) with the rosbags storage classes.
    """

    def __init__(self, file_path: Path):
        self._file = Path(file_path)
        self.name = self._file.stem

    def __truediv__(self, _name):
        return self._file


class _DirectFile:
    """Binary file that hands complete writes to the kernel.

    Small writes are gathered (up to 64 KiB) and written by ``flush``; a short write is retried
    until complete or an OSError (ENOSPC, EFBIG) comes. Nothing is held back in a Python buffer
    after ``flush``, so a SIGKILL loses nothing flushed and a failed write can be undone by
    ``truncate(offset)`` without a buffered writer re-sending stale bytes.
    """

    GATHER = 64 * 1024

    def __init__(self, path: Path, offset: int):
        self._raw = open(path, 'r+b', buffering=0)  # noqa: SIM115 - closed by close()
        self._raw.seek(offset)
        self._pos = offset
        self._buf = bytearray()

    def write(self, data) -> int:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if n < 4096:
            self._buf += data
            if len(self._buf) >= self.GATHER:
                self.flush()
        else:
            self.flush()
            self._write_all(memoryview(data).cast('B'))
        return n

    def _write_all(self, view):
        while view.nbytes:
            written = self._raw.write(view)
            if not written:
                raise OSError(f'write to {self._raw.name} made no progress')
            self._pos += written
            view = view[written:]

    def flush(self):
        if self._buf:
            buf, self._buf = self._buf, bytearray()
            self._write_all(memoryview(buf))

    def tell(self) -> int:
        return self._pos + len(self._buf)

    def truncate(self, offset: int):
        """Drop everything after ``offset`` (including unflushed bytes) and continue there."""
        self._buf = bytearray()
        os.ftruncate(self._raw.fileno(), offset)
        self._raw.seek(offset)
        self._pos = offset

    def fileno(self):
        return self._raw.fileno()

    def close(self):
        self.flush()          # raises on failure and stays open: the caller may cut and retry
        self._raw.close()

    @property
    def closed(self):
        return self._raw.closed


class _McapFile(McapWriter):
    """rosbags' MCAP writer with an exact file name, a chunk size, flushing and error recovery."""

    extension = '.mcap'

    def __init__(self, file_path: Path, compress: bool, chunk_size: int):
        super().__init__(_ExactPath(file_path),
                         CompressionMode.STORAGE if compress else CompressionMode.NONE)
        # The base class opened a buffered file and wrote the header into it: swap it for one
        # that writes through, so a completed chunk is on disk and a failed write can be undone.
        self.bio.flush()
        offset = self.bio.tell()
        self.bio.close()
        self.bio = _DirectFile(self.path, offset)
        self.chunk_size = chunk_size
        self.good_offset = offset          # end of the last complete record on disk
        self.chunk_opened = None           # monotonic time of the first record in the open chunk
        self._chunks_on_disk = []          # (file offset, {channel: messages}, (t0, t1)) each

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        # As the base class, plus the type hash in the channel metadata (rosbag2's MCAP plugin
        # writes both keys; readers that only know offered_qos_profiles skip the other).
        metadata = io.BytesIO()
        write_string(metadata, 'offered_qos_profiles')
        write_string(metadata, offered_qos_profiles)
        write_string(metadata, 'topic_type_hash')
        write_string(metadata, connection.digest)
        channel = Channel(
            connection.id, connection.msgtype, connection.topic,
            connection.ext.serialization_format, metadata.getvalue())
        self.channels.append(channel)
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, channel, self.schemas)
        self._mark_pending()

    def add_msgtype(self, connection: Connection) -> None:
        super().add_msgtype(connection)
        self._mark_pending()

    def _mark_pending(self):
        if self.chunk_opened is None:
            self.chunk_opened = time.monotonic()

    def write(self, connection, timestamp, data):
        super().write(connection, timestamp, data)   # closes the chunk itself at 1 MiB
        if self.chunk.bio.tell() >= self.chunk_size:
            self.close_chunk()
        else:
            self._mark_pending()

    def close_chunk(self):
        start = self.good_offset
        counts = {cid: len(msgs) for cid, msgs in self.chunk.msgs.items()}
        times = (self.chunk.message_start_time, self.chunk.message_end_time)
        n_chunks = len(self.chunks)
        try:
            super().close_chunk()
            self.bio.flush()
        except OSError:
            if len(self.chunks) > n_chunks:   # bookkeeping done, bytes not all on disk: undo
                self.chunks.pop()
                for cid, n in counts.items():
                    self.channel_stats[cid] -= n
            raise                             # (else the chunk is still pending: recover())
        self.good_offset = self.bio.tell()
        self.chunk_opened = None
        self._chunks_on_disk.append((start, counts, times))

    def flush(self, max_age: float = 0.0):
        """Close the open chunk if it holds anything older than ``max_age`` seconds."""
        if self.chunk.bio.tell() and self.chunk_opened is not None and \
                time.monotonic() - self.chunk_opened >= max_age:
            self.close_chunk()

    def size(self):
        return self.bio.tell() + self.chunk.bio.tell()

    def recover(self):
        """After a failed write: forget what did not reach the disk, keep what did.

        Cuts the file back to the end of the last complete chunk and drops the open chunk (its
        messages are lost and no longer counted). ``close()`` may then write the summary.
        """
        self.bio.truncate(self.good_offset)
        for cid, msgs in self.chunk.msgs.items():
            self.channel_stats[cid] -= len(msgs)
        self.chunk = PendingChunk(2 ** 63 - 1, 0, io.BytesIO(), defaultdict(list))
        self.chunk_opened = None
        self._update_times()

    def drop_last_chunk(self) -> bool:
        """Give up the last complete chunk too (to make room for the summary). False if none."""
        if not self._chunks_on_disk:
            return False
        start, counts, _ = self._chunks_on_disk.pop()
        self.chunks.pop()
        for cid, n in counts.items():
            self.channel_stats[cid] -= n
        self.good_offset = start
        self.bio.truncate(start)
        self._update_times()
        return True

    def _update_times(self):
        times = [t for _, _, t in self._chunks_on_disk if t[1] >= t[0]]
        self.message_start_time = min((t[0] for t in times), default=2 ** 63 - 1)
        self.message_end_time = max((t[1] for t in times), default=0)

    def abort(self):
        """Close, leaving the file cut at its last complete chunk (bag-repair reads it)."""
        if not self.bio.closed:
            try:
                self.bio.truncate(self.good_offset)
            finally:
                self.bio._raw.close()


class _Sqlite3File(Sqlite3Writer):
    """rosbags' sqlite3 writer with an exact file name and periodic commits."""

    extension = '.db3'

    def __init__(self, file_path: Path):
        super().__init__(_ExactPath(file_path), CompressionMode.NONE)
        self.last_commit = time.monotonic()
        self.written = 0

    def write(self, connection, timestamp, data):
        super().write(connection, timestamp, data)
        self.written += len(data) + 32

    def flush(self, max_age: float = 0.0):
        if time.monotonic() - self.last_commit >= max_age:
            self.conn.commit()
            self.last_commit = time.monotonic()

    def size(self):
        return self.written

    def recover(self):
        self.conn.rollback()   # the last committed state is consistent; metadata goes in close()

    def drop_last_chunk(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------------
# metadata.yaml


def _qos_list(qos):
    return dump_qos_v9(list(qos or []))


def metadata_dict(storage: str, topics: list, files: list, compression: str = '',
                  compression_mode: str = '', custom_data: dict | None = None,
                  ros_distro: str | None = None) -> dict:
    """The ``rosbag2_bagfile_information`` mapping of metadata.yaml (version 9).

    ``topics``: list of TopicSpec; ``files``: list of FileStats (in order).
    """
    start = min((f.start for f in files if f.message_count), default=0)
    end = max((f.end for f in files if f.message_count), default=start)
    totals = defaultdict(int)
    for f in files:
        for topic, count in f.counts.items():
            totals[topic] += count
    info = {
        'version': BAG_VERSION,
        'storage_identifier': storage,
        'duration': {'nanoseconds': max(0, end - start)},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': sum(totals.values()),
        'topics_with_message_count': [
            {
                'topic_metadata': {
                    'name': t.name,
                    'type': t.msgtype,
                    'serialization_format': 'cdr',
                    'offered_qos_profiles': _qos_list(t.qos),
                    'type_description_hash': t.rihs01,
                },
                'message_count': totals.get(t.name, 0),
            }
            for t in topics
        ],
        'compression_format': compression,
        'compression_mode': compression_mode,
        'relative_file_paths': [Path(f.path).name for f in files],
        'files': [
            {
                'path': Path(f.path).name,
                'starting_time': {'nanoseconds_since_epoch': f.start if f.message_count else 0},
                'duration': {'nanoseconds': max(0, f.end - f.start) if f.message_count else 0},
                'message_count': f.message_count,
            }
            for f in files
        ],
        'custom_data': {str(k): str(v) for k, v in (custom_data or {}).items()},
        'ros_distro': ros_distro or os.environ.get('ROS_DISTRO') or 'rosbags',
    }
    return info


def write_metadata(bag_dir: Path, info: dict):
    """Write metadata.yaml atomically (a reader never sees half a file)."""
    bag_dir = Path(bag_dir)
    tmp = bag_dir / 'metadata.yaml.tmp'
    tmp.write_text(yaml.safe_dump({'rosbag2_bagfile_information': info}, sort_keys=False),
                   encoding='utf8')
    os.replace(tmp, bag_dir / 'metadata.yaml')


# ---------------------------------------------------------------------------------------------
# file statistics (for metadata rebuilding)


def _channel_metadata(raw: bytes) -> dict:
    out, bio = {}, io.BytesIO(raw)
    while bio.tell() < len(raw):
        key = _read_str(bio)
        out[key] = _read_str(bio)
    return out


def _read_str(bio) -> str:
    n = int.from_bytes(bio.read(4), 'little')
    return bio.read(n).decode()


def _open_storage(path: Path):
    storage = (McapReader if path.suffix == '.mcap' else Sqlite3Reader)(path)
    storage.open()
    return storage


def file_topics_and_stats(path: Path, catalog: TypeCatalog | None = None):
    """(list[TopicSpec], FileStats) of one storage file, as it is on disk."""
    path = Path(path)
    storage = _open_storage(path)
    try:
        stats = FileStats(path)
        specs = {}
        for conn in storage.connections:
            stats.counts[conn.topic] += conn.msgcount
            digest = conn.digest
            if not digest and isinstance(storage, McapReader):
                digest = _channel_metadata(storage.channels[conn.id].metadata).get(
                    'topic_type_hash', '')
            if not digest:
                catalog = catalog or TypeCatalog()
                try:
                    catalog.register_msgdef(conn.msgtype, conn.msgdef.data)
                    digest = catalog.typestore.hash_rihs01(conn.msgtype)
                except Exception:  # noqa: BLE001 - unknown type: record without hash
                    digest = ''
            specs.setdefault(conn.topic, TopicSpec(conn.topic, conn.msgtype, conn.msgdef.data,
                                                   digest, list(conn.ext.offered_qos_profiles)))
        meta = storage.metadata
        if meta.message_count:
            stats.start, stats.end = meta.start_time, meta.end_time - 1
        return list(specs.values()), stats
    finally:
        storage.close()


def file_stats(path: Path) -> FileStats:
    return file_topics_and_stats(path)[1]


def _split_index(path: Path):
    m = re.search(r'_(\d+)$', path.stem)
    return (int(m.group(1)) if m else -1, path.name)


def storage_files(bag_dir: Path) -> list[Path]:
    files = [p for p in Path(bag_dir).iterdir() if p.suffix in ('.mcap', '.db3') and p.is_file()]
    return sorted(files, key=_split_index)


__all__ = ['BAG_VERSION', 'FileStats', 'file_stats', 'file_topics_and_stats', 'metadata_dict',
           'storage_files', 'write_metadata']
