"""Model zoo: released weights (monodepth2, PackNet-SfM, torchvision ImageNet ResNets) by name.

ROS-free, one layer above core. ``registry.json`` (package data) lists the models;
``depth-ego weights list|fetch|path|remove|import`` manages the cache
(``$DEPTH_EGO_HOME``, else ``$XDG_CACHE_HOME/depth_ego_ros``, else ``~/.cache/depth_ego_ros``);
:func:`resolve_checkpoint` turns a name or a path into the checkpoint path everywhere a
checkpoint is taken. docs: README "Model zoo".
"""
from .registry import (Entry, ZooError, cache_dir, load_registry, models_dir,  # noqa: F401
                       registry_path, REGISTRY_ENV, HOME_ENV)
from .install import fetch, import_model, installed_path, read_info, remove  # noqa: F401
from .resolve import fetch_command, is_zoo_name, resolve_checkpoint  # noqa: F401

__all__ = ['Entry', 'ZooError', 'cache_dir', 'load_registry', 'models_dir', 'registry_path',
           'REGISTRY_ENV', 'HOME_ENV', 'fetch', 'import_model', 'installed_path', 'read_info',
           'remove', 'fetch_command', 'is_zoo_name', 'resolve_checkpoint']
