"""The processors end to end: the real engine, the official clients against the loopback
fakes of OpenAI and Anthropic, real SQLite, and the `chatcore` command.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fakes.anthropic import DEFAULT_API_KEY as ANTHROPIC_KEY
from fakes.anthropic import FakeAnthropic
from fakes.openai import FakeOpenAI
from helpers import subprocess_env

from chatcore import ConfigError, MessageStatus, open_engine

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from chatcore import Chunk

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
OPENAI_KEY = "sk-test-openai"
CARD = "4111 1111 1111 1111"
EMAIL = "alice@example.com"
PROMPT = f"mail {EMAIL} card {CARD}"
# The reply names the placeholder cut in two: "<EMA" ends one SSE event, "IL_1>" starts the next.
SPLIT_REPLY = ["Sent to <EMA", "IL_1>", "."]


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply_chunks=tuple(SPLIT_REPLY)) as server:
        yield server


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(reply_chunks=list(SPLIT_REPLY)) as server:
        yield server


@pytest.fixture
def make_config(
    tmp_path: Path,
    openai: FakeOpenAI,
    anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], Path]:
    """A config with the two fakes, echo, and the given ``[[plugins]]`` tables."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)

    def make(plugins: str, name: str = "processors.toml") -> Path:
        path = tmp_path / name
        path.write_text(
            f"""
default_backend = "openai"
[backends.openai]
plugin = "openai"
base_url = "{openai.url}/v1"
model = "gpt-4o-mini"
[backends.anthropic]
plugin = "anthropic"
base_url = "{anthropic.url}"
model = "claude-sonnet-5-5"
[backends.echo]
plugin = "echo"
{plugins}
"""
        )
        return path

    return make


PII = '[[plugins]]\nplugin = "pii_redactor"\npriority = 30\n'


def last_body(server: FakeOpenAI | FakeAnthropic) -> tuple[bytes, object]:
    path = "/v1/chat/completions" if isinstance(server, FakeOpenAI) else "/v1/messages"
    request = server.requests_to(path)[-1]
    return request.body, request.json


# -- PII: redacted on the way out, restored on the way back ------------------------------------
@pytest.mark.parametrize("backend", ["openai", "anthropic"])
async def test_pii_reaches_the_cloud_as_placeholders_and_the_user_sees_the_originals(
    backend: str,
    make_config: Callable[[str], Path],
    openai: FakeOpenAI,
    anthropic: FakeAnthropic,
) -> None:
    server = openai if backend == "openai" else anthropic
    async with open_engine(make_config(PII), backend=backend) as engine:
        conversation = engine.conversation()
        stream = conversation.stream(PROMPT)
        chunks: list[Chunk] = [chunk async for chunk in stream]
        reply = stream.message
        stored = await conversation.messages()
        saved_map = engine.store.kv_get("pii_redactor", f"map:{conversation.id}")

    raw, body = last_body(server)
    assert b"<EMAIL_1>" in raw and b"<CARD_1>" in raw
    assert EMAIL.encode() not in raw and CARD.encode() not in raw
    assert b"4111" not in raw
    sent = body["messages"][-1]["content"]  # type: ignore[index]
    assert sent == "mail <EMAIL_1> card <CARD_1>"

    # The placeholder was cut across two events and still reaches the user whole.
    assert "".join(c.text for c in chunks) == f"Sent to {EMAIL}."
    assert all("<" not in c.text for c in chunks)
    assert reply is not None and reply.content == f"Sent to {EMAIL}."
    user, assistant = stored
    assert assistant.content == f"Sent to {EMAIL}."
    assert assistant.status is MessageStatus.COMPLETE
    assert dict(assistant.local("pii_redactor")) == {"<EMAIL_1>": EMAIL}
    # The local history keeps what the user typed; the metadata tells the replicator.
    assert user.content == PROMPT
    assert dict(user.local("pii_redactor")) == {"<EMAIL_1>": EMAIL, "<CARD_1>": CARD}
    assert saved_map == {"<EMAIL_1>": EMAIL, "<CARD_1>": CARD}


async def test_placeholders_stay_stable_across_turns_history_system_and_restarts(
    make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    config = make_config(PII)
    system_prompt = "Reply to me at bob@example.org"
    async with open_engine(config, backend="openai") as engine:
        conversation = engine.conversation(system=system_prompt)
        await conversation.send(PROMPT)
        conversation_id = conversation.id
    openai.reply_chunks = (
        "Noted <EMAIL_2> and <",
        "EMAIL_3>",
    )
    async with open_engine(config, backend="openai") as engine:
        # A new engine reads the numbering back from the plugin's kv namespace.
        conversation = engine.conversation(conversation_id, system=system_prompt)
        reply = await conversation.send(f"also carol@example.net, and {EMAIL} again")

    first = openai.requests_to("/v1/chat/completions")[0].json
    assert first["messages"][0] == {"role": "system", "content": "Reply to me at <EMAIL_2>"}
    raw, body = last_body(openai)
    messages = body["messages"]  # type: ignore[index]
    assert [(m["role"], m["content"]) for m in messages] == [
        # Numbered in the order first seen: the first message, then the system prompt.
        ("system", "Reply to me at <EMAIL_2>"),
        ("user", "mail <EMAIL_1> card <CARD_1>"),
        ("assistant", "Sent to <EMAIL_1>."),
        ("user", "also <EMAIL_3>, and <EMAIL_1> again"),
    ]
    assert b"example" not in raw
    # Restored in a reply that was not streamed by the caller (send) too.
    assert reply.content == "Noted bob@example.org and carol@example.net"
    assert dict(reply.local("pii_redactor")) == {
        "<EMAIL_2>": "bob@example.org",
        "<EMAIL_3>": "carol@example.net",
    }


async def test_pii_is_left_alone_for_echo_and_for_backends_not_listed(
    make_config: Callable[[str], Path], anthropic: FakeAnthropic
) -> None:
    config = make_config(PII + '[plugins.config]\nbackends = ["openai"]\n')
    async with open_engine(config, backend="openai") as engine:
        conversation = engine.conversation()
        echoed = await conversation.send(PROMPT, backend="echo")
        await conversation.send(f"and {EMAIL}", backend="anthropic")
        stored = await conversation.messages()
    # Echo answers with exactly what it received: the originals.
    assert echoed.content == f"echo: {PROMPT}"
    assert stored[0].local("pii_redactor") is None and echoed.local("pii_redactor") is None
    raw, _ = last_body(anthropic)
    assert EMAIL.encode() in raw and b"<EMAIL_" not in raw


async def test_by_default_echo_is_skipped(make_config: Callable[[str], Path]) -> None:
    async with open_engine(make_config(PII), backend="echo") as engine:
        conversation = engine.conversation()
        pieces = [c.text async for c in conversation.stream(PROMPT)]
        stored = await conversation.messages()
    assert "".join(pieces) == f"echo: {PROMPT}"
    assert [m.content for m in stored] == [PROMPT, f"echo: {PROMPT}"]
    assert all(m.local("pii_redactor") is None for m in stored)


# -- content filter -------------------------------------------------------------------------

FILTER = """
[[plugins]]
plugin = "content_filter"
priority = 20
[plugins.config]
blocked = ["forbidden", "secret plan"]
masked = ["darn"]
patterns = [
  { regex = 'ticket-\\d{4}', action = "flag" },
  { regex = 'pin \\d{4}', action = "mask" },
]
"""


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_blocked_word_never_reaches_the_backend_and_the_refusal_is_the_stored_reply(
    streamed: bool, make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    async with open_engine(make_config(FILTER), backend="openai") as engine:
        conversation = engine.conversation()
        text = "Tell me the SECRET   Plan, please"
        if streamed:
            pieces = [c.text async for c in conversation.stream(text)]
            assert "".join(pieces) == "I can't help with that."
        else:
            reply = await conversation.send(text)
            assert reply.content == "I can't help with that."
        user, assistant = await conversation.messages()
    assert openai.requests == []
    assert assistant.content == "I can't help with that."
    assert assistant.metadata["answered_by"] == "content_filter"
    assert dict(assistant.metadata["content_filter"]) == {"blocked": ["blocked[1]"]}
    assert user.content == text
    assert dict(user.metadata["content_filter"]) == {"blocked": ["blocked[1]"]}


async def test_masked_and_flagged_user_text_as_the_backend_receives_it(
    make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    async with open_engine(make_config(FILTER), backend="openai") as engine:
        conversation = engine.conversation()
        await conversation.send("Darn, my pin 1234 for ticket-5678 is darn wrong")
        user, _ = await conversation.messages()
    _, body = last_body(openai)
    sent = body["messages"][-1]["content"]  # type: ignore[index]
    assert sent == "***, my *** for ticket-5678 is *** wrong"
    assert user.content == sent
    assert json.loads(json.dumps(user.metadata["content_filter"])) == {
        "masked": {"masked[0]": 2, "patterns[1]": 1},
        "flagged": ["patterns[0]"],
    }
    assert "1234" not in json.dumps(dict(user.metadata))


REPLY_FILTER = FILTER.replace("masked = [", 'check_replies = true\nmasked = ["hunter2", ')


async def test_streamed_reply_is_masked_across_chunk_boundaries(
    make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    openai.reply_chunks = ("The pass", "word is hun", "ter", "2, really: hunter2s", " stays.")
    async with open_engine(make_config(REPLY_FILTER), backend="openai") as engine:
        conversation = engine.conversation()
        pieces = [c.text async for c in conversation.stream("what is it?")]
        _, assistant = await conversation.messages()
    shown = "".join(pieces)
    assert shown == "The password is ***, really: hunter2s stays."
    assert len(pieces) > 1  # shown as it streamed, not only at the end
    assert assistant.content == shown
    assert dict(assistant.metadata["content_filter"]) == {"masked": {"masked[0]": 1}}


async def test_a_blocked_word_split_across_reply_chunks_replaces_the_reply(
    make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    openai.reply_chunks = (
        "Here is a long and harmless opening sentence. ",
        "Now the for",
        "bid",
        "den part",
        " and more.",
    )
    async with open_engine(make_config(REPLY_FILTER), backend="openai") as engine:
        conversation = engine.conversation()
        pieces = [c.text async for c in conversation.stream("go on")]
        _, assistant = await conversation.messages()
    shown = "".join(pieces)
    assert "forbidden" not in shown and "bid" not in shown and "more" not in shown
    assert shown.endswith("I can't help with that.")
    # What is kept is the refusal alone, with the rule that fired.
    assert assistant.content == "I can't help with that."
    assert dict(assistant.metadata["content_filter"]) == {"blocked": ["blocked[0]"]}


async def test_all_three_processors_in_the_documented_order(
    make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    plugins = '[[plugins]]\nplugin = "normalizer"\npriority = 10\n' + FILTER + PII
    openai.reply_chunks = ("ok <EMAIL_1>",)
    async with open_engine(make_config(plugins), backend="openai") as engine:
        conversation = engine.conversation()
        reply = await conversation.send(
            "  Cafe\u0301\x07 darn: write to alice@example.com\r\n\n\n\n\nthanks  "
        )
        user, _ = await conversation.messages()
    _, body = last_body(openai)
    sent = body["messages"][-1]["content"]  # type: ignore[index]
    assert sent == "Caf\u00e9 ***: write to <EMAIL_1>\n\nthanks"
    assert reply.content == f"ok {EMAIL}"
    assert user.content == f"Caf\u00e9 ***: write to {EMAIL}\n\nthanks"
    assert dict(user.metadata["normalizer"]) == {
        "changes": ["nfc", "control_chars", "blank_lines", "trimmed"]
    }
    assert dict(user.metadata["content_filter"]) == {"masked": {"masked[0]": 1}}
    assert dict(user.local("pii_redactor")) == {"<EMAIL_1>": EMAIL}


async def test_a_pattern_that_does_not_compile_is_a_config_error_naming_the_rule(
    make_config: Callable[[str], Path],
) -> None:
    config = make_config(
        '[[plugins]]\nplugin = "content_filter"\n[plugins.config]\n'
        'patterns = [{ regex = "ok", action = "flag" },\n'
        '  { regex = "(unclosed", action = "block" }]\n'
    )
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.patterns\[1\]\.regex") as info:
        async with open_engine(config):
            pass
    assert "(unclosed" in str(info.value)
    assert "does not compile" in str(info.value)


# -- the command line ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cli_ask_prints_the_refusal_and_history_stores_it(tmp_path: Path) -> None:
    config = tmp_path / "filter.toml"
    config.write_text(
        '[[plugins]]\nplugin = "content_filter"\n[plugins.config]\n'
        'blocked = ["blocked"]\nrefusal = "Not that, sorry."\n'
    )
    asked = run_cli("--config", str(config), "ask", "--backend", "echo", "--json", "a blocked word")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["content"] == "Not that, sorry."
    plain = run_cli("--config", str(config), "ask", "--backend", "echo", "a blocked word")
    assert (plain.returncode, plain.stdout) == (0, "Not that, sorry.\n")

    shown = run_cli("--config", str(config), "history", "show", answer["conversation_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    messages = json.loads(shown.stdout)["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "a blocked word"),
        ("assistant", "Not that, sorry."),
    ]


def test_cli_exits_2_naming_a_regex_that_does_not_compile(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[plugins]]\nplugin = "content_filter"\n[plugins.config]\n'
        'patterns = [{ regex = "[a-", action = "mask" }]\n'
    )
    result = run_cli("--config", str(config), "ask", "--backend", "echo", "hi")
    assert result.returncode == 2
    assert "plugins[0].config.patterns[0].regex" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_fallback_from_a_local_backend_to_a_cloud_one_is_redacted(
    make_config: Callable[[str], Path], openai: FakeOpenAI
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unused_port = sock.getsockname()[1]
    # Ollama (never redacted for) is down, so the turn falls back to OpenAI: the
    # redactor's BEFORE_MODEL_LOAD hook runs again for the fallback and redacts.
    local = (
        f'[backends.ollama]\nplugin = "ollama"\nhost = "http://127.0.0.1:{unused_port}"\n'
        'model = "llama3.2"\nmax_retries = 0\n[router]\nfallbacks = ["openai"]\n'
    )
    async with open_engine(make_config(PII + local), backend="ollama") as engine:
        reply = await engine.conversation().send(PROMPT)
    raw, _ = last_body(openai)
    assert b"<EMAIL_1>" in raw and EMAIL.encode() not in raw and b"4111" not in raw
    assert reply.metadata["fallback_from"] == ["ollama"]
    assert reply.content == f"Sent to {EMAIL}."
