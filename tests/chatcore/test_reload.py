"""Hot reload through a running engine: edits take effect between turns, failures don't.

Every test opens a real engine on a config naming a plugin file (or module),
edits that file, and looks at what the next turn and the status say.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from chatcore import open_engine
from chatcore.errors import PluginLoadError

PROCESSOR = """\
from chatcore.plugin import BaseMessageProcessor, PluginMetadata
from chatcore.result import PluginResult
import trio


class Tag(BaseMessageProcessor):
    metadata = PluginMetadata(name="tag")

    async def _do_initialize(self):
        {init}

    async def process_message(self, message, context):
        await trio.sleep(float(self.config.get("seconds", 0)))
        return PluginResult.ok(message.replace(content=message.content + " [{tag}]"))
"""


def write_plugin(path: Path, tag: str, *, init: str = "pass", extra: str = "") -> Path:
    path.write_text(extra + PROCESSOR.format(tag=tag, init=init), encoding="utf-8")
    return path


def config_for(tmp_path: Path, plugin: str, *, dev: bool = False, seconds: float = 0) -> Path:
    config = tmp_path / "chatcore.toml"
    config.write_text(
        f'default_backend = "echo"\ndev = {str(dev).lower()}\n'
        '[backends.echo]\nplugin = "echo"\n'
        f'[[plugins]]\nplugin = "{plugin}"\nname = "tag"\n'
        f"[plugins.config]\nseconds = {seconds}\n",
        encoding="utf-8",
    )
    return config


async def test_an_edited_file_is_used_from_the_next_turn(tmp_path: Path) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source))) as engine:
        conversation = engine.conversation()
        assert (await conversation.send("a")).content == "echo: a [v1]"
        write_plugin(source, "v2")
        status = await engine.plugins.reload("tag")
        assert (status.state, status.last_error) == ("active", None)
        assert (await conversation.send("b")).content == "echo: b [v2]"
        # One set of hooks: the old version is gone, not running beside the new one.
        assert [r.name for r in engine.hooks.registrations()] == ["tag"]
        assert engine.status().plugins["tag"].calls == 2


async def test_a_syntax_error_keeps_the_old_version_and_status_says_why(tmp_path: Path) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source))) as engine:
        conversation = engine.conversation()
        source.write_text("def broken(:\n", encoding="utf-8")
        with pytest.raises(PluginLoadError, match=r"previous version keeps running.*SyntaxError"):
            await engine.plugins.reload("tag")
        row = engine.status().plugins["tag"]
        assert row.state == "active"
        assert row.last_error is not None
        assert "reload failed, the previous version keeps running" in row.last_error
        assert "SyntaxError" in row.last_error and "tag.py" in row.last_error
        assert (await conversation.send("still")).content == "echo: still [v1]"
        # Fixed: the next reload goes through and the complaint is gone.
        write_plugin(source, "v3")
        await engine.plugins.reload("tag")
        assert engine.status().plugins["tag"].last_error is None
        assert (await conversation.send("fixed")).content == "echo: fixed [v3]"


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"init": "raise RuntimeError('no database')"}, r"initialize failed: RuntimeError"),
        ({"extra": "import subprocess\n"}, r"tag\.py:1: imports 'subprocess' \(denied"),
        ({"extra": "import not_a_module_anywhere\n"}, r"ModuleNotFoundError"),
    ],
)
async def test_any_failing_reload_keeps_the_old_version(
    tmp_path: Path, edit: dict[str, str], why: str
) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source))) as engine:
        write_plugin(source, "v2", **edit)
        with pytest.raises(PluginLoadError, match=why):
            await engine.plugins.reload("tag")
        assert engine.status().plugins["tag"].state == "active"
        assert (await engine.conversation().send("x")).content == "echo: x [v1]"


async def test_a_module_plugin_edited_within_the_same_second_is_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same size, same second: exactly what stale __pycache__ bytecode would hide.
    write_plugin(tmp_path / "reload_mod_plugin.py", "v1")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "reload_mod_plugin", raising=False)
    async with open_engine(config_for(tmp_path, "reload_mod_plugin:Tag")) as engine:
        conversation = engine.conversation()
        assert (await conversation.send("a")).content == "echo: a [v1]"
        write_plugin(tmp_path / "reload_mod_plugin.py", "v2")
        await engine.plugins.reload("tag")
        assert (await conversation.send("b")).content == "echo: b [v2]"
        write_plugin(tmp_path / "reload_mod_plugin.py", "v3")
        (tmp_path / "reload_mod_plugin.py").write_text("x = (\n", encoding="utf-8")
        with pytest.raises(PluginLoadError, match="SyntaxError"):
            await engine.plugins.reload("tag")
        assert (await conversation.send("c")).content == "echo: c [v2]"
    sys.modules.pop("reload_mod_plugin", None)


async def test_a_turn_in_flight_finishes_on_the_version_it_started_with(
    tmp_path: Path, patient_clock: trio.testing.MockClock
) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source), seconds=3)) as engine:
        replies: dict[str, str] = {}

        async def send(text: str) -> None:
            replies[text] = (await engine.conversation().send(text)).content

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, "slow")
            await trio.sleep(1)  # the slow turn is now inside v1's process_message
            write_plugin(source, "v2")
            await engine.plugins.reload("tag")
            nursery.start_soon(send, "next")
        assert replies == {"slow": "echo: slow [v1]", "next": "echo: next [v2]"}


async def test_a_paused_plugin_stays_paused_after_a_reload(tmp_path: Path) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source))) as engine:
        await engine.plugins.pause("tag")
        write_plugin(source, "v2")
        assert (await engine.plugins.reload("tag")).state == "paused"
        assert (await engine.conversation().send("x")).content == "echo: x"
        await engine.plugins.resume("tag")
        assert (await engine.conversation().send("y")).content == "echo: y [v2]"


async def test_a_plugin_that_failed_to_load_comes_up_once_fixed(tmp_path: Path) -> None:
    source = tmp_path / "tag.py"
    source.write_text("def broken(:\n", encoding="utf-8")
    async with open_engine(config_for(tmp_path, str(source))) as engine:
        assert engine.status().plugins["tag"].state == "error"
        write_plugin(source, "v1")
        assert (await engine.plugins.reload("tag")).state == "active"
        assert (await engine.conversation().send("x")).content == "echo: x [v1]"


# --- dev = true: the watcher -----------------------------------------------------------------


async def reply_becomes(engine: object, text: str, expected: str) -> None:
    """Send turns until the reply is ``expected`` (the watcher polls on its own clock)."""
    conversation = engine.conversation()  # type: ignore[attr-defined]
    with trio.fail_after(30):
        while (await conversation.send(text)).content != expected:
            await trio.sleep(0.2)


async def test_dev_mode_reloads_an_edited_file_by_itself(
    tmp_path: Path, patient_clock: trio.testing.MockClock
) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source), dev=True)) as engine:
        assert "plugin-watch" in [a.name for a in engine.status().actors]
        assert (await engine.conversation().send("a")).content == "echo: a [v1]"
        write_plugin(source, "v2!")
        await reply_becomes(engine, "b", "echo: b [v2!]")
        # A broken save is reported and the working version keeps answering.
        source.write_text("def broken(:\n", encoding="utf-8")
        with trio.fail_after(30):
            while "SyntaxError" not in (engine.status().plugins["tag"].last_error or ""):
                await trio.sleep(0.2)
        assert (await engine.conversation().send("c")).content == "echo: c [v2!]"
        write_plugin(source, "v3")
        await reply_becomes(engine, "d", "echo: d [v3]")


async def test_without_dev_mode_nothing_watches(tmp_path: Path) -> None:
    source = write_plugin(tmp_path / "tag.py", "v1")
    async with open_engine(config_for(tmp_path, str(source))) as engine:
        assert "plugin-watch" not in [a.name for a in engine.status().actors]
