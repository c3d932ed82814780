"""The shipped systemd unit config/pumpctl.service: systemd's own parser accepts it, it keeps the
safety-relevant directives, and every setting and option it names exists in pumpctl."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from needs import missing

from pumpctl.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "pumpctl.service"
SHIPPED_EXEC = "/opt/pumpctl/bin/pumpctl"
BOUND_S = 30.0


def directives(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value, in order (systemd allows a key more than once)."""
    found: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, eq, value = line.partition("=")
        assert eq, f"not a directive: {raw!r}"
        found.setdefault((section, key.strip()), []).append(value.strip())
    return found


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
    )
    if found is None:
        missing("systemd-analyze not found (Debian package systemd)")
    return found


def installed_pumpctl() -> Path:
    """The `pumpctl` console script of the interpreter running the tests (the venv's)."""
    script = Path(sys.executable).parent / "pumpctl"
    assert script.is_file(), f"no pumpctl script at {script}"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    return script


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` of the shipped unit, with one change: verify insists that
    ExecStart's binary exists, and the shipped path /opt/pumpctl/bin/pumpctl (the gateway's
    venv) does not exist here, so the copy in tmp_path points at this venv's real `pumpctl`.
    verify exits 0 even for an unknown key (it only warns), so any line it prints about the
    unit fails the test too."""
    analyze = systemd_analyze()
    text = UNIT.read_text(encoding="utf-8")
    exec_lines = directives(text)[("Service", "ExecStart")]
    assert len(exec_lines) == 1
    assert exec_lines[0].startswith(SHIPPED_EXEC + " ")
    copy = tmp_path / "pumpctl.service"
    copy.write_text(
        text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={installed_pumpctl()} ", 1),
        encoding="utf-8",
    )
    completed = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True, text=True, timeout=BOUND_S, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    about_unit = [line for line in output.splitlines() if "pumpctl" in line]
    assert completed.returncode == 0, output
    assert not about_unit, output


def test_unit_keeps_the_safety_relevant_directives() -> None:
    """Readiness and watchdog (a hung loop is restarted), restart on failure, its own user, a
    read-only system with the state directory the one writable place, and the serial lines."""
    unit = directives(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        values = unit.get(("Service", key), [])
        assert len(values) == 1, f"[Service] {key}= must be set once, got {values}"
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    watchdog = re.fullmatch(r"(\d+)s", one("WatchdogSec"))
    assert watchdog, "WatchdogSec in whole seconds"
    assert 2 <= int(watchdog[1]) <= 60
    assert one("Restart") == "on-failure"
    assert one("User") == "pumpctl"
    assert ("Service", "DynamicUser") not in unit  # one choice, justified in the unit
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("StateDirectory") == "pumpctl"
    assert "PUMPCTL_DATA_DIR=/var/lib/pumpctl" in unit[("Service", "Environment")]
    assert one("EnvironmentFile") == "-/etc/pumpctl/tokens.env"
    assert "dialout" in one("SupplementaryGroups").split()
    assert unit.get(("Service", "PrivateDevices"), ["no"]) == ["no"]
    assert one("DevicePolicy") == "auto"
    assert unit[("Install", "WantedBy")] == ["multi-user.target"]


def test_every_pumpctl_name_in_the_unit_exists() -> None:
    """Each PUMPCTL_* variable is a setting (pumpctl/settings.py, prefix PUMPCTL_), and the
    ExecStart command line is one `pumpctl serve` accepts (its --help names the option)."""
    text = UNIT.read_text(encoding="utf-8")
    fields = {f"PUMPCTL_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"\bPUMPCTL_[A-Z_]+\b", text))
    assert {"PUMPCTL_DATA_DIR", "PUMPCTL_API_TOKENS"} <= named
    assert named <= fields, f"not settings: {sorted(named - fields)}"
    command = directives(text)[("Service", "ExecStart")][0].split()
    assert command[1:] == ["serve", "--config", "/etc/pumpctl/pumpctl.toml"]
    helped = subprocess.run(
        [str(installed_pumpctl()), "serve", "--help"],
        capture_output=True, text=True, timeout=BOUND_S, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout


def test_the_unit_is_shipped_in_the_package() -> None:
    """A plain `pip install .` carries the unit (inside the `config` package, beside the
    example configuration), not only a checkout."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = project["tool"]["setuptools"]["package-data"]["config"]
    assert "*.service" in shipped
    assert "*.toml" in shipped  # config/pumpctl.example.toml
