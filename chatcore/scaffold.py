"""``chatcore plugins new``: write a working, tested skeleton of a plugin.

``write_skeleton("shout", "processor", Path("."))`` creates ``shout/`` holding
the plugin module (``shout.py``), a test that runs it through a real engine on
the offline echo backend (``test_shout.py``), a ``pyproject.toml`` declaring
the ``chatcore.plugins`` entry point, and a README. ``pytest shout`` passes as
generated; the author changes the behaviour and the test together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ScaffoldError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["PLUGIN_TYPES", "Scaffold", "ScaffoldError", "write_skeleton"]

PLUGIN_TYPES = ("processor", "feature", "middleware", "backend")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Scaffold:
    """What ``write_skeleton`` created."""

    root: Path
    files: tuple[Path, ...]


def class_name(name: str) -> str:
    """``my_filter`` → ``MyFilter``."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def write_skeleton(name: str, plugin_type: str, directory: Path) -> Scaffold:
    """Write the skeleton of plugin ``name`` of ``plugin_type`` into ``directory/name``.

    Raises:
        ScaffoldError: the name is not a lower-case Python identifier, the type is
            unknown, or ``directory/name`` exists and is not empty.
    """
    if not _NAME.fullmatch(name) or name.startswith("test"):
        raise ScaffoldError(
            f"plugin name {name!r}: use lower-case letters, digits and _ (a Python module "
            "name starting with a letter, not 'test'), e.g. 'shout' or 'my_filter'"
        )
    if plugin_type not in PLUGIN_TYPES:
        raise ScaffoldError(f"plugin type {plugin_type!r}: choose one of {', '.join(PLUGIN_TYPES)}")
    root = directory / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        error = ScaffoldError(f"{root} already exists and is not empty")
        error.cli_hint = "choose another --dir"
        raise error
    values = {
        "__USAGE__": _BACKEND_USAGE if plugin_type == "backend" else _PLUGIN_USAGE,
        "__NAME__": name,
        "__CLASS__": class_name(name),
        "__DIST__": "chatcore-" + name.replace("_", "-"),
        "__TYPE__": plugin_type,
    }
    contents = {
        f"{name}.py": _MODULES[plugin_type],
        f"test_{name}.py": _TESTS[plugin_type],
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
    }
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, template in contents.items():
        path = root / filename
        path.write_text(_fill(template, values), encoding="utf-8")
        written.append(path)
    return Scaffold(root=root, files=tuple(written))


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(key, value)
    return template


# --- templates: placeholders are __NAME__, __CLASS__, __DIST__, __TYPE__ ---------------------

_PROCESSOR = '''\
"""__NAME__: a chatcore message processor.

It sees every user message before the backend does (the BEFORE_MESSAGE hook)
and returns it (changed or not), or answers the turn itself by returning
``PluginResult.short_circuit(...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from chatcore.plugin import BaseMessageProcessor, PluginMetadata
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from chatcore.plugin import ChatContext, Message


class Settings(BaseModel):
    """The ``[plugins.config]`` table of this plugin's entry (checked at load)."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = "[__NAME__] "
    """Put in front of every user message."""


class __CLASS__(BaseMessageProcessor):
    """Puts ``prefix`` in front of each user message."""

    metadata = PluginMetadata(
        name="__NAME__",
        version="0.1.0",
        description="Puts a prefix in front of each user message",
    )
    settings_model: ClassVar[type[BaseModel]] = Settings
    settings: Settings

    async def process_message(self, message: Message, context: ChatContext) -> Message:
        return message.replace(content=self.settings.prefix + message.content)
'''

_FEATURE = '''\
"""__NAME__: a chatcore feature extension.

It enriches the context the backend receives (system prompt, messages,
metadata) after the processors ran; what it puts under ``REPLY_METADATA`` is
stored with the reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from chatcore.plugin import REPLY_METADATA, BaseFeatureExtension, PluginMetadata
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from chatcore.plugin import ChatContext


class Settings(BaseModel):
    """The ``[plugins.config]`` table of this plugin's entry (checked at load)."""

    model_config = ConfigDict(extra="forbid")

    note: str = "Answer briefly."
    """Added to the system prompt of every turn."""


class __CLASS__(BaseFeatureExtension):
    """Adds ``note`` to the system prompt and records it in the reply's metadata."""

    metadata = PluginMetadata(
        name="__NAME__",
        version="0.1.0",
        description="Adds a note to the system prompt",
    )
    settings_model: ClassVar[type[BaseModel]] = Settings
    settings: Settings

    async def enrich(self, context: ChatContext) -> ChatContext:
        note = self.settings.note
        system = f"{context.system}\\n\\n{note}" if context.system else note
        return context.replace(system=system).with_metadata(
            **{REPLY_METADATA: {"__NAME__": {"note": note}}}
        )
'''

_MIDDLEWARE = '''\
"""__NAME__: a chatcore middleware.

Middleware wraps the rest of the turn like an onion: do something, ``await
call_next(context)`` for the reply, do something after. Returning a reply
without calling ``call_next`` answers the turn without the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from chatcore.plugin import BaseMiddleware, Message, PluginMetadata, Role
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from chatcore.plugin import CallNext, ChatContext


class Settings(BaseModel):
    """The ``[plugins.config]`` table of this plugin's entry (checked at load)."""

    model_config = ConfigDict(extra="forbid")

    command: str = "/__NAME__"
    """A message that is exactly this is answered by the middleware itself."""


class __CLASS__(BaseMiddleware):
    """Counts turns; answers ``command`` with the count instead of asking the backend."""

    metadata = PluginMetadata(
        name="__NAME__",
        version="0.1.0",
        description="Counts turns and answers a status command",
    )
    settings_model: ClassVar[type[BaseModel]] = Settings
    settings: Settings

    async def _do_initialize(self) -> None:
        self.turns = 0

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        self.turns += 1
        last = context.last_user_message
        if last is not None and last.content.strip() == self.settings.command:
            status = f"__NAME__ has seen {self.turns} turn(s)"
            return Message(role=Role.ASSISTANT, content=status)
        return await call_next(context)
'''

_BACKEND = '''\
"""__NAME__: a chatcore backend.

A backend streams the reply as ``Chunk``s; ``chat`` (inherited) collects them.
Replace ``stream`` with calls to your model's API; keep the client in
``_do_initialize`` and close it in ``aclose``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatcore.plugin import BaseBackendProvider, Chunk, PluginMetadata

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from chatcore.plugin import ChatContext


class __CLASS__(BaseBackendProvider):
    """Answers with the words of the last user message in reverse order."""

    metadata = PluginMetadata(
        name="__NAME__",
        version="0.1.0",
        description="Replies with the user's words reversed (a skeleton backend)",
    )

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        last = context.last_user_message
        words = list(reversed(last.content.split())) if last is not None else []
        if not words:
            yield Chunk(text="", index=0, done=True)
            return
        for index, word in enumerate(words):
            done = index == len(words) - 1
            yield Chunk(text=word if done else word + " ", index=index, done=done)

    async def list_models(self) -> list[str]:
        return ["__NAME__"]
'''

_TEST_HEAD = '''\
"""Tests for __NAME__, run through a real chatcore engine on the offline echo backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from chatcore import open_engine

if TYPE_CHECKING:
    from pathlib import Path

    from chatcore.plugin import Message

CONFIG = """\\
default_backend = "echo"
[backends.echo]
plugin = "echo"
__CONFIG__
"""


def run_turns(tmp_path: Path, *texts: str, backend: str = "echo") -> list[Message]:
    """Open an engine with the plugin configured, send ``texts``, return the replies."""
    config = tmp_path / "chatcore.toml"
    config.write_text(CONFIG, encoding="utf-8")

    async def main() -> list[Message]:
        async with open_engine(config, backend=backend, data_dir=tmp_path / "data") as engine:
            status = engine.status().plugins["__NAME__"]
            assert status.state == "active", status.last_error
            conversation = engine.conversation()
            return [await conversation.send(text) for text in texts]

    return trio.run(main)
'''

_PLUGIN_ENTRY = '[[plugins]]\nplugin = "__NAME__:__CLASS__"'

_TESTS = {
    "processor": _TEST_HEAD.replace("__CONFIG__", _PLUGIN_ENTRY)
    + """

def test_the_user_message_gets_the_prefix(tmp_path: Path) -> None:
    (reply,) = run_turns(tmp_path, "hello")
    assert reply.content == "echo: [__NAME__] hello"
""",
    "feature": _TEST_HEAD.replace("__CONFIG__", _PLUGIN_ENTRY)
    + """

def test_the_note_reaches_the_reply_metadata(tmp_path: Path) -> None:
    (reply,) = run_turns(tmp_path, "hello")
    assert reply.content == "echo: hello"
    assert reply.metadata["__NAME__"] == {"note": "Answer briefly."}
""",
    "middleware": _TEST_HEAD.replace("__CONFIG__", _PLUGIN_ENTRY)
    + """

def test_turns_pass_through_and_the_command_is_answered(tmp_path: Path) -> None:
    first, second = run_turns(tmp_path, "hello", "/__NAME__")
    assert first.content == "echo: hello"
    assert second.content == "__NAME__ has seen 2 turn(s)"
""",
    "backend": _TEST_HEAD.replace(
        "__CONFIG__", '[backends.__NAME__]\nplugin = "__NAME__:__CLASS__"'
    )
    + """

def test_the_reply_is_the_words_reversed(tmp_path: Path) -> None:
    (reply,) = run_turns(tmp_path, "one two three", backend="__NAME__")
    assert reply.content == "three two one"
""",
}

_MODULES = {
    "processor": _PROCESSOR,
    "feature": _FEATURE,
    "middleware": _MIDDLEWARE,
    "backend": _BACKEND,
}

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "A chatcore __TYPE__ plugin"
requires-python = ">=3.11"
dependencies = ["chatcore"]

# This is how chatcore finds the plugin once it is pip-installed:
# a config then names it as plugin = "__NAME__".
[project.entry-points."chatcore.plugins"]
__NAME__ = "__NAME__:__CLASS__"

[tool.setuptools]
py-modules = ["__NAME__"]
"""

_PLUGIN_USAGE = """\
    [[plugins]]
    plugin = "__NAME__"
    priority = 50             # lower runs first
    # [plugins.config]        # this plugin's own settings
"""

_BACKEND_USAGE = """\
    default_backend = "__NAME__"

    [backends.__NAME__]
    plugin = "__NAME__"
"""

_README = """\
# __NAME__

A chatcore __TYPE__ plugin.

## Try it

    pytest                 # runs test___NAME__.py through a real engine (echo backend)
    pip install -e .       # registers the entry point "__NAME__"

## Use it

After `pip install`, name it in your chatcore config (`chatcore config path`):

__USAGE__

`chatcore plugins` lists it with its state and call statistics. Without
installing, `plugin = "__NAME__:__CLASS__"` works while this folder is on
`PYTHONPATH`, and `plugin = "/path/to/__NAME__.py"` works from anywhere.

See chatcore's docs/plugins.md for hooks, priorities, settings, the host
(key-value store, background jobs, backends) and isolation.
"""
