"""`chatcore plugins new`: every generated skeleton passes its own generated test.

The skeletons are generated with the real command, then one pytest subprocess
(the venv's python) runs the four generated tests, as a plugin author would.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatcore.cli import cli
from chatcore.scaffold import PLUGIN_TYPES

pytestmark = pytest.mark.slow


def new(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["plugins", "new", *args])
    return result.exit_code, result.output


def test_each_generated_skeleton_passes_its_own_test(tmp_path: Path) -> None:
    for plugin_type in PLUGIN_TYPES:
        code, output = new(f"my_{plugin_type}", "--type", plugin_type, "--dir", str(tmp_path))
        assert code == 0, output
        root = tmp_path / f"my_{plugin_type}"
        assert f"created {root / f'my_{plugin_type}.py'}" in output
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [f"my_{plugin_type}.py", f"test_my_{plugin_type}.py", "pyproject.toml", "README.md"]
        )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + [f"my_{t}" for t in PLUGIN_TYPES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_the_skeleton_declares_its_entry_point(tmp_path: Path) -> None:
    assert new("word_count", "--type", "feature", "--dir", str(tmp_path))[0] == 0
    project = tomllib.loads((tmp_path / "word_count" / "pyproject.toml").read_text())
    assert project["project"]["name"] == "chatcore-word-count"
    assert project["project"]["entry-points"]["chatcore.plugins"] == {
        "word_count": "word_count:WordCount"
    }
    assert project["tool"]["setuptools"]["py-modules"] == ["word_count"]
    readme = (tmp_path / "word_count" / "README.md").read_text()
    assert 'plugin = "word_count"' in readme


def test_the_default_type_is_a_processor_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = new("shout")
    assert code == 0, output
    assert "class Shout(BaseMessageProcessor):" in (tmp_path / "shout" / "shout.py").read_text()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("My-Plugin", "plugin name 'My-Plugin': use lower-case letters, digits and _"),
        ("2fast", "plugin name '2fast'"),
        ("test_thing", "not 'test'"),
    ],
)
def test_a_bad_name_is_refused(tmp_path: Path, name: str, message: str) -> None:
    out = tmp_path / "out"
    code, output = new(name, "--dir", str(out))
    assert code == 2
    assert message in output
    assert not out.exists()


def test_an_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "shout").mkdir()
    (tmp_path / "shout" / "mine.txt").write_text("keep me")
    code, output = new("shout", "--dir", str(tmp_path))
    assert code == 2
    assert f"{tmp_path / 'shout'} already exists and is not empty" in output
    assert [p.name for p in (tmp_path / "shout").iterdir()] == ["mine.txt"]


def test_an_unknown_type_is_refused_by_the_command(tmp_path: Path) -> None:
    code, output = new("shout", "--type", "widget", "--dir", str(tmp_path))
    assert code == 2
    assert "'widget' is not one of 'processor', 'feature', 'middleware', 'backend'" in output
