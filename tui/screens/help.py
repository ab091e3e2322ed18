"""The help screen: every action with its key as bound now, and the id that rebinds it.

Textual has no public getter for the active keymap, so the keymap is the app's
``keys`` (what it handed to ``App.set_keymap``), and each key is worked out
with Textual's own ``BindingsMap.apply_keymap``, the function Textual applies
to every binding chain: a rebound or clashing key shows here as it behaves.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingsMap, BindingType, InvalidBinding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Label

from tui.screens.chat import ChatScreen
from tui.screens.plugins import PluginsScreen

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from typing import Any

    from textual.app import App, ComposeResult
    from textual.dom import DOMNode

__all__ = ["EVERYWHERE", "HelpScreen", "KeyRow", "key_rows"]

EVERYWHERE = "everywhere"
"""The ``where`` of the app's own bindings."""

UNBOUND = "—"
"""Shown for an action whose key was taken by another one in ``[tui.keys]``."""


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One action: its key(s) now, what it does, its binding id, and where it works."""

    key: str
    description: str
    id: str
    where: str


def key_rows(app: App[Any]) -> list[KeyRow]:
    """Every action with an id, app-wide first, then each screen's (mounted or not)."""
    keymap = _normalized(getattr(app, "keys", None) or {})
    rows: list[KeyRow] = []
    seen: set[str] = set()

    def add(where: str, classes: Iterable[type[DOMNode]]) -> None:
        for cls in classes:
            for row in _class_rows(cls, keymap, where):
                if row.id not in seen:
                    seen.add(row.id)
                    rows.append(row)

    add(EVERYWHERE, [type(app)])
    if app.ENABLE_COMMAND_PALETTE:
        # Textual adds this binding itself, without an id: it can't be rebound by keymap.
        rows.append(KeyRow(app.COMMAND_PALETTE_BINDING, "Command palette", "", EVERYWHERE))
    mounted = {type(screen): screen for screen in app.screen_stack}
    for screen_class in _screen_classes(app):
        widgets: list[type[DOMNode]] = []
        screen = mounted.get(screen_class)
        if screen is not None:
            # Widgets may bring bindings of their own; only mounted screens have widgets.
            widgets = list(dict.fromkeys(type(w) for w in screen.walk_children()))
        add(_where(screen_class), [screen_class, *widgets])
    return rows


def _screen_classes(app: App[Any]) -> list[type[Screen[Any]]]:
    """The app's screens: known ones, those its module defines or imports, and the stack."""
    found: list[type[Screen[Any]]] = [ChatScreen, PluginsScreen]
    app_modules = dict.fromkeys(cls.__module__ for cls in type(app).__mro__ if not _is_textual(cls))
    for module_name in app_modules:
        module = sys.modules.get(module_name)
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, type) and issubclass(value, Screen) and not _is_textual(value):
                found.append(value)
    found.extend(type(screen) for screen in app.screen_stack)
    found = [cls for cls in dict.fromkeys(found) if cls is not HelpScreen]
    return [*found, HelpScreen]


def _is_textual(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("textual", "builtins")


def _class_rows(cls: type[DOMNode], keymap: Mapping[str, str], where: str) -> Iterator[KeyRow]:
    bindings = _merged(cls)
    declared: dict[str, Binding] = {}
    for _, binding in bindings:
        if binding.id:
            declared.setdefault(binding.id, binding)
    if not declared:
        return
    if keymap:
        bindings.apply_keymap(keymap)
    keys: dict[str, list[str]] = {}
    for key, binding in bindings:
        if binding.id:
            keys.setdefault(binding.id, []).append(key)
    for binding_id, binding in declared.items():
        key = ", ".join(dict.fromkeys(keys.get(binding_id, ()))) or UNBOUND
        yield KeyRow(key, binding.description or binding.action, binding_id, where)


def _merged(cls: type[DOMNode]) -> BindingsMap:
    """A class's bindings with its bases', a subclass's binding of a key replacing the base's."""
    keys: dict[str, list[Binding]] = {}
    for base in reversed(cls.__mro__):
        own: list[BindingType] = base.__dict__.get("BINDINGS", [])
        for key, key_bindings in BindingsMap(own).key_to_bindings.items():
            keys[key] = key_bindings
    return BindingsMap.from_keys(keys)


def _normalized(keymap: Mapping[str, str]) -> dict[str, str]:
    """Keys spelled the way Textual stores them ("?" → "question_mark"), as set_keymap does."""
    result = {}
    for binding_id, value in keymap.items():
        try:
            keys = [b.key for b in Binding.make_bindings([Binding(value, "noop")])]
        except InvalidBinding:
            keys = [value]
        result[binding_id] = ",".join(keys)
    return result


def _where(cls: type[DOMNode]) -> str:
    """A section name: ChatScreen is "chat", BackendSwitcher "backend switcher"."""
    name = cls.__name__.removesuffix("Screen") or cls.__name__
    return " ".join(re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", name)).lower()


class HelpScreen(ModalScreen[None]):
    """Keys and actions; `[tui.keys]` in the config rebinds them by action id."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > #help {
        width: auto;
        max-width: 90%;
        height: auto;
        max-height: 90%;
        padding: 0 1;
        border: round $accent;
        background: $surface;
    }
    HelpScreen #help-title {
        color: $text;
        text-style: bold;
    }
    HelpScreen #keys {
        width: auto;
        height: auto;
        /* Room for the title and hints above, on any terminal height; the table scrolls. */
        max-height: 70vh;
        margin: 1 0 0 0;
    }
    HelpScreen .hint {
        color: $text-muted;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close", id="close_help")
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Label("Keys", id="help-title")
            yield Label(
                'Rebind by id in the config: [tui.keys] new_chat = "ctrl+t"',
                classes="hint",
                markup=False,
            )
            yield Label("", id="help-close", classes="hint")
            yield DataTable(id="keys", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#keys", DataTable)
        for column in ("key", "action", "id", "where"):
            table.add_column(column, key=column)
        rows = key_rows(self.app)
        for row in rows:
            # Text, not str: DataTable would read "[...]" in a description as markup.
            table.add_row(
                Text(row.key, style="bold"),
                Text(row.description),
                Text(row.id),
                Text(row.where),
                key=row.id or row.description,
            )
        close = next((r.key for r in rows if r.id == "close_help"), UNBOUND)
        self.query_one("#help-close", Label).update(Text(f"{close} closes this screen"))
        table.focus()
