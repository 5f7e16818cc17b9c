"""The model registry (a data file, ``registry.json`` in this package) and the cache directory.

Each entry names one released model: where it is downloaded from, the checksum its publisher
gives (``md5`` for monodepth2, the ``sha256_prefix`` of torchvision's file names, none for
PackNet-SfM), its architecture, resolution, training data, published KITTI/DDAD figures,
licence and, for monodepth2's stereo-trained models, the stereo scale factor (5.4) that turns
their output into metres.

``DEPTH_EGO_ZOO_REGISTRY=FILE`` replaces the packaged registry by another file of the same
schema (a mirror, or a test's loopback server). Cache directory: ``$DEPTH_EGO_HOME``, else
``$XDG_CACHE_HOME/depth_ego_ros``, else ``~/.cache/depth_ego_ros``; models live in
``<cache>/models/<name>/``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..core.state_dicts import CheckpointError

__all__ = ['ZooError', 'Entry', 'load_registry', 'registry_path', 'cache_dir', 'models_dir',
           'REGISTRY_ENV', 'HOME_ENV', 'FORMATS']

REGISTRY_ENV = 'DEPTH_EGO_ZOO_REGISTRY'
HOME_ENV = 'DEPTH_EGO_HOME'
#: archive formats fetch knows how to unpack and convert
FORMATS = ('monodepth2_zip', 'packnet_ckpt', 'torchvision_resnet')
_PACKAGED = Path(__file__).with_name('registry.json')


class ZooError(CheckpointError):
    """A model-zoo operation failed (unknown name, not downloaded, download or checksum
    failure, wrong contents, disk full); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    kind: str                  # 'checkpoint' (depth [+ pose] networks) | 'imagenet' (encoder init)
    method: str                # monodepth2 | packnet-sfm | torchvision
    model: str                 # the Estimator's model name: resnet18, resnet50, packnet01...
    url: str
    format: str
    licence: str
    width: int | None = None
    height: int | None = None
    pose: bool = False
    data: str = ''
    training: str = ''
    imagenet_pretrained: bool | None = None
    metrics: dict | None = None
    md5: str | None = None
    sha256_prefix: str | None = None
    licence_url: str = ''
    stereo_scale_factor: float | None = None
    approx_size_mb: float | None = None
    source: str = ''
    supported: bool = True
    note: str = ''

    @property
    def checksum(self) -> tuple[str, str] | None:
        """('md5', hex) | ('sha256_prefix', hex) | None when nothing was published."""
        if self.md5:
            return 'md5', self.md5.lower()
        if self.sha256_prefix:
            return 'sha256_prefix', self.sha256_prefix.lower()
        return None

    @property
    def non_commercial(self) -> bool:
        return 'non-commercial' in self.licence.lower()


def registry_path(path: str | os.PathLike | None = None) -> Path:
    """The registry file in use: ``path``, else $DEPTH_EGO_ZOO_REGISTRY, else the packaged one."""
    if path:
        return Path(path)
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else _PACKAGED


def load_registry(path: str | os.PathLike | None = None) -> dict[str, Entry]:
    """name -> Entry, in the file's order. ZooError when the file is missing or malformed."""
    p = registry_path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ZooError(f'model registry {p} not found') from None
    except (OSError, ValueError) as exc:
        raise ZooError(f'model registry {p} cannot be read: {exc}') from None
    models = doc.get('models') if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise ZooError(f'model registry {p}: no "models" mapping')
    fields = {f.name for f in dataclasses.fields(Entry)}
    out = {}
    for name, raw in models.items():
        if not isinstance(raw, dict):
            raise ZooError(f'model registry {p}: entry {name!r} is not a mapping')
        try:
            e = Entry(name=name, **{k: v for k, v in raw.items() if k in fields and k != 'name'})
        except TypeError as exc:
            raise ZooError(f'model registry {p}: entry {name!r}: {exc}') from None
        if e.format not in FORMATS:
            raise ZooError(f'model registry {p}: entry {name!r}: format {e.format!r} is not one of '
                           f'{", ".join(FORMATS)}')
        if '/' in name or name in ('.', '..') or not name:
            raise ZooError(f'model registry {p}: {name!r} is not a valid model name')
        out[name] = e
    return out


def cache_dir() -> Path:
    """$DEPTH_EGO_HOME, else $XDG_CACHE_HOME/depth_ego_ros, else ~/.cache/depth_ego_ros."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'depth_ego_ros'


def models_dir() -> Path:
    return cache_dir() / 'models'
