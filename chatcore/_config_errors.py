"""Turning pydantic's validation errors into one message a person can act on.

The message names the file, the dotted key (``backends.openai.timeout_seconds``)
and what was expected; an unknown key gets the closest allowed name as a hint.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import TYPE_CHECKING, Any

from ._config_schema import NAME_HINT, model_at
from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

    from pydantic import BaseModel, ValidationError


class KeyedError(ValueError):
    """A validator's complaint about a specific key below the model that raised it."""

    def __init__(self, loc: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.loc = loc


_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def dotted(loc: tuple[Any, ...]) -> str:
    """A pydantic location as a TOML-style key: ``plugins[0].config.patterns[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if not _PLAIN_KEY_RE.match(text):
            text = json.dumps(text)  # TOML-style quoting for keys such as "gpt.4o"
        out += f".{text}" if out else text
    return out


def show_value(value: Any) -> str:
    """A value as an error message quotes it: short, and tables/lists by kind."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(
    root: type[BaseModel], loc: tuple[Any, ...], also_allowed: Sequence[str] = ()
) -> str:
    model = model_at(root, loc[:-1])
    if model is None:
        return "unknown key"
    allowed = list(model.model_fields)
    if len(loc) == 1 and also_allowed:
        allowed = [*also_allowed, *(name for name in allowed if name not in also_allowed)]
    if not allowed:  # only a plugin's settings model has no fields at all
        return "unknown key (this plugin takes no settings)"
    # Also compare with each name's first word, so "timout" finds "timeout_seconds".
    candidates = {name.split("_")[0]: name for name in reversed(allowed)}
    candidates.update({name: name for name in allowed})
    close = difflib.get_close_matches(str(loc[-1]), list(candidates), n=1)
    hint = f"; did you mean {candidates[close[0]]!r}?" if close else ""
    return f"unknown key{hint} (allowed: {', '.join(allowed)})"


_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "list_type": "a list",
    "path_type": "a path (a string)",
    "string_too_short": "a non-empty string",
}


_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("of at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("of at most", "le"),
}


def _describe(
    error: Mapping[str, Any],
    loc: tuple[Any, ...],
    root: type[BaseModel],
    also_allowed: Sequence[str] = (),
) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = show_value(error.get("input"))
    if kind == "missing":
        return "required key missing"
    if kind == "extra_forbidden":
        return _unknown_key(root, loc, also_allowed)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind in _BOUNDS:
        words, bound = _BOUNDS[kind]
        limit = ctx.get(bound)
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # "greater than 0" reads better than "greater than 0.0"
        return f"expected a number {words} {limit}, got {got}"
    if kind == "string_pattern_mismatch":
        if loc and loc[-1] == "[key]":
            return f"invalid backend name {error.get('input')!r}; {NAME_HINT}"
        if loc and loc[-1] == "name":
            return f"invalid name {error.get('input')!r}; {NAME_HINT}"
        return f"expected text matching {ctx.get('pattern')}, got {got}"
    if kind == "value_error":
        return str(ctx.get("error") or error["msg"])
    message = str(error["msg"])
    return f"{message[:1].lower()}{message[1:]}, got {got}"


def _file_position(raw: Any, loc: tuple[Any, ...]) -> tuple[int, ...]:
    """Where a key sits in the parsed file (parsers keep order), for sorting errors."""
    position: list[int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            position.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            position.append(part)
            node = node[part]
        else:
            position.append(1 << 30)  # absent from the file (missing key, default value)
            break
    return tuple(position)


def file_of(files: Mapping[tuple[Any, ...], Path], loc: tuple[Any, ...]) -> Path | None:
    """The file that wrote ``loc``, or the nearest table around it (lists replace whole)."""
    for end in range(len(loc), 0, -1):
        file = files.get(loc[:end])
        if file is not None:
            return file
    return None


def flat_items(value: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Each leaf of JSON-like data with its location; empty tables and lists are leaves."""
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from flat_items(inner, (*loc, key))
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for index, inner in enumerate(value):
            yield from flat_items(inner, (*loc, index))
    else:
        yield loc, value


def translate(
    exc: ValidationError,
    *,
    root: type[BaseModel],
    path: Path | None,
    origins: Mapping[str, str],
    raw: Any,
    files: Mapping[tuple[Any, ...], Path] | None = None,
    prefix: str = "",
    also_allowed: Sequence[str] = (),
) -> ConfigError:
    """One :class:`ConfigError` for all of pydantic's complaints, first in file order.

    Args:
        exc: What validating ``raw`` against ``root`` raised.
        root: The model ``raw`` was validated against (unknown keys list its fields).
        path: The file ``raw`` came from, if any.
        origins: Top-level key -> where its value came from (``$CHATCORE_BACKEND``, ...).
        raw: The data as parsed, for the order of the keys in the file.
        files: Key -> the file that wrote it, when several files were layered; a
            problem is then put on the file its value came from.
        prefix: The dotted key of the table ``raw`` is (``plugins[1].config``), put
            before every key named.
        also_allowed: Keys allowed at the top of ``raw`` beyond ``root``'s fields (a
            backend table's common keys, beside its plugin's own).
    """
    found: list[tuple[tuple[int, ...], str, str, Path | None]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        problem = _describe(error, loc, root, also_allowed)
        inner = (error.get("ctx") or {}).get("error")
        if isinstance(inner, KeyedError):
            loc = (*loc, *inner.loc)
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
        if loc and str(loc[0]) in origins:
            problem += f" (from {origins[str(loc[0])]})"
        file = (file_of(files, loc) if files else None) or path
        key = dotted(loc)
        if prefix:
            key = f"{prefix}{key if key.startswith('[') or not key else '.' + key}"
        found.append((_file_position(raw, loc), key, problem, file))
    found.sort(key=lambda item: item[0])
    _, key, problem, first_file = found[0]
    rest = [
        f"{k}: {p}" + (f" (in {f})" if f != first_file and f is not None else "")
        for _, k, p, f in found[1:]
    ]
    if rest:
        problem = "; ".join([problem, *rest])
    return ConfigError(first_file, key, problem)
