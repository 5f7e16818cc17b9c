"""rosbag2 bags without rclpy: reading, and repair of killed recordings.

* :func:`read_messages` iterates a bag (directory or single ``.mcap``/``.db3``) in time order.
* :func:`repair_bag` makes a bag whose recorder was killed readable again: the files are checked,
  an MCAP file without summary is rewritten from its complete chunks, sqlite3 files roll back their
  journal, and ``metadata.yaml`` is rebuilt from what the files really hold.

Message types and hashes (:class:`TypeCatalog`) live in :mod:`.bag_types`, the storage files and
metadata.yaml in :mod:`.bag_storage`, writing in :mod:`.bag_writer`; the names readers use are
importable from here too.
"""
from __future__ import annotations

import io
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
)
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import McapReader, decompress

from .bag_storage import (
    _channel_metadata,
    _McapFile,
    _read_str,
    file_stats,
    file_topics_and_stats,
    metadata_dict,
    storage_files,
    write_metadata,
)
from .bag_types import TypeCatalog, TypeDef, UnknownTypeError

MCAP_MAGIC = b'\x89MCAP0\r\n'


class BagError(RuntimeError):
    """A bag cannot be read (the message says why and what to do)."""


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    timestamp: int     # ns, the bag's (receive) time
    data: bytes        # CDR as recorded


def _repair_hint(path: Path, exc: Exception) -> BagError:
    return BagError(f'cannot open bag {path}: {exc}. If its recorder was killed, run '
                    f'`depth-ego bag-repair {path}` first.')


def open_reader(path) -> Reader:
    """An opened rosbags Reader; errors name the bag and suggest bag-repair."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'no bag at {path}')
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types
        raise _repair_hint(path, exc) from exc
    return reader


def read_messages(path, topics=None, start: int | None = None, stop: int | None = None):
    """Yield :class:`BagMessage` in time order; ``topics`` filters by name; start/stop in ns."""
    reader = open_reader(path)
    try:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if not conns:
            return
        for conn, timestamp, data in reader.messages(connections=conns, start=start, stop=stop):
            yield BagMessage(conn.topic, conn.msgtype, timestamp, bytes(data))
    finally:
        reader.close()


def bag_topics(path) -> dict:
    """topic -> dict(type, count, hash, qos) of a bag."""
    reader = open_reader(path)
    try:
        out = {}
        for c in reader.connections:
            entry = out.setdefault(c.topic, {'type': c.msgtype, 'count': 0, 'hash': c.digest,
                                             'qos': list(c.ext.offered_qos_profiles)})
            entry['count'] += c.msgcount
        return out
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------
# repair


@dataclass
class FileRepair:
    name: str
    status: str          # 'ok' | 'repaired' | 'empty' | 'unreadable'
    messages: int = 0
    detail: str = ''


@dataclass
class RepairReport:
    path: Path
    files: list = field(default_factory=list)
    metadata_written: bool = False

    def text(self):
        lines = [f'bag {self.path}:']
        for f in self.files:
            lines.append(f'  {f.name}: {f.status}, {f.messages} messages'
                         + (f' ({f.detail})' if f.detail else ''))
        lines.append('  metadata.yaml rebuilt' if self.metadata_written
                     else '  metadata.yaml not written')
        return '\n'.join(lines)


def _mcap_ok(path: Path) -> bool:
    try:
        storage = McapReader(path)
        storage.open()
        storage.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means: needs salvage
        return False


def _scan_mcap(path: Path):
    """Records of a (possibly truncated) MCAP file, top level and inside chunks, in file order.

    Yields ('schema', id, name, encoding, data) | ('channel', id, schema_id, topic, encoding,
    metadata bytes) | ('message', channel_id, log_time, data) | ('compression', name).
    Stops at the first incomplete or undecodable record: what follows a damage is not trusted.
    """
    with open(path, 'rb') as f:
        if f.read(8) != MCAP_MAGIC:
            return
        while True:
            head = f.read(9)
            if len(head) < 9:
                return
            op, size = head[0], int.from_bytes(head[1:], 'little')
            body = f.read(size)
            if len(body) < size:
                return
            if op == 0x0F:   # DataEnd: the summary section follows
                return
            if op == 0x06:   # chunk
                try:
                    bio = io.BytesIO(body)
                    bio.read(16)
                    usize = int.from_bytes(bio.read(8), 'little')
                    crc = int.from_bytes(bio.read(4), 'little')
                    compression = _read_str(bio)
                    csize = int.from_bytes(bio.read(8), 'little')
                    raw = decompress(bio.read(csize), compression, usize, crc)
                except Exception:  # noqa: BLE001 - damaged chunk: stop here
                    return
                yield ('compression', compression)
                yield from _inner_records(raw)
            elif op in (0x03, 0x04, 0x05):
                yield from _inner_records(head + body)


def _inner_records(raw: bytes):
    bio = io.BytesIO(raw)
    end = len(raw)
    while bio.tell() < end:
        op = bio.read(1)[0]
        size = int.from_bytes(bio.read(8), 'little')
        rec = bio.read(size)
        r = io.BytesIO(rec)
        if op == 0x03:
            sid = int.from_bytes(r.read(2), 'little')
            name, enc = _read_str(r), _read_str(r)
            n = int.from_bytes(r.read(4), 'little')
            yield ('schema', sid, name, enc, r.read(n).decode())
        elif op == 0x04:
            cid = int.from_bytes(r.read(2), 'little')
            sid = int.from_bytes(r.read(2), 'little')
            topic, enc = _read_str(r), _read_str(r)
            n = int.from_bytes(r.read(4), 'little')
            yield ('channel', cid, sid, topic, enc, r.read(n))
        elif op == 0x05:
            cid = int.from_bytes(r.read(2), 'little')
            r.read(4)
            log_time = int.from_bytes(r.read(8), 'little')
            r.read(8)
            yield ('message', cid, log_time, rec[22:])


def salvage_mcap(path: Path, out_path: Path, chunk_size: int = 768 * 1024) -> int:
    """Write to ``out_path`` a complete MCAP file with every message readable in ``path``.

    Returns the number of messages saved.
    """
    schemas, conns, writer, count = {}, {}, None, 0
    compress = False
    try:
        for rec in _scan_mcap(path):
            kind = rec[0]
            if kind == 'compression':
                compress = compress or rec[1] == 'zstd'
                continue
            if writer is None:
                writer = _McapFile(out_path, compress, chunk_size)
            if kind == 'schema':
                schemas[rec[1]] = rec
            elif kind == 'channel':
                _, cid, sid, topic, enc, meta = rec
                if cid in conns or sid not in schemas:
                    continue
                _, _, name, senc, data = schemas[sid]
                info = _channel_metadata(meta)
                conn = Connection(
                    id=cid, topic=topic, msgtype=name,
                    msgdef=MessageDefinition(MessageDefinitionFormat.IDL if senc == 'ros2idl'
                                             else MessageDefinitionFormat.MSG, data),
                    digest=info.get('topic_type_hash', ''), msgcount=0,
                    ext=ConnectionExtRosbag2(enc, parse_qos(info.get('offered_qos_profiles', ''))),
                    owner=None)
                if name not in {c.msgtype for c in conns.values()}:
                    writer.add_msgtype(conn)
                writer.add_connection(conn, info.get('offered_qos_profiles', ''))
                conns[cid] = conn
            elif kind == 'message' and rec[1] in conns:
                writer.write(conns[rec[1]], rec[2], rec[3])
                count += 1
        if writer is None:
            return 0
        writer.close(9, '')
        return count
    except BaseException:
        if writer is not None:
            writer.abort()
        out_path.unlink(missing_ok=True)
        raise


def _sqlite_recover(path: Path):
    """Open read-write once: sqlite rolls a hot journal back (what a killed writer left)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute('SELECT count(*) FROM messages').fetchone()
    finally:
        conn.close()


def repair_bag(path, keep_damaged: bool = False, dry_run: bool = False) -> RepairReport:
    """Make a bag readable after its writer died; rebuild metadata.yaml from the files.

    MCAP files that lack their summary are rewritten from every complete chunk (the damaged
    original is kept as ``<file>.damaged`` with ``keep_damaged``). With ``dry_run`` nothing is
    changed and the report says what would be done.
    """
    bag = Path(path)
    if bag.is_file():
        raise BagError(f'{bag} is a file: give the bag directory')
    if not bag.is_dir():
        raise BagError(f'no bag directory at {bag}')
    report = RepairReport(bag)
    files = storage_files(bag)
    if not files:
        raise BagError(f'no .mcap or .db3 file in {bag}')
    storages = {p.suffix for p in files}
    if len(storages) > 1:
        raise BagError(f'{bag} mixes .mcap and .db3 files; repair them separately')

    kept, catalog = [], TypeCatalog()
    for p in files:
        if p.suffix == '.mcap' and not _mcap_ok(p):
            if dry_run:
                report.files.append(FileRepair(p.name, 'repaired', detail='would rewrite'))
                continue
            tmp = p.with_name(p.name + '.repairing')
            tmp.unlink(missing_ok=True)
            saved = salvage_mcap(p, tmp)
            if saved == 0 and not tmp.exists():
                report.files.append(FileRepair(p.name, 'empty',
                                               detail='no complete chunk: nothing to save'))
                if keep_damaged:
                    p.rename(p.with_name(p.name + '.damaged'))
                else:
                    p.unlink()
                continue
            if keep_damaged:
                p.rename(p.with_name(p.name + '.damaged'))
            os.replace(tmp, p)
            report.files.append(FileRepair(p.name, 'repaired', saved,
                                           'rewritten from its complete chunks'))
            kept.append(p)
            continue
        if p.suffix == '.db3' and not dry_run:
            try:
                _sqlite_recover(p)
            except sqlite3.DatabaseError as exc:
                report.files.append(FileRepair(p.name, 'unreadable', detail=str(exc)))
                continue
        report.files.append(FileRepair(p.name, 'ok'))
        kept.append(p)

    if dry_run:
        return report
    topics, stats = {}, []
    for p in kept:
        try:
            specs, st = file_topics_and_stats(p, catalog)
        except Exception as exc:  # noqa: BLE001 - report and leave the file out
            entry = next(f for f in report.files if f.name == p.name)
            entry.status, entry.detail = 'unreadable', str(exc)
            continue
        for s in specs:
            topics.setdefault(s.name, s)
        stats.append(st)
        next(f for f in report.files if f.name == p.name).messages = st.message_count

    custom, compression = {}, ('', '')
    old = bag / 'metadata.yaml'
    if old.is_file():
        try:
            info = yaml.safe_load(old.read_text())['rosbag2_bagfile_information']
            custom = info.get('custom_data') or {}
            compression = (info.get('compression_format') or '', info.get('compression_mode') or '')
        except Exception:  # noqa: BLE001 - unreadable metadata is what we replace
            pass
    custom = {**custom, 'depth_ego.repaired': 'true'}
    storage = 'mcap' if files[0].suffix == '.mcap' else 'sqlite3'
    write_metadata(bag, metadata_dict(storage, list(topics.values()), stats, *compression,
                                      custom_data=custom))
    report.metadata_written = True
    return report


__all__ = [
    'BagError', 'BagMessage', 'RepairReport', 'TypeCatalog', 'TypeDef',
    'UnknownTypeError', 'bag_topics', 'file_stats', 'file_topics_and_stats', 'open_reader',
    'read_messages', 'repair_bag', 'salvage_mcap', 'storage_files',
]