"""Every async test in this folder runs on Trio (pytest-trio's trio mode, for this folder)."""

from pathlib import Path

from trio_folder import trio_mode_hooks

pytest_collection_modifyitems, pytest_fixture_setup = trio_mode_hooks(Path(__file__).parent)
