"""scripts/test-cpu's plugin (tests/helpers/cpu_account.py) charges a test with the CPU of the
processes it started, apart from the pytest process's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cpu_account import OUTPUT

HELPERS = Path(__file__).resolve().parent / "helpers"
#: A test that starts a process burning CPU (a busy loop of about half a second), and one that
#: starts nothing.
TESTS = """
import subprocess, sys, time

def test_starts_a_busy_process():
    busy = "import time\\nend = time.process_time() + 0.5\\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", busy], check=True)

def test_starts_nothing():
    assert True
"""


def test_a_test_is_charged_with_the_cpu_of_the_processes_it_started(tmp_path: Path) -> None:
    (tmp_path / "test_burn.py").write_text(TESTS)
    prefix = tmp_path / "account"
    # nothing of this run's pytest or xdist (PYTEST_XDIST_WORKER would name the file) or pumpctl
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PUMPCTL_"))}
    env = {**inherited, OUTPUT: str(prefix), "PYTHONPATH": str(HELPERS)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "cpu_account", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", "test_burn.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = (tmp_path / "account.main").read_text().splitlines()
    rows = {line.split("\t")[0]: [float(f) for f in line.split("\t")[1:]] for line in lines}
    busy_wall, busy_own, busy_children = rows["test_burn.py::test_starts_a_busy_process"]
    assert busy_children >= 0.4  # the child's half second, not the worker's
    assert busy_own < busy_children
    assert busy_wall >= busy_children * 0.9
    assert rows["test_burn.py::test_starts_nothing"][2] < 0.05
