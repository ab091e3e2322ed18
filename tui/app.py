"""The chatcore terminal app: Textual on asyncio, the engine on Trio in guest mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from tui.bridge import EngineBridge, EngineFailed, EngineReady
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen
from tui.screens.plugins import PluginsScreen

if TYPE_CHECKING:
    from collections.abc import Iterable

    from chatcore import Config, Message

__all__ = ["ChatcoreApp", "run_tui"]


class BackendSwitcher(ModalScreen[str | None]):
    """Pick the backend for the next turns: name, plugin and model of each configured one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="cancel_switch")
    ]

    def __init__(self, config: Config, current: str) -> None:
        super().__init__()
        self.config = config
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="switcher"):
            yield Label("Switch backend")
            options = []
            for name, backend in self.config.backends.items():
                mark = "● " if name == self.current else "  "
                model = backend.model or "default model"
                options.append(Option(f"{mark}{name}  ({backend.plugin}, {model})", id=name))
            yield OptionList(*options, id="backends")

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ChatcoreApp(App[None]):
    """Chat on any configured backend; see what the middleware is doing."""

    CSS_PATH = "chatcore.tcss"
    TITLE = "chatcore"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_chat", "New chat", id="new_chat"),
        Binding("ctrl+b", "switch_backend", "Backend", id="switch_backend"),
        Binding("ctrl+y", "copy_reply", "Copy reply", id="copy_reply"),
        Binding("f2", "plugins", "Plugins", id="plugins"),
        Binding("f1", "help", "Help", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self, config: Config, *, backend: str | None = None, conversation: str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.backend = backend or config.default_backend
        self.initial_conversation = conversation
        self.bridge = EngineBridge(self, config)
        self.last_reply: Message | None = None
        self.keys: dict[str, str] = dict(config.tui.keys)
        """Action id → key(s) from `[tui.keys]`; the footer and help follow it."""
        self.chat = ChatScreen()

    # -- lifecycle --------------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.config.tui.theme:
            self.theme = self.config.tui.theme
        if self.keys:
            self.set_keymap(self.keys)
        self.push_screen(self.chat)
        self.bridge.start()

    def on_engine_ready(self, event: EngineReady) -> None:
        self.chat.engine_ready()
        if self.initial_conversation:
            self.chat.open_conversation(self.initial_conversation)
        self.chat.check_default_backend()

    async def on_engine_failed(self, event: EngineFailed) -> None:
        await self.chat.show_notice(event.error)

    async def action_quit(self) -> None:
        await self.bridge.stop()  # in-flight replies are saved as partial
        self.exit()

    async def on_unmount(self) -> None:
        # However the app ends (quit, an error, a test harness), Trio must finish
        # before the asyncio loop does: one Trio run per thread.
        await self.bridge.stop()

    # -- actions ----------------------------------------------------------------------------

    async def action_new_chat(self) -> None:
        await self.chat.new_chat()

    def action_switch_backend(self) -> None:
        def switched(name: str | None) -> None:
            if name:
                self.backend = name
                self.chat.refresh_status()
                self.notify(f"Now on {name}")
                self.chat.check_default_backend()

        self.push_screen(BackendSwitcher(self.config, self.backend), switched)

    def action_copy_reply(self) -> None:
        if self.last_reply is None:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(self.last_reply.content)
        self.notify("Copied the last reply.")

    def action_plugins(self) -> None:
        if not isinstance(self.screen, PluginsScreen):
            self.push_screen(PluginsScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def backend_model(self, name: str) -> str | None:
        backend = self.config.backends.get(name)
        if backend is None:
            return None
        return backend.model or ("echo" if backend.plugin == "echo" else None)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New chat", "Start a new conversation", self.action_new_chat)
        yield SystemCommand(
            "Switch backend", "Choose the backend for the next turns", self.action_switch_backend
        )
        yield SystemCommand("Plugins", "Plugins and backends, live", self.action_plugins)
        yield SystemCommand("Copy last reply", "To the clipboard", self.action_copy_reply)
        yield SystemCommand("Help", "Keys and actions", self.action_help)


def run_tui(config: Config, *, backend: str | None = None, conversation: str | None = None) -> None:
    ChatcoreApp(config, backend=backend, conversation=conversation).run()
