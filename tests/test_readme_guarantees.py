"""README's table of the controller's guarantees names tests that exist (a guarantee whose test
was renamed or removed would otherwise go on being claimed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELL = re.compile(r"`([\w/]+\.py)(?:::(\w+))?`")


def guarantee_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The controller and what it guarantees", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def test_every_guarantee_names_a_test_file_or_function_that_exists() -> None:
    rows = guarantee_rows()[1:]  # the header row names no test
    assert len(rows) >= 10
    for row in rows:
        named = CELL.findall(row.rsplit("|", 2)[1])
        assert named, f"a guarantee with no test: {row}"
        for path, function in named:
            file = ROOT / "tests" / path
            if not file.is_file():
                file = ROOT / "pumpctl" / path  # code that holds a guarantee by construction
            assert file.is_file(), f"{path} does not exist ({row})"
            if function:
                names = {
                    node.name
                    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                }
                assert function in names, f"{path} has no {function}"
