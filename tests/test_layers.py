"""Architecture: arrows are imports and nothing points upward (architecture.md, "Layers")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_clock_imports_only_the_standard_library() -> None:
    bad = {m for m in imports_of(ROOT / "pumpctl/clock.py") if m.split(".")[0] not in STDLIB}
    assert bad == set()


@pytest.mark.parametrize("path", modules("pumpctl/core"), ids=lambda p: p.name)
def test_rules_core_is_pure(path: Path) -> None:
    """The rules core imports the standard library, pydantic and itself: no I/O layers."""
    io_modules = {"asyncio", "socket", "subprocess", "os", "io", "pathlib", "time", "sqlite3"}
    allowed_top = (STDLIB - io_modules) | {"pydantic", "pumpctl"}
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top in allowed_top, f"{path.name} imports {name}"
        if top == "pumpctl":
            assert name.startswith("pumpctl.core"), f"{path.name} imports {name} (upward)"


@pytest.mark.parametrize("path", modules("drivers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_drivers_import_nothing_of_pumpctl(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top not in {"pumpctl", "simulator", "api"}, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", modules("simulator"), ids=lambda p: str(p.relative_to(ROOT)))
def test_simulator_uses_only_drivers_and_the_clock(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top != "api", f"{path.name} imports {name}"
        if top == "pumpctl":
            assert name == "pumpctl.clock", f"{path.name} imports {name}"
