"""The source scan of plugins before import, and the permissions a plugin declares.

The acceptance path runs the real `chatcore plugins --json` and `chatcore ask`
commands on a config naming a plugin file; the rules are checked on source text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from helpers import subprocess_env

from chatcore import open_engine
from chatcore._plugins import resolve_plugin_class
from chatcore._plugins._scan import (
    check_module,
    module_source_files,
    scan_source,
)
from chatcore.errors import PluginLoadError, PluginRefused

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
HINT = "(denied; set trusted = true for this plugin to allow)"

SHELL_PLUGIN = '''\
"""A processor that shells out: the scan must catch line 3."""

import subprocess

from chatcore.plugin import BaseMessageProcessor, PluginMetadata
from chatcore.result import PluginResult


class Shell(BaseMessageProcessor):
    metadata = PluginMetadata(name="shell")

    async def process_message(self, message, context):
        out = subprocess.run(["echo", "shelled"], capture_output=True, text=True).stdout
        return PluginResult.ok(message.replace(content=f"{message.content} {out.strip()}"))
'''

CONFIG = """\
default_backend = "echo"
[backends.echo]
plugin = "echo"
[[plugins]]
plugin = "{plugin}"
trusted = {trusted}
"""


def chatcore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )


# --- acceptance: refused with file, line and import; trusted loads -------------------------


def test_a_plugin_importing_subprocess_is_refused_unless_trusted(tmp_path: Path) -> None:
    plugin = tmp_path / "plugins" / "shell.py"
    plugin.parent.mkdir()
    plugin.write_text(SHELL_PLUGIN)
    config = tmp_path / "chatcore.toml"

    config.write_text(CONFIG.format(plugin=plugin, trusted="false"))
    listed = chatcore("plugins", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "shell")
    assert row["state"] == "error"
    assert row["last_error"] == f"{plugin}:3: imports 'subprocess' {HINT}"
    # A refused plugin stops turns (fail closed), unless its entry makes it optional.
    asked = chatcore("ask", "--config", str(config), "hi")
    assert (asked.returncode, asked.stdout) == (2, ""), asked.stderr
    assert f"{config}: plugins[0].plugin: {plugin}:3: imports 'subprocess'" in asked.stderr
    config.write_text(CONFIG.format(plugin=plugin, trusted="false") + "required = false\n")
    asked = chatcore("ask", "--config", str(config), "hi")
    assert (asked.returncode, asked.stdout) == (0, "echo: hi\n"), asked.stderr

    config.write_text(CONFIG.format(plugin=plugin, trusted="true"))
    listed = chatcore("plugins", "--json", "--config", str(config))
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "shell")
    assert (row["state"], row["last_error"]) == ("active", None)
    asked = chatcore("ask", "--config", str(config), "hi")
    assert (asked.returncode, asked.stdout) == (0, "echo: hi shelled\n"), asked.stderr


# --- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "finding"),
    [
        ("import subprocess", 1, "imports 'subprocess'"),
        ("x = 1\nfrom subprocess import run", 2, "imports 'subprocess'"),
        ("import multiprocessing.pool", 1, "imports 'multiprocessing.pool'"),
        ("import pty", 1, "imports 'pty'"),
        ("import ctypes.util", 1, "imports 'ctypes.util'"),
        ("from os import system", 1, "imports 'os.system'"),
        ("from os import execvp", 1, "imports 'os.execvp'"),
        ("import os\n\nos.system('ls')", 3, "calls 'os.system'"),
        ("import os\nos.popen('ls')", 2, "calls 'os.popen'"),
        ("import os as o\no.spawnl(0, 'x')", 2, "calls 'os.spawnl'"),
        ("import os\nos.execv('x', [])", 2, "calls 'os.execv'"),
        ("import os\nos.fork()", 2, "calls 'os.fork'"),
        ("eval('1 + 1')", 1, "calls 'eval'"),
        ("exec('x = 1')", 1, "calls 'exec'"),
        ("run = eval", 1, "calls 'eval'"),
        ("code = compile('1', 'f', 'eval')", 1, "calls 'compile'"),
        ("m = __import__('json')", 1, "calls '__import__'"),
        ("import builtins\nbuiltins.exec('1')", 2, "calls 'builtins.exec'"),
        ("import importlib\nimportlib.import_module('subprocess')", 2, "imports 'subprocess'"),
    ],
)
def test_denied_imports_and_calls_are_found_with_their_line(
    source: str, line: int, finding: str
) -> None:
    findings = scan_source(source, "p.py")
    assert [str(f) for f in findings] == [f"p.py:{line}: {finding} {HINT}"]


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.path.join('a', 'b')\nos.environ.get('X')",
        "import re\nre.compile('x')",
        # Network is the `network` permission, enforced by the child process, not the lint.
        "import socket\nimport httpx",
        "from . import helpers",
        "def oops(:\n",  # a syntax error is reported by the import, not the scan
    ],
)
def test_ordinary_code_passes(source: str) -> None:
    assert scan_source(source, "p.py") == []


def test_every_finding_is_reported_and_the_error_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "many.py"
    path.write_text("import ctypes\nimport pty\neval('1')\n")
    with pytest.raises(PluginRefused, match=r"many\.py:1: imports 'ctypes' .*; and 2 more$") as e:
        resolve_plugin_class(str(path))
    assert [(f.line, f.name) for f in e.value.findings] == [
        (1, "ctypes"),
        (2, "pty"),
        (3, "eval"),
    ]


def test_a_module_is_scanned_before_anything_of_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "shady_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import os\nos.system('touch pwned')\n")
    (package / "proc.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_source_files("shady_pkg.proc") == [package / "__init__.py", package / "proc.py"]
    with pytest.raises(PluginLoadError, match=r"shady_pkg/__init__\.py:2: calls 'os\.system'"):
        resolve_plugin_class("shady_pkg.proc:Thing")
    assert "shady_pkg" not in sys.modules
    assert not (Path.cwd() / "pwned").exists()


def test_chatcores_own_plugins_are_not_scanned() -> None:
    # processors/ and features/ are reviewed with chatcore; they may use anything.
    check_module("processors.content_filter")
    check_module("chatcore._plugins._scan")
    assert resolve_plugin_class("content_filter").metadata.name == "content_filter"


def test_a_refused_file_in_a_plugin_directory_is_listed_in_error(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "shell.py").write_text(SHELL_PLUGIN)

    async def main() -> dict[str, tuple[str, str | None]]:
        async with open_engine(backend="echo", plugin_dirs=[plugins]) as engine:
            reply = await engine.conversation().send("hi")
            assert reply.content == "echo: hi"
            return {n: (s.state, s.last_error) for n, s in engine.status().plugins.items()}

    rows = trio.run(main)
    assert rows["shell"] == ("error", f"{plugins / 'shell.py'}:3: imports 'subprocess' {HINT}")


# --- permissions ---------------------------------------------------------------------------

PERMISSION_PLUGIN = """\
from chatcore.plugin import BaseFeatureExtension, PluginMetadata, PluginType
from chatcore.result import PluginResult


class Probe(BaseFeatureExtension):
    metadata = PluginMetadata(
        name="{name}", plugin_type=PluginType.FEATURE_EXTENSION, permissions={permissions!r}
    )

    async def enrich(self, context):
        return PluginResult.ok(context)
"""


def test_only_a_plugin_declaring_store_gets_the_database_path(tmp_path: Path) -> None:
    (tmp_path / "with_store.py").write_text(
        PERMISSION_PLUGIN.format(name="with_store", permissions=("store",))
    )
    (tmp_path / "without.py").write_text(
        PERMISSION_PLUGIN.format(name="without", permissions=("network",))
    )
    (tmp_path / "odd.py").write_text(PERMISSION_PLUGIN.format(name="odd", permissions=("root",)))

    async def main() -> None:
        async with open_engine(backend="echo", plugin_dirs=[tmp_path]) as engine:
            with_store = engine.plugins.get_plugin("with_store").host
            without = engine.plugins.get_plugin("without").host
            assert with_store is not None and without is not None
            assert with_store.database_path == engine.store.path
            assert without.database_path is None
            # Its own kv namespace is there either way.
            without.kv.set("k", 1)
            assert without.kv.get("k") == 1
            odd = engine.status().plugins["odd"]
            assert (odd.state, odd.last_error) == (
                "error",
                "plugin class Probe declares unknown permission 'root' "
                "(known: filesystem, network, store)",
            )

    trio.run(main)


def test_the_built_in_features_that_keep_tables_declare_store() -> None:
    assert resolve_plugin_class("rag").metadata.permissions == ("store",)
    assert resolve_plugin_class("memory").metadata.permissions == ("store",)


def test_the_refusal_message_reads_as_documented() -> None:
    text = textwrap.dedent(
        """\
        import json
        import subprocess
        """
    )
    (finding,) = scan_source(text, "plugins/bad.py")
    assert str(finding) == (
        "plugins/bad.py:2: imports 'subprocess' (denied; set trusted = true for this plugin "
        "to allow)"
    )
