"""The help screen: every action with its key, as configured."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

if TYPE_CHECKING:
    from textual.app import ComposeResult

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen[None]):
    """Keys and actions; `[tui.keys]` in the config rebinds them by action id."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close", id="close_help")
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Label("Keys  (rebind in [tui.keys] by action id)")
            yield DataTable(id="keys", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "action", "id")
        seen: set[str] = set()
        bindings = [
            *self.app.BINDINGS,
            *getattr(self.app.screen_stack[0], "BINDINGS", ()),
        ]
        for screen in self.app.screen_stack:
            bindings.extend(getattr(screen, "BINDINGS", ()))
        for binding in bindings:
            if not isinstance(binding, Binding) or not binding.id or binding.id in seen:
                continue
            seen.add(binding.id)
            key = (
                self.app._keymap.get(binding.id, binding.key)
                if hasattr(self.app, "_keymap")
                else binding.key
            )
            table.add_row(key, binding.description, binding.id)
