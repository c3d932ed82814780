"""Traceability: every rule id of clinical-rules.md is named by at least one test.

A clinician reading a rule must be able to find the test that holds the code to it. The rule ids
are read from the spec itself (`../shared/spec/clinical-rules.md`, beside the checkout, as in CI).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "spec" / "clinical-rules.md"
RULE_ID = re.compile(r"\*\*([LIAD]\d+)\*\*")
MENTION = re.compile(r"(?<![A-Za-z0-9])([LIAD]\d+)(?![0-9])")


def spec_rule_ids() -> set[str]:
    """Every rule id defined (in bold) on the clinical-rules page."""
    if not SPEC.is_file():
        pytest.fail(f"the clinical rules page is missing: {SPEC}")
    return set(RULE_ID.findall(SPEC.read_text(encoding="utf-8")))


def rule_ids_named_by_tests() -> set[str]:
    """Rule ids that appear in a test function's name or docstring under tests/."""
    named: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if not node.name.startswith(("test", "Test")):
                    continue
                text = node.name.replace("_", " ") + " " + (ast.get_docstring(node) or "")
                named.update(MENTION.findall(text))
    return named


def test_spec_defines_the_rule_families() -> None:
    ids = spec_rule_ids()
    for family in "LIAD":
        assert any(i.startswith(family) for i in ids), f"no {family} rules found in {SPEC}"


@pytest.mark.parametrize("family", ["L", "I", "A", "D"])
def test_every_rule_id_is_named_by_a_test(family: str) -> None:
    wanted = {i for i in spec_rule_ids() if i.startswith(family)}
    missing = sorted(wanted - rule_ids_named_by_tests(), key=lambda i: int(i[1:]))
    assert missing == [], f"rules with no test naming them: {', '.join(missing)}"
