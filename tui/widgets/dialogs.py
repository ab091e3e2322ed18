"""Small modal dialogs: pick a backend, type a line of text, confirm a deletion."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from collections.abc import Mapping

    from textual.app import ComposeResult

    from chatcore import Config

__all__ = ["BackendSwitcher", "ConfirmDialog", "TextPrompt"]


class BackendSwitcher(ModalScreen[str | None]):
    """Pick the backend for the next turns: name, plugin, model and readiness of each."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="cancel_switch")
    ]

    def __init__(
        self, config: Config, current: str, readiness: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.current = current
        self.readiness = dict(readiness or {})
        """Backend name → "ready", "no key", "unreachable"...; "checking…" until known."""

    def _prompt(self, name: str) -> str:
        backend = self.config.backends[name]
        mark = "● " if name == self.current else "  "
        model = backend.model or "default model"
        state = self.readiness.get(name, "checking…")
        return f"{mark}{name}  ({backend.plugin}, {model})  {state}"

    def compose(self) -> ComposeResult:
        with Vertical(id="switcher", classes="dialog"):
            yield Label("Switch backend")
            options = [Option(self._prompt(name), id=name) for name in self.config.backends]
            yield OptionList(*options, id="backends", markup=False)

    def set_readiness(self, name: str, state: str) -> None:
        """Show how ready ``name`` is, as its check answered."""
        if name not in self.config.backends:
            return
        self.readiness[name] = state
        self.query_one("#backends", OptionList).replace_option_prompt(name, self._prompt(name))

    def on_mount(self) -> None:
        backends = self.query_one("#backends", OptionList)
        if self.current in self.config.backends:
            backends.highlighted = backends.get_option_index(self.current)
        backends.focus()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text; Enter accepts, Escape cancels (returns None)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="cancel_prompt")
    ]

    def __init__(self, title: str, value: str = "", *, placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="text-prompt", classes="dialog"):
            yield Label(self.title_text, markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="answer", select_on_focus=True)
            yield Label("Enter saves · Escape cancels", classes="hint")

    @on(Input.Submitted, "#answer")
    def accepted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; ``y`` or the button confirms, ``n`` or Escape declines."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "dismiss(True)", "Yes", id="confirm_yes"),
        Binding("n,escape", "dismiss(False)", "No", id="confirm_no"),
    ]

    def __init__(self, question: str, *, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm", classes="dialog"):
            yield Label(self.question, markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, variant="error", id="yes")
                yield Button("Cancel", id="no")
            yield Label("y confirms · n or Escape cancels", classes="hint")

    def on_mount(self) -> None:
        # Enter on the focused button should be the safe answer.
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def answered(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
