"""`pumpctl db upgrade / downgrade / current` as a real subprocess, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PUMPCTL = [sys.executable, "-m", "pumpctl", "db"]


def db(
    *args: str, data_dir: Path | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    for name in ("PUMPCTL_DATABASE_URL", "PUMPCTL_DATABASE", "PUMPCTL_CONFIG", "PUMPCTL_DATA_DIR"):
        env.pop(name, None)
    if data_dir is not None:
        env["PUMPCTL_DATA_DIR"] = str(data_dir)
    env.update(extra_env)
    return subprocess.run(
        [*PUMPCTL, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_upgrade_current_downgrade(database_url: str) -> None:
    assert db("current", "--database", database_url).stdout == "none\n"
    up = db("upgrade", "--database", database_url)
    assert (up.returncode, up.stdout, up.stderr) == (0, "0004\n", "")
    assert db("current", "--database", database_url).stdout == "0004\n"
    down = db("downgrade", "base", "--database", database_url)
    assert (down.returncode, down.stdout) == (0, "none\n")


def test_the_default_is_the_data_directory_s_sqlite_file(tmp_path: Path) -> None:
    up = db("upgrade", data_dir=tmp_path / "data")
    assert (up.returncode, up.stdout) == (0, "0004\n")
    assert (tmp_path / "data" / "pumpctl.db").is_file()


def test_the_config_file_names_the_database_serve_opens(tmp_path: Path) -> None:
    """`db upgrade --config FILE` migrates the database of `serve --config FILE`: the file's
    `database`, else its `data_dir`'s SQLite file."""
    named = tmp_path / "named.db"
    (tmp_path / "with-database.toml").write_text(f'database = "sqlite:///{named}"\n')
    up = db("upgrade", "--config", str(tmp_path / "with-database.toml"))
    assert (up.returncode, up.stdout, up.stderr) == (0, "0004\n", "")
    assert named.is_file()
    (tmp_path / "with-data-dir.toml").write_text(f'data_dir = "{tmp_path / "gateway"}"\n')
    up = db("upgrade", "--config", str(tmp_path / "with-data-dir.toml"))
    assert (up.returncode, up.stdout) == (0, "0004\n")
    assert (tmp_path / "gateway" / "pumpctl.db").is_file()


def test_pumpctl_database_is_read_as_serve_reads_it(tmp_path: Path) -> None:
    """The `database` setting from the environment (PUMPCTL_DATABASE, as `serve` reads it),
    and PUMPCTL_DATABASE_URL (the --database option's variable) winning over it."""
    setting, option = tmp_path / "setting.db", tmp_path / "option.db"
    up = db("upgrade", PUMPCTL_DATABASE=f"sqlite:///{setting}")
    assert (up.returncode, up.stdout) == (0, "0004\n")
    assert setting.is_file()
    up = db(
        "upgrade",
        PUMPCTL_DATABASE=f"sqlite:///{setting}",
        PUMPCTL_DATABASE_URL=f"sqlite:///{option}",
    )
    assert (up.returncode, up.stdout) == (0, "0004\n")
    assert option.is_file()


def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('port = "eighty"\n')
    run = db("upgrade", "--config", str(tmp_path / "bad.toml"))
    assert run.returncode == 1
    assert run.stderr.startswith("pumpctl db upgrade: port: "), run.stderr
    assert run.stderr.count("\n") == 1
    missing = db("current", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1
    assert f"config: {tmp_path / 'nope.toml'} is not a file" in missing.stderr


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
