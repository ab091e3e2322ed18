"""Commands that distributions add through the `chatcore.commands` entry-point group.

The example distribution (tests/support/example_plugin, installed by the Makefile) adds
`chatcore greet`; chatcore registers its own `rag`, `memory` and `metrics` the
same way. These tests run the real `chatcore` executable. Clashes and broken
entries come from distributions installed into a folder put on PYTHONPATH (a
`*.dist-info` folder with METADATA and entry_points.txt, as pip writes it), which
`importlib.metadata` finds like any other.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from helpers import EXAMPLE_PLUGIN_DIR, REPO_ROOT, subprocess_env

from chatcore.cli._entry_points import COMMANDS_GROUP, installed_entries
from chatcore.cli._summary import docstring_summary, find_spec_unimported, summary_of

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
GREETER = '[[plugins]]\nplugin = "example_greeter"\n'

GREET_SUMMARY = "Greet NAME as the example_greeter plugin is configured to."
PLUGIN_MODULES = frozenset(
    {
        "chatcore_example_plugin",
        "chatcore_example_plugin.commands",
        "features",
        "features.rag",
        "features.memory",
        "chatcore.middleware.metrics",
        "chatcore.middleware._metrics_cli",
    }
)


def chatcore(
    *args: str, env: dict[str, str] | None = None, site: Path | None = None
) -> subprocess.CompletedProcess[str]:
    extra = dict(env or {})
    if site is not None:
        base = subprocess_env()["PYTHONPATH"]
        extra["PYTHONPATH"] = f"{site}{':' if base else ''}{base}"
    return subprocess.run(
        [CHATCORE, *args],
        input="",
        capture_output=True,
        text=True,
        env=subprocess_env(extra),
        timeout=60,
    )


def help_rows(stdout: str) -> dict[str, str]:
    """The Commands section of `--help` as name -> summary."""
    section = stdout.split("\nCommands:\n", 1)[1]
    return dict(
        (m.group(1), m.group(2)) for m in re.finditer(r"^  (\S+)\s+(.*)$", section, flags=re.M)
    )


MODULE_TRACE = """\
import atexit, os, sys


def _dump():
    with open(os.environ["CHATCORE_TEST_MODULES"], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))


atexit.register(_dump)
"""


def imported_modules(tmp_path: Path, *args: str) -> set[str]:
    """Every module the real `chatcore ARGS` had imported when it exited.

    A `sitecustomize` on PYTHONPATH (Python imports it at start-up) dumps
    `sys.modules` at exit. (`-X importtime` is no use here: it does not log
    modules imported through `importlib.import_module`, which is how entry points
    load.)
    """
    trace = tmp_path / "trace"
    trace.mkdir(exist_ok=True)
    (trace / "sitecustomize.py").write_text(MODULE_TRACE)
    dump = trace / "modules.txt"
    dump.unlink(missing_ok=True)
    result = chatcore(*args, env={"CHATCORE_TEST_MODULES": str(dump)}, site=trace)
    assert result.returncode == 0, result.stderr
    return set(dump.read_text().splitlines())


def install(site: Path, dist: str, commands: dict[str, str], files: dict[str, str]) -> None:
    """Install a distribution into ``site``: its metadata, entry points and modules."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in commands.items())
    (info / "entry_points.txt").write_text(f"[chatcore.commands]\n{lines}")
    for relative, text in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CLASH_COMMANDS = '''
import click


def history_command():
    """A history that must never replace chatcore's."""
    return click.Command("history", callback=lambda: click.echo("the plugin's history"))


def rag_command():
    """A rag that must never replace chatcore's."""
    return click.Command("rag", callback=lambda: click.echo("the plugin's rag"))


def greet_command():
    """A second greet: the example plugin's sorts first."""
    return click.Command("greet", callback=lambda: click.echo("the second greet"))


class Commands:
    @classmethod
    def hello(cls):
        """Say hello from a classmethod entry point."""
        return click.Command("hello", callback=lambda: click.echo("hello from a plugin"))


def not_a_command():
    """Returns text instead of a command."""
    return "not a command"


def raising_command():
    """Fails while building its command."""
    raise ValueError("cannot build\\nthis command")
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder on PYTHONPATH with two extra distributions installed into it."""
    folder = tmp_path / "site"
    install(
        folder,
        "chatcore-zzz-clash",
        {
            "history": "clash_cmds:history_command",
            "rag": "clash_cmds:rag_command",
            "greet": "clash_cmds:greet_command",
            "hello": "clash_cmds:Commands.hello",
            "notcmd": "clash_cmds:not_a_command",
            "raising": "clash_cmds:raising_command",
            "broken": "no_such_module_for_chatcore:command",
            "boom": "boompkg.cmds:boom_command",
        },
        {
            "clash_cmds.py": CLASH_COMMANDS,
            "boompkg/__init__.py": 'raise RuntimeError("the package __init__ ran")\n',
            "boompkg/cmds.py": (
                "def boom_command():\n"
                '    """Read from source: the package __init__ never runs for --help."""\n'
            ),
        },
    )
    return folder


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatcore.toml"
    path.write_text(BASE + text)
    return path


# --- registration and listing -----------------------------------------------------------


def test_the_built_in_and_example_commands_are_entry_points() -> None:
    found = {
        (ep.name, ep.value, ep.dist.name if ep.dist else None)
        for ep in entry_points().select(group="chatcore.commands")
    }
    assert {
        ("memory", "features.memory:memory_command", "chatcore"),
        ("metrics", "chatcore.middleware._metrics_cli:metrics_command", "chatcore"),
        ("rag", "features.rag:rag_command", "chatcore"),
        ("greet", "chatcore_example_plugin.commands:greet_command", "chatcore-example-plugin"),
    } <= found


def test_the_cli_module_offers_plugin_commands_their_helpers() -> None:
    import chatcore.cli

    assert sorted(chatcore.cli.__all__) == [
        "config_option",
        "json_option",
        "load_command_config",
        "main",
        "print_json",
        "run_guarded",
    ]
    for name in chatcore.cli.__all__:
        assert callable(getattr(chatcore.cli, name))
    # The private map of plugin commands is gone: entry points are the only way.
    assert not hasattr(chatcore.cli, "PLUGIN_COMMANDS")
    assert sorted(chatcore.cli.cli.commands) == [
        "ask",
        "backends",
        "config",
        "history",
        "plugins",
        "replay",
        "sync",
        "tui",
    ]


def test_help_lists_entry_point_commands_with_their_summaries() -> None:
    result = chatcore("--help")
    assert (result.returncode, result.stderr) == (0, "")
    rows = help_rows(result.stdout)
    assert rows["greet"] == GREET_SUMMARY
    assert rows["memory"] == "Long-term memories the chat remembers about you."
    assert rows["metrics"] == "Latency histograms and counters of the metrics middleware."
    assert rows["rag"].startswith("Documents the chat answers from (RAG):")
    assert rows["history"] == "Stored conversations."
    assert list(rows) == sorted(rows)


def test_help_imports_no_plugin_module(tmp_path: Path) -> None:
    modules = imported_modules(tmp_path, "--help")
    assert "chatcore.cli._entry_points" in modules  # the trace sees chatcore's own imports
    assert modules & PLUGIN_MODULES == set()
    assert modules & {"trio", "pydantic", "sqlite_utils"} == set()
    # The same trace does see a plugin's modules when its command runs.
    ran = imported_modules(tmp_path, "greet", "Ada")
    assert {"chatcore_example_plugin", "chatcore_example_plugin.commands"} <= ran


# --- the example plugin's command -------------------------------------------------------


def test_greet_prints_the_configured_greeting(tmp_path: Path) -> None:
    path = config(tmp_path, GREETER + '[plugins.config]\ngreeting = "Hi there"\n')
    result = chatcore("greet", "Ada", "--config", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hi there, Ada!\n", "")
    # `chatcore --config F greet` applies F too, and --json prints what was derived.
    result = chatcore("--config", str(path), "greet", "--json", "Ada")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "text": "Hi there, Ada!",
        "greeting": "Hi there",
        "configured": True,
    }


def test_greet_without_the_plugin_uses_the_default_greeting(tmp_path: Path) -> None:
    path = config(tmp_path, GREETER + "enabled = false\n")
    result = chatcore("greet", "Ada", "--config", str(path))
    assert (result.returncode, result.stdout) == (0, "Hello, Ada!\n")
    assert result.stderr == f"(no example_greeter plugin in {path}: default greeting)\n"


def test_greet_reports_a_bad_setting_by_file_and_key(tmp_path: Path) -> None:
    path = config(tmp_path, GREETER + '[plugins.config]\ngreting = "typo"\n')
    result = chatcore("greet", "Ada", "--config", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: {path}: plugins[0].config.greting: unknown key; "
        "did you mean 'greeting'? (allowed: greeting)\n"
    )


def test_greet_has_its_own_help() -> None:
    result = chatcore("greet", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: chatcore greet [OPTIONS] NAME\n")
    assert "--json" in result.stdout


# --- clashes and broken entries ---------------------------------------------------------


def test_built_in_commands_win_and_each_ignored_entry_is_warned_about(site: Path) -> None:
    result = chatcore("--help", site=site)
    assert result.returncode == 0
    origin = "of chatcore-zzz-clash 0.1"
    assert result.stderr.splitlines() == [
        f"warning: ignoring the 'greet' command (entry point greet = clash_cmds:greet_command "
        f"{origin}): entry point greet = chatcore_example_plugin.commands:greet_command "
        "of chatcore-example-plugin 1.0.0 comes first",
        f"warning: ignoring the 'history' command (entry point history = "
        f"clash_cmds:history_command {origin}): chatcore has a built-in command of that name",
        f"warning: ignoring the 'rag' command (entry point rag = clash_cmds:rag_command "
        f"{origin}): entry point rag = features.rag:rag_command of chatcore 0.1.0 comes first",
    ]
    rows = help_rows(result.stdout)
    assert rows["history"] == "Stored conversations."
    assert rows["greet"] == GREET_SUMMARY
    assert rows["rag"].startswith("Documents the chat answers from (RAG):")
    assert rows["hello"] == "Say hello from a classmethod entry point."

    history = chatcore("history", "list", site=site)
    assert (history.returncode, history.stdout) == (0, "(none)\n"), history.stderr
    greet = chatcore("greet", "Ada", site=site)
    assert (greet.returncode, greet.stdout) == (0, "Hello, Ada!\n"), greet.stderr
    rag = chatcore("rag", "list", site=site)
    assert rag.returncode == 0, rag.stderr
    assert "the plugin's rag" not in rag.stdout
    hello = chatcore("hello", site=site)
    assert (hello.returncode, hello.stdout) == (0, "hello from a plugin\n"), hello.stderr


def test_summaries_are_read_without_running_the_package_init(site: Path) -> None:
    rows = help_rows(chatcore("--help", site=site).stdout)
    assert rows["boom"] == "Read from source: the package __init__ never runs for --help."
    # Nothing to read: a module that isn't there, or no docstring in its source.
    assert rows["broken"] == "A command from chatcore-zzz-clash."
    assert rows["notcmd"] == "Returns text instead of a command."


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "broken",
            "(entry point broken = no_such_module_for_chatcore:command of chatcore-zzz-clash "
            "0.1): ModuleNotFoundError: No module named 'no_such_module_for_chatcore'",
        ),
        (
            "boom",
            "(entry point boom = boompkg.cmds:boom_command of chatcore-zzz-clash 0.1): "
            "RuntimeError: the package __init__ ran",
        ),
        (
            "notcmd",
            "(entry point notcmd = clash_cmds:not_a_command of chatcore-zzz-clash 0.1): "
            "clash_cmds:not_a_command returned str, not a command",
        ),
        (
            "raising",
            "(entry point raising = clash_cmds:raising_command of chatcore-zzz-clash 0.1): "
            "ValueError: cannot build this command",
        ),
    ],
)
def test_a_command_that_fails_to_load_gets_one_line(site: Path, name: str, reason: str) -> None:
    result = chatcore(name, "--help", site=site)
    assert (result.returncode, result.stdout) == (1, "")
    # The clashes in `site` are warned about first (see above); the error is one line.
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert errors == [f"error: the {name!r} command cannot be loaded {reason}"]


def test_an_unknown_command_is_still_a_usage_error(site: Path) -> None:
    result = chatcore("nosuchcommand", site=site)
    assert result.returncode == 2
    assert "No such command 'nosuchcommand'" in result.stderr


# --- reading the entries without importlib.metadata ------------------------------------


def entries_by_importlib(path: list[str]) -> set[tuple[str, str, str, str]]:
    """What ``importlib.metadata`` finds on ``path``: (name, value, distribution, version)."""
    from importlib.metadata import distributions

    seen: set[str] = set()
    found = set()
    for dist in distributions(path=path):
        key = re.sub(r"[-_.]+", "-", dist.name).lower()
        if key in seen:
            continue
        seen.add(key)
        for ep in dist.entry_points.select(group=COMMANDS_GROUP):
            found.add((ep.name, ep.value, dist.name, dist.version))
    return found


def test_the_entries_read_from_sys_path_are_those_importlib_metadata_finds(site: Path) -> None:
    path = [str(site), *sys.path]
    ours = {
        (e.name, e.value, e.distribution, e.version)
        for e in installed_entries(COMMANDS_GROUP, path)
    }
    assert ours == entries_by_importlib(path)
    assert ("greet", "chatcore_example_plugin.commands:greet_command") in {e[:2] for e in ours}
    assert ("hello", "clash_cmds:Commands.hello") in {e[:2] for e in ours}


def test_a_distribution_installed_twice_counts_where_it_is_found_first(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    install(first, "twice-installed", {"once": "first_mod:command"}, {})
    install(second, "Twice_Installed", {"twice": "second_mod:command"}, {})
    egg = second / "eggy.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.2\nName: eggy\nVersion: 3\n\nName: no\n")
    (egg / "entry_points.txt").write_text(
        "# a comment\n[console_scripts]\neggy = eggy:main\n\n"
        "[chatcore.commands]\n; another comment\nhatch = eggy.cmds:hatch [extra]\n"
        "bad = not a valid value\n"
    )
    (tmp_path / "a.zip").write_bytes(b"PK")
    path = [str(first), str(second), str(tmp_path / "a.zip"), str(tmp_path / "missing")]
    found = [
        (e.name, e.module, e.attr, e.distribution, e.version)
        for e in installed_entries(COMMANDS_GROUP, path)
    ]
    assert found == [
        ("once", "first_mod", "command", "twice-installed", "0.1"),
        ("hatch", "eggy.cmds", "hatch", "eggy", "3"),
    ]


def test_help_does_not_pay_for_importlib_metadata(tmp_path: Path) -> None:
    # importlib.metadata imports email, zipfile and csv: about 25 ms of a 60 ms --help.
    modules = imported_modules(tmp_path, "--help")
    assert "chatcore.cli._entry_points" in modules
    assert modules & {"importlib.metadata", "email", "zipfile"} == set()


# --- reading a summary without importing ------------------------------------------------


def test_the_summary_reader_finds_modules_without_importing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "unimported_pkg"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "inner" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "inner" / "cmds.py").write_text(
        "async def later():\n    '''  An async function.\n\n    More text.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = find_spec_unimported("unimported_pkg.inner.cmds")
    assert spec is not None and spec.origin == str(package / "inner" / "cmds.py")
    assert summary_of("unimported_pkg.inner.cmds", "later") == "An async function."
    assert summary_of("unimported_pkg.inner.missing", "later") is None
    assert summary_of("unimported_pkg.inner.cmds", "absent") is None
    assert not any(name.startswith("unimported_pkg") for name in sys.modules)


def test_the_summary_reader_finds_chatcores_editable_modules() -> None:
    assert summary_of("features.rag", "rag_command") == (
        "Documents the chat answers from (RAG): add, search, list, remove."
    )
    assert summary_of("chatcore.middleware._metrics_cli", "metrics_command") == (
        "Latency histograms and counters of the metrics middleware."
    )


@pytest.mark.parametrize(
    ("source", "qualname", "summary"),
    [
        ('def f():\n    """One.\n\n    Two."""\n', "f", "One."),
        ('def f():\n    """Old."""\ndef f():\n    """New."""\n', "f", "New."),
        ('class C:\n    def m(self):\n        """Method."""\n', "C.m", "Method."),
        ('class C:\n    """Class."""\n', "C.m", None),
        ("def f():\n    return 1\n", "f", None),
        ('def f():\n    """   """\n', "f", None),
        ("from elsewhere import f\n", "f", None),
        ("f = make()\n", "f", None),
        ("def f(:\n", "f", None),
        # The definition alone is parsed when it can be; the module when it can't.
        (
            'def f(\n    a: int,\n) -> None:\n    """Long signature."""\nx = 1\n',
            "f",
            "Long signature.",
        ),
        ('def f():\n    """Summary.\nMore at column 0."""\nx = 1\n', "f", "Summary."),
        (
            'TEXT = """\ndef f():\n    \'\'\'Fake.\'\'\'\n"""\ndef f():\n    """Real."""\n',
            "f",
            "Real.",
        ),
        ('def g():\n    """G."""\n\n\n# a comment\ndef f():\n    """F."""\n', "f", "F."),
        # The first triple-quoted string is tried first; when it isn't the docstring
        # (a default, a comment, a later string), the answer is the same.
        ('async def f():\n    """Async."""\ndef ff():\n    """Not this one."""\n', "f", "Async."),
        (
            'def  f():\n    """Two spaces: found by parsing the module."""\n',
            "f",
            "Two spaces: found by parsing the module.",
        ),
        ('def f(a="""x"""):\n    """Doc."""\n', "f", "Doc."),
        ('def f():  # """not this"""\n    """Doc."""\n', "f", "Doc."),
        ('def f():\n    "Short."\n    x = """later"""\n', "f", "Short."),
        ('def f():\n    x = 1\n    y = """not a docstring"""\n', "f", None),
        ('def f():\n    """Quote \\""" inside."""\n', "f", 'Quote """ inside.'),
        (
            'class C:\n    def a(self):\n        """A."""\n    def m(self):\n        """M."""\n',
            "C.m",
            "M.",
        ),
    ],
)
def test_docstring_summary(source: str, qualname: str, summary: str | None) -> None:
    assert docstring_summary(source, qualname) == summary


# --- the guide --------------------------------------------------------------------------


def guide_section() -> str:
    guide = (REPO_ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    return guide.split("## Adding a CLI command\n", 1)[1].split("\n## ", 1)[0]


def test_the_guides_example_is_the_example_plugins_command(tmp_path: Path) -> None:
    section = guide_section()
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    example = EXAMPLE_PLUGIN_DIR / "chatcore_example_plugin" / "commands.py"
    assert code == example.read_text(encoding="utf-8")
    (toml,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    assert toml in (example.parent.parent / "pyproject.toml").read_text(encoding="utf-8")

    # The console block shows what the real command prints.
    (console,) = re.findall(r"```console\n(.*?)```", section, flags=re.S)
    path = config(tmp_path, GREETER + '[plugins.config]\ngreeting = "Hi there"\n')
    greeted = chatcore("greet", "Ada", "--config", str(path))
    assert f"$ chatcore greet Ada\n{greeted.stdout}" in console
    listed = chatcore("--help").stdout
    help_line = next(line for line in console.splitlines() if line.startswith("  greet"))
    assert help_line in listed.splitlines()
