"""`chatcore config path|check|show` as a user meets them, through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
ECHO = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        input="",
        capture_output=True,
        text=True,
        env=subprocess_env(env),
        timeout=60,
    )


def test_config_check_rejects_an_unknown_theme_naming_the_key_and_the_themes(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(ECHO + '[tui]\ntheme = "solarised"\n')
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {config}: tui.theme: unknown theme 'solarised'; did you mean 'solarized-dark'? "
        "(themes: ansi-dark, ansi-light, "
    )
    assert "textual-light" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_config_check_accepts_a_known_theme(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(ECHO + '[tui]\ntheme = "textual-light"\n')
    result = run("config", "check", "--config", str(config))
    assert (result.returncode, result.stdout.strip()) == (0, f"ok: {config}"), result.stderr
