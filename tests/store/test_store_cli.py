"""`pumpctl db upgrade / downgrade / current` as a real subprocess, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PUMPCTL = [sys.executable, "-m", "pumpctl", "db"]


def db(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("PUMPCTL_DATABASE_URL", None)
    if data_dir is not None:
        env["PUMPCTL_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*PUMPCTL, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_upgrade_current_downgrade(database_url: str) -> None:
    assert db("current", "--database", database_url).stdout == "none\n"
    up = db("upgrade", "--database", database_url)
    assert (up.returncode, up.stdout, up.stderr) == (0, "0002\n", "")
    assert db("current", "--database", database_url).stdout == "0002\n"
    down = db("downgrade", "base", "--database", database_url)
    assert (down.returncode, down.stdout) == (0, "none\n")


def test_the_default_is_the_data_directory_s_sqlite_file(tmp_path: Path) -> None:
    up = db("upgrade", data_dir=tmp_path / "data")
    assert (up.returncode, up.stdout) == (0, "0002\n")
    assert (tmp_path / "data" / "pumpctl.db").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("upgrade",), "pumpctl db upgrade: data directory {blocked} is not writable"),
        (("upgrade", "--database", "mysql://x/y"), "only sqlite:/// and postgresql://"),
        (("downgrade", "zzzz", "--database", "sqlite:///{tmp}/x.db"), "zzzz"),
    ],
    ids=["data-dir", "unsupported", "unknown-revision"],
)
def test_errors_are_one_line_never_a_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "data"
    run = db(*(a.format(tmp=tmp_path) for a in args), data_dir=blocked)
    assert run.returncode == 1
    assert message.format(blocked=blocked) in run.stderr
    assert run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr
