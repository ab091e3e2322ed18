"""Development mode: reload a plugin when its source file changes.

With ``dev = true`` in the config the engine runs a ``PluginWatcher`` actor
under its supervisor. Every ``POLL_INTERVAL_S`` it compares the modification
time and size of each plugin's source files with what it saw last, and calls
``PluginManager.reload`` for a plugin whose files changed. Polling keeps it
dependency-free and portable; a few ``stat`` calls twice a second cost nothing.

Watched: plugin files (``*.py`` paths and files found in the plugin
directories) and the module file of ``module:Class`` plugins and of
third-party entry points. Not watched: chatcore's own packages, and new files
dropped into a plugin directory (restart the engine for those).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ..errors import PluginError
from ._discovery import entry_points
from ._scan import is_builtin_module, module_source_files

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._manager import PluginManager

__all__ = ["POLL_INTERVAL_S", "PluginWatcher", "plugin_source_files"]

POLL_INTERVAL_S = 0.5
"""How often the watcher looks at the files, in seconds."""

logger = logging.getLogger(__name__)

_Signature = tuple[tuple[str, int, int], ...]


def plugin_source_files(spec: str, search_dirs: Sequence[Path] = ()) -> list[Path]:
    """The source files a plugin spec loads from (empty for chatcore's own plugins)."""
    file_part, sep, _ = spec.rpartition(":")
    if sep and file_part.endswith(".py"):
        return [Path(file_part)]
    if spec.endswith(".py"):
        for path in [Path(spec), *(d / spec for d in search_dirs)]:
            if path.is_file():
                return [path]
        return []
    if ":" in spec:
        module = spec.partition(":")[0]
    else:
        entry = entry_points().get(spec)
        if entry is None:
            found = [d / f"{spec}.py" for d in search_dirs if (d / f"{spec}.py").is_file()]
            return found[:1]
        module = entry.module
    if is_builtin_module(module):
        return []
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if isinstance(file, str) and file.endswith(".py"):
        return [Path(file)]
    return module_source_files(module)[-1:]


def _signature(files: Iterable[Path]) -> _Signature:
    marks = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            # Gone (mid-save, or deleted): a change like any other; the reload reports it.
            marks.append((str(path), -1, -1))
        else:
            marks.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(marks)


class PluginWatcher:
    """An actor that reloads plugins whose source files changed on disk."""

    name = "plugin-watch"

    def __init__(self, manager: PluginManager, *, interval_s: float = POLL_INTERVAL_S) -> None:
        self.manager = manager
        self.interval_s = interval_s
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._seen: dict[str, _Signature] = {}

    def _targets(self) -> dict[str, list[Path]]:
        # Plugin directories are resolved by the manager against the config file's folder.
        search_dirs = self.manager.search_dirs
        targets = {}
        for name, status in self.manager.get_plugin_status().items():
            files = plugin_source_files(status.plugin, search_dirs)
            if files:
                targets[name] = files
        return targets

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A restart takes a fresh baseline: what changed while it was down is not replayed.
        self._seen = {name: _signature(files) for name, files in self._targets().items()}
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.check_once()

    async def check_once(self) -> list[str]:
        """Reload every plugin whose files changed since the last look; return their names."""
        changed = []
        for name, files in self._targets().items():
            now = _signature(files)
            before = self._seen.get(name)
            self._seen[name] = now
            if before is not None and before != now:
                changed.append(name)
        for name in changed:
            try:
                await self.manager.reload(name)
            except PluginError as exc:
                # The previous version keeps running; status says why. Not a crash.
                self.failures += 1
                self.last_error = str(exc)
                logger.warning("reload after edit: %s", exc)
            else:
                self.reloads += 1
                logger.info("plugin %r reloaded after its source changed", name)
        return changed
