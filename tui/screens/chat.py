"""The chat screen: conversations on the left, the streaming log, the prompt, the status bar.

The screen renders and reacts. What it asks of the engine goes through its
``ChatSession`` (``tui/session.py``), whose Trio tasks answer by posting the
messages handled here; the UI changes only in those handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message as UIMessage
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static

from chatcore import Role
from chatcore._generation import TOKENS_ESTIMATED
from chatcore.errors import StoreFull
from tui.session import (
    Advice,
    BackendNotReady,
    BackendReadiness,
    ChatSession,
    ContentMatches,
    ConversationDeleted,
    ConversationExported,
    ConversationOpened,
    ConversationRenamed,
    ConversationsLoaded,
    Level,
    Notice,
    ReplyChunk,
    ReplyDone,
    TurnStarted,
    describe_error,
)
from tui.widgets.conversations import ConversationList, plain_title
from tui.widgets.dialogs import BackendSwitcher, ConfirmDialog, TextPrompt
from tui.widgets.message import EarlierMessages, MessageView, NoticeView
from tui.widgets.prompt import PromptInput
from tui.widgets.status import StatusBar, tokens_text

if TYPE_CHECKING:
    from textual.app import ComposeResult
    from textual.notifications import SeverityLevel

    from chatcore import ConversationSummary, Message
    from tui.app import ChatcoreApp
    from tui.bridge import EngineBridge

__all__ = ["MESSAGES_SHOWN", "NEW_TITLE", "ChatScreen", "MessageView"]

MESSAGES_SHOWN = 20
"""Messages rendered when a stored conversation opens; older ones are summarised."""
NEW_TITLE = "New conversation"
NOT_READY = "-not-ready"
"""Class of a "backend is not ready" notice, which goes once a backend answers."""
PROMPT_PLACEHOLDER = "Message · Enter sends · Shift+Enter new line"


# --- the screen ----------------------------------------------------------------------------------


@dataclass
class _Queued(UIMessage):
    """A message typed before the engine was up, going out now."""

    text: str


@dataclass
class _TurnState:
    key: int
    view: MessageView
    text: str = ""
    """What the user sent: put back in the box if it could not be stored."""
    user_view: MessageView | None = None


@dataclass
class _ScreenState:
    """What the UI knows; engine objects stay on the Trio side."""

    conversation_id: str | None = None
    title: str = NEW_TITLE
    turn: _TurnState | None = None
    turns: int = 0
    summaries: list[ConversationSummary] = field(default_factory=list)
    earlier: list[Message] = field(default_factory=list)
    """Messages of the open conversation not rendered yet, oldest first."""
    readiness: dict[str, str] = field(default_factory=dict)
    """Backend name → how ready it was when last asked ("ready", "no key"...)."""
    said: frozenset[str] = frozenset()
    """Conversations whose messages match the filter as ``said_query`` was typed."""
    said_query: str = ""
    queued: list[str] = field(default_factory=list)
    """Messages sent while the engine was still starting; they go out once it is ready."""


class ChatScreen(Screen[None]):
    """Where people chat."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop_reply", "Stop reply", id="stop_reply"),
        Binding(
            "ctrl+r",
            "rename_conversation",
            "Rename conversation",
            id="rename_conversation",
            show=False,
        ),
        Binding(
            "ctrl+s",
            "export_conversation",
            "Export to Markdown",
            id="export_conversation",
            show=False,
        ),
        Binding(
            "ctrl+o",
            "add_documents",
            "Add documents to RAG",
            id="add_documents",
            show=False,
        ),
    ]

    def __init__(self, bridge: EngineBridge) -> None:
        super().__init__()
        self.state = _ScreenState()
        self.session = ChatSession(bridge, self.post_message)

    @property
    def chat_app(self) -> ChatcoreApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                # Not select_on_focus: typing on the list moves here and goes on typing.
                yield Input(placeholder="filter conversations", id="filter", select_on_focus=False)
                yield ConversationList(id="conversations")
            with Vertical(id="main"):
                yield Static(NEW_TITLE, id="title", markup=False)
                yield VerticalScroll(id="log")
                yield PromptInput(id="prompt", placeholder=PROMPT_PLACEHOLDER)
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        # Anchored, the log follows new text to its end without a scroll per chunk,
        # and lets go as soon as someone scrolls up to read.
        self.query_one("#log", VerticalScroll).anchor()
        self.query_one(PromptInput).focus()
        self.refresh_status()
        # Now that the widgets (and their bindings) exist, every action id is known.
        self.chat_app.check_keys()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A toast, plain text: it quotes titles and config tables ("[draft]")."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_reply" and self.state.turn is None:
            return None  # shown greyed out: there is nothing to stop
        return True

    # -- UI side: requests ------------------------------------------------------------------

    def engine_ready(self) -> None:
        self.session.load_conversations()
        self._send_queued()

    def _send_queued(self) -> None:
        if self.state.queued and self.state.turn is None:
            self.post_message(_Queued(self.state.queued.pop(0)))

    def check_backend(self) -> None:
        """Say in the chat when the current backend can't be reached, and what to do."""
        self.session.check_backend(self.chat_app.backend)

    def check_readiness(self) -> dict[str, str]:
        """Ask every configured backend how ready it is (answers go to the switcher if it
        is open); return what is known so far."""
        self.session.check_readiness(list(self.chat_app.config.backends))
        return dict(self.state.readiness)

    def on_backend_readiness(self, event: BackendReadiness) -> None:
        self.state.readiness[event.backend] = event.state
        if isinstance(self.app.screen, BackendSwitcher):
            self.app.screen.set_readiness(event.backend, event.state)

    async def on_backend_not_ready(self, event: BackendNotReady) -> None:
        # Stale as soon as a backend answers (removed then): see on_reply_done.
        await self.show_notice(event.text, level=event.level, advice=event.advice, not_ready=True)

    @on(PromptInput.Submitted)
    async def submitted(self, event: PromptInput.Submitted) -> None:
        prompt = self.query_one(PromptInput)
        if self.state.turn is not None:
            # Kept in the box, to send with Enter once the reply is over.
            stop = self.chat_app.key_for("stop_reply")
            self.notify(
                f"A reply is still arriving: {stop} stops it; your message waits in the box.",
                severity="warning",
            )
            return
        if self.chat_app.bridge.engine is None:
            if self.chat_app.engine_starting:
                # Typed before the engine was up (it starts after the first frame).
                self.state.queued.append(event.text)
                prompt.taken(event.text)
                self.notify("The engine is starting; your message goes out when it is ready.")
                return
            self.notify(self.chat_app.engine_unavailable(), severity="warning")
            return
        if self.chat_app.bridge.engine.plugins.load_failures():
            # Fail closed: the engine would refuse it; keep it in the box for later.
            plugins = self.chat_app.key_for("plugins")
            self.notify(
                f"Not sent: a plugin failed to load (see above). Fix its entry, or pause it "
                f"on the plugins screen ({plugins}); your message waits in the box.",
                severity="error",
            )
            return
        prompt.taken(event.text)
        await self.send(event.text)

    @on(_Queued)
    async def queued_ready(self, event: _Queued) -> None:
        await self.send(event.text)

    async def send(self, text: str) -> None:
        """Start a turn with ``text``: show it and the reply as it streams."""
        log = self.query_one("#log", VerticalScroll)
        view = MessageView(Role.ASSISTANT, streaming=True)
        user_view = MessageView(Role.USER, text)
        await log.mount_all([user_view, view])
        log.scroll_end(animate=False)
        self.state.turns += 1
        self._set_turn(_TurnState(self.state.turns, view, text, user_view))
        self.session.send(
            self.state.turns,
            self.state.conversation_id,
            text,
            self.chat_app.backend,
        )

    def _set_turn(self, turn: _TurnState | None) -> None:
        """The turn whose reply streams now (None: nothing streams); the footer and the
        status bar's "generating…" follow it."""
        self.state.turn = turn
        self.query_one(StatusBar).generating = turn is not None
        self.refresh_bindings()

    @property
    def streaming(self) -> bool:
        """A reply is arriving in the open conversation."""
        return self.state.turn is not None

    def action_stop_reply(self) -> None:
        if self.state.turn is not None:
            self.session.stop(self.state.turn.key)

    def open_conversation(self, conversation_id: str) -> None:
        self.session.open(conversation_id)

    @on(OptionList.OptionSelected, "#conversations")
    def conversation_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.open_conversation(event.option.id)

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        self._show_conversations()  # titles at once, what was said when the search answers
        self._search_content()

    def _search_content(self) -> None:
        query = self.query_one("#filter", Input).value
        if query.strip() and self.chat_app.bridge.engine is not None:
            self.session.search(query)

    def on_content_matches(self, event: ContentMatches) -> None:
        if event.query == self.query_one("#filter", Input).value:
            self.state.said, self.state.said_query = event.conversation_ids, event.query
            self._show_conversations()

    @on(ConversationList.Typed)
    def typed_on_the_list(self, event: ConversationList.Typed) -> None:
        search = self.query_one("#filter", Input)
        search.value += event.character
        search.cursor_position = len(search.value)
        search.focus()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        """Enter in the filter opens the first match."""
        shown = self.query_one(ConversationList).shown_ids
        if shown:
            self.open_conversation(shown[0])

    async def new_chat(self) -> None:
        self.action_stop_reply()
        self.state.conversation_id = None
        self._set_turn(None)
        self._set_title(NEW_TITLE)
        self.chat_app.last_reply = None
        await self.query_one("#log", VerticalScroll).remove_children()
        self.query_one(ConversationList).highlighted = None
        self.query_one(PromptInput).focus()

    def _target(self) -> tuple[str, str] | None:
        """The conversation an action applies to: the highlighted one while the list has
        focus, else the open one."""
        listing = self.query_one(ConversationList)
        if self.focused is listing and listing.highlighted_id is not None:
            wanted = listing.highlighted_id
        elif self.state.conversation_id is not None:
            wanted = self.state.conversation_id
        else:
            self.notify("No conversation yet: send a message first.", severity="warning")
            return None
        summary = next((s for s in self.state.summaries if s.id == wanted), None)
        if summary is None:
            self.notify("This conversation is not saved yet.", severity="warning")
            return None
        return summary.id, summary.title

    def action_rename_conversation(self) -> None:
        target = self._target()
        if target is None:
            return
        conversation_id, title = target

        def renamed(new_title: str | None) -> None:
            if new_title is not None and new_title.strip() and new_title.strip() != title:
                self.session.rename(conversation_id, new_title)

        self.app.push_screen(
            TextPrompt("Rename conversation", title, placeholder="a title"), renamed
        )

    def action_delete_conversation(self) -> None:
        target = self._target()
        if target is None:
            return
        conversation_id, title = target
        if self.state.turn is not None and conversation_id == self.state.conversation_id:
            stop = self.chat_app.key_for("stop_reply")
            self.notify(f"A reply is still arriving: {stop} stops it first.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.session.delete(conversation_id, title)

        self.app.push_screen(
            ConfirmDialog(f"Delete “{title}” and all its messages?", confirm_label="Delete"),
            confirmed,
        )

    def action_export_conversation(self) -> None:
        target = self._target()
        if target is not None:
            self.session.export(target[0])

    def action_add_documents(self) -> None:
        self.session.want_documents()  # a path is asked for only if the rag plugin is there

    def on_documents_wanted(self) -> None:
        def chosen(path: str | None) -> None:
            if path is not None and path.strip():
                self.session.add_documents(Path(path.strip()).expanduser())

        self.app.push_screen(
            TextPrompt("Add documents to RAG", "", placeholder="a file or folder"), chosen
        )

    # -- UI side: what the engine said ------------------------------------------------------

    def on_turn_started(self, event: TurnStarted) -> None:
        turn = self.state.turn
        if turn is not None and turn.key == event.turn:
            self.state.conversation_id = event.conversation_id

    async def on_reply_chunk(self, event: ReplyChunk) -> None:
        turn = self.state.turn
        text = event.streamed.take()
        if turn is None or turn.key != event.turn or not text:
            return
        await turn.view.append(text)

    async def on_reply_done(self, event: ReplyDone) -> None:
        turn = self.state.turn
        if turn is None or turn.key != event.turn:
            return
        self._set_turn(None)
        message = event.message
        await turn.view.finish(str(message.status) if message is not None else None)
        if event.error is not None and not turn.view.text:
            await turn.view.remove()  # nothing was said: the notice tells what happened
        if message is not None and event.error is None and message.content:
            # A backend answered: warnings that one was not ready are out of date.
            for stale in self.query(f".{NOT_READY}"):
                await stale.remove()
        if message is not None:
            if turn.view.is_attached:
                await turn.view.show_citations(message.metadata.get("citations"))
            await self._reply_stored(message)
        if isinstance(event.error, StoreFull):
            await self._not_stored(turn, event.error)
        elif event.error is not None:
            text, advice = describe_error(event.error)
            await self.show_notice(text, advice=advice)
        self._send_queued()

    async def _not_stored(self, turn: _TurnState, error: StoreFull) -> None:
        """Nothing of the turn was saved: take it out of the log, give the text back."""
        for view in (turn.user_view, turn.view):
            if view is not None and view.is_attached:
                await view.remove()
        prompt = self.query_one(PromptInput)
        kept = "your message is back in the box"
        if prompt.text.strip():  # typed on meanwhile: don't overwrite it
            kept = "your message was not saved"
        else:
            prompt.text = turn.text
        await self.show_notice(f"{error}; {kept}")

    async def _reply_stored(self, message: Message) -> None:
        if message.content:
            self.chat_app.last_reply = message
        status = self.query_one(StatusBar)
        if message.tokens_in is not None or message.tokens_out is not None:
            status.tokens = tokens_text(
                message.tokens_in,
                message.tokens_out,
                estimated=bool(message.metadata.get(TOKENS_ESTIMATED)),
            )
        if message.model:
            status.model = message.model
        answered_by = message.metadata.get("answered_by")
        if answered_by:  # a plugin answered instead of the backend: most often, it blocked
            await self.show_notice(
                f"This reply came from the plugin {answered_by!r}, not from a model: "
                "your message did not reach the backend. If it was blocked by mistake, "
                "rephrase it, or pause the plugin on the plugins screen.",
                level="warning",
                advice="plugins",
            )

    async def on_notice(self, event: Notice) -> None:
        await self.show_notice(event.text, level=event.level, advice=event.advice)

    async def show_notice(
        self,
        text: str,
        *,
        level: Level = "error",
        advice: Advice | None = None,
        not_ready: bool = False,
    ) -> None:
        """Put a line from chatcore itself into the log, with what to do about it."""
        if advice is not None:
            text = f"{text}\n→ {self._advice_text(advice)}"
        log = self.query_one("#log", VerticalScroll)
        notice = NoticeView(text, level=level)
        if not_ready:
            notice.add_class(NOT_READY)
        await log.mount(notice)
        log.scroll_end(animate=False)

    def _advice_text(self, advice: Advice) -> str:
        app = self.chat_app
        if advice == "switch_backend":
            others = [name for name in app.config.backends if name != app.backend]
            choices = f" (also configured: {', '.join(others)})" if others else ""
            return f"{app.key_for('switch_backend')} switches backend{choices}"
        if advice == "plugins":
            return f"{app.key_for('plugins')} shows the plugins (pause, resume, reset circuit)"
        return f"restart chatcore ({app.key_for('quit')} quits)"

    def on_conversations_loaded(self, event: ConversationsLoaded) -> None:
        self.state.summaries = event.summaries
        current = next((s for s in event.summaries if s.id == self.state.conversation_id), None)
        if current is not None:
            self._set_title(current.title)
        self._show_conversations()
        self._search_content()  # a new turn may match the filter now

    def _show_conversations(self) -> None:
        listing = self.query_one(ConversationList)
        # Someone moving through the list keeps their place when it refreshes.
        keep = listing.highlighted_id if self.focused is listing else None
        query = self.query_one("#filter", Input).value
        said = self.state.said if self.state.said_query == query else frozenset()
        listing.show(
            self.state.summaries, query, current=keep or self.state.conversation_id, said=said
        )

    async def on_conversation_opened(self, event: ConversationOpened) -> None:
        if self.state.turn is not None:
            self.action_stop_reply()  # it goes on being saved; we stop showing it
            self._set_turn(None)
        self.state.conversation_id = event.conversation_id
        self._set_title(event.title)
        app = self.chat_app
        if event.backend in app.config.backends and event.backend != app.backend:
            # A conversation continues on the backend it is on, as `ask -c` does.
            app.backend = event.backend
            self.refresh_status()
        self.query_one(ConversationList).select_id(event.conversation_id)
        replies = [m for m in event.messages if m.role is Role.ASSISTANT and m.content]
        self.chat_app.last_reply = replies[-1] if replies else None
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        # A page of the newest messages renders at once; older pages on request,
        # since each rendered message costs Textual several widgets to lay out.
        self.state.earlier = list(event.messages)
        await self._show_earlier(log)
        log.anchor()
        self.query_one(PromptInput).focus()

    async def _show_earlier(self, log: VerticalScroll) -> None:
        page = self.state.earlier[-MESSAGES_SHOWN:]
        del self.state.earlier[-MESSAGES_SHOWN:]
        views: list[Any] = [
            MessageView(
                m.role,
                m.content,
                status=str(m.status),
                # A failed turn stores its error as the reply's text: say it once.
                note=None if m.content == m.metadata.get("error") else m.metadata.get("error"),
                citations=m.metadata.get("citations"),
            )
            for m in page
        ]
        if self.state.earlier:
            views.insert(0, EarlierMessages(len(self.state.earlier)))
        for old in log.query(EarlierMessages):
            await old.remove()
        if log.children:
            await log.mount_all(views, before=0)
        else:
            await log.mount_all(views)

    @on(EarlierMessages.Requested)
    async def earlier_requested(self) -> None:
        await self._show_earlier(self.query_one("#log", VerticalScroll))

    def on_conversation_renamed(self, event: ConversationRenamed) -> None:
        if event.conversation_id == self.state.conversation_id:
            self._set_title(event.title)
        self.notify(f"Renamed to “{event.title}”.")

    async def on_conversation_deleted(self, event: ConversationDeleted) -> None:
        if event.conversation_id == self.state.conversation_id:
            await self.new_chat()
        self.notify(f"Deleted “{event.title}”.")

    def on_conversation_exported(self, event: ConversationExported) -> None:
        self.notify(f"Exported to {event.path}", timeout=8)

    # -- small UI pieces ----------------------------------------------------------------------

    def _set_title(self, title: str) -> None:
        self.state.title = title
        self.query_one("#title", Static).update(plain_title(title))

    def refresh_status(self) -> None:
        status = self.query_one(StatusBar)
        status.backend = self.chat_app.backend
        status.model = self.chat_app.backend_model(self.chat_app.backend) or ""

    @on(StatusBar.BackendClicked)
    def backend_clicked(self) -> None:
        self.chat_app.action_switch_backend()
