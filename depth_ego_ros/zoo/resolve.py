"""One function turns what a user gives as a checkpoint (a path or a model-zoo name) into a path.

Used by every place that takes a checkpoint: the perception node's ``checkpoint`` parameter (and
so the launch argument), ``depth-ego predict / evaluate / export --checkpoint`` and
``depth-ego train --init``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .install import fetch, installed_path
from .registry import ZooError, load_registry

__all__ = ['resolve_checkpoint', 'is_zoo_name', 'fetch_command']


def fetch_command(name: str) -> str:
    return f'depth-ego weights fetch {name}'


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or '/' in value or value.startswith(('.', '~'))
            or value.endswith(('.ckpt', '.pth', '.tar', '.zip')))


def is_zoo_name(value: str, registry: dict | None = None) -> bool:
    """True when ``value`` is no existing path but a registry name or an installed model."""
    if not value or Path(value).expanduser().exists():
        return False
    reg = registry if registry is not None else load_registry()
    return value in reg or installed_path(value) is not None


def resolve_checkpoint(value: str | os.PathLike | None, *, auto_fetch: bool = False,
                       registry: dict | None = None, progress: bool = False,
                       kind: str = 'checkpoint', log=None) -> Path | None:
    """The checkpoint path for ``value``.

    * None / '' -> None (random weights, as before);
    * an existing file or directory -> that path (a path always wins over a name);
    * a model installed in the cache (``depth-ego weights fetch`` / ``import``) -> its directory;
    * a registry name not installed yet -> fetched when ``auto_fetch``, else ZooError saying
      the exact ``depth-ego weights fetch NAME`` command;
    * something path-like that does not exist -> returned unchanged (the loader reports it);
    * anything else -> ZooError: neither a path nor a known name.

    ``kind``: 'checkpoint' (depth networks) or 'imagenet' (encoder initialisation): a name of
    the other kind is refused with a message saying what it is for.
    """
    if value is None or str(value) == '':
        return None
    text = str(value)
    p = Path(text).expanduser()
    if p.exists():
        return p
    reg = registry if registry is not None else load_registry()
    entry = reg.get(text)
    if entry is not None and entry.kind != kind:
        what = ('ImageNet encoder weights for `depth-ego train --weights-init imagenet`'
                if entry.kind == 'imagenet' else 'a depth checkpoint (give it as checkpoint/--init)')
        raise ZooError(f'{text} is {what}, not usable here')
    have = installed_path(text)
    if have is not None:
        return have
    if entry is not None:
        if auto_fetch:
            return fetch(text, progress=progress, registry=reg, log=log)
        raise ZooError(f'{text!r} is a model-zoo name that is not downloaded yet: run '
                       f'`{fetch_command(text)}` first (the weights are then cached in '
                       f'{Path(installed_dir_hint(text))})')
    if _looks_like_path(text):
        return p
    import difflib
    close = difflib.get_close_matches(text, list(reg), n=3, cutoff=0.5)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ZooError(f'{text!r} is neither an existing checkpoint path nor a model-zoo name '
                   f'(`depth-ego weights list` shows the names){hint}')


def installed_dir_hint(name: str) -> Path:
    from .registry import models_dir
    return models_dir() / name
