"""Trio mode for one test folder, not the whole session.

pytest-trio's ``enable_trio_mode`` conftest marks every async test it is shown, and
``pytest_collection_modifyitems`` is shown the whole session's items whichever
conftest defines it: the chat app's asyncio tests would be run under Trio. The
hooks made here mark only the tests inside the folder that asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_trio.plugin import automark, handle_fixture


def trio_mode_hooks(folder: Path) -> tuple[Callable[..., None], Callable[..., Any]]:
    """The two hooks a folder's conftest.py binds to run its async tests on Trio."""

    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        automark([item for item in items if item.path.is_relative_to(folder)])

    def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
        # pytest calls this hook only for fixtures of tests under this conftest's folder.
        return handle_fixture(fixturedef, request, force_trio_mode=True)

    return pytest_collection_modifyitems, pytest_fixture_setup
