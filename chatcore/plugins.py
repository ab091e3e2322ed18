"""Deprecated alias of ``chatcore.plugin`` (and of the manager's internals), for one release.

Plugins written for chatcore 0.1 import from here; they keep working, with one
``DeprecationWarning`` per process. Import from ``chatcore.plugin`` instead.
"""

from __future__ import annotations

import warnings

from . import _plugins
from ._plugins import BackgroundJobs as BackgroundJobs
from ._plugins import BasePlugin as BasePlugin
from ._plugins import LoadedPlugin as LoadedPlugin
from ._plugins import PluginLifecycle as PluginLifecycle
from ._plugins import PluginManager as PluginManager
from ._plugins import resolve_plugin_class as resolve_plugin_class
from ._plugins import topological_order as topological_order
from ._plugins._base import KNOWN_PERMISSIONS as KNOWN_PERMISSIONS
from ._plugins._discovery import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from ._plugins._lifecycle import ALLOWED_TRANSITIONS as ALLOWED_TRANSITIONS
from .plugin import *  # noqa: F403
from .plugin import __all__ as _PUBLIC

__all__ = [
    *_PUBLIC,
    "ALLOWED_TRANSITIONS",
    "ENTRY_POINT_GROUP",
    "KNOWN_PERMISSIONS",
    "BackgroundJobs",
    "BasePlugin",
    "LoadedPlugin",
    "PluginLifecycle",
    "PluginManager",
    "resolve_plugin_class",
    "topological_order",
]

DEPRECATION = (
    "chatcore.plugins is deprecated and goes away in the next release: "
    "import from chatcore.plugin instead"
)


if not getattr(_plugins, "_warned_deprecated_alias", False):
    # Once per process, even if this module is imported afresh (removed from sys.modules).
    _plugins._warned_deprecated_alias = True  # type: ignore[attr-defined]
    # Level 2 is the importing module: warnings skips importlib's own frames.
    warnings.warn(DEPRECATION, DeprecationWarning, stacklevel=2)
