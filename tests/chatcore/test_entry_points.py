"""Third-party plugins: a pip-installed distribution found by its entry point, and
plugin files dropped into a configured plugin directory.

The example distribution lives in tests/support/example_plugin and is installed into the
venv by the Makefile (`pip install ./tests/support/example_plugin`); these tests run the
real `chatcore` command against it, as a user would after `pip install`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

from helpers import TESTS_DIR, subprocess_env

from chatcore._plugins._scan import module_source_files

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


def chatcore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )


def plugin_rows(config: Path) -> dict[str, dict[str, object]]:
    result = chatcore("plugins", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_the_example_distribution_is_installed_with_its_entry_point() -> None:
    (found,) = [ep for ep in entry_points(group="chatcore.plugins") if ep.name == "example_greeter"]
    assert found.value == "chatcore_example_plugin:Greeter"
    assert found.dist is not None and found.dist.name == "chatcore-example-plugin"
    # Installed into site-packages, not imported from the source tree.
    files = [str(f) for f in distribution("chatcore-example-plugin").files or ()]
    assert "chatcore_example_plugin/__init__.py" in files
    (source,) = module_source_files("chatcore_example_plugin")
    assert "site-packages" in source.parts
    assert TESTS_DIR not in source.parents


def test_an_installed_plugin_shows_in_plugins_json_and_runs(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(BASE + '[[plugins]]\nplugin = "example_greeter"\n')
    row = plugin_rows(config)["example_greeter"]
    assert (row["type"], row["state"], row["last_error"]) == ("processor", "active", None)

    # The greeting goes on the finished reply (AFTER_MESSAGE), which --json prints.
    asked = chatcore("ask", "--json", "--config", str(config), "hi")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["content"] == "Hello! echo: hi"

    config.write_text(
        BASE + '[[plugins]]\nplugin = "example_greeter"\n[plugins.config]\ngreeting = "Hi there"\n'
    )
    asked = chatcore("ask", "--json", "--config", str(config), "hi")
    assert json.loads(asked.stdout)["content"] == "Hi there! echo: hi", asked.stderr


def test_an_installed_plugins_settings_are_checked_like_any_config(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(
        BASE + '[[plugins]]\nplugin = "example_greeter"\n[plugins.config]\ngreting = "typo"\n'
    )
    result = chatcore("plugins", "--json", "--config", str(config))
    assert result.returncode != 0
    assert "plugins[0].config.greting" in result.stderr
    assert str(config) in result.stderr


def test_files_in_a_plugin_directory_load_without_an_entry(tmp_path: Path) -> None:
    plugins = tmp_path / "my_plugins"
    plugins.mkdir()
    (plugins / "exclaim.py").write_text(
        "from chatcore.plugins import BaseMessageProcessor, PluginMetadata\n"
        "from chatcore.result import PluginResult\n\n\n"
        "class Exclaim(BaseMessageProcessor):\n"
        '    metadata = PluginMetadata(name="exclaim", description="adds !")\n\n'
        "    async def process_message(self, message, context):\n"
        '        return PluginResult.ok(message.replace(content=message.content + "!"))\n'
    )
    (plugins / "_helper.py").write_text("raise RuntimeError('never imported')\n")
    config = tmp_path / "chatcore.toml"
    # Relative to the config file's folder.
    config.write_text('plugin_dirs = ["my_plugins"]\n' + BASE)
    rows = plugin_rows(config)
    assert (rows["exclaim"]["state"], rows["exclaim"]["type"]) == ("active", "processor")
    assert "_helper" not in rows
    asked = chatcore("ask", "--config", str(config), "hi")
    assert (asked.returncode, asked.stdout) == (0, "echo: hi!\n"), asked.stderr
