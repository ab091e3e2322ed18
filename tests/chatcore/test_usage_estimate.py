"""Token counts when the server sends none: estimated, and marked so.

llama-cpp-python's server ignores ``stream_options.include_usage``, so a streamed
reply carries no usage; the loopback OpenAI fake does the same with
``stream_usage = False``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes.openai import FakeOpenAI
from helpers import subprocess_env

from chatcore import open_engine
from chatcore.store import DB_FILENAME
from features._tokens import estimate_tokens

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
REPLY = ("Hello", " there,", " friend")
PROMPT = "how are you today"


def openai_config(tmp_path: Path, server: FakeOpenAI) -> Path:
    config = tmp_path / "llama.toml"
    config.write_text(
        'default_backend = "llama"\n'
        f'[backends.llama]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
        'model = "gpt-4o-mini"\n'
    )
    return config


def ask_json(config: Path, prompt: str) -> Any:
    result = subprocess.run(
        [CHATCORE, "--config", str(config), "ask", "--json", prompt],
        capture_output=True,
        text=True,
        env=subprocess_env({"CHATCORE_BACKEND": "llama"}),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stored_reply(data_dir: Path, message_id: str) -> tuple[int, int, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(data_dir / DB_FILENAME)) as conn:
        tokens_in, tokens_out, metadata = conn.execute(
            "SELECT tokens_in, tokens_out, metadata FROM messages WHERE id = ?", [message_id]
        ).fetchone()
    return tokens_in, tokens_out, json.loads(metadata)


def test_ask_json_estimates_tokens_the_server_did_not_send(data_dir: Path, tmp_path: Path) -> None:
    with FakeOpenAI(reply_chunks=REPLY) as server:
        server.stream_usage = False
        answer = ask_json(openai_config(tmp_path, server), PROMPT)
    assert answer["content"] == "".join(REPLY)
    assert answer["tokens_estimated"] is True
    assert answer["tokens_out"] == estimate_tokens("".join(REPLY))
    # The whole request: the prompt plus the chat format's per-message tokens.
    assert answer["tokens_in"] > estimate_tokens(PROMPT)
    tokens_in, tokens_out, metadata = stored_reply(data_dir, answer["message_id"])
    assert (tokens_in, tokens_out) == (answer["tokens_in"], answer["tokens_out"])
    assert metadata["tokens_estimated"] is True


def test_tokens_the_server_sent_are_not_marked_estimated(data_dir: Path, tmp_path: Path) -> None:
    with FakeOpenAI(reply_chunks=REPLY, usage=(21, 4)) as server:
        answer = ask_json(openai_config(tmp_path, server), PROMPT)
    assert (answer["tokens_in"], answer["tokens_out"], answer["tokens_estimated"]) == (21, 4, False)
    assert "tokens_estimated" not in stored_reply(data_dir, answer["message_id"])[2]


async def test_the_api_reply_says_its_tokens_are_estimated(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATCORE_BACKEND", "llama")
    with FakeOpenAI(reply_chunks=REPLY) as server:
        server.stream_usage = False
        async with open_engine(openai_config(tmp_path, server)) as engine:
            conversation = engine.conversation()
            first = await conversation.send(PROMPT)
            second = await conversation.send("and tomorrow?")
    assert first.metadata["tokens_estimated"] is True
    assert first.tokens_out == estimate_tokens("".join(REPLY))
    assert first.tokens_in is not None and second.tokens_in is not None
    # The second request carries the first turn too.
    assert second.tokens_in > first.tokens_in
