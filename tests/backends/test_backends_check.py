"""`chatcore backends check` says whether each configured model is listed by its server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakes.anthropic import DEFAULT_API_KEY, FakeAnthropic
from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))


@pytest.mark.parametrize(
    ("model", "said", "code"),
    [
        ("claude-haiku-5-5", "3 models, 'claude-haiku-5-5' listed", 0),
        ("claude-hiaku-5-5", "3 models, 'claude-hiaku-5-5' not listed", 0),
    ],
)
def test_anthropic_check_says_whether_the_configured_model_is_listed(
    tmp_path: Path, model: str, said: str, code: int
) -> None:
    with FakeAnthropic() as server:
        config = tmp_path / "claude.toml"
        config.write_text(
            f'[backends.claude]\nplugin = "anthropic"\nbase_url = "{server.url}"\n'
            f'model = "{model}"\napi_key = "{DEFAULT_API_KEY}"\n'
        )
        result = subprocess.run(
            [CHATCORE, "backends", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            env=subprocess_env({"CHATCORE_BACKEND": "claude"}),
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == code, result.stderr
    assert result.stdout == f"ok    claude  {server.url}  {said}\n"
