"""Commands that installed distributions add through the ``chatcore.commands`` group.

An entry ``name = "module:function"`` adds ``chatcore name``; the function takes no
arguments and returns a click command. Listing the commands reads only the
distributions' metadata and the function's docstring (see ``_summary``): a
plugin's module is imported when its command runs, never for ``chatcore --help``.

Clashes are settled the same way every time: a built-in command wins over any
entry of its name; among entries of one name, chatcore's own wins, then the
distribution whose name sorts first. Every entry set aside is reported, so a
user learns why a plugin's command is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from ._summary import summary_of

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from importlib.metadata import EntryPoint

__all__ = [
    "COMMANDS_GROUP",
    "CORE_DISTRIBUTION",
    "CommandTable",
    "EntryCommand",
    "IgnoredEntry",
    "discover_commands",
]

COMMANDS_GROUP = "chatcore.commands"
CORE_DISTRIBUTION = "chatcore"
UNKNOWN_DISTRIBUTION = "an unknown distribution"


@dataclass(frozen=True)
class EntryCommand:
    """One ``chatcore.commands`` entry: a command not imported yet."""

    name: str
    value: str
    module: str
    attr: str | None
    distribution: str
    version: str | None

    @classmethod
    def from_entry_point(cls, entry_point: EntryPoint) -> EntryCommand:
        """Describe ``entry_point`` (its value is parsed, nothing is imported)."""
        dist = entry_point.dist
        return cls(
            name=entry_point.name,
            value=entry_point.value,
            module=entry_point.module,
            attr=entry_point.attr or None,
            distribution=dist.name if dist is not None else UNKNOWN_DISTRIBUTION,
            version=dist.version if dist is not None else None,
        )

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
        from importlib.metadata import EntryPoint

        if self.attr is None:
            raise self._failure("it names a module, not module:function")
        entry_point = EntryPoint(name=self.name, value=self.value, group=COMMANDS_GROUP)
        try:
            function = entry_point.load()
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


@dataclass(frozen=True)
class IgnoredEntry:
    """An entry set aside because another command of its name comes first."""

    entry: EntryCommand
    reason: str

    @property
    def warning(self) -> str:
        """The line ``chatcore --help`` prints about it."""
        return f"ignoring the {self.entry.name!r} command ({self.entry.origin}): {self.reason}"


@dataclass(frozen=True)
class CommandTable:
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
    from importlib.metadata import entry_points

    found = sorted(
        (EntryCommand.from_entry_point(ep) for ep in entry_points(group=COMMANDS_GROUP)),
        key=_precedence,
    )
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
