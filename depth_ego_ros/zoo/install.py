"""Install a model into the cache: download or import, verify, unpack, convert, then swap in.

Everything happens inside a private temporary directory ``<cache>/.tmp/<name>.<pid>.<rand>``:
the archive is downloaded (or copied) there, its checksum verified, unpacked into a staging
directory, loaded into this project's networks (a zip holding another architecture fails here)
and written in the layout the Estimator loads:

* monodepth2 zip -> ``encoder.pth``, ``depth.pth`` [+ ``pose_encoder.pth``, ``pose.pth``]
  (the released files, unchanged);
* PackNet-SfM ``.ckpt`` -> ``depth.pth`` in the project's PackNet layout (model name, training
  resolution, constructor arguments; :func:`~depth_ego_ros.core.checkpoints.save_packnet_depth`);
* torchvision ResNet ``.pth`` -> ``imagenet.pth`` (checked against torchvision's ResNet).

plus ``model_info.json`` (name, source, checksum, licence, stereo scale factor). Only then is
the staging directory moved into ``<cache>/models/<name>`` with ``os.replace`` (one rename on the
same file system). Any failure removes the temporary directory: the cache never holds a
half-written model, and running the same command again starts afresh. One process at a time
installs or removes a given name (``<cache>/.locks/<name>.lock``, a flock): a second ``fetch``
of the same name waits, then finds it installed and downloads nothing.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import shutil
import zipfile
from pathlib import Path

from ..core import checkpoints as ckpt
from ..core.checkpoints import MODEL_INFO_FILE
from .download import download, file_hashes, verify, write_error
from .registry import Entry, ZooError, load_registry, models_dir, cache_dir

__all__ = ['fetch', 'import_model', 'remove', 'installed_path', 'read_info', 'IMAGENET_FILE']

IMAGENET_FILE = 'imagenet.pth'
_MONODEPTH2_FILES = (ckpt.ENCODER_FILE, ckpt.DEPTH_FILE, ckpt.POSE_ENCODER_FILE, ckpt.POSE_FILE)


def installed_path(name: str) -> Path | None:
    """``<cache>/models/<name>`` when it holds an installed model (model_info.json), else None."""
    d = models_dir() / name
    return d if (d / MODEL_INFO_FILE).is_file() else None


def read_info(name: str) -> dict | None:
    d = installed_path(name)
    if d is None:
        return None
    try:
        return json.loads((d / MODEL_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def _entry(name: str, registry: dict | None) -> Entry:
    reg = registry if registry is not None else load_registry()
    if name not in reg:
        import difflib
        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
        hint = f' (did you mean {", ".join(close)}?)' if close else ''
        raise ZooError(f'{name!r} is not a model-zoo name{hint}; `depth-ego weights list` shows '
                       'the names')
    e = reg[name]
    if not e.supported:
        raise ZooError(f'{name}: {e.note or "this model is listed but cannot be loaded here"}')
    return e


def _clean_stale(tmp_root: Path):
    """Remove temporary directories left by fetches whose process is gone (killed, power cut)."""
    if not tmp_root.is_dir():
        return
    for d in tmp_root.iterdir():
        parts = d.name.rsplit('.', 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


class _Staging:
    """The private temporary directory of one install; removed on exit whatever happened."""

    def __init__(self, name: str):
        self.name = name
        self.root = cache_dir() / '.tmp'

    def __enter__(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _clean_stale(self.root)
            self.dir = self.root / f'{self.name}.{os.getpid()}.{secrets.token_hex(4)}'
            self.dir.mkdir()
        except OSError as exc:
            raise write_error(exc, self.root, self.name) from None
        return self.dir

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


# ----------------------------------------------------------------------------------------------
# unpack + convert into the Estimator's layout
# ----------------------------------------------------------------------------------------------
def _safe_extract(archive: Path, dest: Path, name: str):
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise ZooError(f'{name}: the archive is corrupted ({bad} fails its CRC check); '
                               f'nothing was installed')
            for info in z.infolist():
                target = (dest / info.filename).resolve()
                if not str(target).startswith(str(dest.resolve()) + os.sep) and target != dest.resolve():
                    raise ZooError(f'{name}: the archive holds a path outside its folder '
                                   f'({info.filename!r}); refused')
            z.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise ZooError(f'{name}: the download is not a valid zip archive ({exc}): truncated or '
                       f'not the model file; nothing was installed') from None


def _find_monodepth2_dir(root: Path, name: str) -> Path:
    if (root / ckpt.ENCODER_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(ckpt.ENCODER_FILE))
    if len(found) == 1:
        return found[0]
    listed = sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())[:12]
    raise ZooError(f'{name}: no single monodepth2 model in the archive ({len(found)} encoder.pth '
                   f'found; files: {", ".join(listed) or "none"})')


def _convert_monodepth2(src: Path, out: Path, entry: Entry):
    from ..core.models import build_networks
    d = _find_monodepth2_dir(src, entry.name)
    with_pose = ckpt.has_pose(d)
    try:
        build_networks(entry.model, d, with_pose=with_pose)
    except ckpt.CheckpointError as exc:
        raise ZooError(f'{entry.name}: the archive does not hold a {entry.model} monodepth2 '
                       f'model as the registry says: {exc}') from None
    if entry.pose and not with_pose:
        raise ZooError(f'{entry.name}: the archive has no pose networks ({ckpt.POSE_ENCODER_FILE}, '
                       f'{ckpt.POSE_FILE}) although the registry lists them')
    for f in _MONODEPTH2_FILES:
        if (d / f).is_file():
            shutil.copyfile(d / f, out / f)


def _convert_packnet_resnet(src_file: Path, out: Path, entry: Entry):
    """PackNet-SfM's DepthResNet (a copy of monodepth2's ResnetEncoder + DepthDecoder: keys
    ``model.depth_net.encoder.encoder.*`` / ``model.depth_net.decoder.decoder.*``) -> monodepth2's
    encoder.pth + depth.pth. Its pose network (PoseResNet, another frame-order convention) is
    not converted: the model gives depth only."""
    import torch
    from ..core.models import build_networks
    from ..core.packnet_checkpoint import read_packnet_ckpt
    sd = read_packnet_ckpt(src_file)['state_dict']
    enc = {k[len('model.depth_net.encoder.'):]: v for k, v in sd.items()
           if k.startswith('model.depth_net.encoder.')}
    dec = {k[len('model.depth_net.decoder.'):]: v for k, v in sd.items()
           if k.startswith('model.depth_net.decoder.')}
    if not enc or not dec:
        raise ZooError(f'{entry.name}: no DepthResNet keys (model.depth_net.encoder./decoder.) in '
                       f'the checkpoint; first keys: {ckpt.listing(list(sd))}')
    enc.update(height=int(entry.height or 192), width=int(entry.width or 640), use_stereo=False)
    torch.save(enc, out / ckpt.ENCODER_FILE)
    torch.save(dec, out / ckpt.DEPTH_FILE)
    try:
        build_networks(entry.model, out, with_pose=False)
    except ckpt.CheckpointError as exc:
        raise ZooError(f'{entry.name}: the DepthResNet does not fit {entry.model}: {exc}') from None


def _convert_packnet(src_file: Path, out: Path, entry: Entry):
    from ..core.packnet_checkpoint import load_packnet_checkpoint
    if entry.model.startswith('resnet'):
        return _convert_packnet_resnet(src_file, out, entry)
    try:
        net, _ = load_packnet_checkpoint(src_file)
    except ckpt.CheckpointError as exc:
        raise ZooError(f'{entry.name}: not a PackNet01 checkpoint as the registry says: {exc}') from None
    model = ckpt.packnet_model_name(net.width)
    if model != entry.model:
        raise ZooError(f'{entry.name}: the checkpoint holds {model}, the registry says {entry.model}')
    ckpt.save_packnet_depth(out, net, model=model, height=int(entry.height or 192),
                            width=int(entry.width or 640))


def _convert_torchvision(src_file: Path, out: Path, entry: Entry):
    from ..core.networks.resnet_encoder import ResnetEncoder
    sd = ckpt.read_state_dict(src_file)
    enc = ResnetEncoder(entry.model, 1).encoder
    parts = ckpt.state_dict_mismatches(enc.state_dict(), sd)
    if parts:
        raise ZooError(f'{entry.name}: not a torchvision {entry.model} state dict: ' + '; '.join(parts))
    shutil.copyfile(src_file, out / IMAGENET_FILE)


def _unpack_and_convert(archive: Path, staging: Path, entry: Entry) -> Path:
    out = staging / 'model'
    out.mkdir()
    if entry.format == 'monodepth2_zip':
        if archive.is_dir():
            _convert_monodepth2(archive, out, entry)
        else:
            unpacked = staging / 'unpacked'
            unpacked.mkdir()
            _safe_extract(archive, unpacked, entry.name)
            _convert_monodepth2(unpacked, out, entry)
    elif entry.format == 'packnet_ckpt':
        _convert_packnet(archive, out, entry)
    else:
        _convert_torchvision(archive, out, entry)
    return out


def _install(out: Path, entry: Entry, info: dict) -> Path:
    """Write model_info.json into ``out`` and move it into place (replacing an older copy)."""
    info = dict(name=entry.name, kind=entry.kind, method=entry.method, model=entry.model,
                width=entry.width, height=entry.height, licence=entry.licence,
                licence_url=entry.licence_url, url=entry.url,
                stereo_scale_factor=entry.stereo_scale_factor,
                installed_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                **info)
    final = models_dir() / entry.name
    try:
        (out / MODEL_INFO_FILE).write_text(json.dumps(info, indent=1) + '\n')
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():
            old = out.parent / 'old'
            os.replace(final, old)
        os.replace(out, final)
    except OSError as exc:
        raise write_error(exc, final, entry.name) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def _name_lock(name: str, say=None):
    """Hold ``<cache>/.locks/<name>.lock`` (an advisory flock, released by the kernel if the
    process dies): one process at a time installs or removes a name; the others wait, saying
    so, then see what it left."""
    locks = cache_dir() / '.locks'
    try:
        locks.mkdir(parents=True, exist_ok=True)
        f = open(locks / f'{name}.lock', 'a+')
    except OSError as exc:
        raise write_error(exc, locks, name) from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say(f'{name}: another process is installing or removing it; waiting for it')
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        f.close()          # releases the lock


# ----------------------------------------------------------------------------------------------
# public operations
# ----------------------------------------------------------------------------------------------
def fetch(name: str, *, force: bool = False, progress: bool = True, registry: dict | None = None,
          log=None) -> Path:
    """Download, verify and install ``name``; -> its directory. Already installed: returned as
    is unless ``force``. ``log(str)`` receives the progress lines (default: none)."""
    entry = _entry(name, registry)
    have = installed_path(name)
    if have is not None and not force:
        return have
    say = log or (lambda _s: None)
    with _name_lock(name, say), _Staging(name) as staging:
        have = installed_path(name)          # another process may have installed it meanwhile
        if have is not None and not force:
            say(f'{name}: installed by another process meanwhile')
            return have
        archive = staging / (Path(entry.url.split('?')[0]).name or 'download')
        say(f'{name}: downloading {entry.url}')
        hashes = download(entry.url, archive, name, progress=progress)
        checked = verify(entry, hashes)
        say(f'{name}: {hashes["bytes"] / 1e6:.1f} MB, {checked}')
        out = _unpack_and_convert(archive, staging, entry)
        return _install(out, entry, {'sha256': hashes['sha256'], 'checksum': checked,
                                     'bytes': hashes['bytes']})


def import_model(source: str | os.PathLike, name: str, *, registry: dict | None = None,
                 force: bool = False) -> Path:
    """Install a file or directory the user downloaded elsewhere as ``name``. A registry name
    gets its checksum verified (for an archive file) and its conversion; another name is
    imported by what the path holds (monodepth2 directory or zip, PackNet .ckpt)."""
    src = Path(source).expanduser()
    if not src.exists():
        raise ZooError(f'{src}: no such file or directory')
    reg = registry if registry is not None else load_registry()
    if name in reg:
        entry = _entry(name, reg)
    else:
        if '/' in name or name in ('', '.', '..') or name.startswith('.'):
            raise ZooError(f'{name!r} is not a valid model name')
        fmt = ('packnet_ckpt' if src.suffix in ('.ckpt', '.tar') else 'monodepth2_zip')
        model = None
        if fmt == 'monodepth2_zip' and src.is_dir() and (src / ckpt.ENCODER_FILE).is_file():
            model = ckpt.read_checkpoint_meta(src)['model']
        elif fmt == 'packnet_ckpt':
            model = ckpt.read_checkpoint_meta(src)['model']
        entry = Entry(name=name, kind='checkpoint', method='imported', model=model or 'resnet18',
                      url=str(src), format=fmt, licence='unknown (imported)',
                      pose=False, source=f'imported from {src}')
        if fmt == 'monodepth2_zip' and not src.is_dir():
            entry = _model_of_zip(src, entry)
    if installed_path(name) is not None and not force:
        raise ZooError(f'{name} is already installed at {installed_path(name)}; '
                       f'`depth-ego weights remove {name}` first (or --force)')
    with _name_lock(name), _Staging(name) as staging:
        if installed_path(name) is not None and not force:
            raise ZooError(f'{name} was installed by another process meanwhile, at '
                           f'{installed_path(name)}')
        if src.is_dir():
            if entry.format != 'monodepth2_zip':
                raise ZooError(f'{name}: expects a {entry.format} file, {src} is a directory')
            checked = 'imported from a directory: structure checked (no archive to checksum)'
            hashes = {}
            out = _unpack_and_convert(src, staging, entry)
        else:
            hashes = file_hashes(src)
            checked = verify(entry, hashes, what=str(src))
            out = _unpack_and_convert(src, staging, entry)
        return _install(out, entry, {'imported_from': str(src), 'checksum': checked,
                                     'sha256': hashes.get('sha256')})


def _model_of_zip(src: Path, entry: Entry) -> Entry:
    """The architecture of a user's monodepth2 zip (read from its encoder.pth)."""
    import dataclasses
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        _safe_extract(src, Path(tmp), entry.name)
        d = _find_monodepth2_dir(Path(tmp), entry.name)
        model = ckpt.read_checkpoint_meta(d)['model'] or 'resnet18'
    return dataclasses.replace(entry, model=model)


def remove(name: str) -> Path:
    """Delete the installed model ``name``; -> the directory removed. ZooError if absent."""
    d = models_dir() / name
    if '/' in name or not name or name.startswith('.') or not d.exists():
        raise ZooError(f'{name} is not installed in {models_dir()}')
    with _name_lock(name):
        if not d.exists():
            raise ZooError(f'{name} is not installed in {models_dir()} (removed by another process)')
        return _remove(name, d)


def _remove(name: str, d: Path) -> Path:
    trash = cache_dir() / '.tmp' / f'{name}.{os.getpid()}.{secrets.token_hex(4)}'
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.replace(d, trash)           # gone from the cache at once, then deleted
    shutil.rmtree(trash, ignore_errors=True)
    return d
