"""`chatcore memory add|list|forget` as a user runs it, and what the chat then knows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner
from helpers import subprocess_env

from chatcore import open_engine
from chatcore.cli import cli
from features.memory import FACTS_PREFIX, MemoryStore

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
MEMORY_KEYS = {"id", "user", "content", "created_at"}

WriteConfig = Callable[..., Path]


def chatcore(*args: str) -> Any:
    """Run `chatcore ARGS` in-process; return the result (stdout and stderr apart)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def chatcore_json(*args: str) -> Any:
    result = chatcore(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_add_list_forget_round_trip_with_json(data_dir: Path) -> None:
    added = chatcore_json("memory", "add", "my dog is called Rex")
    assert set(added) == MEMORY_KEYS
    assert (added["user"], added["content"]) == ("default", "my dog is called Rex")
    other = chatcore_json("memory", "add", "I live in Oslo")
    chatcore_json("memory", "add", "my cat is Tom", "--user", "alice")

    listed = chatcore_json("memory", "list")
    assert [m["content"] for m in listed] == ["my dog is called Rex", "I live in Oslo"]
    assert all(set(m) == MEMORY_KEYS for m in listed)
    assert [m["content"] for m in chatcore_json("memory", "list", "--user", "alice")] == [
        "my cat is Tom"
    ]
    assert len(chatcore_json("memory", "list", "--all-users")) == 3

    # By text: every content word of the text must be in the fact.
    forgotten = chatcore_json("memory", "forget", "my dog")
    assert forgotten == {"forgotten": [added]}
    # By id.
    assert chatcore_json("memory", "forget", other["id"]) == {"forgotten": [other]}
    assert chatcore_json("memory", "list") == []
    # Alice's fact is hers: forgetting as the default user does not touch it.
    assert chatcore("memory", "forget", "my cat is Tom").exit_code == 2
    assert len(chatcore_json("memory", "list", "--user", "alice")) == 1

    # The facts are in the engine's own database file.
    with MemoryStore(data_dir / "chatcore.db") as store:
        assert [m.content for m in store.list(user=None)] == ["my cat is Tom"]


def test_plain_output_and_errors(data_dir: Path) -> None:
    result = chatcore("memory", "list")
    assert (result.exit_code, result.stdout) == (0, "no memories for user 'default'\n")
    result = chatcore("memory", "add", "I prefer tea to coffee")
    assert result.exit_code == 0
    assert result.stdout.startswith("remembered ")
    assert result.stdout.endswith(": I prefer tea to coffee\n")
    listed = chatcore("memory", "list")
    assert "I prefer tea to coffee" in listed.stdout

    missing = chatcore("memory", "forget", "bicycles")
    assert missing.exit_code == 2
    assert missing.stderr == "error: no memory of user 'default' matches 'bicycles'\n"
    empty = chatcore("memory", "add", "   ")
    assert empty.exit_code == 2
    assert "memory content is empty" in empty.stderr
    blank_user = chatcore("memory", "list", "--user", "")
    assert blank_user.exit_code == 2
    assert "memory user is empty" in blank_user.stderr

    forgot = chatcore("memory", "forget", "tea")
    assert forgot.exit_code == 0
    assert forgot.stdout.endswith(": I prefer tea to coffee\n")


def test_the_cli_uses_the_user_of_the_memory_plugin_config(
    data_dir: Path, write_config: WriteConfig
) -> None:
    config = write_config('[[plugins]]\nplugin = "memory"\n[plugins.config]\nuser = "dana"\n')
    added = chatcore_json("--config", str(config), "memory", "add", "I am allergic to nuts")
    assert added["user"] == "dana"
    assert chatcore_json("memory", "list") == []  # no config: the default user


async def test_a_fact_added_on_the_command_line_reaches_the_chat(
    data_dir: Path, write_config: WriteConfig
) -> None:
    config = write_config(
        'default_backend = "context"\n'
        "[backends.context]\n"
        'plugin = "engine_plugins:ContextBackend"\n'
        "[[plugins]]\n"
        'plugin = "memory"\n'
    )
    result = await trio.to_thread.run_sync(
        lambda: chatcore("memory", "add", "my favourite colour is green")
    )
    assert result.exit_code == 0, result.output
    async with open_engine(config, backend="context") as engine:
        reply = await engine.conversation().send("Which colour should I paint the door?")
        # ContextBackend answers with the history it was given.
        assert f"system:{FACTS_PREFIX}\n- my favourite colour is green" in reply.content
        assert reply.metadata["memory"]["memories"] == 1


def test_the_real_command_lists_memories_as_json(data_dir: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHATCORE, "memory", *args],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
        )

    added = run("add", "the wifi password is on the fridge", "--json")
    assert added.returncode == 0, added.stderr
    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["content"] for m in json.loads(listed.stdout)] == [
        "the wifi password is on the fridge"
    ]
