"""The README's examples run as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from helpers import PLUGINS_DIR, REPO_ROOT, subprocess_env

README = (REPO_ROOT / "README.md").read_text()
CHATCORE = str(Path(sys.executable).with_name("chatcore"))
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick_start, flags=re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make run", "make test"]


def test_the_plugin_example_is_the_tested_fixture() -> None:
    shout = next(block for block in PYTHON_BLOCKS if "class Shout" in block)
    assert shout in (PLUGINS_DIR / "yourmodule.py").read_text()


def test_the_python_api_example_prints_what_its_comments_say() -> None:
    example = next(block for block in PYTHON_BLOCKS if "open_engine" in block)
    result = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    expected = [m.strip() for m in re.findall(r"# (echo: [^\n]*|\d+)\n", example)]
    lines = result.stdout.splitlines()
    assert lines == ["echo: hello", "echo: and streaming", "2", "echo: one-off question"]
    assert [line for line in lines if line != "echo: and streaming"] == expected


def test_the_built_in_plugins_example_loads_and_runs(tmp_path: Path) -> None:
    toml = next(
        block
        for block in re.findall(r"```toml\n(.*?)```", README, flags=re.S)
        if 'plugin = "normalizer"' in block
    )
    config = tmp_path / "plugins.toml"
    config.write_text(
        'default_backend = "echo"\n'
        '[backends.echo]\nplugin = "echo"\n'
        '[backends.ollama]\nplugin = "ollama"\nhost = "http://127.0.0.1:9"\n' + toml
    )
    result = subprocess.run(
        [CHATCORE, "ask", "--config", str(config), "my password is 123-45-6789, ok?"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "echo: my *** is ***, ok?\n"), result.stderr
    plugins = subprocess.run(
        [CHATCORE, "plugins", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    states = {row["name"]: row["state"] for row in json.loads(plugins.stdout)}
    for name in ("normalizer", "content_filter", "pii_redactor", "rag", "memory"):
        assert states[name] == "active"


def test_the_middleware_example_loads(tmp_path: Path) -> None:
    toml = next(
        block
        for block in re.findall(r"```toml\n(.*?)```", README, flags=re.S)
        if 'plugin = "rate_limit"' in block
    )
    config = tmp_path / "middleware.toml"
    config.write_text('default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n' + toml)
    result = subprocess.run(
        [CHATCORE, "ask", "--config", str(config), "hello"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "echo: hello\n"), result.stderr


def test_the_asyncio_example_prints_what_its_comments_say() -> None:
    example = next(block for block in PYTHON_BLOCKS if "asyncio.run(main())" in block)
    result = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == ["echo: hello from asyncio", "echo: streaming too"]
