"""Finding plugin classes: entry points, ``module:Class`` paths and ``*.py`` files.

Built-ins are found exactly like third-party plugins: as entry points of the
``chatcore.plugins`` group (chatcore's own ``pyproject.toml`` declares ``echo``
and the others). Before anything is imported its source is scanned
(``_scan``); a file is compiled afresh on every load, so a reload right after
an edit never runs stale bytecode, and a failed import keeps the previous
version of the module in place.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PluginLoadError
from ._base import PLUGIN_BASES, BasePlugin, not_a_plugin_reason
from ._scan import check_file, check_module

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.metadata import EntryPoint
    from types import ModuleType

__all__ = [
    "ENTRY_POINT_GROUP",
    "entry_points",
    "load_plugin_file",
    "reimport_plugin_class",
    "resolve_plugin_class",
]

ENTRY_POINT_GROUP = "chatcore.plugins"


def entry_points() -> dict[str, EntryPoint]:
    """The installed plugins, by entry-point name."""
    from importlib.metadata import entry_points as installed

    return {ep.name: ep for ep in installed(group=ENTRY_POINT_GROUP)}


def _is_plugin_class(obj: object) -> bool:
    return (
        inspect.isclass(obj)
        and issubclass(obj, PLUGIN_BASES)
        and not obj.__dict__.get("_plugin_base", False)
    )


def _check_plugin_class(obj: object, spec: str) -> type[BasePlugin]:
    if not _is_plugin_class(obj):
        raise PluginLoadError(f"plugin {spec!r}: {not_a_plugin_reason(obj)}")
    return obj  # type: ignore[return-value]


def _lookalikes(module: ModuleType) -> list[type]:
    """Classes of ``module`` that look like plugins but subclass no plugin base."""
    found = []
    for obj in vars(module).values():
        if (
            inspect.isclass(obj)
            and obj.__module__ == module.__name__
            and not issubclass(obj, BasePlugin)
            and any(
                callable(getattr(obj, m, None))
                for m in ("process_message", "process_reply", "enrich", "handle", "stream")
            )
        ):
            found.append(obj)
    return found


def _import_file(path: Path, *, trusted: bool) -> ModuleType:
    check_file(path, trusted=trusted)
    module_name = f"chatcore_plugin_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"plugin file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except Exception as exc:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise PluginLoadError(f"plugin file {str(path)!r} failed to import: {exc!r}") from exc
    return module


def _classes_of(module: ModuleType) -> list[type[BasePlugin]]:
    return [
        obj
        for obj in vars(module).values()
        if _is_plugin_class(obj) and obj.__module__ == module.__name__
    ]


def load_plugin_file(path: Path, *, trusted: bool = False) -> list[type[BasePlugin]]:
    """Scan, then import a ``*.py`` plugin file and return the plugin classes it defines.

    Raises:
        PluginRefused: the source scan found denied imports or calls (not ``trusted``).
        PluginLoadError: the file is missing or failed to import.
    """
    return _classes_of(_import_file(path, trusted=trusted))


def _one_class_of_file(path: Path, *, trusted: bool) -> type[BasePlugin]:
    module = _import_file(path, trusted=trusted)
    classes = _classes_of(module)
    if len(classes) == 1:
        return classes[0]
    if not classes and _lookalikes(module):
        reason = not_a_plugin_reason(_lookalikes(module)[0])
        raise PluginLoadError(f"plugin file {str(path)!r}: {reason}")
    raise PluginLoadError(
        f"plugin file {str(path)!r} defines {len(classes)} plugin classes; "
        "name one as 'path.py:Class' or keep one per file"
    )


def resolve_plugin_class(
    spec: str, *, search_dirs: Sequence[Path] = (), trusted: bool = False
) -> type[BasePlugin]:
    """Find a plugin class by ``module:Class``, a ``.py`` path or an entry-point name.

    The source is scanned before it is imported; ``trusted`` skips the scan.

    Raises:
        PluginRefused: the scan found denied imports or calls.
        PluginLoadError: with what was tried and how to fix the name.
    """
    file_part, sep, class_name = spec.rpartition(":")
    if sep and file_part.endswith(".py"):
        module = _import_file(Path(file_part), trusted=trusted)
        obj = getattr(module, class_name, None)
        if obj is None or getattr(obj, "__module__", None) != module.__name__:
            raise PluginLoadError(
                f"plugin {spec!r}: {file_part!r} defines no plugin {class_name!r}"
            )
        return _check_plugin_class(obj, spec)
    if ":" in spec and not spec.endswith(".py"):
        module_name, _, attr = spec.partition(":")
        check_module(module_name, trusted=trusted)
        try:
            loaded_module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginLoadError(f"plugin {spec!r}: cannot import {module_name!r}: {exc}") from exc
        found: object = loaded_module
        for part in attr.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise PluginLoadError(
                    f"plugin {spec!r}: module {module_name!r} has no attribute {attr!r}"
                ) from None
        return _check_plugin_class(found, spec)
    if spec.endswith(".py"):
        for path in [Path(spec)] + [d / spec for d in search_dirs]:
            if path.is_file():
                return _one_class_of_file(path, trusted=trusted)
        raise PluginLoadError(f"plugin file {spec!r} not found")
    eps = entry_points()
    if spec in eps:
        check_module(eps[spec].module, trusted=trusted)
        try:
            loaded: Any = eps[spec].load()
        except Exception as exc:
            raise PluginLoadError(f"plugin {spec!r} failed to import: {exc!r}") from exc
        return _check_plugin_class(loaded, spec)
    for directory in search_dirs:
        path = directory / f"{spec}.py"
        if path.is_file():
            return resolve_plugin_class(str(path), trusted=trusted)
    known = ", ".join(sorted(eps)) or "none"
    raise PluginLoadError(
        f"plugin {spec!r} not found: not an installed plugin name (installed: {known}), "
        "nor a file in the plugin directories; use 'module:Class' or a path to a .py file"
    )


def spec_module(spec: str) -> str | None:
    """The module a ``module:Class`` spec or an entry-point name imports; None for files."""
    file_part, sep, _ = spec.rpartition(":")
    if spec.endswith(".py") or (sep and file_part.endswith(".py")):
        return None
    if ":" in spec:
        return spec.partition(":")[0]
    entry = entry_points().get(spec)
    return entry.module if entry is not None else None


def reimport_plugin_class(
    spec: str, *, search_dirs: Sequence[Path] = (), trusted: bool = False
) -> type[BasePlugin]:
    """The plugin class of ``spec``, from its source as it is on disk now.

    Raises:
        PluginRefused: the scan found denied imports or calls.
        PluginLoadError: the new source failed to import (the old module stays).
    """
    module_name = spec_module(spec)
    if module_name is not None and module_name in sys.modules:
        check_module(module_name, trusted=trusted)
        _reexecute_module(module_name)
    # Files are compiled afresh by _import_file on every call.
    return resolve_plugin_class(spec, search_dirs=search_dirs, trusted=trusted)


def _reexecute_module(module_name: str) -> None:
    """Run a module's current source in a new module object; keep the old one on failure.

    Compiling the source directly (not through ``__pycache__``) means an edit made
    within the same second as the last import is never hidden by stale bytecode.
    A package re-runs its ``__init__`` only; its submodules stay as imported.
    """
    old = sys.modules[module_name]
    spec = old.__spec__
    origin = spec.origin if spec is not None else None
    if spec is None or not spec.has_location or not origin or not origin.endswith(".py"):
        try:
            importlib.reload(old)
        except Exception as exc:
            raise PluginLoadError(f"module {module_name!r} failed to reload: {exc!r}") from exc
        return
    new = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = new
    try:
        code = compile(Path(origin).read_bytes(), origin, "exec", dont_inherit=True)
        exec(code, new.__dict__)
    except Exception as exc:
        sys.modules[module_name] = old
        raise PluginLoadError(f"module {module_name!r} failed to import: {exc!r}") from exc
    parent, _, child = module_name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, new)
