"""`[tui] theme`: an unknown name falls back to the default theme with a notice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tui.app
from chatcore import Config, load_config
from tui.app import ChatcoreApp, theme_names

ECHO = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


class RecordingApp(ChatcoreApp):
    """The app, keeping the notifications it shows."""

    CSS_PATH = str(Path(tui.app.__file__).with_name("chatcore.tcss"))

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.notes: list[str] = []

    def notify(self, message: str, **kwargs: Any) -> None:
        self.notes.append(message)
        super().notify(message, **kwargs)


def config_from(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "chatcore.toml"
    path.write_text(text)
    return load_config(path, env={})


@pytest.mark.asyncio
async def test_unknown_theme_falls_back_with_a_notice(data_dir: Path, tmp_path: Path) -> None:
    app = RecordingApp(config_from(tmp_path, ECHO + '[tui]\ntheme = "solarised"\n'))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == "textual-dark"
        assert len(app.notes) == 1
        note = app.notes[0]
        assert note.startswith(
            f"{tmp_path / 'chatcore.toml'}: tui.theme: unknown theme 'solarised'; "
            "did you mean 'solarized-dark'?"
        )
        assert "using textual-dark" in note
        assert "textual-light" in note  # the themes there are are listed
        await pilot.press("ctrl+q")
    assert app.return_code in (0, None)


@pytest.mark.asyncio
async def test_known_theme_is_applied_without_notice(data_dir: Path, tmp_path: Path) -> None:
    app = RecordingApp(config_from(tmp_path, ECHO + '[tui]\ntheme = "textual-light"\n'))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == "textual-light"
        assert not [n for n in app.notes if "theme" in n]
        await pilot.press("ctrl+q")


def test_theme_names_are_the_apps() -> None:
    names = theme_names()
    assert "textual-dark" in names
    assert "textual-light" in names
    assert names == sorted(names)
