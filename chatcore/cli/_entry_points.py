"""Commands that installed distributions add through the ``chatcore.commands`` group.

An entry ``name = "module:function"`` adds ``chatcore name``; the function takes no
arguments and returns a click command. Listing the commands reads only the
distributions' metadata and the function's docstring (see ``_summary``): a
plugin's module is imported when its command runs, never for ``chatcore --help``.

Clashes are settled the same way every time: a built-in command wins over any
entry of its name; among entries of one name, chatcore's own wins, then the
distribution whose name sorts first. Every entry set aside is reported, so a
user learns why a plugin's command is missing.

The entries are read straight from the ``*.dist-info`` and ``*.egg-info``
folders on ``sys.path`` (``installed_entries``), the way ``importlib.metadata``
finds them, first distribution of a name winning: importing
``importlib.metadata`` (``email``, ``zipfile``, ``csv``) would cost
``chatcore --help`` about 25 ms, half its run. Distributions inside zip files on
``sys.path`` are not looked at; nobody installs a chatcore plugin that way.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from ._summary import summary_of

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping

__all__ = [
    "COMMANDS_GROUP",
    "CORE_DISTRIBUTION",
    "CommandTable",
    "EntryCommand",
    "IgnoredEntry",
    "discover_commands",
    "installed_entries",
]

COMMANDS_GROUP = "chatcore.commands"
CORE_DISTRIBUTION = "chatcore"


# NamedTuples, not dataclasses: `chatcore --help` builds these classes on every run, and
# a frozen dataclass costs about 0.5 ms to create.
class EntryCommand(NamedTuple):
    """One ``chatcore.commands`` entry: a command not imported yet."""

    name: str
    value: str
    module: str
    attr: str | None
    distribution: str
    version: str | None

    @property
    def origin(self) -> str:
        """Where the command comes from, for messages: the entry and its distribution."""
        dist = f"{self.distribution} {self.version}" if self.version else self.distribution
        return f"entry point {self.name} = {self.value} of {dist}"

    def summary(self) -> str:
        """The first line of the function's docstring, read without importing it."""
        found = summary_of(self.module, self.attr) if self.attr else None
        return found or f"A command from {self.distribution}."

    def load(self) -> click.Command:
        """Import the module and call the function.

        Raises:
            click.ClickException: One line naming the entry point and its
                distribution, whatever went wrong (import, call, return value).
        """
        import importlib

        if self.attr is None:
            raise self._failure("it names a module, not module:function")
        try:
            function: Any = importlib.import_module(self.module)
            for part in self.attr.split("."):
                function = getattr(function, part)
            command = function()
        except Exception as exc:
            raise self._failure(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(command, click.Command):
            raise self._failure(f"{self.value} returned {type(command).__name__}, not a command")
        command.name = self.name
        return command

    def _failure(self, reason: str) -> click.ClickException:
        reason = " ".join(reason.split())  # one line, whatever the exception printed
        return click.ClickException(
            f"the {self.name!r} command cannot be loaded ({self.origin}): {reason}"
        )


class IgnoredEntry(NamedTuple):
    """An entry set aside because another command of its name comes first."""

    entry: EntryCommand
    reason: str

    @property
    def warning(self) -> str:
        """The line ``chatcore --help`` prints about it."""
        return f"ignoring the {self.entry.name!r} command ({self.entry.origin}): {self.reason}"


class CommandTable(NamedTuple):
    """The entry-point commands in use, by name, and those set aside."""

    commands: Mapping[str, EntryCommand]
    ignored: tuple[IgnoredEntry, ...]


def _precedence(entry: EntryCommand) -> tuple[bool, str, str]:
    return (entry.distribution != CORE_DISTRIBUTION, entry.distribution.lower(), entry.value)


def discover_commands(builtin: Collection[str]) -> CommandTable:
    """Read the ``chatcore.commands`` entries of every installed distribution.

    Args:
        builtin: Names of chatcore's own click commands; an entry never replaces one.
    """
    found = sorted(installed_entries(COMMANDS_GROUP), key=_precedence)
    commands: dict[str, EntryCommand] = {}
    ignored: list[IgnoredEntry] = []
    for entry in found:
        if entry.name in builtin:
            reason = "chatcore has a built-in command of that name"
            ignored.append(IgnoredEntry(entry, reason))
        elif entry.name in commands:
            winner = commands[entry.name]
            reason = f"{winner.origin} comes first"
            ignored.append(IgnoredEntry(entry, reason))
        else:
            commands[entry.name] = entry
    return CommandTable(commands=commands, ignored=tuple(ignored))


_METADATA_FILES = {".dist-info": "METADATA", ".egg-info": "PKG-INFO"}
_SUFFIXES = tuple(_METADATA_FILES)


def installed_entries(group: str, path: Iterable[str] | None = None) -> list[EntryCommand]:
    """The entries of ``group`` of every distribution installed on ``path`` (``sys.path``).

    A distribution found twice (a name normalised as pip does) counts once, where
    it is found first; an entry whose value is not ``module:attr`` syntax is left
    out, as ``importlib.metadata`` leaves it unloadable.
    """
    seen: set[str] = set()
    entries: list[EntryCommand] = []
    for folder, suffix in _distribution_folders(sys.path if path is None else path):
        key = _normalized(_name_from_folder(folder, suffix))
        if key in seen:
            continue
        seen.add(key)
        entry_points = os.path.join(folder, "entry_points.txt")
        # Most distributions have no entry points: a stat is cheaper than a failed open.
        text = _read(entry_points) if os.path.isfile(entry_points) else None
        if text is None or f"[{group}]" not in text:
            continue
        headers = _metadata_headers(_read(os.path.join(folder, _METADATA_FILES[suffix])))
        name = headers.get("name") or _name_from_folder(folder, suffix)
        for entry_name, value in _entries_of(text, group):
            target = _module_and_attr(value)
            if target is not None:
                module, attr = target
                entries.append(
                    EntryCommand(entry_name, value, module, attr, name, headers.get("version"))
                )
    return entries


# No regular expressions below: compiling them would cost `chatcore --help` more than
# the scan itself.


def _normalized(name: str) -> str:
    """A distribution name as pip compares them: case and runs of ``-_.`` don't matter."""
    return "-".join(
        part for part in name.lower().replace("_", "-").replace(".", "-").split("-") if part
    )


def _module_and_attr(value: str) -> tuple[str, str | None] | None:
    """``(module, attr)`` of an entry's ``module:attr [extras]`` value, None if malformed."""
    target = value.partition("[")[0]
    module, colon, attr = (part.strip() for part in target.partition(":"))
    dotted = [module, attr] if colon else [module]
    if not all(part.isidentifier() for name in dotted for part in name.split(".")):
        return None
    return module, (attr if colon else None)


def _distribution_folders(path: Iterable[str]) -> Iterator[tuple[str, str]]:
    for entry in path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, or gone: nothing to list
            continue
        for name in sorted(name for name in names if name.endswith(_SUFFIXES)):
            suffix = ".dist-info" if name.endswith(".dist-info") else ".egg-info"
            yield os.path.join(entry or ".", name), suffix


def _read(file: str) -> str | None:
    try:
        with open(file, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _metadata_headers(text: str | None) -> dict[str, str]:
    """``name`` and ``version`` from the header block of a METADATA (or PKG-INFO) file."""
    headers: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        field, sep, value = line.partition(":")
        if sep and field.lower() in ("name", "version"):
            headers.setdefault(field.lower(), value.strip())
    return headers


def _name_from_folder(folder: str, suffix: str) -> str:
    return os.path.basename(folder)[: -len(suffix)].partition("-")[0]


def _entries_of(text: str, group: str) -> Iterator[tuple[str, str]]:
    """``(name, value)`` of each entry in ``group`` of an ``entry_points.txt``."""
    in_group = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            in_group = line[1:-1].strip() == group
        elif in_group:
            name, sep, value = line.partition("=")
            if sep:
                yield name.strip(), value.strip()
