"""A function's one-line summary, read from its module's source without importing it.

``chatcore --help`` lists the commands of installed plugins with the first line of
their function's docstring. Importing the plugins to get it would make the listing
slow and run their code, their package ``__init__`` included. Instead the module's
file is located the way the import system locates it, asking each finder on
``sys.meta_path`` for the top-level package and then for each submodule with its
parent's ``submodule_search_locations`` (so editable installs and zip files work
as they do for ``import``), and the source is parsed with :mod:`ast`.
"""

from __future__ import annotations

import ast
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

__all__ = ["docstring_summary", "find_spec_unimported", "summary_of"]


def find_spec_unimported(fullname: str) -> ModuleSpec | None:
    """Where the module ``fullname`` would be imported from; nothing is executed.

    An already imported module answers with its own spec. A finder that fails is
    skipped, as if it had not found the module.
    """
    module = sys.modules.get(fullname)
    if module is not None:
        return getattr(module, "__spec__", None)
    parent_name, _, _ = fullname.rpartition(".")
    path: list[str] | None = None
    if parent_name:
        parent = find_spec_unimported(parent_name)
        if parent is None or parent.submodule_search_locations is None:
            return None
        path = list(parent.submodule_search_locations)
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec: ModuleSpec | None = find_spec(fullname, path)
        except Exception:  # a finder's bug must not break `chatcore --help`
            continue
        if spec is not None:
            return spec
    return None


def _module_source(fullname: str) -> str | None:
    spec = find_spec_unimported(fullname)
    if spec is None:
        return None
    get_source = getattr(spec.loader, "get_source", None)
    if get_source is not None:
        try:
            source = get_source(fullname)
        except Exception:  # no source (a .pyc only), unreadable file, odd loader
            source = None
        if isinstance(source, str):
            return source
    if spec.origin and spec.origin.endswith(".py"):
        try:
            with open(spec.origin, encoding="utf-8") as fh:
                return fh.read()
        except (OSError, UnicodeDecodeError):
            return None
    return None


def docstring_summary(source: str, qualname: str) -> str | None:
    """The first line of the docstring of ``qualname`` (``func`` or ``Class.method``).

    Only definitions written in ``source`` are found: a name assigned or imported
    there has no docstring to read.
    """
    # Parsing a whole module costs milliseconds per plugin on every `chatcore --help`,
    # so the cheapest text is tried first: the definition up to its first
    # triple-quoted string (usually its docstring). A cut that lands anywhere else
    # fails to parse or finds no docstring, so only an answer from it is trusted;
    # then the whole definition, then the module.
    path = qualname.split(".")
    excerpt = _top_level_excerpt(source, path[0])
    if excerpt is not None:
        cut = _through_first_long_string(excerpt)
        tree = _parse(cut) if cut is not None else None
        summary = _first_line(_find(tree, path)) if tree is not None else None
        if summary is not None:
            return summary
        tree = _parse(excerpt)
        node = _find(tree, path) if tree is not None else None
        if node is not None:
            return _first_line(node)
    tree = _parse(source)
    return _first_line(_find(tree, path)) if tree is not None else None


def _through_first_long_string(excerpt: str) -> str | None:
    # str.find, not a regular expression: compiling one costs `--help` more than the search.
    opens = [(at, quote) for quote in ('"""', "'''") if (at := excerpt.find(quote)) >= 0]
    if not opens:
        return None
    at, quote = min(opens)
    closed = excerpt.find(quote, at + 3)
    return excerpt[: closed + 3] if closed >= 0 else None


_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _top_level_excerpt(source: str, name: str) -> str | None:
    """The lines of the one top-level ``def``/``class`` of ``name``, if it is alone.

    It ends before the next line that starts in column 0 (a comment or a closing
    bracket of a long signature aside). Should that line belong to a string, the
    excerpt does not parse and the caller parses the whole module.
    """
    starts = _definition_starts(source, name)
    if len(starts) != 1:
        return None
    newline = source.find("\n", starts[0])
    while newline >= 0:
        following = source[newline + 1 : newline + 2]
        if following and not following.isspace() and following not in "#)]":
            return source[starts[0] : newline + 1]
        newline = source.find("\n", newline + 1)
    return source[starts[0] :]


def _definition_starts(source: str, name: str) -> list[int]:
    """Where ``def name``, ``async def name`` or ``class name`` starts a line.

    Plain ``str.find``: a regular expression over a long module costs more here.
    An unusual spelling (``def  name``) is not found, and the caller parses the module.
    """
    starts = []
    for keyword in ("def ", "async def ", "class "):
        needle = keyword + name
        at = source.find(needle)
        while at >= 0:
            after = source[at + len(needle) : at + len(needle) + 1]
            if (at == 0 or source[at - 1] == "\n") and not (after.isalnum() or after == "_"):
                starts.append(at)
            at = source.find(needle, at + len(needle))
    return sorted(starts)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _find(tree: ast.Module, path: list[str]) -> _Definition | None:
    body: list[ast.stmt] = tree.body
    node: _Definition | None = None
    for part in path:
        node = None
        for statement in body:
            if isinstance(statement, _Definition) and statement.name == part:
                node = statement  # the last definition wins, as at import time
        if node is None:
            return None
        body = node.body
    return node


def _first_line(node: _Definition | None) -> str | None:
    doc = ast.get_docstring(node) if node is not None else None
    if not doc or not doc.strip():
        return None
    return doc.strip().splitlines()[0].strip()


def summary_of(module: str, qualname: str) -> str | None:
    """The summary of ``module:qualname`` read from source, or None when it can't be."""
    source = _module_source(module)
    return None if source is None else docstring_summary(source, qualname)
