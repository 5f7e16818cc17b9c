"""ROS 2 message types without rclpy: definition texts and RIHS01 hashes for type names.

:class:`TypeCatalog` gives, for a type name such as ``sensor_msgs/msg/Image``, the message
definition text (ros2msg, dependencies appended the rosbag2 way) and the RIHS01 type hash that a
ROS 2 distro computes for it. Definitions come from the rosbags type store of the running distro
(``ROS_DISTRO``; Kilted when unset, matching the PyPI wheels), else from the ``.msg`` files
installed beside the message packages (``$AMENT_PREFIX_PATH/share``, ``sys.prefix/share``).
:class:`TopicSpec` is a topic as a bag stores it; the writer, the reader and the repair all use it.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype


class UnknownTypeError(ValueError):
    """No message definition can be found for a type name."""


@dataclass
class TopicSpec:
    """A topic as stored: type name, message definition text (ros2msg), RIHS01 hash, QoS offered."""

    name: str
    msgtype: str
    msgdef: str
    rihs01: str
    qos: list = field(default_factory=list)   # list[rosbags.interfaces.Qos]


@dataclass
class TypeDef:
    msgtype: str
    msgdef: str        # ros2msg text with dependencies, as rosbag2 stores it
    rihs01: str        # hash to record
    note: str = ''     # set when the definition found does not match the expected hash


def _distro_store(distro: str | None):
    distro = (distro or os.environ.get('ROS_DISTRO') or 'kilted').lower()
    return getattr(Stores, f'ROS2_{distro.upper()}', Stores.LATEST)


def share_dirs() -> list[Path]:
    """Where installed ``<pkg>/msg/<Type>.msg`` files may live."""
    dirs = [Path(p) / 'share' for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
            if p]
    dirs.append(Path(sys.prefix) / 'share')
    return [d for d in dirs if d.is_dir()]


def _name_refs(desc):
    """Type names referenced by one rosbags field description."""
    kind, rest = desc
    if kind == Nodetype.NAME:
        yield rest
    elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        yield from _name_refs(rest[0])


class TypeCatalog:
    """Message definitions and RIHS01 hashes for type names (no rclpy needed)."""

    def __init__(self, distro: str | None = None, search_dirs: list[Path] | None = None):
        self.typestore = get_typestore(_distro_store(distro))
        self._search_dirs = list(search_dirs) if search_dirs is not None else share_dirs()
        self._local = None    # typestore built only from installed .msg files (lazy)

    # -- lookup ---------------------------------------------------------------------------

    def _read_local(self, msgtype: str, known) -> dict:
        """Parse ``msgtype`` and what it uses (except ``known`` types) from installed .msg files."""
        found, todo = {}, [msgtype]
        while todo:
            name = todo.pop()
            if name in found or name in known:
                continue
            pkg, _, base = name.split('/')
            text = next((p.read_text() for d in self._search_dirs
                         if (p := d / pkg / 'msg' / f'{base}.msg').is_file()), None)
            if text is None:
                raise UnknownTypeError(
                    f'no message definition for {name!r}: not in the rosbags type store and no '
                    f'{pkg}/msg/{base}.msg under {[str(d) for d in self._search_dirs]}')
            types = get_types_from_msg(text, name)
            found.update(types)
            for _consts, fields in (v for v in types.values()):
                for _fname, desc in fields:
                    todo.extend(n for n in _name_refs(desc) if n not in found)
        return found

    def _register_local(self, store, msgtype):
        missing = {k: v for k, v in self._read_local(msgtype, store.fielddefs).items()
                   if k not in store.fielddefs}
        if missing:
            store.register(missing)

    def ensure(self, msgtype: str):
        """Make ``msgtype`` known to :attr:`typestore` (raises UnknownTypeError)."""
        if not re.fullmatch(r'[A-Za-z]\w*/msg/[A-Za-z]\w*', msgtype or ''):
            raise UnknownTypeError(f'{msgtype!r} is not a message type name (pkg/msg/Type)')
        if msgtype not in self.typestore.fielddefs:
            self._register_local(self.typestore, msgtype)

    def definition(self, msgtype: str, expected_hash: str | None = None) -> TypeDef:
        """Definition text and hash to record for ``msgtype``.

        ``expected_hash`` is what the publishers announce on the graph (rclpy
        ``TopicEndpointInfo.topic_type_hash``); it is what gets recorded, as rosbag2 does. When the
        type store's definition hashes differently, the installed .msg files are tried; if
        neither matches, ``note`` says so (the bag still records, with the publisher's hash).
        """
        self.ensure(msgtype)
        msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
        rihs01 = self.typestore.hash_rihs01(msgtype)
        if not expected_hash or expected_hash == rihs01:
            return TypeDef(msgtype, msgdef, rihs01)
        try:
            if self._local is None:
                self._local = get_typestore(Stores.EMPTY)
            self._register_local(self._local, msgtype)
            local_hash = self._local.hash_rihs01(msgtype)
            if local_hash == expected_hash:
                return TypeDef(msgtype, self._local.generate_msgdef(msgtype, ros_version=2)[0],
                               local_hash)
        except Exception:  # noqa: BLE001 - fall through to the note below
            pass
        return TypeDef(msgtype, msgdef, expected_hash,
                       note=f'publishers of {msgtype} announce {expected_hash} but the local '
                            f'definition hashes to {rihs01}: different message versions?')

    def spec(self, topic: str, msgtype: str, expected_hash: str | None = None, qos=()):
        d = self.definition(msgtype, expected_hash)
        return TopicSpec(topic, msgtype, d.msgdef, d.rihs01, list(qos)), d.note

    def deserialize(self, data: bytes, msgtype: str):
        self.ensure(msgtype)
        return self.typestore.deserialize_cdr(data, msgtype)

    def register_msgdef(self, msgtype: str, msgdef: str):
        """Teach the store a type from a bag's stored definition (for reading foreign types)."""
        if msgtype in self.typestore.fielddefs or not msgdef:
            return
        types = {}
        for name, text in _split_msgdef(msgtype, msgdef):
            types.update(get_types_from_msg(text, name))
        self.typestore.register({k: v for k, v in types.items()
                                 if k not in self.typestore.fielddefs})


def _split_msgdef(msgtype: str, msgdef: str):
    """(name, text) of each part of a rosbag2 concatenated ros2msg definition."""
    parts = re.split(r'^=+\n', msgdef, flags=re.M)
    yield msgtype, parts[0]
    for part in parts[1:]:
        head, _, body = part.partition('\n')
        name = head.removeprefix('MSG: ').strip()
        if '/msg/' not in name and name.count('/') == 1:
            name = name.replace('/', '/msg/')
        yield name, body


__all__ = ['TopicSpec', 'TypeCatalog', 'TypeDef', 'UnknownTypeError', 'share_dirs']
