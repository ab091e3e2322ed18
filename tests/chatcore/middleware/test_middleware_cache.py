"""The ``cache`` middleware through the engine: hits, misses, TTL, eviction, real SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.openai import FakeOpenAI

from chatcore import ConfigError, open_engine
from chatcore.middleware import cache as cache_module

WriteConfig = Callable[..., Path]

BASE = """
default_backend = "echo"
[backends.echo]
plugin = "echo"
"""


def cache_entry(**settings: float) -> str:
    lines = "\n".join(f"{key} = {value}" for key, value in settings.items())
    return f'[[plugins]]\nplugin = "cache"\n[plugins.config]\n{lines}\n'


BLOCKER = """
[[plugins]]
plugin = "engine_plugins:Blocker"
[plugins.config]
word = "secret"
"""


def echo_calls(engine: object) -> int:
    return engine.plugins.get_plugin_status()["echo"].calls  # type: ignore[attr-defined]


def cached_rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "chatcore.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM plugin_kv WHERE namespace = 'cache' AND key LIKE 'entry:%'"
        ).fetchone()
    return int(count)


async def test_the_same_context_is_answered_from_the_cache_as_one_chunk(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + cache_entry())
    async with open_engine(config) as engine:
        first = await engine.conversation().send("what is trio?")
        assert "cached" not in first.metadata
        stream = engine.conversation().stream("what is trio?")
        chunks = [chunk.text async for chunk in stream]
        assert chunks == ["echo: what is trio?"]
        reply = stream.message
        assert reply is not None
        assert reply.metadata["cached"] is True
        assert reply.metadata["answered_by"] == "cache"
        assert echo_calls(engine) == 1


async def test_history_model_system_and_temperature_are_part_of_the_context(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + cache_entry())
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("hello")
        await conversation.send("again")
        # Same question, but now with history: a miss.
        later = await conversation.send("hello")
        assert "cached" not in later.metadata
        assert "cached" not in (await engine.conversation().send("hello", system="x")).metadata
        assert "cached" not in (await engine.conversation().send("hello", temperature=0.3)).metadata
        assert "cached" not in (await engine.conversation().send("hello", max_tokens=9)).metadata
        assert "cached" not in (await engine.conversation().send("hello", model="m2")).metadata
        assert echo_calls(engine) == 7
        assert (await engine.conversation().send("hello")).metadata["cached"] is True


async def test_entries_live_in_sqlite_across_engines_until_their_ttl(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(BASE + cache_entry(ttl_seconds=60))
    now = 1_000_000.0
    monkeypatch.setattr(cache_module, "_wall_clock", lambda: now)
    async with open_engine(config) as engine:
        await engine.conversation().send("persist me")
    now += 59
    async with open_engine(config) as engine:
        hit = await engine.conversation().send("persist me")
        assert hit.metadata["cached"] is True
        # Call counts carry over between engines (as `chatcore plugins` shows them).
        assert echo_calls(engine) == 1
    now += 2
    async with open_engine(config) as engine:
        expired = await engine.conversation().send("persist me")
        assert "cached" not in expired.metadata
        assert echo_calls(engine) == 2


async def test_the_oldest_entry_is_evicted_past_max_entries(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = write_config(BASE + cache_entry(max_entries=2))
    async with open_engine(config) as engine:
        for text in ("one", "two", "three"):
            await engine.conversation().send(text)
        assert cached_rows(data_dir) == 2
        assert (await engine.conversation().send("three")).metadata.get("cached") is True
        assert (await engine.conversation().send("two")).metadata.get("cached") is True
        assert "cached" not in (await engine.conversation().send("one")).metadata
    # Fewer slots next time: the entries past the new end go at start.
    async with open_engine(write_config(BASE + cache_entry(max_entries=1), "small.toml")):
        assert cached_rows(data_dir) <= 1


async def test_plugin_answers_are_not_cached_and_processors_still_run_on_a_hit(
    write_config: WriteConfig, data_dir: Path
) -> None:
    async with open_engine(write_config(BASE + cache_entry())) as engine:
        await engine.conversation().send("tell me the secret")
    assert cached_rows(data_dir) == 1
    # A content filter added later still blocks a question whose answer is cached.
    async with open_engine(write_config(BASE + BLOCKER + cache_entry(), "blocked.toml")) as engine:
        blocked = await engine.conversation().send("tell me the secret")
        assert blocked.content == "I can't help with that."
        assert blocked.metadata["answered_by"] == "blocker"
        again = await engine.conversation().send("tell me the secret")
        assert "cached" not in again.metadata
        assert echo_calls(engine) == 1  # the first engine's call only
    assert cached_rows(data_dir) == 1


async def test_error_replies_are_not_cached(write_config: WriteConfig, data_dir: Path) -> None:
    config = write_config(
        BASE
        + '[backends.failing]\nplugin = "engine_plugins:FailingBackend"\nmax_retries = 0\n'
        + cache_entry()
    )
    async with open_engine(config) as engine:
        for _ in range(2):
            with pytest.raises(Exception, match="connection reset"):
                await engine.conversation().send("fail", backend="failing")
        assert engine.plugins.get_plugin_status()["failing"].calls == 2
    assert cached_rows(data_dir) == 0


async def test_a_bad_setting_names_the_key(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.ttl_seconds"):
        async with open_engine(write_config(BASE + cache_entry(ttl_seconds=0))):
            pass


async def test_redacted_placeholders_never_mix_up_two_peoples_data(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")
    with FakeOpenAI(reply_chunks=("Writing to ", "<EMAIL_1>", ".")) as openai:
        config = write_config(
            f"""
default_backend = "openai"
[backends.openai]
plugin = "openai"
base_url = "{openai.url}/v1"
model = "gpt-4o-mini"
[[plugins]]
plugin = "pii_redactor"
priority = 10
"""
            + cache_entry()
        )
        async with open_engine(config, backend="openai") as engine:
            alice = await engine.conversation().send("mail alice@example.com")
            bob = await engine.conversation().send("mail bob@example.com")
            again = await engine.conversation().send("mail alice@example.com")
        # The backend saw "<EMAIL_1>" both times; the cache must not.
        assert alice.content == "Writing to alice@example.com."
        assert bob.content == "Writing to bob@example.com."
        assert "cached" not in bob.metadata
        assert again.content == "Writing to alice@example.com."
        assert again.metadata["cached"] is True
        assert again.local("pii_redactor") == {"<EMAIL_1>": "alice@example.com"}
