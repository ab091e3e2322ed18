"""The plugin-author API: one module, types from base classes, hooks that return values."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import api_plugins
import pytest
from helpers import subprocess_env

import chatcore.plugin
from chatcore import open_engine
from chatcore.plugin import (
    BaseFeatureExtension,
    BaseMessageProcessor,
    PluginMetadata,
    PluginType,
)

WriteConfig = Callable[..., Path]
CHATCORE = str(Path(sys.executable).with_name("chatcore"))
BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
NOT_A_PLUGIN = (
    "LookAlike is not a chatcore plugin class: subclass chatcore.plugin.BaseMessageProcessor "
    "(or BaseFeatureExtension, BaseMiddleware, BaseBackendProvider)"
)


def entries(*specs: str) -> str:
    return "".join(f'[[plugins]]\nplugin = "{spec}"\n' for spec in specs)


def optional(spec: str) -> str:
    """An entry turns may run without (see tests/chatcore/test_fail_closed.py)."""
    return entries(spec) + "required = false\n"


def test_the_plugin_module_surface_changes_only_on_purpose() -> None:
    assert sorted(chatcore.plugin.__all__) == sorted(
        [
            "LOCAL_METADATA",
            "REPLY_METADATA",
            "BackendAuthError",
            "BackendBadRequest",
            "BackendError",
            "BackendRateLimited",
            "BackendTimeout",
            "BackendUnavailable",
            "BackgroundJob",
            "BaseBackendProvider",
            "BaseFeatureExtension",
            "BaseMessageProcessor",
            "BaseMiddleware",
            "CallNext",
            "ChatContext",
            "ChatcoreError",
            "Chunk",
            "ConfigError",
            "HookFailure",
            "HookPriority",
            "HookType",
            "InvalidInput",
            "KVNamespace",
            "Message",
            "MessageStatus",
            "MigrationError",
            "MigrationSet",
            "ModelNotFound",
            "PluginConfig",
            "PluginError",
            "PluginHost",
            "PluginLoadError",
            "PluginMetadata",
            "PluginResult",
            "PluginState",
            "PluginStatus",
            "PluginType",
            "Role",
            "SharedRecord",
            "Usage",
            "config_option",
            "connect_database",
            "hook",
            "json_option",
            "load_command_config",
            "print_json",
            "run_guarded",
            "write_transaction",
        ]
    )
    for name in chatcore.plugin.__all__:
        assert getattr(chatcore.plugin, name) is not None
    # Everything public the module holds is listed (trio's test_exports rule).
    public = {n for n in vars(chatcore.plugin) if not n.startswith("_") and n != "annotations"}
    assert public == set(chatcore.plugin.__all__)


def run_chatcore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        capture_output=True,
        text=True,
        env=subprocess_env({"PYTHONWARNINGS": "always::DeprecationWarning"}),
        timeout=60,
    )


@pytest.mark.parametrize("module", ["yourmodule", "oldstyle"])
def test_the_readme_example_shouts_new_style_and_0_1_style(tmp_path: Path, module: str) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(BASE + entries(f"{module}:Shout"))
    result = run_chatcore("ask", "--config", str(config), "--backend", "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "echo: HELLO\n"), result.stderr
    deprecated = "chatcore.plugins is deprecated" in result.stderr
    assert deprecated is (module == "oldstyle")


def test_the_deprecated_alias_warns_once_and_hands_out_the_same_objects() -> None:
    script = (
        "import importlib, sys, warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import chatcore.plugins as old\n"
        "    del sys.modules['chatcore.plugins']\n"
        "    import chatcore.plugins as again\n"
        "import chatcore.plugin as new\n"
        "print(len([w for w in caught if issubclass(w.category, DeprecationWarning)]))\n"
        "print(caught[0].filename == '<string>', str(caught[0].message))\n"
        "print(all(getattr(old, n) is getattr(new, n) for n in new.__all__))\n"
        "print(old.PluginManager.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "1",
        "True chatcore.plugins is deprecated and goes away in the next release: "
        "import from chatcore.plugin instead",
        "True",
        "chatcore._plugins._manager",
    ]


def test_the_type_comes_from_the_base_class_and_names_from_class_attributes() -> None:
    class PIIScrubber(BaseMessageProcessor):
        """Scrubs personal data."""

        async def process_message(self, message: object, context: object) -> None:
            return None

    class Explicit(BaseFeatureExtension):
        metadata = PluginMetadata(name="explicit", version="3.0", permissions=("store",))

        async def enrich(self, context: object) -> None:
            return None

    assert (PIIScrubber.plugin_type, PIIScrubber.name) == (
        PluginType.MESSAGE_PROCESSOR,
        "pii_scrubber",
    )
    assert PIIScrubber.metadata == PluginMetadata(
        name="pii_scrubber", version="0.0.0", description="Scrubs personal data."
    )
    assert (api_plugins.Bracket.metadata.name, api_plugins.Bracket.metadata.version) == (
        "bracket",
        "0.3.0",
    )
    assert (Explicit.plugin_type, Explicit.name, Explicit.version) == (
        PluginType.FEATURE_EXTENSION,
        "explicit",
        "3.0",
    )
    assert Explicit.metadata.plugin_type is None


def test_a_name_that_disagrees_with_the_metadata_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"name = 'a' disagrees with metadata.name = 'b'"):

        class Twice(BaseMessageProcessor):
            name = "a"
            metadata = PluginMetadata(name="b")


async def test_a_feature_with_no_type_anywhere_runs_as_a_feature(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(BASE + entries("api_plugins:Tagger"))) as engine:
        reply = await engine.conversation().send("hello")
        status = engine.status().plugins["tagger"]
    assert reply.content == "echo: [tagged] hello"
    assert (status.type, status.state, status.calls, status.version) == (
        "feature",
        "active",
        1,
        "2.1.0",
    )


async def test_a_plain_class_is_refused_with_the_reason_and_the_rest_loads(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + entries("api_plugins:Tagger") + optional("api_plugins:LookAlike"))
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hello")
        plugins = engine.status().plugins
    assert reply.content == "echo: [tagged] hello"
    assert plugins["tagger"].state == "active"
    refused = plugins["lookalike"]
    assert (refused.state, refused.last_error) == (
        "error",
        f"plugin 'api_plugins:LookAlike': {NOT_A_PLUGIN}",
    )


async def test_a_plugin_type_that_disagrees_with_the_base_class_is_a_load_error(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(BASE + optional("api_plugins:Confused"))) as engine:
        status = engine.status().plugins["confused"]
        reply = await engine.conversation().send("hi")
    assert status.state == "error"
    assert status.last_error == (
        "plugin 'confused': metadata says plugin_type='feature', but Confused subclasses "
        "a processor base class; the base class decides the type: drop plugin_type from "
        "its metadata"
    )
    assert reply.content == "echo: hi"


async def test_hooks_return_a_value_none_or_a_result(write_config: WriteConfig) -> None:
    config = write_config(
        BASE
        + entries(
            "api_plugins:Quiet",
            "api_plugins:Wrapped",
            "api_plugins:Bracket",
            "api_plugins:Unchanged",
            "api_plugins:Polite",
            "api_plugins:ChunkCounter",
        )
    )
    api_plugins.ChunkCounter.seen = 0
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        reply = await conversation.send("hi")
        streamed = [chunk.text async for chunk in conversation.stream("again")]
        plugins = engine.status().plugins
        stored = await conversation.messages()
    assert reply.content == "[echo: hi!]"
    assert "".join(streamed) == "echo: again!"
    assert stored[1].content == "[echo: hi!]"
    assert api_plugins.ChunkCounter.seen >= 2
    for name in ("quiet", "wrapped", "bracket", "unchanged", "polite", "chunk_counter"):
        assert (plugins[name].state, plugins[name].failures) == ("active", 0), name
    assert plugins["bracket"].calls == 2  # its reply hook only; never the user message


async def test_a_hook_returning_the_wrong_type_is_a_counted_failure(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(BASE + entries("api_plugins:Sloppy"))) as engine:
        reply = await engine.conversation().send("hi")
        status = engine.status().plugins["sloppy"]
    assert reply.content == "echo: hi"
    assert (status.calls, status.failures) == (1, 1)
    assert (
        status.last_error == "TypeError: hook returned str, expected Message, None or PluginResult"
    )


async def test_a_processor_that_overrides_nothing_is_refused(write_config: WriteConfig) -> None:
    async with open_engine(write_config(BASE + entries("api_plugins:Nothing"))) as engine:
        status = engine.status().plugins["nothing"]
    assert (status.state, status.last_error) == (
        "error",
        "plugin class Nothing does not implement process_message",
    )


async def test_a_backend_in_plugins_and_a_plugin_in_backends_are_refused(
    write_config: WriteConfig,
) -> None:
    config = write_config(
        BASE
        + '[backends.odd]\nplugin = "api_plugins:Tagger"\n'
        + '[[plugins]]\nplugin = "echo"\nname = "misplaced"\n'
    )
    async with open_engine(config) as engine:
        await engine.plugins.ensure_backend("odd")
        plugins = engine.status().plugins
    assert plugins["odd"].last_error == (
        "backends.odd.plugin: 'api_plugins:Tagger' is a feature plugin, not a backend"
    )
    assert plugins["misplaced"].last_error == (
        "plugin 'echo' is a backend: configure it as [backends.misplaced] with plugin = \"echo\""
    )


async def test_backends_take_the_same_activation_path_as_plugins(
    write_config: WriteConfig,
) -> None:
    from chatcore.plugin import HookType, PluginStatus

    loaded: list[str] = []
    async with open_engine(write_config(BASE)) as engine:
        from chatcore.hooks import HookRegistration

        async def on_load(status: PluginStatus, context: object) -> None:
            loaded.append(status.name)

        engine.hooks.register(HookRegistration("watcher", HookType.ON_PLUGIN_LOAD, on_load))
        await engine.plugins.reload("echo")
        provider = engine.plugins.get_backend_provider("echo")
        reply = await engine.conversation().send("still here")
    assert loaded == ["echo"]
    assert provider.host is not None and provider.host.name == "echo"
    assert reply.content == "echo: still here"


def test_plugin_local_data_sits_under_one_key_and_shared_records_carry_it() -> None:
    from chatcore.plugin import LOCAL_METADATA, Message, SharedRecord

    message = Message.user("hi", metadata={"lang": "en"})
    noted = message.with_local("one", {"a": 1}).with_local("two", [2])
    assert noted.local("one") == {"a": 1} and noted.local("two") == [2]
    assert noted.local("three") is None and message.local("one") is None
    assert dict(noted.metadata[LOCAL_METADATA]) == {"one": {"a": 1}, "two": [2]}
    assert noted.metadata["lang"] == "en"
    record = SharedRecord(
        "c", {"content": "hi"}, (noted.metadata[LOCAL_METADATA], {"two": [3]}, {})
    )
    assert record.local_of("two") == [[2], [3]]
    assert record.local_of("one") == [{"a": 1}]
    changed = record.with_texts(content="HI")
    assert (dict(changed.texts), dict(record.texts)) == ({"content": "HI"}, {"content": "hi"})
    assert changed.destination == "replication"
