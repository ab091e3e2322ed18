"""A lint of plugin source for process and code-execution escapes, run before import.

Before a plugin's code is imported, the files that importing it will execute
for the first time are parsed with ``ast`` (never run) and searched for imports
and calls that leave the plugin API: starting processes (``subprocess``,
``os.system``, ``os.exec*``, ``os.spawn*``, ``pty``, ``multiprocessing``),
running generated code (``eval``, ``exec``, ``compile``, ``__import__``) and
foreign calls (``ctypes``, ``cffi``). A hit refuses the plugin unless its
``[[plugins]]`` entry says ``trusted = true``.

This is a lint, not a sandbox: Python can reach any of these indirectly
(``getattr(os, "sys" + "tem")``, a module the plugin imports). What it gives is
an early, precise warning about ordinary code. The boundary is the child
process of ``isolation = "process"``.

Scope:

* a ``*.py`` plugin file: that file;
* ``module:Class`` and entry points: the module's own file, plus the
  ``__init__.py`` of each enclosing package that is not imported yet; not the
  other modules those import;
* chatcore's own packages (``chatcore``, ``backends``, ``processors``,
  ``features``, ``tui``) are not scanned: they are reviewed with chatcore.

Network access (``socket``, HTTP clients) is not denied here: it is the
``network`` permission, which only the child process can enforce.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PluginRefused

if TYPE_CHECKING:
    import importlib.machinery
    from collections.abc import Iterable, Iterator

__all__ = [
    "BUILTIN_PACKAGES",
    "DENIED_CALLS",
    "DENIED_MODULES",
    "ScanFinding",
    "check_file",
    "check_module",
    "is_builtin_module",
    "module_source_files",
    "scan_file",
    "scan_source",
]

BUILTIN_PACKAGES = frozenset({"chatcore", "backends", "processors", "features", "tui"})
"""Top-level packages of the chatcore distribution; their plugins are not scanned."""

DENIED_MODULES = frozenset(
    {
        "subprocess",
        "_posixsubprocess",
        "multiprocessing",
        "pty",
        "ctypes",
        "_ctypes",
        "cffi",
    }
)
"""Importing one of these (or a submodule) refuses an untrusted plugin."""

DENIED_CALLS = frozenset({"eval", "exec", "compile", "__import__"})
"""Built-in functions whose call (or mere use by name) refuses an untrusted plugin."""

DENIED_OS_NAMES = frozenset({"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"})
DENIED_OS_PREFIXES = ("exec", "spawn")
"""``os`` functions that start or replace processes: these, plus ``os.exec*``/``os.spawn*``."""

TRUST_HINT = "denied; set trusted = true for this plugin to allow"


@dataclass(frozen=True, slots=True)
class ScanFinding:
    """One denied import or call: where it is and what it is."""

    path: str
    line: int
    kind: str
    """``imports`` or ``calls``."""
    name: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind} {self.name!r} ({TRUST_HINT})"


def _denied_os(attr: str) -> bool:
    return attr in DENIED_OS_NAMES or attr.startswith(DENIED_OS_PREFIXES)


def _denied_module(name: str) -> bool:
    return name.partition(".")[0] in DENIED_MODULES


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[ScanFinding] = []
        # Local names bound to the os module (``import os as o``), so ``o.system`` is seen.
        self.os_names: set[str] = set()

    def _hit(self, node: ast.AST, kind: str, name: str) -> None:
        self.findings.append(ScanFinding(self.path, getattr(node, "lineno", 0), kind, name))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _denied_module(alias.name):
                self._hit(node, "imports", alias.name)
            elif alias.name == "os":
                self.os_names.add(alias.asname or "os")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            return  # relative imports stay inside the plugin's own package
        if _denied_module(module):
            self._hit(node, "imports", module)
            return
        for alias in node.names:
            if module == "os" and _denied_os(alias.name):
                self._hit(node, "imports", f"os.{alias.name}")
            elif module == "os" and alias.name == "*":
                self._hit(node, "imports", "os.*")
            elif module == "builtins" and alias.name in DENIED_CALLS:
                self._hit(node, "imports", f"builtins.{alias.name}")

    def visit_Name(self, node: ast.Name) -> None:
        # Flags ``f = eval`` as well as ``eval(...)``: handing the function around is the
        # same escape.
        if node.id in DENIED_CALLS and isinstance(node.ctx, ast.Load):
            self._hit(node, "calls", node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = node.value
        if (
            isinstance(base, ast.Name)
            and (base.id in self.os_names or base.id == "os")
            and _denied_os(node.attr)
        ):
            self._hit(node, "calls", f"os.{node.attr}")
        elif (
            isinstance(base, ast.Name)
            and base.id in ("builtins", "__builtins__")
            and node.attr in DENIED_CALLS
        ):
            self._hit(node, "calls", f"{base.id}.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        # importlib.import_module("subprocess") with a literal name is an import by another name.
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _denied_module(node.args[0].value)
        ):
            self._hit(node, "imports", node.args[0].value)
        self.generic_visit(node)


def scan_source(source: str | bytes, path: str) -> list[ScanFinding]:
    """Denied imports and calls in one source text, in line order.

    A file that does not parse has no findings: importing it fails anyway, with
    the SyntaxError as the reason, which is the more useful message.
    """
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return []
    scanner = _Scanner(path)
    scanner.visit(tree)
    return sorted(scanner.findings, key=lambda f: (f.line, f.name))


def scan_file(path: Path) -> list[ScanFinding]:
    """Denied imports and calls in a ``.py`` file (none for a missing or unreadable file)."""
    try:
        source = path.read_bytes()
    except OSError:
        return []
    return scan_source(source, str(path))


def is_builtin_module(module_name: str) -> bool:
    """Whether ``module_name`` belongs to chatcore's own packages (not scanned)."""
    return module_name.partition(".")[0] in BUILTIN_PACKAGES


def _find_spec(name: str, path: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    # importlib.util.find_spec would import the parent packages: exactly what must not
    # run before the scan. Ask the import system's finders directly instead.
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec: importlib.machinery.ModuleSpec | None = find_spec(name, path, None)
        if spec is not None:
            return spec
    return None


def module_source_files(module_name: str) -> list[Path]:
    """The ``.py`` files that importing ``module_name`` would execute for the first time.

    That is each enclosing package's ``__init__.py`` not yet imported and the
    module's own file (also when it is already imported: a reload runs it again).
    Files that aren't Python source (extension modules, namespace packages) are
    left out; so is a module that cannot be found (importing it then fails).
    """
    parts = module_name.split(".")
    files: list[Path] = []
    search: list[str] | None = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        last = depth == len(parts)
        if spec is None:
            spec = _find_spec(name, search)
            if spec is None:
                return files
            if not last:
                files.extend(_source_of(spec))
        if last:
            files.extend(_source_of(spec))
        locations = spec.submodule_search_locations
        search = list(locations) if locations is not None else None
    return files


def _source_of(spec: importlib.machinery.ModuleSpec) -> Iterator[Path]:
    origin = spec.origin
    if spec.has_location and origin and origin.endswith(".py"):
        yield Path(origin)


def _refuse_if_any(findings: Iterable[ScanFinding]) -> None:
    found = list(findings)
    if found:
        raise PluginRefused(found)


def check_file(path: Path, *, trusted: bool = False) -> None:
    """Refuse an untrusted plugin file with denied imports or calls.

    Raises:
        PluginRefused: naming file, line and the import or call.
    """
    if not trusted:
        _refuse_if_any(scan_file(path))


def check_module(module_name: str, *, trusted: bool = False) -> None:
    """Refuse an untrusted plugin module (see the module docstring for the files scanned).

    Raises:
        PluginRefused: naming file, line and the import or call.
    """
    if trusted or is_builtin_module(module_name):
        return
    _refuse_if_any(f for file in module_source_files(module_name) for f in scan_file(file))
