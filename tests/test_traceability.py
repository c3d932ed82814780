"""Traceability: every rule id of clinical-rules.md is named by at least one test.

A clinician reading a rule must be able to find the test that holds the code to it. The rule ids
are read from the project's own rules page, `docs/clinical-rules.md`; the interfaces and
architecture pages beside it may name only rules that page defines. The repository stands alone:
no tracked file reads or names a directory beside the checkout.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from pumpctl.core.rules import Rule

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SPEC = DOCS / "clinical-rules.md"
OTHER_PAGES = (DOCS / "interfaces.md", DOCS / "architecture.md")
RULE_ID = re.compile(r"\*\*([LIAD]\d+)\*\*")
MENTION = re.compile(r"(?<![A-Za-z0-9])([LIAD]\d+)(?![0-9])")
# Built from parts so that this file does not contain what it looks for.
OUTSIDE = "sha" + "red"
FORBIDDEN = ("../" + OUTSIDE, OUTSIDE + "/spec", OUTSIDE + "/seeds")


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


def tracked_files() -> list[Path]:
    """Every file git tracks in this checkout that is present in the working tree."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode("utf-8")
    paths = [ROOT / name for name in listing.split("\0") if name]
    assert paths, "git ls-files listed nothing"
    return [path for path in paths if path.is_file()]


def by_rule_number(ids: set[str]) -> list[str]:
    return sorted(ids, key=lambda i: (i[0], int(i[1:])))


def test_spec_defines_the_rule_families() -> None:
    ids = spec_rule_ids()
    for family in "LIAD":
        assert any(i.startswith(family) for i in ids), f"no {family} rules found in {SPEC}"


@pytest.mark.parametrize("family", ["L", "I", "A", "D"])
def test_every_rule_id_is_named_by_a_test(family: str) -> None:
    wanted = {i for i in spec_rule_ids() if i.startswith(family)}
    missing = sorted(wanted - rule_ids_named_by_tests(), key=lambda i: int(i[1:]))
    assert missing == [], f"rules with no test naming them: {', '.join(missing)}"


@pytest.mark.parametrize("page", OTHER_PAGES, ids=lambda page: page.name)
def test_every_rule_id_on_the_other_pages_is_defined_in_clinical_rules(page: Path) -> None:
    """interfaces.md and architecture.md name only rule ids that the rules page defines."""
    assert page.is_file(), f"the reference page is missing: {page}"
    mentioned = set(MENTION.findall(page.read_text(encoding="utf-8")))
    assert mentioned, f"{page.name} names no rule id; is the pattern still right?"
    undefined = by_rule_number(mentioned - spec_rule_ids())
    assert undefined == [], f"{page.name} names rules {SPEC.name} does not define: {undefined}"


def test_no_tracked_file_reads_or_names_a_directory_beside_the_checkout() -> None:
    """A clone stands alone: the rules, interfaces and architecture pages are under docs/."""
    offenders: list[str] = []
    for path in tracked_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), start=1):
            offenders.extend(
                f"{path.relative_to(ROOT)}:{lineno}: {needle}"
                for needle in FORBIDDEN
                if needle in line
            )
    assert offenders == [], "outside the repository:\n" + "\n".join(offenders)


def test_the_rule_enum_is_the_rules_page() -> None:
    """One definition of the ids: `pumpctl.core.rules.Rule` holds exactly the page's rules."""
    assert {rule.value for rule in Rule} == spec_rule_ids()


def test_every_rule_has_a_home_in_the_architecture_map() -> None:
    """docs/architecture.md maps every rule to files of the core, and those files exist."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Where each rule lives", 1)[1]
    rows = re.findall(r"^\| ([LIAD]\d+) \| (.+) \|$", section, flags=re.MULTILINE)
    assert {rule for rule, _ in rows} == spec_rule_ids()
    for rule, where in rows:
        for path in re.findall(r"`([\w/]+\.py)`", where):
            assert (ROOT / "pumpctl" / "core" / path).is_file(), f"{rule}: {path} does not exist"
