"""docs/plugins.md: its example plugin is the tested file, and works as the doc says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from helpers import PLUGINS_DIR, REPO_ROOT

from chatcore import open_engine
from chatcore._plugins._scan import scan_source
from chatcore.errors import ConfigError

DOC = (REPO_ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
EXAMPLE = PLUGINS_DIR / "glossary.py"
BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)


def example_config() -> str:
    return next(b for b in blocks("toml") if 'plugin = "glossary:Glossary"' in b)


def test_the_example_in_the_doc_is_the_tested_file_byte_for_byte() -> None:
    example = next(b for b in blocks("python") if "class Glossary" in b)
    assert example == EXAMPLE.read_text(encoding="utf-8")


def test_the_example_does_what_the_doc_says(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(BASE + example_config(), encoding="utf-8")
    question = re.search(r'`chatcore ask --backend echo "([^"]+)"`', DOC)
    answer = re.search(r"answers\n`(echo: [^`]+)`", DOC)
    assert question is not None and answer is not None

    async def main() -> None:
        async with open_engine(config, backend="echo") as engine:
            conversation = engine.conversation()
            reply = await conversation.send(question.group(1))
            assert reply.content == answer.group(1)
            assert engine.status().plugins["glossary"].state == "active"
            assert engine.store.kv("glossary").get("totals") == {"tz": 1, "k8s": 1}
            # The expansions are stored with the user's message, as the example says.
            stored = await conversation.messages()
            assert stored[0].metadata["glossary"] == ["tz", "k8s"]
            # A message with nothing to expand passes untouched and counts nothing.
            assert (await conversation.send("hello")).content == "echo: hello"
            assert engine.store.kv("glossary").get("totals") == {"tz": 1, "k8s": 1}

    trio.run(main)


def test_a_typo_in_the_examples_table_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(BASE + example_config().replace("terms = {", "term = {"), encoding="utf-8")

    async def main() -> None:
        async with open_engine(config, backend="echo"):
            pass

    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.term") as error:
        trio.run(main)
    assert str(config) in str(error.value)


def test_the_refusal_shown_in_the_doc_is_the_real_message() -> None:
    block = re.search(r"```\n(plugins/bad\.py:[^\n]*)\n```", DOC)
    assert block is not None
    shown = block.group(1)
    (finding,) = scan_source("import json\nimport os\nimport subprocess\n", "plugins/bad.py")
    assert shown == str(finding)


def test_the_readme_links_the_guide() -> None:
    section = (REPO_ROOT / "README.md").read_text().split("## Write a plugin", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "(docs/plugins.md)" in section
