"""A non-editable install ships the protocol files: build a wheel, unpack it, run `plan` from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from pumpctl_process import PUMPCTL, plan_first_infusion

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_protocols_and_plans_from_them(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # Build isolation (pip's default): the venv's own setuptools (65.x) is older than the
    # `setuptools>=77` pyproject.toml requires, so --no-build-isolation cannot build it.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("pumpctl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for protocol in ("daratumumab", "daratumumab-label", "daratumumab-split"):
        assert f"config/protocols/{protocol}.toml" in names
    assert "config/README.md" in names
    # the nurse station page is served from the package: the gateway has no internet
    for static in ("index.html", "page.js", "page.css"):
        assert f"api/static/{static}" in names

    run = tmp_path / "elsewhere"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    plan_first_infusion(PUMPCTL, run, env)
    # the code that ran is the unpacked wheel's, not the editable checkout's
    where = subprocess.run(
        [sys.executable, "-c", "import config, pumpctl; print(config.__file__, pumpctl.__file__)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=run,
        env=env,
    )
    assert all(path.startswith(str(tmp_path / "site")) for path in where.stdout.split())
