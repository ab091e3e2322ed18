"""A configured plugin that cannot be loaded stops turns, unless it says ``required = false``.

A misspelled safety filter must not switch itself off silently: the turn is refused
with the plugin, its config key and the file, until the entry is fixed, the plugin
is paused on purpose, or the entry says it is optional.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import subprocess_env

from chatcore import PluginError, PluginLoadError, open_engine

WriteConfig = Callable[..., Path]
CHATCORE = str(Path(sys.executable).with_name("chatcore"))
BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
MISSPELLED = '[[plugins]]\nplugin = "content_filtr"\n'


def refusal(config: Path, key: str = "plugins[0]") -> str:
    return f"{config}: {key}.plugin: plugin 'content_filtr' not found: "


async def test_a_turn_is_refused_while_a_configured_plugin_failed_to_load(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + '[[plugins]]\nplugin = "normalizer"\n' + MISSPELLED)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        with pytest.raises(PluginLoadError) as caught:
            await conversation.send("hello")
        assert engine.status().plugins["normalizer"].state == "active"
        assert await engine.conversations() == []
    message = str(caught.value)
    assert message.startswith(refusal(config, "plugins[1]")), message
    assert message.endswith(
        "; no turn runs without it: fix the entry, pause the plugin, or set required = false"
    )
    assert "\n" not in message


async def test_an_optional_plugin_that_failed_to_load_lets_turns_run(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + MISSPELLED + "required = false\n")
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hello")
        assert engine.status().plugins["content_filtr"].state == "error"
    assert reply.content == "echo: hello"


async def test_pausing_the_broken_plugin_lets_turns_run(write_config: WriteConfig) -> None:
    async with open_engine(write_config(BASE + MISSPELLED)) as engine:
        with pytest.raises(PluginLoadError):
            await engine.conversation().send("hello")
        await engine.plugins.pause("content_filtr")
        reply = await engine.conversation().send("hello")
        # It never ran: resuming it is refused, reloading it is how it comes back.
        with pytest.raises(PluginError, match="never loaded, so it cannot resume"):
            await engine.plugins.resume("content_filtr")
    assert reply.content == "echo: hello"


async def test_a_broken_file_in_a_plugin_directory_does_not_stop_turns(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text(
        "from chatcore.plugin import BaseMessageProcessor\n\n\n"
        "class Broken(BaseMessageProcessor):\n"
        "    async def _do_initialize(self):\n"
        "        raise RuntimeError('no')\n\n"
        "    async def process_message(self, message, context):\n"
        "        return message\n"
    )
    config = write_config(f'plugin_dirs = ["{plugins}"]\n' + BASE)
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hello")
        assert engine.status().plugins["broken"].state == "error"
    assert reply.content == "echo: hello"


def test_ask_names_the_plugin_the_key_and_the_file_and_exits_2(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + MISSPELLED)
    result = subprocess.run(
        [CHATCORE, "--config", str(config), "ask", "hello"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: " + refusal(config)), lines[0]


def test_a_backend_that_cannot_load_is_a_config_error_and_nothing_is_stored(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + '[backends.typo]\nplugin = "opnai"\n')
    result = subprocess.run(
        [CHATCORE, "--config", str(config), "ask", "--backend", "typo", "hello"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"error: {config}: backends.typo.plugin: plugin 'opnai' not found: "
    ), lines[0]
    listed = subprocess.run(
        [CHATCORE, "--config", str(config), "history", "list"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert listed.stdout == "(none)\n"


def test_a_mistake_in_a_backend_table_is_a_config_error_before_the_turn(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + "temprature = 0.2\n")
    result = subprocess.run(
        [CHATCORE, "--config", str(config), "ask", "hello"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(
        f"error: {config}: backends.echo.temprature: unknown key; did you mean 'temperature'?"
    ), result.stderr
    assert len(result.stderr.splitlines()) == 1
