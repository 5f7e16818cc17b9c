"""Header fields straight from CDR bytes, without deserialising (and without torch or rosbags).

Every message that starts with a std_msgs/Header (Image, CompressedImage, CameraInfo,
PointCloud2, Odometry, ...) has, after CDR's 4-byte encapsulation header (byte 1: 1 = little
endian, 0 = big endian), ``stamp.sec`` (int32), ``stamp.nanosec`` (uint32) and ``frame_id``
(uint32 length including the NUL, then the characters). The recorder reads capture stamps this
way at camera rate; the bag readers use the same functions.
"""
from __future__ import annotations

import struct

__all__ = ['MessageDecodeError', 'header_stamp_ns', 'header_stamp', 'header_frame_id']


class MessageDecodeError(ValueError):
    """A message cannot be turned into the array asked for (the text says why)."""


def _endian(cdr) -> str:
    return '<' if cdr[1] & 1 else '>'


def header_stamp_ns(cdr: bytes) -> int:
    """Header stamp in integer nanoseconds. Raises MessageDecodeError when the bytes cannot
    hold a header or nanosec is out of range."""
    if len(cdr) < 12:
        raise MessageDecodeError(f'message of {len(cdr)} bytes is too short to hold a header')
    sec, nsec = struct.unpack_from(_endian(cdr) + 'iI', cdr, 4)
    if nsec >= 1_000_000_000:
        raise MessageDecodeError(f'header stamp nanosec {nsec} is out of range')
    return sec * 1_000_000_000 + nsec


def header_stamp(cdr: bytes) -> float:
    """Header stamp in seconds (see :func:`header_stamp_ns`)."""
    return header_stamp_ns(cdr) * 1e-9


def header_frame_id(cdr: bytes) -> str:
    """Header ``frame_id`` ('' when the length field does not fit the message)."""
    if len(cdr) < 16:
        raise MessageDecodeError(f'message of {len(cdr)} bytes is too short to hold a header')
    (n,) = struct.unpack_from(_endian(cdr) + 'I', cdr, 12)
    if n == 0 or 16 + n > len(cdr):
        return ''
    return bytes(cdr[16:16 + n - 1]).decode('utf-8', errors='replace')
