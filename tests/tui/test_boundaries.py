"""What the TUI may import: the engine through the public chatcore API, Trio only in the bridge."""

from __future__ import annotations

import ast
from pathlib import Path

import tui

TUI_DIR = Path(tui.__file__).parent
BRIDGE = TUI_DIR / "bridge.py"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at run time or for type checking alone."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def test_only_the_bridge_imports_trio_and_nothing_imports_the_store() -> None:
    sources = sorted(TUI_DIR.rglob("*.py"))
    assert BRIDGE in sources and len(sources) > 5
    trio_users, store_users = [], []
    for path in sources:
        modules = imported_modules(path)
        name = str(path.relative_to(TUI_DIR.parent))
        if any(m == "trio" or m.startswith("trio.") for m in modules):
            trio_users.append(name)
        if any(m == "chatcore.store" or m.startswith("chatcore.store.") for m in modules):
            store_users.append(name)
    assert trio_users == ["tui/bridge.py"]
    assert store_users == []
