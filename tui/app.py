"""The chatcore terminal app: Textual on asyncio, the engine on Trio in guest mode."""

from __future__ import annotations

import asyncio
import difflib
import gc
import signal
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message as UIMessage
from textual.widgets import TextArea

from tui.bridge import EngineBridge, EngineFailed, EngineReady
from tui.keys import unusable_keys
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen, key_rows
from tui.screens.plugins import PluginsScreen

# The dialogs are re-exported: the help screen lists the screens of the app's module.
from tui.widgets.dialogs import BackendSwitcher, ConfirmDialog, TextPrompt
from tui.widgets.status import StatusBar, sync_text

if TYPE_CHECKING:
    from collections.abc import Iterable

    from textual.notifications import SeverityLevel
    from textual.screen import Screen

    from chatcore import Config, Message
    from chatcore.replication import SyncStatus

__all__ = [
    "BackendSwitcher",
    "ChatcoreApp",
    "ConfirmDialog",
    "SyncUpdated",
    "TextPrompt",
    "run_tui",
    "theme_names",
    "unknown_theme",
]

EXIT_TERMINATED = 128 + signal.SIGTERM
"""143, as `chatcore ask` exits on SIGTERM, after the app has stopped like on Ctrl-Q."""

SYNC_REFRESH_SECONDS = 1.0
"""How often the status bar reads the replication state and outbox depth."""


@dataclass
class SyncUpdated(UIMessage):
    """Replication status, read inside the engine's Trio run, for the status bar."""

    status: SyncStatus | None


GC_THRESHOLDS = (20_000, 10, 10)
"""Collector thresholds while the app runs. A frame allocates thousands of short-lived
objects that reference counting frees; at Python's default of 700 allocations per
young collection, survivors of half-drawn frames are promoted and every few seconds
a full collection pauses the screen."""


def theme_names() -> list[str]:
    """The themes ``[tui] theme`` may name: Textual's built-in ones (the app adds none)."""
    from textual.theme import BUILTIN_THEMES

    return sorted(BUILTIN_THEMES)


def unknown_theme(config: Config) -> str | None:
    """Why ``[tui] theme`` can't be used (file, key, the themes there are), or None if it can."""
    from chatcore.errors import ConfigError

    theme = config.tui.theme
    names = theme_names()
    if not theme or theme in names:
        return None
    close = difflib.get_close_matches(theme, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    problem = f"unknown theme {theme!r}{hint} (themes: {', '.join(names)})"
    return str(ConfigError(config.file_for(("tui", "theme")), "tui.theme", problem))


class ChatcoreApp(App[None]):
    """Chat on any configured backend; see what the middleware is doing."""

    CSS_PATH = "chatcore.tcss"
    TITLE = "chatcore"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_chat", "New chat", id="new_chat"),
        Binding("ctrl+b", "switch_backend", "Backend", id="switch_backend"),
        # Priority: the prompt (a TextArea) would otherwise take ctrl+y as "redo". Not in
        # the footer: a priority binding takes the place of the key it overrides there
        # (first), and 80 columns don't hold one more; the palette and help list it.
        Binding("ctrl+y", "copy_reply", "Copy reply", id="copy_reply", priority=True, show=False),
        Binding("f2", "plugins", "Plugins", id="plugins"),
        Binding("f1", "help", "Help", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
        # Ctrl-C stops a streaming reply first, then quits as in any terminal program,
        # unless there is a selection to copy.
        Binding(
            "ctrl+c",
            "copy_or_quit",
            "Stop reply, or quit",
            id="copy_or_quit",
            show=False,
            priority=True,
        ),
    ]

    def __init__(
        self, config: Config, *, backend: str | None = None, conversation: str | None = None
    ) -> None:
        super().__init__()
        self._gc_thresholds: tuple[int, int, int] | None = None
        """The collector's thresholds before the app changed them; restored on unmount."""
        self.config = config
        self.backend = backend or config.default_backend
        self.initial_conversation = conversation
        self.bridge = EngineBridge(self, config)
        self.engine_error: str | None = None
        self.last_reply: Message | None = None
        self.keys: dict[str, str] = dict(config.tui.keys)
        """Action id → key(s) from `[tui.keys]` that are bound; the footer and help follow it."""
        self._refused_keys = unusable_keys(self.keys, [*self.BINDINGS, *ChatScreen.BINDINGS])
        """Why entries of `[tui.keys]` were left out of ``keys``, warned once the chat shows."""
        for binding_id in self._refused_keys:
            del self.keys[binding_id]
        self.chat = ChatScreen(self.bridge)
        self.terminated = False
        """SIGTERM ended the app (`run_tui` then exits with `EXIT_TERMINATED`)."""

    # -- lifecycle --------------------------------------------------------------------------

    def on_mount(self) -> None:
        # An unknown theme would raise out of on_mount and end the app before its first
        # frame; the default theme serves instead, and the notice says what to fix.
        problem = unknown_theme(self.config)
        if problem is not None:
            self._warn(f"{problem}; using {self.theme} instead.")
        elif self.config.tui.theme:
            self.theme = self.config.tui.theme
        if self.keys:
            self.set_keymap(self.keys)
        self.push_screen(self.chat)  # it calls check_keys once its widgets are there
        # `kill`, systemd and docker send SIGTERM: quit as Ctrl-Q does (the reply in
        # flight is stored as partial, the terminal restored) instead of dying mid-frame.
        # Off the main thread or on Windows asyncio has no signal handlers: then none.
        with suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._sigterm)
        # The first frame comes first; the engine starts right after it.
        self.call_after_refresh(self.bridge.start)

    def on_engine_ready(self, event: EngineReady) -> None:
        # Everything imported and built so far lives as long as the app: keep the
        # collector from rescanning it. A full collection over Textual's and the
        # engine's objects took up to ~120 ms, a stall in the middle of a stream.
        if self._gc_thresholds is None:
            self._gc_thresholds = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        self.chat.engine_ready()
        if self.initial_conversation:
            self.chat.open_conversation(self.initial_conversation)
        self.chat.check_backend()
        engine = self.bridge.engine
        # Fail closed, and say so at once: no message is sent while one of these stays.
        for failure in engine.plugins.load_failures() if engine is not None else []:
            self.call_later(self.chat.show_notice, failure, advice="plugins")
        if engine is not None and engine.replicator is not None:
            self.refresh_sync()
            self.set_interval(SYNC_REFRESH_SECONDS, self.refresh_sync)

    def refresh_sync(self) -> None:
        """Ask the engine for the replication status; it comes back as ``SyncUpdated``."""
        engine = self.bridge.engine
        if engine is None or engine.replicator is None:
            return
        self.bridge.call(lambda: self.post_message(SyncUpdated(engine.sync_status())))

    def on_sync_updated(self, event: SyncUpdated) -> None:
        if event.status is not None:
            self.chat.query_one(StatusBar).sync = sync_text(event.status)

    async def on_engine_failed(self, event: EngineFailed) -> None:
        self.engine_error = event.error
        await self.chat.show_notice(event.error, advice="restart")

    def _sigterm(self) -> None:
        self.terminated = True
        self.call_later(self.action_quit)

    async def on_unmount(self) -> None:
        with suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        # However the app ends (quit, an error, a test harness), the engine closes and keeps
        # replies in flight, and Trio finishes before the asyncio loop: one run per thread.
        await self.bridge.stop()
        if self._gc_thresholds is not None:
            # The process may go on (a test run, a script): leave the collector as found.
            gc.set_threshold(*self._gc_thresholds)
            gc.unfreeze()
            self._gc_thresholds = None

    async def action_quit(self) -> None:
        await self.bridge.stop()  # in-flight replies are saved as partial
        self.exit()

    async def action_copy_or_quit(self) -> None:
        focused = self.focused
        if isinstance(focused, TextArea) and focused.selected_text:
            self.copy_to_clipboard(focused.selected_text)
            return
        if self.chat.streaming:
            self.chat.action_stop_reply()
            return
        await self.action_quit()

    def check_keys(self) -> None:
        """Warn about ``[tui.keys]`` entries that can't work as written (once the chat's
        widgets exist, every action id is known): an id that names no action rebinds
        nothing (a typo), and a key the message box uses was refused on mount."""
        known = {row.id for row in key_rows(self)}
        unknown = sorted(set(self.keys) - known)
        if unknown:
            self._warn(
                f"[tui.keys] has no action {', '.join(map(repr, unknown))}; "
                f"{self.key_for('help')} lists the action ids."
            )
        for text in self._refused_keys.values():
            self._warn(text)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A toast; plain text unless asked (messages quote "[replication]", titles...)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def _warn(self, text: str) -> None:
        self.notify(text, severity="warning", markup=False, timeout=10)

    # -- actions ----------------------------------------------------------------------------

    async def action_new_chat(self) -> None:
        await self.chat.new_chat()

    def action_switch_backend(self) -> None:
        def switched(name: str | None) -> None:
            if name and name != self.backend:
                self.backend = name
                self.chat.refresh_status()
                self.notify(f"Now on {name}")
                self.chat.check_backend()

        readiness = self.chat.check_readiness()
        self.push_screen(BackendSwitcher(self.config, self.backend, readiness), switched)

    def action_rename_conversation(self) -> None:
        self.chat.action_rename_conversation()

    def action_delete_conversation(self) -> None:
        self.chat.action_delete_conversation()

    def action_export_conversation(self) -> None:
        self.chat.action_export_conversation()

    def action_add_documents(self) -> None:
        self.chat.action_add_documents()

    def action_sync_now(self) -> None:
        engine = self.bridge.engine
        if engine is None:
            self.notify(self.engine_unavailable(), severity="warning")
            return
        if engine.replicator is None:
            self.notify(
                "Replication is off: set [replication] redis_url in the config to sync.",
                severity="warning",
            )
            return
        self.bridge.call(engine.sync_now)
        self.notify("Syncing now.")
        self.refresh_sync()

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

    # -- helpers for the screens ------------------------------------------------------------

    def backend_model(self, name: str) -> str | None:
        backend = self.config.backends.get(name)
        if backend is None:
            return None
        return backend.model or ("echo" if backend.plugin == "echo" else None)

    def key_for(self, binding_id: str) -> str:
        """The key that runs ``binding_id`` now (``[tui.keys]`` first), for hints in the UI."""
        if binding_id in self.keys:
            return self.keys[binding_id].split(",")[0].strip()
        for row in key_rows(self):
            if row.id == binding_id:
                return row.key.split(",")[0].strip()
        return binding_id

    @property
    def engine_starting(self) -> bool:
        """The engine is on its way up: not ready yet, not failed, not stopped."""
        return self.engine_error is None and self.bridge.engine is None and self.bridge.starting

    def engine_unavailable(self) -> str:
        """Why a turn can't be sent now."""
        if self.engine_error is not None:
            return f"The engine is not running ({self.engine_error}); restart chatcore."
        if self.bridge.engine is None and self.bridge.running:
            return "The engine is still starting."
        return "The engine is not running; restart chatcore."

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every action of the app, for the command palette (ctrl+p)."""
        yield SystemCommand("New chat", "Start a new conversation", self.action_new_chat)
        yield SystemCommand(
            "Switch backend", "Choose the backend for the next turns", self.action_switch_backend
        )
        yield SystemCommand(
            "Rename conversation",
            "Give the open (or highlighted) conversation a new title",
            self.action_rename_conversation,
        )
        yield SystemCommand(
            "Delete conversation",
            "Delete the open (or highlighted) conversation, after asking",
            self.action_delete_conversation,
        )
        yield SystemCommand(
            "Export to Markdown",
            "Write the conversation to a .md file under the data folder",
            self.action_export_conversation,
        )
        yield SystemCommand(
            "Add documents to RAG",
            "Index files or a folder so replies can cite them (needs the rag plugin)",
            self.action_add_documents,
        )
        yield SystemCommand(
            "Sync now",
            "Push pending history to Redis and pull other devices' changes now",
            self.action_sync_now,
        )
        yield SystemCommand("Plugins", "Plugins and backends, live", self.action_plugins)
        yield SystemCommand("Help", "Keys and actions", self.action_help)
        yield SystemCommand("Copy last reply", "To the clipboard", self.action_copy_reply)
        yield SystemCommand(
            "Quit", "Stop the engine (a reply in flight is kept) and exit", self.action_quit
        )
        # Textual's own (theme, screenshot...), without its second "Quit" and its "Keys"
        # panel: Help lists every key, of every screen, with the ids [tui.keys] takes.
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys"):
                yield command


def run_tui(config: Config, *, backend: str | None = None, conversation: str | None = None) -> None:
    app = ChatcoreApp(config, backend=backend, conversation=conversation)
    app.run()
    if app.terminated:
        raise SystemExit(EXIT_TERMINATED)
