"""The chat screen: conversations on the left, the streaming log, the prompt, the status bar."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message as UIMessage
from textual.screen import Screen
from textual.widgets import Footer, Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from chatcore import ChatcoreError, MessageStatus, Role
from tui.widgets.prompt import PromptInput
from tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from textual.app import ComposeResult
    from textual.widgets.markdown import MarkdownStream

    from chatcore import Conversation, Message, ReplyStream
    from chatcore.store import ConversationSummary
    from tui.app import ChatcoreApp

__all__ = ["MESSAGES_SHOWN", "ChatScreen", "MessageView"]

MESSAGES_SHOWN = 200
"""Messages rendered when a stored conversation opens; older ones are summarised."""


# --- messages from the engine side ------------------------------------------------------------


@dataclass
class ConversationsLoaded(UIMessage):
    summaries: list[ConversationSummary]


@dataclass
class ConversationOpened(UIMessage):
    conversation_id: str
    title: str
    messages: list[Message]


@dataclass
class ReplyChunk(UIMessage):
    turn: int
    text: str


@dataclass
class ReplyDone(UIMessage):
    turn: int
    message: Message | None
    error: str | None = None


@dataclass
class Notice(UIMessage):
    text: str
    error: bool = True


# --- widgets ------------------------------------------------------------------------------------


class MessageView(Vertical):
    """One message: a role line and its Markdown body (streamed while it arrives)."""

    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 0 1 0; }
    MessageView > .role { color: $text-muted; text-style: bold; }
    MessageView.-user > .role { color: $accent; }
    MessageView > .flag { color: $warning; }
    MessageView > Markdown { margin: 0; padding: 0 0 0 2; }
    """

    def __init__(self, role: Role | str, text: str = "", *, status: str | None = None) -> None:
        super().__init__(classes=f"-{Role(role).value}")
        self.role = Role(role)
        self.text = text
        self.status = status
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Static("you" if self.role is Role.USER else str(self.role), classes="role")
        yield Markdown(self.text)
        if self.status and self.status != MessageStatus.COMPLETE:
            yield Static(f"[{self.status}]", classes="flag")

    async def append(self, fragment: str) -> None:
        self.text += fragment
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        await self._stream.write(fragment)

    async def finish(self, status: str | None) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if status and status != MessageStatus.COMPLETE:
            self.status = status
            await self.mount(Static(f"[{status}]", classes="flag"))


@dataclass
class _TurnState:
    key: int
    view: MessageView
    reply: ReplyStream | None = None


@dataclass
class _ScreenState:
    conversation: Conversation | None = None
    title: str = "New conversation"
    turn: _TurnState | None = None
    turns: int = 0
    summaries: list[ConversationSummary] = field(default_factory=list)


class ChatScreen(Screen[None]):
    """Where people chat."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop_reply", "Stop reply", id="stop_reply")
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state = _ScreenState()

    @property
    def chat_app(self) -> ChatcoreApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Input(placeholder="filter conversations", id="filter")
                yield OptionList(id="conversations")
            with Vertical(id="main"):
                yield VerticalScroll(id="log")
                yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PromptInput).focus()
        self.refresh_status()

    # -- engine-side tasks (run on Trio through the bridge) -------------------------------

    async def _load_conversations(self) -> None:
        engine = self.chat_app.bridge.engine
        if engine is None:
            return
        self.post_message(ConversationsLoaded(await engine.list_conversations()))

    async def _open(self, conversation_id: str) -> None:
        engine = self.chat_app.bridge.engine
        if engine is None:
            return
        try:
            conversation = engine.conversation(conversation_id)
            messages = await conversation.messages()
        except ChatcoreError as exc:
            self.post_message(Notice(str(exc)))
            return
        self.state.conversation = conversation
        summary = next((s for s in self.state.summaries if s.id == conversation_id), None)
        title = summary.title if summary else conversation_id
        self.post_message(ConversationOpened(conversation_id, title, messages))

    async def _run_turn(self, key: int, text: str) -> None:
        engine = self.chat_app.bridge.engine
        if engine is None:
            return
        if self.state.conversation is None:
            self.state.conversation = engine.conversation()
        backend = self.chat_app.backend
        reply: ReplyStream | None = None
        try:
            reply = self.state.conversation.stream(text, backend=backend)
            if self.state.turn is not None and self.state.turn.key == key:
                self.state.turn.reply = reply
            async with reply:
                async for chunk in reply:
                    if chunk.text:
                        self.post_message(ReplyChunk(key, chunk.text))
            self.post_message(ReplyDone(key, reply.message))
        except ChatcoreError as exc:
            notes = "".join(f"; {n}" for n in getattr(exc, "__notes__", ()))
            message = reply.message if reply is not None else None
            self.post_message(ReplyDone(key, message, f"{exc}{notes}"))
        await self._load_conversations()

    # -- UI side ------------------------------------------------------------------------------

    def engine_ready(self) -> None:
        self.chat_app.bridge.spawn(self._load_conversations)

    @on(PromptInput.Submitted)
    async def send(self, event: PromptInput.Submitted) -> None:
        if self.state.turn is not None:
            self.notify("A reply is still arriving: Escape stops it.", severity="warning")
            return
        if self.chat_app.bridge.engine is None:
            self.notify("The engine is still starting.", severity="warning")
            return
        log = self.query_one("#log", VerticalScroll)
        await log.mount(MessageView(Role.USER, event.text))
        view = MessageView(Role.ASSISTANT)
        await log.mount(view)
        log.scroll_end(animate=False)
        self.state.turns += 1
        self.state.turn = _TurnState(self.state.turns, view)
        self.chat_app.bridge.spawn(self._run_turn, self.state.turns, event.text)

    async def on_reply_chunk(self, event: ReplyChunk) -> None:
        turn = self.state.turn
        if turn is None or turn.key != event.turn:
            return
        await turn.view.append(event.text)
        self.query_one("#log", VerticalScroll).scroll_end(animate=False)

    async def on_reply_done(self, event: ReplyDone) -> None:
        turn = self.state.turn
        if turn is None or turn.key != event.turn:
            return
        self.state.turn = None
        message = event.message
        await turn.view.finish(str(message.status) if message is not None else None)
        if message is not None and not message.content and event.error:
            await turn.view.remove()
        if message is not None:
            self.chat_app.last_reply = message
            if message.tokens_in is not None or message.tokens_out is not None:
                status = self.query_one(StatusBar)
                status.tokens = (
                    f"tokens {message.tokens_in or 0} in / {message.tokens_out or 0} out"
                )
            if message.model:
                self.query_one(StatusBar).model = message.model
        if event.error:
            await self.show_notice(event.error)

    async def on_notice(self, event: Notice) -> None:
        await self.show_notice(event.text, error=event.error)

    async def show_notice(self, text: str, *, error: bool = True) -> None:
        hint = "  (ctrl+b switches backend)" if error else ""
        notice = Static(f"{text}{hint}", classes="notice -error" if error else "notice")
        log = self.query_one("#log", VerticalScroll)
        await log.mount(notice)
        log.scroll_end(animate=False)

    def on_conversations_loaded(self, event: ConversationsLoaded) -> None:
        self.state.summaries = event.summaries
        self._show_conversations()

    def _show_conversations(self) -> None:
        wanted = self.query_one("#filter", Input).value.strip().lower()
        options = [
            Option(s.title, id=s.id)
            for s in self.state.summaries
            if not wanted or wanted in s.title.lower()
        ]
        listing = self.query_one("#conversations", OptionList)
        listing.clear_options()
        listing.add_options(options)

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        self._show_conversations()

    @on(OptionList.OptionSelected, "#conversations")
    def conversation_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.open_conversation(event.option.id)

    def open_conversation(self, conversation_id: str) -> None:
        self.chat_app.bridge.spawn(self._open, conversation_id)

    async def on_conversation_opened(self, event: ConversationOpened) -> None:
        self.state.title = event.title
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        hidden = len(event.messages) - MESSAGES_SHOWN
        views: list[Any] = []
        if hidden > 0:
            views.append(Static(f"… {hidden} earlier messages", classes="notice"))
        views.extend(
            MessageView(m.role, m.content, status=str(m.status))
            for m in event.messages[-MESSAGES_SHOWN:]
        )
        await log.mount_all(views)
        log.scroll_end(animate=False)
        self.query_one(PromptInput).focus()

    async def new_chat(self) -> None:
        self.action_stop_reply()
        self.state.conversation = None
        self.state.turn = None
        self.state.title = "New conversation"
        await self.query_one("#log", VerticalScroll).remove_children()
        self.query_one(PromptInput).focus()

    def action_stop_reply(self) -> None:
        turn = self.state.turn
        if turn is not None and turn.reply is not None:
            self.chat_app.bridge.call(turn.reply.cancel)

    def refresh_status(self) -> None:
        status = self.query_one(StatusBar)
        status.backend = self.chat_app.backend
        status.model = self.chat_app.backend_model(self.chat_app.backend) or ""

    @on(StatusBar.BackendClicked)
    def backend_clicked(self) -> None:
        self.chat_app.action_switch_backend()

    @work(exclusive=True, group="health")
    async def check_default_backend(self) -> None:
        """Say in the chat when the backend can't be reached, and what to do."""
        self.chat_app.bridge.spawn(self._health, self.chat_app.backend)

    async def _health(self, backend: str) -> None:
        engine = self.chat_app.bridge.engine
        if engine is None:
            return
        try:
            await engine.plugins.ensure_backend(backend)
            report = await engine.plugins.get_backend_provider(backend).health()
        except ChatcoreError as exc:
            self.post_message(Notice(str(exc)))
            return
        if not report.get("ok", True):
            detail = report.get("detail") or f"{backend} is not reachable"
            self.post_message(Notice(str(detail)))
