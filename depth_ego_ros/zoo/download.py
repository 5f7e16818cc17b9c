"""Download one file with a progress bar and checksums, failing loudly and leaving nothing behind.

:func:`download` streams a URL (http, https, file) into a file inside a temporary directory the
caller owns (the cache's ``.tmp``), hashing as it writes. It raises :class:`ZooError` with one
clear message for an unreachable server, an HTTP error, a connection closed before the announced
length, too little free disk space or a failing write (disk full, quota, file-size limit). The
caller verifies the checksum (:func:`verify`) and removes the temporary directory on failure.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .registry import Entry, ZooError

__all__ = ['download', 'verify', 'file_hashes', 'CHUNK']

CHUNK = 1 << 20
TIMEOUT_S = 60.0
#: free space wanted besides the download: the unpacked copy is about as large again
_SPACE_FACTOR = 2.2
_SPACE_MARGIN = 16 << 20


def _progress(total: int | None, name: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:        # tqdm is optional: no bar, the size is printed at the end
        return None
    return tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024, desc=name,
                file=sys.stderr, leave=True, dynamic_ncols=True)


def _mb(n: int | float) -> str:
    return f'{n / 1e6:.1f} MB'


def write_error(exc: OSError, path: Path, name: str) -> ZooError:
    """The message for a failed write into the cache (disk full, quota, file-size limit ...)."""
    what = {errno.ENOSPC: 'no space left on the device', errno.EDQUOT: 'disk quota exceeded',
            errno.EFBIG: 'file too large for this file system / process limit',
            errno.EROFS: 'read-only file system', errno.EACCES: 'permission denied'}.get(
                exc.errno, exc.strerror or str(exc))
    return ZooError(f'{name}: cannot write to the model cache ({what}: {path}); nothing was '
                    f'installed. Free space there or point DEPTH_EGO_HOME at another disk, then '
                    f'run `depth-ego weights fetch {name}` again')


def download(url: str, dest: Path, name: str, progress: bool = True,
             timeout: float = TIMEOUT_S) -> dict:
    """Stream ``url`` into ``dest``; -> {'bytes', 'md5', 'sha256'} of what was written."""
    req = urllib.request.Request(url, headers={'User-Agent': 'depth_ego_ros-zoo'})
    retry = f'run `depth-ego weights fetch {name}` again'
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise ZooError(f'{name}: the server answered HTTP {exc.code} {exc.reason} for {url}') from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, 'reason', exc)
        raise ZooError(f'{name}: cannot download {url} ({reason}). Without internet on this '
                       f'machine: download the file elsewhere and run `depth-ego weights import '
                       f'FILE --name {name}`') from None
    md5, sha = hashlib.md5(), hashlib.sha256()
    n = 0
    with resp:
        length = resp.headers.get('Content-Length')
        total = int(length) if length and length.isdigit() else None
        free = shutil.disk_usage(dest.parent).free
        need = int(total * _SPACE_FACTOR) + _SPACE_MARGIN if total else 0
        if total and free < need:
            raise ZooError(f'{name}: not enough free space in {dest.parent} ({_mb(free)} free, '
                           f'about {_mb(need)} needed for the {_mb(total)} download and its '
                           f'unpacked copy). Free space or set DEPTH_EGO_HOME to another disk, '
                           f'then {retry}')
        bar = _progress(total, name, progress)
        try:
            with open(dest, 'wb') as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.HTTPException, OSError) as exc:
                        raise ZooError(f'{name}: download interrupted after {n} of '
                                       f'{total if total else "?"} bytes ({type(exc).__name__}: '
                                       f'{exc}); nothing was installed, {retry}') from None
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        raise write_error(exc, dest, name) from None
                    md5.update(chunk)
                    sha.update(chunk)
                    n += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise write_error(exc, dest, name) from None
        except OSError as exc:          # open() or close() failed
            raise write_error(exc, dest, name) from None
        finally:
            if bar is not None:
                bar.close()
    if total is not None and n != total:
        raise ZooError(f'{name}: download interrupted: got {n} of {total} bytes from {url}; '
                       f'nothing was installed, {retry}')
    return {'bytes': n, 'md5': md5.hexdigest(), 'sha256': sha.hexdigest()}


def file_hashes(path: Path) -> dict:
    md5, sha = hashlib.md5(), hashlib.sha256()
    n = 0
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            md5.update(chunk)
            sha.update(chunk)
            n += len(chunk)
    return {'bytes': n, 'md5': md5.hexdigest(), 'sha256': sha.hexdigest()}


def verify(entry: Entry, hashes: dict, what: str = 'the download') -> str:
    """Check ``hashes`` against the entry's published checksum; -> a line saying what was
    verified. ZooError on a mismatch."""
    ck = entry.checksum
    if ck is None:
        return (f'no checksum is published for {entry.name}: checked its structure only '
                f'(sha256 {hashes["sha256"]})')
    kind, want = ck
    got = hashes['md5'] if kind == 'md5' else hashes['sha256'][:len(want)]
    label = 'md5' if kind == 'md5' else 'sha256 prefix'
    if got != want:
        raise ZooError(f'{entry.name}: checksum mismatch: {label} of {what} is {got}, the '
                       f'registry says {want} ({hashes["bytes"]} bytes: a truncated or corrupted '
                       f'download, or the file changed upstream). Nothing was installed; run '
                       f'`depth-ego weights fetch {entry.name}` again')
    return f'{label} {want} verified'
