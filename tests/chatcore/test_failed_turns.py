"""A failed turn says why: the error is the stored reply's text, status ``error``.

Backends are real (the openai backend through the official client) against a port
where nothing listens, a missing key, or the loopback fake refusing the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.openai import FakeOpenAI

from chatcore import ChatContext, Chunk, open_engine
from chatcore.cli import cli
from chatcore.errors import BackendError, BackendUnavailable
from chatcore.messages import Message, MessageStatus, Role
from chatcore.plugin import BaseBackendProvider
from chatcore.store import DB_FILENAME, ChangeKind, Store, TurnRecord

WriteConfig = Callable[..., Path]

WRONG_KEY = "sk-proj-wrongWRONGwrong0123456789abcdefXYZ"
RIGHT_KEY = "sk-proj-rightRIGHTright0123456789abcdefXYZ"


class CarelessBackend(BaseBackendProvider):
    """A third-party backend whose error quotes its token from the environment."""

    name = "careless"

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        raise BackendUnavailable(
            f"careless: the gateway refused token {os.environ['GARDEN_API_TOKEN']}",
            backend="careless",
        )
        yield Chunk(text="", index=0)  # pragma: no cover - makes this an async generator


@pytest.fixture(autouse=True)
def _openai_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATCORE_BACKEND", "openai")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(expected_api_key=RIGHT_KEY) as server:
        yield server


def openai_config(write_config: WriteConfig, base_url: str | None, *, redis: str = "") -> Path:
    lines = ['default_backend = "openai"', "[backends.openai]", 'plugin = "openai"']
    lines += ['model = "gpt-4o-mini"', "max_retries = 0"]
    if base_url is not None:
        lines.append(f'base_url = "{base_url}"')
    if redis:
        lines += ["[replication]", f"redis_url = {json.dumps(redis)}"]
    return write_config("\n".join(lines) + "\n")


def stored(data_dir: Path) -> list[Message]:
    with Store(data_dir / DB_FILENAME) as store:
        (summary,) = store.list_conversations()
        return store.get_messages(summary.id)


async def test_a_backend_that_is_down_leaves_its_error_as_the_reply(
    write_config: WriteConfig, data_dir: Path, closed_port: int
) -> None:
    config = openai_config(write_config, f"http://127.0.0.1:{closed_port}/v1")
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        with pytest.raises(BackendError) as info:
            await conversation.send("is anyone there?")
        messages = await conversation.messages()
    user, reply = messages
    assert (user.role, user.content) == (Role.USER, "is anyone there?")
    assert reply.role is Role.ASSISTANT and reply.status is MessageStatus.ERROR
    assert reply.content == str(info.value)
    assert reply.content.startswith(f"openai: cannot reach http://127.0.0.1:{closed_port}/v1")
    assert reply.metadata["error"] == reply.content


async def test_a_missing_key_is_stored_as_the_reason_and_the_next_turn_omits_it(
    write_config: WriteConfig, data_dir: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = openai_config(write_config, None)  # api.openai.com, and no $OPENAI_API_KEY
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        with pytest.raises(BackendError):
            await conversation.send("hello")
    reply = stored(data_dir)[1]
    assert reply.status is MessageStatus.ERROR
    assert reply.content == (
        "openai: no API key: set $OPENAI_API_KEY (or api_key in [backends.openai])"
    )
    # Once fixed, the conversation goes on; the error is never sent to a model.
    monkeypatch.setenv("OPENAI_API_KEY", RIGHT_KEY)
    fixed = openai_config(write_config, fake.url + "/v1")
    async with open_engine(fixed) as engine:
        reply = await engine.conversation(conversation.id).send("hello again")
    assert reply.status is MessageStatus.COMPLETE
    (request,) = fake.requests_to("/v1/chat/completions")
    sent = [m["content"] for m in request.json["messages"]]
    assert sent == ["hello", "hello again"]


async def test_a_refused_key_never_reaches_the_stored_error_or_the_outbox(
    write_config: WriteConfig, data_dir: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", WRONG_KEY)
    # A server that echoes the whole key back in its error.
    fake.fail(401, message=f"Incorrect API key provided: {WRONG_KEY}.")
    # Replication configured but unreachable: the outbox fills and nothing drains it.
    config = openai_config(write_config, fake.url + "/v1", redis="redis://127.0.0.1:1/0")
    async with open_engine(config) as engine:
        with pytest.raises(BackendError):
            await engine.conversation().send("my key is wrong")
    user, reply = stored(data_dir)
    assert reply.status is MessageStatus.ERROR
    assert "refused the credentials (401: Incorrect API key provided: ***.)" in reply.content
    assert "check $OPENAI_API_KEY" in reply.content
    # The outbox holds one MESSAGE change per stored message, the error reply as it is stored.
    with Store(data_dir / DB_FILENAME) as store:
        changes = [entry.change for entry in store.outbox_pending(100)]
        raw = " ".join(text for _, text in store.outbox_rows(100))
    messages = [c.data for c in changes if c.kind is ChangeKind.MESSAGE]
    assert [m["id"] for m in messages] == [user.id, reply.id]
    assert (messages[1]["content"], messages[1]["status"]) == (reply.content, "error")
    assert WRONG_KEY not in raw and WRONG_KEY not in reply.content
    assert WRONG_KEY not in json.dumps(dict(reply.metadata))


async def test_a_secret_from_the_environment_in_any_error_is_masked_where_it_is_stored(
    write_config: WriteConfig, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "gdn_4f9Qx81LmZ0aPwT7yBv3"
    monkeypatch.setenv("GARDEN_API_TOKEN", token)
    config = write_config(
        'default_backend = "careless"\n[backends.careless]\n'
        'plugin = "test_failed_turns:CarelessBackend"\nmax_retries = 0\n'
    )
    async with open_engine(config, backend="careless") as engine:
        with pytest.raises(BackendError):
            await engine.conversation().send("hello")
    reply = stored(data_dir)[1]
    assert reply.content == "careless: the gateway refused token <ENV:GARDEN_API_TOKEN>"
    assert reply.metadata["error"] == reply.content


def test_ask_json_on_failure_prints_the_error_and_the_conversation(
    write_config: WriteConfig, data_dir: Path, closed_port: int
) -> None:
    config = openai_config(write_config, f"http://127.0.0.1:{closed_port}/v1")
    result = CliRunner().invoke(cli, ["--config", str(config), "ask", "--json", "hi"])
    assert result.exit_code == 1, result.output
    answer = json.loads(result.stdout)
    assert set(answer) == {"error", "conversation_id"}
    assert answer["error"].startswith(f"openai: cannot reach http://127.0.0.1:{closed_port}/v1")
    shown = json.loads(
        CliRunner().invoke(cli, ["history", "show", answer["conversation_id"], "--json"]).stdout
    )
    assert [(m["role"], m["status"]) for m in shown["messages"]] == [
        ("user", "complete"),
        ("assistant", "error"),
    ]
    assert shown["messages"][1]["content"] == answer["error"]
    text = CliRunner().invoke(cli, ["history", "show", answer["conversation_id"]]).stdout
    assert f"assistant [error]:\n{answer['error']}" in text


def seed_failed_and_good(data_dir: Path) -> tuple[str, str, str]:
    """A conversation whose only turn failed, one that failed then worked, one that worked."""
    failed, recovered, good = "c-failed", "c-recovered", "c-good"

    def error(text: str) -> Message:
        return Message.assistant(text, status=MessageStatus.ERROR, metadata={"error": text})

    with Store(data_dir / DB_FILENAME) as store:
        store.write_turns([TurnRecord(good, (Message.user("q"), Message.assistant("a")))])
        store.write_turns([TurnRecord(recovered, (Message.user("q1"), error("down")))])
        store.write_turns([TurnRecord(recovered, (Message.user("q2"), Message.assistant("a2")))])
        store.write_turns([TurnRecord(failed, (Message.user("lost"), error("down")))])
    return failed, recovered, good


def test_history_list_hides_conversations_whose_every_turn_failed(data_dir: Path) -> None:
    failed, recovered, good = seed_failed_and_good(data_dir)
    result = CliRunner().invoke(cli, ["history", "list", "--json"])
    assert [row["id"] for row in json.loads(result.stdout)] == [recovered, good]
    assert result.stderr == ""
    table = CliRunner().invoke(cli, ["history", "list"])
    assert failed not in table.stdout
    assert table.stderr == "(1 conversation whose every turn failed is hidden; --failed shows it)\n"
    shown = CliRunner().invoke(cli, ["history", "list", "--failed", "--json"])
    rows = json.loads(shown.stdout)
    assert [(row["id"], row["failed"]) for row in rows] == [
        (failed, True),
        (recovered, False),
        (good, False),
    ]
    marked = CliRunner().invoke(cli, ["history", "list", "--failed"]).stdout.splitlines()
    assert marked[1].split()[0] == "c-fail"  # its short id: a unique prefix of an id not a UUID
    assert marked[1].endswith("[failed] lost")
    # Kept, not deleted: it can be shown, exported and continued.
    assert CliRunner().invoke(cli, ["history", "show", failed]).exit_code == 0


def test_an_error_reply_is_exported_once_not_twice(data_dir: Path) -> None:
    failed, _, _ = seed_failed_and_good(data_dir)
    text = CliRunner().invoke(cli, ["history", "export", failed]).stdout
    assert text.count("down") == 1
    assert "*(error)*\n\ndown\n" in text
