"""The chat app driven through Textual's Pilot on the real engine (echo backend unless stated)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from helpers import free_port
from textual.containers import VerticalScroll
from textual.widgets import Input, OptionList, Static

import tui.app
from chatcore import Config, Message, MessageStatus, Role, load_config, open_engine
from chatcore.errors import BackendUnavailable
from chatcore.store import Store, TurnRecord
from tui.app import ChatcoreApp
from tui.screens.chat import MESSAGES_SHOWN, ChatScreen, MessageView
from tui.session import describe_error
from tui.widgets.conversations import CONVERSATIONS_SHOWN, ConversationList, plain_title
from tui.widgets.dialogs import BackendSwitcher, ConfirmDialog, TextPrompt
from tui.widgets.message import EarlierMessages, NoticeView
from tui.widgets.prompt import PromptInput
from tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.pilot import Pilot

pytestmark = pytest.mark.asyncio

ECHO = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
SLOW = ECHO + '[backends.slow]\nplugin = "echo"\ndelay_seconds = 0.2\n'
LONG_TEXT = "a b c d e f g h i j"


class RecordingApp(ChatcoreApp):
    """The app, keeping the notifications it shows."""

    # CSS_PATH is relative to the module defining the class: point at the app's own file.
    CSS_PATH = str(Path(tui.app.__file__).with_name("chatcore.tcss"))

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.notes: list[str] = []

    def notify(self, message: str, **kwargs: Any) -> None:
        self.notes.append(message)
        super().notify(message, **kwargs)


async def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def config_from(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "chatcore.toml"
    path.write_text(text)
    return load_config(path)


def conversations(app: ChatcoreApp) -> ConversationList:
    return app.chat.query_one(ConversationList)


def titles(app: ChatcoreApp) -> list[str]:
    return [str(option.prompt) for option in conversations(app).options]


def log_views(app: ChatcoreApp) -> list[tuple[str, str]]:
    return [(v.role.value, v.text) for v in app.chat.query(MessageView)]


def notices(app: ChatcoreApp) -> list[str]:
    return [n.text for n in app.chat.query(NoticeView)]


def flags(app: ChatcoreApp) -> list[str]:
    return [str(flag.render()) for flag in app.chat.query(".flag").results(Static)]


async def started(app: ChatcoreApp) -> None:
    """The engine is up and the conversation list has been read once."""
    await wait_for(lambda: app.bridge.engine is not None)
    await wait_for(lambda: conversations(app).option_count > 0)


async def send(pilot: Pilot[None], text: str) -> None:
    """Type ``text`` in the prompt, send it, and wait until its turn is over."""
    app = pilot.app
    assert isinstance(app, ChatcoreApp)
    before = app.chat.state.turns
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_for(lambda: app.chat.state.turns == before + 1 and app.chat.state.turn is None)


async def seed(config: Config, *talks: list[str]) -> list[str]:
    """Chat through the engine itself (as another run of chatcore would); return the ids."""

    async def run() -> list[str]:
        async with open_engine(config) as engine:
            ids = []
            for texts in talks:
                conversation = engine.conversation()
                for text in texts:
                    await conversation.send(text)
                ids.append(conversation.id)
            return ids

    return await asyncio.to_thread(trio.run, run)


async def stored(config: Config) -> dict[str, tuple[str, list[Message]]]:
    """Every stored conversation: id → (title, messages), read after the app has exited."""

    async def run() -> dict[str, tuple[str, list[Message]]]:
        async with open_engine(config) as engine:
            summaries = await engine.list_conversations()
            return {s.id: (s.title, await engine.conversation(s.id).messages()) for s in summaries}

    return await asyncio.to_thread(trio.run, run)


# --- chatting ------------------------------------------------------------------------------------


async def test_type_send_and_see_the_streamed_reply(data_dir: Path) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await wait_for(lambda: app.bridge.engine is not None)
        await pilot.click("#prompt")
        await pilot.press(*"hello there")
        await pilot.press("enter")
        await wait_for(lambda: app.last_reply is not None)
        assert log_views(app) == [("user", "hello there"), ("assistant", "echo: hello there")]
        await pilot.press("ctrl+q")


def screen_lines(app: ChatcoreApp) -> list[str]:
    """The text of each line on the screen, as a terminal would show it."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


MARKDOWN_PROMPT = "Show me **markdown** and `code`"


async def test_markdown_renders_while_streaming_and_after_and_the_title_is_plain(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, SLOW)
    app = ChatcoreApp(config, backend="slow")
    async with app.run_test(size=(110, 32)) as pilot:
        await started(app)
        await pilot.press(*MARKDOWN_PROMPT, "enter")
        await wait_for(lambda: log_views(app)[-1][1].endswith("`code`"))
        await pilot.pause()
        streamed = [line for line in screen_lines(app) if "echo:" in line]
        assert [line.split("│")[-1].strip() for line in streamed] == [
            "echo: Show me markdown and code"
        ]
        await wait_for(lambda: app.last_reply is not None and bool(app.chat.state.summaries))
        await pilot.pause(0.2)
        shown = [line.split("│")[-1].strip() for line in screen_lines(app)]
        assert "Show me markdown and code" in shown
        assert "echo: Show me markdown and code" in shown
        # The title and the list show what the Markdown says, not its asterisks.
        assert str(app.chat.query_one("#title", Static).render()) == "Show me markdown and code"
        assert titles(app) == ["Show me markdown and code"]
        await pilot.press("ctrl+q")


async def test_ctrl_b_switches_the_backend_for_the_next_reply(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(
        tmp_path, ECHO + '[backends.context]\nplugin = "engine_plugins:ContextBackend"\n'
    )
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await send(pilot, "first")
        await pilot.press("ctrl+b")
        await wait_for(lambda: isinstance(app.screen, BackendSwitcher))
        assert app.screen.query_one(OptionList).highlighted == 0  # the current one, echo
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, ChatScreen))
        assert app.backend == "context"
        assert "backend context" in str(app.chat.query_one("#status").render())
        await send(pilot, "second")
        # The second reply is ContextBackend's, and it saw the first turn (same conversation).
        assert log_views(app)[-1] == (
            "assistant",
            "system=None model=None history=user:first|assistant:echo: first|user:second",
        )
        await pilot.press("ctrl+q")


async def test_a_past_conversation_opens_from_the_list(data_dir: Path) -> None:
    config = load_config(default_backend="echo")
    older, newer = await seed(config, ["about cats", "and dogs"], ["about trains"])
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        assert titles(app) == ["about trains", "about cats"]  # newest first, with titles
        listing = conversations(app)
        listing.focus()
        await wait_for(lambda: app.chat.focused is listing)
        await pilot.press("down")
        assert listing.highlighted_id == newer
        await pilot.press("down", "enter")
        await wait_for(lambda: app.chat.state.conversation_id == older)
        await wait_for(lambda: len(log_views(app)) == 4)
        assert log_views(app) == [
            ("user", "about cats"),
            ("assistant", "echo: about cats"),
            ("user", "and dogs"),
            ("assistant", "echo: and dogs"),
        ]
        assert str(app.chat.query_one("#title", Static).render()) == "about cats"
        # Going on in it adds to the same conversation, which moves to the top.
        app.chat.query_one("#prompt").focus()
        await send(pilot, "and birds")
        await wait_for(lambda: titles(app) == ["about cats", "about trains"])
        await pilot.press("ctrl+q")
    talks = await stored(config)
    assert [m.content for m in talks[older][1]][-2:] == ["and birds", "echo: and birds"]
    assert len(talks[newer][1]) == 2


async def test_a_long_conversation_opens_a_page_at_a_time(data_dir: Path) -> None:
    config = load_config(default_backend="echo")
    (long_one,) = await seed(config, [f"turn {i}" for i in range(25)])  # 50 messages
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        app.chat.open_conversation(long_one)
        await wait_for(lambda: len(log_views(app)) == MESSAGES_SHOWN)
        assert log_views(app)[-1] == ("assistant", "echo: turn 24")
        assert notices(app) == ["… 30 earlier messages (click to show more)"]
        log = app.chat.query_one("#log", VerticalScroll)
        log.scroll_home(animate=False)  # where a reader would go to find it
        await pilot.pause()
        await pilot.click(EarlierMessages)
        await wait_for(lambda: len(log_views(app)) == 2 * MESSAGES_SHOWN)
        assert notices(app) == ["… 10 earlier messages (click to show more)"]
        log.scroll_home(animate=False)
        await pilot.pause()
        await pilot.click(EarlierMessages)
        await wait_for(lambda: len(log_views(app)) == 50)
        assert notices(app) == []
        assert log_views(app)[0] == ("user", "turn 0")
        await pilot.press("ctrl+q")


async def start_slow_reply(pilot: Pilot[None], app: ChatcoreApp) -> None:
    """Send LONG_TEXT on the slow backend and wait until its reply has begun."""
    await started(app)
    await pilot.press(*LONG_TEXT)
    await pilot.press("enter")
    await wait_for(lambda: log_views(app)[-1][1].startswith("echo:"))


async def test_escape_stops_a_slow_reply_and_keeps_it_partial(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, SLOW)
    app = ChatcoreApp(config, backend="slow")
    async with app.run_test() as pilot:
        await start_slow_reply(pilot, app)
        await pilot.press("escape")
        await wait_for(lambda: app.chat.state.turn is None)
        role, shown = log_views(app)[-1]
        assert role == "assistant" and shown.startswith("echo: ")
        assert len(shown) < len("echo: " + LONG_TEXT)
        assert flags(app) == ["[partial]"]
        await pilot.press("ctrl+q")
    ((_, messages),) = (await stored(config)).values()
    reply = messages[-1]
    assert reply.role is Role.ASSISTANT and reply.status is MessageStatus.PARTIAL
    assert reply.content == shown


async def test_quitting_during_a_slow_reply_keeps_it_partial(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, SLOW)
    app = ChatcoreApp(config, backend="slow")
    async with app.run_test() as pilot:
        await start_slow_reply(pilot, app)
        await pilot.press("ctrl+q")
        await wait_for(lambda: not app.bridge.running)
    assert app.return_code == 0
    ((_, messages),) = (await stored(config)).values()
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]
    assert messages[0].content == LONG_TEXT
    assert messages[1].status is MessageStatus.PARTIAL
    assert messages[1].content.startswith("echo: ")


async def test_a_message_typed_while_a_reply_streams_stays_in_the_box(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, SLOW)
    app = RecordingApp(config)
    app.backend = "slow"
    async with app.run_test() as pilot:
        await start_slow_reply(pilot, app)
        await pilot.press(*"my next question", "enter")
        await pilot.pause()
        prompt = app.chat.query_one(PromptInput)
        assert prompt.text == "my next question"  # not thrown away
        assert "A reply is still arriving: escape stops it; your message waits in the box." in (
            app.notes
        )
        await wait_for(lambda: app.chat.state.turn is None)
        assert prompt.text == "my next question"
        await pilot.press("enter")  # now it goes
        await wait_for(lambda: ("user", "my next question") in log_views(app))
        assert prompt.text == ""
        await pilot.press("escape")
        await pilot.press("ctrl+q")


async def test_a_generating_indicator_shows_while_a_reply_streams(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, SLOW)
    app = ChatcoreApp(config, backend="slow")
    async with app.run_test() as pilot:
        await started(app)
        status = app.chat.query_one(StatusBar)
        assert "generating" not in str(status.render())
        await start_slow_reply(pilot, app)
        assert "generating…" in str(status.render())
        await pilot.press("escape")
        await wait_for(lambda: app.chat.state.turn is None)
        assert "generating" not in str(status.render())
        await pilot.press("ctrl+q")


async def test_ctrl_c_stops_a_streaming_reply_first_and_quits_when_nothing_streams(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, SLOW)
    app = ChatcoreApp(config, backend="slow")
    async with app.run_test() as pilot:
        await start_slow_reply(pilot, app)
        await pilot.press("ctrl+c")
        await wait_for(lambda: app.chat.state.turn is None)
        assert flags(app) == ["[partial]"]
        assert app.is_running and app.bridge.running  # stopped the reply, not the app
        await pilot.press("ctrl+c")
        await wait_for(lambda: not app.bridge.running)
    assert app.return_code == 0
    ((_, messages),) = (await stored(config)).values()
    assert messages[-1].status is MessageStatus.PARTIAL


# --- failures are notices, and the app goes on -------------------------------------------------

FAILURES = """
[backends.down]
plugin = "ollama"
host = "http://127.0.0.1:{port}"
model = "llama3.2"
max_retries = 0

[backends.nokey]
plugin = "openai"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"

[backends.failing]
plugin = "engine_plugins:FailingBackend"
max_retries = 0

[[plugins]]
plugin = "engine_plugins:Blocker"
"""


@pytest.mark.parametrize(
    ("backend", "text", "expected", "reply", "flag"),
    [
        pytest.param(
            "down",
            "hello",
            ["down: cannot reach http://127.0.0.1:", "ollama serve", "ctrl+b switches backend"],
            None,  # nothing was said: no empty reply, the notice tells what happened
            None,
            id="unreachable",
        ),
        pytest.param(
            "nokey",
            "hello",
            ["nokey: no API key: set $OPENAI_API_KEY", "ctrl+b switches backend"],
            None,
            None,
            id="auth",
        ),
        pytest.param(
            "failing",
            "hello",
            ["backend 'failing' failed: ConnectionError: connection reset by peer", "ctrl+b"],
            "half a reply",  # what arrived before the failure stays, flagged
            "[partial]",
            id="failed-mid-reply",
        ),
        pytest.param(
            "echo",
            "a forbidden topic",
            ["plugin 'blocker'", "did not reach the backend", "f2 shows the plugins"],
            "I can't help with that.",  # the plugin's answer is the reply
            None,
            id="blocked",
        ),
    ],
)
async def test_a_failed_turn_is_a_notice_and_the_app_stays_usable(
    data_dir: Path,
    tmp_path: Path,
    backend: str,
    text: str,
    expected: list[str],
    reply: str | None,
    flag: str | None,
) -> None:
    app = ChatcoreApp(config_from(tmp_path, ECHO + FAILURES.format(port=free_port())))
    async with app.run_test() as pilot:
        await started(app)
        app.backend = backend
        await send(pilot, text)
        (notice,) = notices(app)
        for fragment in expected:
            assert fragment in notice
        assert "Traceback" not in notice and "unexpected error" not in notice
        said = [("assistant", reply)] if reply is not None else []
        assert log_views(app) == [("user", text), *said]
        assert flags(app) == ([flag] if flag else [])

        app.backend = "echo"
        await send(pilot, "still here?")
        assert log_views(app)[-1] == ("assistant", "echo: still here?")
        await pilot.press("ctrl+q")


async def test_hints_in_the_app_name_keys_not_command_line_flags() -> None:
    said = "ollama: cannot reach http://x; start it with `ollama serve`"
    error = BackendUnavailable(said, backend="a")
    assert error.cli_hint is not None  # the command line's, which the app leaves out
    assert describe_error(error) == (said, "switch_backend")


async def test_with_the_shipped_config_the_chat_says_ollama_is_not_reachable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHATCORE_BACKEND", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{free_port()}")
    config = load_config()
    assert config.default_backend == "ollama"
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await wait_for(lambda: notices(app))
        (notice,) = notices(app)
        assert notice.startswith("Backend ollama is not ready: ollama: cannot reach")
        assert "ollama serve" in notice
        assert "--backend" not in notice  # in the app, the hint is a key
        assert "ctrl+b switches backend (also configured: openai, anthropic, echo)" in notice

        await pilot.press("ctrl+b")
        await wait_for(lambda: isinstance(app.screen, BackendSwitcher))
        backends = app.screen.query_one(OptionList)
        backends.highlighted = backends.get_option_index("echo")
        await pilot.press("enter")
        await wait_for(lambda: app.backend == "echo")
        await send(pilot, "hi")
        assert log_views(app)[-1] == ("assistant", "echo: hi")
        # echo answered: the "not ready" notice is stale and goes, and no other comes.
        await wait_for(lambda: notices(app) == [])
        await pilot.press("ctrl+q")


# --- the conversation list -----------------------------------------------------------------------


async def test_typing_in_the_filter_narrows_the_list_and_enter_opens_the_match(
    data_dir: Path,
) -> None:
    config = load_config(default_backend="echo")
    await seed(config, ["Rust async question"], ["Python packaging"], ["rust borrow checker"])
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await pilot.click("#filter")
        await pilot.press(*"RUST")
        assert titles(app) == ["rust borrow checker", "Rust async question"]
        await pilot.press(*" async")
        assert titles(app) == ["Rust async question"]
        await pilot.press("enter")
        await wait_for(
            lambda: (
                log_views(app)
                == [
                    ("user", "Rust async question"),
                    ("assistant", "echo: Rust async question"),
                ]
            )
        )
        assert app.chat.focused is app.chat.query_one("#prompt")  # ready to type
        await pilot.click("#filter")
        await pilot.press(*" nothing like this")
        assert titles(app) == ["no match"]
        app.chat.query_one("#filter", Input).value = ""
        await wait_for(lambda: len(titles(app)) == 3)
        await pilot.press("ctrl+q")


@pytest.mark.parametrize(
    ("title", "plain"),
    [
        ("Show me **markdown** and `code`", "Show me markdown and code"),
        ("a [link](https://example.com) and ![a cat](cat.png)", "a link and a cat"),
        ("2 * 3 = 6 [draft]", "2 * 3 = 6 [draft]"),
        ("plain words", "plain words"),
        ("**", "**"),
        ("pasted \x1b[2J escape", "pasted \\x1b[2J escape"),
    ],
)
async def test_titles_show_as_plain_text(title: str, plain: str) -> None:
    assert plain_title(title) == plain


async def test_the_filter_matches_what_was_said_and_typing_on_the_list_filters(
    data_dir: Path,
) -> None:
    config = load_config(default_backend="echo")
    await seed(config, ["about cats", "they purr when happy"], ["about trains"], ["about pianos"])
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await pilot.click("#filter")
        await pilot.press(*"purr")  # in a message, not in any title
        await wait_for(lambda: titles(app) == ["about cats"])
        await pilot.press("backspace", "backspace")  # "pu": the last word is a prefix
        await wait_for(lambda: titles(app) == ["about cats"])
        app.chat.query_one("#filter", Input).value = ""
        await wait_for(lambda: len(titles(app)) == 3)

        listing = conversations(app)
        listing.focus()
        await wait_for(lambda: app.chat.focused is listing)
        await pilot.press(*"trai")  # typed on the list: it goes to the filter
        await wait_for(lambda: titles(app) == ["about trains"])
        assert app.chat.query_one("#filter", Input).value == "trai"
        await pilot.press("enter")
        await wait_for(lambda: log_views(app)[:1] == [("user", "about trains")])
        await pilot.press("ctrl+q")


async def test_ten_thousand_conversations_load_and_filter(data_dir: Path) -> None:
    config = load_config(default_backend="echo")

    def write() -> None:
        with Store(config.db_path) as store:
            store.write_turns(
                [
                    TurnRecord(
                        conversation_id=f"conv-{i:05d}",
                        messages=(
                            Message(role=Role.USER, content=f"topic {i:05d}"),
                            Message(role=Role.ASSISTANT, content=f"answer {i:05d}"),
                        ),
                    )
                    for i in range(10_000)
                ]
            )

    await asyncio.to_thread(write)
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        listing = conversations(app)
        assert listing.matched == 10_000
        shown = titles(app)
        assert len(shown) == CONVERSATIONS_SHOWN + 1
        assert shown[:2] == ["topic 09999", "topic 09998"]
        assert shown[-1] == f"… {10_000 - CONVERSATIONS_SHOWN:,} more: type to narrow"
        # The filter searches all of them, not only the rows shown.
        await pilot.click("#filter")
        await pilot.press(*"topic 0004")  # both words, anywhere in the title
        assert listing.matched == 11
        assert titles(app) == [*(f"topic {i:05d}" for i in range(49, 39, -1)), "topic 00004"]
        await pilot.press("2", "enter")
        await wait_for(
            lambda: log_views(app) == [("user", "topic 00042"), ("assistant", "answer 00042")]
        )
        await pilot.press("ctrl+q")


# --- the command palette and its actions ---------------------------------------------------------


async def test_the_palette_has_every_action(data_dir: Path) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await started(app)
        system = list(app.get_system_commands(app.screen))
        commands = [c.title for c in system]
        # One way to the keys: the app's Help (all screens, action ids), not also Textual's.
        helps = [c.title for c in system if "key" in c.help.casefold() or c.title == "Keys"]
        assert helps == ["Help"]
        for title in [
            "New chat",
            "Switch backend",
            "Rename conversation",
            "Delete conversation",
            "Export to Markdown",
            "Plugins",
            "Help",
            "Copy last reply",
            "Quit",
        ]:
            assert commands.count(title) == 1, title
        await pilot.press("ctrl+q")


async def test_rename_through_the_palette(data_dir: Path) -> None:
    config = load_config(default_backend="echo")
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await send(pilot, "first words")
        await wait_for(lambda: titles(app) == ["first words"])
        await pilot.press("ctrl+p")
        await pilot.press(*"rename conv")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, TextPrompt))
        answer = app.screen.query_one(Input)
        assert answer.value == "first words"
        answer.value = ""
        await pilot.press(*"  Weekend   plans ", "enter")
        await wait_for(lambda: titles(app) == ["Weekend plans"])
        assert str(app.chat.query_one("#title", Static).render()) == "Weekend plans"
        await pilot.press("ctrl+q")
    ((title, _),) = (await stored(config)).values()
    assert title == "Weekend plans"


async def test_delete_from_the_list_asks_first(data_dir: Path) -> None:
    config = load_config(default_backend="echo")
    keep, drop = await seed(config, ["keep me"], ["drop me"])
    app = RecordingApp(config)
    async with app.run_test() as pilot:
        await started(app)
        app.chat.open_conversation(drop)
        listing = conversations(app)
        await wait_for(lambda: len(log_views(app)) == 2 and app.chat.state.conversation_id == drop)
        assert listing.highlighted_id == drop  # the open conversation
        await pilot.pause()
        listing.focus()
        await wait_for(lambda: app.chat.focused is listing)
        await pilot.press("delete")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")  # changed my mind
        await wait_for(lambda: isinstance(app.screen, ChatScreen))
        assert titles(app) == ["drop me", "keep me"]

        await pilot.press("delete")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(lambda: titles(app) == ["keep me"])
        assert log_views(app) == []  # the open conversation went: a new chat begins
        assert app.chat.state.conversation_id is None
        assert "Deleted “drop me”." in app.notes
        await pilot.press("ctrl+q")
    assert list(await stored(config)) == [keep]


async def test_export_writes_markdown_under_the_data_dir(data_dir: Path) -> None:
    config = load_config(default_backend="echo")
    (conversation_id,) = await seed(config, ["Plans: Q3 / 2026!", "second *point*"])
    app = RecordingApp(config)
    async with app.run_test() as pilot:
        await started(app)
        app.chat.open_conversation(conversation_id)
        await wait_for(lambda: len(log_views(app)) == 4)
        app.action_export_conversation()
        path = data_dir / "exports" / f"plans-q3-2026-{conversation_id[:8]}.md"
        await wait_for(lambda: f"Exported to {path}" in app.notes)
        await pilot.press("ctrl+q")
    # The one exporter's Markdown (chatcore/export.py), as `chatcore history export` writes it.
    ((_, messages),) = (await stored(config)).values()
    times = [m.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") for m in messages]
    assert path.read_text() == (
        "# Plans: Q3 / 2026!\n\n"
        f"Conversation `{conversation_id}` · backend `echo` · model `echo`\n\n"
        f"**User** · {times[0]}\n\nPlans: Q3 / 2026!\n\n"
        f"**Assistant** · {times[1]}\n\necho: Plans: Q3 / 2026!\n\n"
        f"**User** · {times[2]}\n\nsecond *point*\n\n"
        f"**Assistant** · {times[3]}\n\necho: second *point*\n"
    )


async def test_actions_on_a_conversation_need_one(data_dir: Path) -> None:
    app = RecordingApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await started(app)
        app.action_rename_conversation()
        app.action_export_conversation()
        app.action_delete_conversation()
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)  # no dialog for nothing
        assert app.notes.count("No conversation yet: send a message first.") == 3
        await pilot.press("ctrl+q")


async def test_ctrl_y_copies_the_last_reply_while_typing(data_dir: Path) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await started(app)
        await send(pilot, "copy me")
        await pilot.press(*"draft")
        await pilot.press("ctrl+y")
        assert app.clipboard == "echo: copy me"
        assert app.chat.query_one("#prompt").text == "draft"  # type: ignore[attr-defined]
        await pilot.press("ctrl+q")


# --- keys ----------------------------------------------------------------------------------------


async def test_tui_keys_rebind_new_chat_and_the_footer_follows(
    data_dir: Path, tmp_path: Path
) -> None:
    app = ChatcoreApp(config_from(tmp_path, ECHO + '[tui.keys]\nnew_chat = "ctrl+t"\n'))
    async with app.run_test(size=(140, 30)) as pilot:
        await started(app)
        await send(pilot, "hello")
        footer = {(k.key, k.description) for k in app.screen.query("FooterKey")}  # type: ignore[attr-defined]
        assert ("ctrl+t", "New chat") in footer
        assert ("ctrl+n", "New chat") not in footer
        await pilot.press("ctrl+n")  # the old key does nothing now
        assert len(log_views(app)) == 2
        await pilot.press("ctrl+t")
        await wait_for(lambda: log_views(app) == [])
        assert app.chat.state.conversation_id is None
        await send(pilot, "a new one")
        await wait_for(lambda: len(titles(app)) == 2)
        await pilot.press("ctrl+q")


async def test_tui_keys_that_cannot_work_are_reported(data_dir: Path, tmp_path: Path) -> None:
    keys = """
[tui.keys]
nwe_chat = "ctrl+t"              # a typo
plugins = "ctrl+k"               # the message box deletes to the end of the line with it
new_chat = "n"                   # typed into the message box
copy_reply = "ctrl+e"            # the box's end-of-line, but copy_reply has priority: fine
delete_conversation = "x"        # the list's, where nothing is typed: fine
pause_plugin = "z"               # the plugins screen's: fine
"""
    app = RecordingApp(config_from(tmp_path, ECHO + keys))
    async with app.run_test() as pilot:
        await started(app)
        assert app.notes == [
            "[tui.keys] has no action 'nwe_chat'; f1 lists the action ids.",
            "[tui.keys] new_chat = 'n': n is typed into the message box instead, so new_chat "
            "stays on ctrl+n; pick a key with ctrl, alt or a function key.",
            "[tui.keys] plugins = 'ctrl+k': the message box edits with ctrl+k and gets it "
            "first while you type, so plugins stays on f2; pick another key.",
        ]
        assert app.key_for("new_chat") == "ctrl+n"
        assert app.key_for("copy_reply") == "ctrl+e"  # the ones that work are bound
        await pilot.press("ctrl+q")


async def test_binding_a_key_the_message_box_sends_with_is_refused(
    data_dir: Path, tmp_path: Path
) -> None:
    app = RecordingApp(config_from(tmp_path, ECHO + '[tui.keys]\nnew_chat = "enter"\n'))
    async with app.run_test(size=(140, 30)) as pilot:
        await started(app)
        assert app.notes == [
            "[tui.keys] new_chat = 'enter': the message box sends with enter and gets it "
            "first while you type, so new_chat stays on ctrl+n; pick another key."
        ]
        await send(pilot, "still sends")  # Enter sends; it did not start a new chat
        assert log_views(app) == [("user", "still sends"), ("assistant", "echo: still sends")]
        footer = {(k.key, k.description) for k in app.screen.query("FooterKey")}  # type: ignore[attr-defined]
        assert ("ctrl+n", "New chat") in footer
        await pilot.press("ctrl+n")
        await wait_for(lambda: log_views(app) == [])
        await pilot.press("ctrl+q")


async def test_every_binding_has_an_id_and_a_description() -> None:
    for owner in (
        ChatcoreApp,
        ChatScreen,
        ConversationList,
        BackendSwitcher,
        TextPrompt,
        ConfirmDialog,
    ):
        for binding in owner.BINDINGS:
            assert not isinstance(binding, tuple)
            assert binding.id and binding.description, (owner.__name__, binding.key)


async def test_sources_a_reply_was_answered_from_are_listed_under_it(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, ECHO + '[[plugins]]\nplugin = "engine_plugins:Cites"\n')
    expected = (
        "Sources:\n[1] guide.md > Install (chunk 3, score 0.42)\n[2] faq.txt (chunk 0, score 0.20)"
    )

    def sources(app: ChatcoreApp) -> list[str]:
        views = list(app.chat.query(MessageView))
        return [str(w.visual) for w in views[-1].query(".citations").results(Static)]

    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await send(pilot, "where is the guide?")
        await wait_for(lambda: sources(app) == [expected])
        conversation_id = app.chat.state.conversation_id
        await pilot.press("ctrl+q")
    # Reopened later, the stored reply still names its sources.
    again = ChatcoreApp(config, conversation=conversation_id)
    async with again.run_test() as pilot:
        await started(again)
        await wait_for(lambda: len(list(again.chat.query(MessageView))) == 2)
        assert sources(again) == [expected]
        await pilot.press("ctrl+q")


async def test_add_documents_to_rag_from_the_chat(data_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Install\n\nRun make run to start the chat.\n")
    (docs / "notes.txt").write_text("Refunds take five working days.\n")
    (docs / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    config = config_from(tmp_path, ECHO + '[[plugins]]\nplugin = "rag"\n')
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await pilot.press("ctrl+o")
        await wait_for(lambda: isinstance(app.screen, TextPrompt))
        await pilot.press(*str(docs), "enter")
        await wait_for(lambda: any(n.startswith("RAG: ") for n in notices(app)))
        summary = next(n for n in notices(app) if n.startswith("RAG: "))
        assert summary.startswith(f"RAG: added 2, updated 0, unchanged 0, skipped 1 ({docs})\n")
        assert f"skipped {docs / 'photo.txt'}: " in summary
        await pilot.press("ctrl+q")

    async def search() -> list[Any]:
        async with open_engine(config) as engine:
            rag: Any = engine.plugins.get_plugin("rag")
            return list(await rag.search("refunds"))

    hits = await asyncio.to_thread(trio.run, search)
    assert [Path(hit.path).name for hit in hits][:1] == ["notes.txt"]


async def test_add_documents_without_the_rag_plugin_says_how_to_enable_it(
    data_dir: Path, tmp_path: Path
) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await started(app)
        await pilot.press("ctrl+o")
        await wait_for(lambda: bool(notices(app)))
        assert isinstance(app.screen, ChatScreen)  # no path asked for: it could not be used
        assert notices(app) == [
            "Adding documents needs the rag plugin, which is not enabled: add [[plugins]] "
            'with plugin = "rag" to your config (`chatcore config path` shows which file), '
            "then restart."
        ]
        await pilot.press("ctrl+q")


async def test_toasts_show_square_brackets_as_written(data_dir: Path) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test(notifications=True) as pilot:
        await started(app)
        app.action_sync_now()  # replication is off
        await wait_for(lambda: bool(app.screen.query("Toast")))
        (toast,) = app.screen.query("Toast")
        assert "set [replication] redis_url in the config" in str(toast.render())
        app.clear_notifications()
        await send(pilot, "plans")
        await wait_for(lambda: titles(app) == ["plans"])
        await pilot.press("ctrl+r")
        await wait_for(lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one(Input).value = "[draft] plans"
        await pilot.press("enter")
        await wait_for(lambda: titles(app) == ["[draft] plans"])
        await wait_for(lambda: bool(app.screen.query("Toast")))
        assert [str(t.render()) for t in app.screen.query("Toast")] == [
            "Renamed to “[draft] plans”."
        ]
        await pilot.press("ctrl+q")


async def test_the_backend_switcher_shows_whether_each_backend_is_ready(
    data_dir: Path, tmp_path: Path
) -> None:
    backends = f"""
[backends.down]
plugin = "ollama"
host = "http://127.0.0.1:{free_port()}"
model = "llama3.2"
max_retries = 0

[backends.nokey]
plugin = "openai"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"
"""
    app = ChatcoreApp(config_from(tmp_path, ECHO + backends))
    async with app.run_test(size=(120, 30)) as pilot:
        await started(app)
        await pilot.press("ctrl+b")
        await wait_for(lambda: isinstance(app.screen, BackendSwitcher))
        switcher = app.screen

        def rows() -> list[str]:
            return [str(o.prompt) for o in switcher.query_one(OptionList).options]

        await wait_for(lambda: not any("checking" in row for row in rows()))
        assert [row.split("  ")[-1] for row in rows()] == ["ready", "unreachable", "no key"]
        assert rows()[0].startswith("● echo")
        await pilot.press("escape")
        await pilot.press("ctrl+q")


async def test_the_app_tunes_the_garbage_collector_and_restores_it(data_dir: Path) -> None:
    before = gc.get_threshold()
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await started(app)
        assert gc.get_threshold() == tui.app.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        await pilot.press("ctrl+q")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_a_message_sent_before_the_engine_is_up_goes_out_once_it_is(
    data_dir: Path,
) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    start = app.bridge.start
    app.bridge.start = lambda: None  # type: ignore[method-assign]  # hold the engine back
    async with app.run_test() as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"early bird", "enter")
        await pilot.pause()
        assert app.chat.state.queued == ["early bird"]
        assert log_views(app) == []
        start()
        await wait_for(lambda: app.last_reply is not None)
        assert log_views(app) == [("user", "early bird"), ("assistant", "echo: early bird")]
        assert app.chat.state.queued == []
        await pilot.press("ctrl+q")


async def test_a_failed_turn_reopened_shows_its_error_once(data_dir: Path, tmp_path: Path) -> None:
    config = config_from(tmp_path, ECHO + FAILURES.format(port=free_port()))
    app = ChatcoreApp(config)
    async with app.run_test() as pilot:
        await started(app)
        app.backend = "down"
        await send(pilot, "are you there?")
        conversation_id = app.chat.state.conversation_id
        await pilot.press("ctrl+q")
    assert conversation_id is not None
    reopened = ChatcoreApp(config, conversation=conversation_id)
    async with reopened.run_test() as pilot:
        await started(reopened)
        await wait_for(lambda: len(log_views(reopened)) == 2)
        (user, (role, shown)) = log_views(reopened)
        assert user == ("user", "are you there?")
        assert role == "assistant" and "cannot reach" in shown
        # The stored error is the message's text; the flag says only that it failed.
        assert all("cannot reach" not in flag for flag in flags(reopened)), flags(reopened)
        await pilot.press("ctrl+q")


async def test_a_plugin_that_failed_to_load_is_shown_at_start_and_nothing_is_sent(
    data_dir: Path, tmp_path: Path
) -> None:
    config = config_from(tmp_path, ECHO + '[[plugins]]\nplugin = "content_filtr"\n')
    app = RecordingApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await wait_for(lambda: any("plugins[0].plugin" in n for n in notices(app)))
        (notice,) = notices(app)
        assert "plugin 'content_filtr' not found" in notice
        assert "f2 shows the plugins" in notice
        await pilot.press(*"hello", "enter")
        await wait_for(lambda: any(note.startswith("Not sent:") for note in app.notes))
        assert log_views(app) == []  # refused before anything was sent or stored
        assert app.chat.query_one(PromptInput).text == "hello"  # kept to send once fixed
        # Paused on purpose, the plugin no longer holds turns back.
        engine = app.bridge.engine
        assert engine is not None
        app.bridge.spawn(engine.plugins.pause, "content_filtr")
        await wait_for(lambda: engine.plugins.load_failures() == [])
        await pilot.press("enter")
        await wait_for(lambda: ("assistant", "echo: hello") in log_views(app))
        await pilot.press("ctrl+q")


async def test_reopening_a_conversation_continues_on_its_backend(
    data_dir: Path, tmp_path: Path
) -> None:
    other = ECHO + '[backends.other]\nplugin = "echo"\n'
    config = config_from(tmp_path, other)
    app = ChatcoreApp(config, backend="other")
    async with app.run_test() as pilot:
        await started(app)
        await send(pilot, "on the other one")
        conversation_id = app.chat.state.conversation_id
        await pilot.press("ctrl+q")
    assert conversation_id is not None
    reopened = ChatcoreApp(config, conversation=conversation_id)  # the default is echo
    async with reopened.run_test() as pilot:
        await started(reopened)
        await wait_for(lambda: reopened.backend == "other")
        await send(pilot, "still there?")
        engine = reopened.bridge.engine
        assert engine is not None
        [summary] = [s for s in engine.store.list_conversations() if s.id == conversation_id]
        assert summary.backend == "other"
        await pilot.press("ctrl+q")
