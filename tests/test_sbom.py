"""The SBOM of what pumpctl ships (issue 20, "Paper"): `scripts/sbom` makes it with cyclonedx-py
(a kept tool) from a virtual environment holding only pumpctl and what it depends on. It must
name every runtime dependency of pyproject.toml at a version the requirement admits, each with
its package URL, and none of the development tools, which a gateway does not get."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: A fresh environment, pumpctl built and installed into it, on a loaded CI machine.
SBOM_WITHIN_S = 600

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sbom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("sbom") / "pumpctl.cdx.json"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "sbom"), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=SBOM_WITHIN_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded: dict[str, object] = json.loads(out.read_text())
    return loaded


def _components(sbom: dict[str, object]) -> dict[str, dict[str, str]]:
    components = sbom["components"]
    assert isinstance(components, list)
    return {canonicalize_name(c["name"]): c for c in components}


def test_the_sbom_names_every_shipped_dependency_at_an_admitted_version(
    sbom: dict[str, object],
) -> None:
    assert sbom["bomFormat"] == "CycloneDX"
    metadata = sbom["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["component"]["name"] == "pumpctl"
    assert metadata["component"]["version"] == PROJECT["version"]
    components = _components(sbom)
    for line in PROJECT["dependencies"]:
        wanted = Requirement(line)
        component = components.get(canonicalize_name(wanted.name))
        assert component is not None, f"{wanted.name} is shipped and not in the SBOM"
        assert wanted.specifier.contains(component["version"], prereleases=True), (
            wanted,
            component["version"],
        )
    for name, component in components.items():
        assert component["purl"].startswith(f"pkg:pypi/{name}@"), component


def test_the_sbom_holds_no_development_tool(sbom: dict[str, object]) -> None:
    """The dev extras (pytest, mypy, ruff, playwright, mutmut ...) and the venv's own seed
    packages (pip, setuptools) are not shipped: none is in the SBOM, unless a shipped package
    needs it too."""
    components = _components(sbom)
    shipped = {canonicalize_name(Requirement(line).name) for line in PROJECT["dependencies"]}
    for line in [*PROJECT["optional-dependencies"]["dev"], "pip", "setuptools"]:
        name = canonicalize_name(Requirement(line).name)
        if name not in shipped:
            assert name not in components, f"{name} (a development tool) is in the SBOM"
