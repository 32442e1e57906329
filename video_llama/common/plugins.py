"""Plugins: your own builders, models, processors and tasks, registered without a fork.

A plugin is a module whose import registers classes (with the usual ``@registry.register_*``
decorators). Plugins are found in three places, all loaded once and before the config is
resolved, so that a plugin's default dataset YAML merges like a built-in one:

* the entry-point group ``video_llama.plugins`` of installed packages (each entry names a module);
* ``plugins:`` in the experiment YAML: module names, or ``.py`` files (relative to the YAML);
* ``--plugins`` on ``train.py``, ``evaluate.py`` and ``video-llama list``.

Set ``VIDEO_LLAMA_NO_ENTRY_POINTS=1`` to skip installed plugins (e.g. to try a local copy).
"""

import importlib
import importlib.util
import os
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path

from video_llama.common.errors import UserError
from video_llama.common.registry import registry

ENTRY_POINT_GROUP = "video_llama.plugins"
_loaded = {}  # resolved spec → module


class PluginError(UserError, ImportError):
    pass


def _is_file(spec):
    return spec.endswith(".py") or os.sep in spec


def load_plugin(spec, source, base_dir=None, name=None):
    """Import one plugin (a module name or a .py path); its registrations are attributed to it."""
    key = str((Path(base_dir or ".") / spec).resolve()) if _is_file(spec) else spec
    if key in _loaded:
        return _loaded[key]
    label = name or spec
    previous, registry._current_origin = registry._current_origin, f"plugin {label}"
    try:
        module = _import_file(Path(key)) if _is_file(spec) else importlib.import_module(spec)
    except Exception as err:
        raise PluginError(f"plugin {label!r} (from {source}) failed to import: {type(err).__name__}: {err}") from err
    finally:
        registry._current_origin = previous
    _loaded[key] = module
    return module


def _import_file(path):
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    module_name = "video_llama_plugin_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_entry_point_plugins():
    if os.environ.get("VIDEO_LLAMA_NO_ENTRY_POINTS"):
        return
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist.name if entry.dist else "?"
        load_plugin(entry.value, f"entry point {entry.name!r} of {dist}", name=entry.name)


def load_plugins(specs=(), source="--plugins", base_dir=None):
    """Installed plugins, then ``specs`` (module names or .py paths)."""
    load_entry_point_plugins()
    for spec in specs or ():
        load_plugin(str(spec), source, base_dir)
