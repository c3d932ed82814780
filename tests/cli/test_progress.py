"""Long waits show progress on a terminal (rich), and stay silent off one (an error is one
line; CI and the journal get no spinner frames). Run in a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

PUMPCTL = [sys.executable, "-m", "pumpctl"]


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [*PUMPCTL, *args],
            stdin=terminal, stdout=terminal, stderr=terminal,
            timeout=60, check=False, env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )  # fmt: skip
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return done.returncode, b"".join(chunks).decode(errors="replace")
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)


def test_db_upgrade_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    code, shown = _on_a_terminal(["db", "upgrade", "--database", f"sqlite:///{tmp_path}/p.db"])
    assert code == 0, shown
    assert "pumpctl db upgrade: done in " in shown


def test_db_upgrade_prints_only_its_revision_off_a_terminal(tmp_path: Path) -> None:
    done = subprocess.run(
        [*PUMPCTL, "db", "upgrade", "--database", f"sqlite:///{tmp_path}/p.db"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip().isalnum()
