"""The page's JavaScript under the project's ESLint (eslint.config.js, run by scripts/test): the
page's modules pass as they are, every one of them checked, and a copy of the detail module
(detail.js, which holds facts()) that reads a name it never declares fails, naming the rule
and the name. In the browser such a name resolves to whatever the window holds under it,
as `live` in facts() once resolved to the <p id="live"> element (issue 17).

With CI=true a missing Node.js or ESLint fails the run; it never skips (scripts/test installs
both)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from needs import missing

ROOT = Path(__file__).resolve().parents[2]
ESLINT = ROOT / "node_modules" / ".bin" / "eslint"
STATIC = Path("api") / "static"
FACTS_MODULE = "detail.js"  # the module of facts(), split out of page.js (issue 23)
LIVE_DECLARED = "  const live = LIVE_STATES.has(infusion.state);\n"
FACTS_OPENS = "function facts(pump, infusion) {\n"


def eslint(cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    """`eslint api/static` in `cwd` as scripts/test runs it: its exit code and its JSON report."""
    node = shutil.which("node")
    if node is None:
        missing("node is missing (scripts/test installs Node.js and npm through apt)")
    if not ESLINT.exists():
        missing(f"{ESLINT} is missing (scripts/test installs ESLint with `npm ci`)")
    done = subprocess.run(
        [node, str(ESLINT), "--format", "json", str(STATIC)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=50,  # under the suite's 60 s per test
        check=False,
    )
    assert done.returncode in {0, 1}, f"eslint could not run:\n{done.stdout}\n{done.stderr}"
    report: list[dict[str, Any]] = json.loads(done.stdout)
    return done.returncode, report


def problems(report: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return [
        (Path(result["filePath"]).name, message.get("ruleId"), message["message"])
        for result in report
        for message in result["messages"]
    ]


def test_the_pages_javascript_passes_eslint_with_every_file_checked() -> None:
    """`eslint api/static` exits 0 and has checked every module of the page (none ignored)
    with no finding."""
    code, report = eslint(ROOT)
    assert problems(report) == []
    assert code == 0
    modules = sorted(path.name for path in (ROOT / STATIC).glob("*.js"))
    assert {"page.js", FACTS_MODULE, "signals.js"} <= set(modules)
    assert sorted(Path(result["filePath"]).name for result in report) == modules


def copy_with(tmp_path: Path, change: tuple[str, str]) -> Path:
    """The repository's eslint.config.js and api/static in `tmp_path`, the facts() module
    changed, beside the repository's node_modules."""
    shutil.copy(ROOT / "eslint.config.js", tmp_path / "eslint.config.js")
    shutil.copytree(ROOT / STATIC, tmp_path / STATIC)
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    page = tmp_path / STATIC / FACTS_MODULE
    text = page.read_text(encoding="utf-8")
    old, new = change
    assert text.count(old) == 1, f"{FACTS_MODULE} no longer has {old!r} once"
    page.write_text(text.replace(old, new), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("change", "rule", "name"),
    [
        pytest.param((LIVE_DECLARED, ""), "no-undef", "live", id="facts-without-its-live"),
        pytest.param(
            (FACTS_OPENS, FACTS_OPENS + "  if (notDeclaredAnywhere) return [];\n"),
            "no-undef",
            "notDeclaredAnywhere",
            id="a-name-nowhere-declared",
        ),
        pytest.param(
            (FACTS_OPENS, FACTS_OPENS + "  if (status) return [];\n"),
            "no-restricted-globals",
            "status",
            id="a-window-property-read-as-a-name",
        ),
    ],
)
def test_a_name_the_page_never_declares_fails_eslint_naming_the_rule_and_the_name(
    tmp_path: Path, change: tuple[str, str], rule: str, name: str
) -> None:
    """A copy of the page reading an undeclared name (the issue 17 fault itself: facts() without
    its own `live`) makes eslint exit 1 with a finding of `rule` that names `name` in its module;
    a window property such as `status` is a browser global, so no-undef lets it through and
    no-restricted-globals catches it."""
    code, report = eslint(copy_with(tmp_path, change))
    assert code == 1
    found = problems(report)
    assert [p for p in found if p[1] == rule and f"'{name}'" in p[2]], found
    assert {p[0] for p in found} == {FACTS_MODULE}
