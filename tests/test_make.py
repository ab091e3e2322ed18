"""`make run` installs what running needs; installing prints no deprecation warnings."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from helpers import REPO_ROOT


def planned(target: str, venv: Path) -> str:
    """The commands `make TARGET` would run for a venv that does not exist yet."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_make_run_installs_no_test_extras_and_no_example_plugin(tmp_path: Path) -> None:
    plan = planned("run", tmp_path / "venv")
    assert "pip install --quiet -e ." in plan
    assert ".[test]" not in plan
    assert "example_plugin" not in plan


def test_make_test_installs_the_test_extras_and_the_example_plugin(tmp_path: Path) -> None:
    plan = planned("test", tmp_path / "venv")
    assert ".[test]" in plan
    assert "tests/support/example_plugin" in plan


def test_the_license_uses_the_spdx_string_form() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    # The string form needs setuptools 77; older ones warn about or refuse it.
    assert "setuptools>=77" in project["build-system"]["requires"]
