"""The shipped systemd units, config/pumpctl-kernel.service and config/pumpctl-web.service:
systemd's own parser accepts each, `systemd-analyze security` rates each OK or better, they keep
the safety-relevant directives (the web side: a user of its own, no devices, no data
directory, bounded), and every setting and option they name exists in pumpctl."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from needs import missing

from api.edge import MAX_CONNECTIONS
from pumpctl.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "pumpctl-kernel.service"
WEB_UNIT = ROOT / "config" / "pumpctl-web.service"
UNITS = [UNIT, WEB_UNIT]
#: `systemd-analyze security`'s exposure (0 safest, 10 worst) each unit must stay within:
#: "OK" is below 5.0; the kernel needs its serial lines and its network clients.
EXPOSURE = {UNIT.name: 2.5, WEB_UNIT.name: 2.0}
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


def _runnable_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart's shipped path (/opt/pumpctl/bin/pumpctl, the gateway's venv,
    absent here) pointing at this venv's real `pumpctl`: verify insists the binary exists."""
    text = unit.read_text(encoding="utf-8")
    exec_lines = directives(text)[("Service", "ExecStart")]
    assert len(exec_lines) == 1
    assert exec_lines[0].startswith(SHIPPED_EXEC + " ")
    copy = tmp_path / unit.name
    copy.write_text(
        text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={installed_pumpctl()} ", 1),
        encoding="utf-8",
    )
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` of the shipped unit (through `_runnable_copy`). verify exits 0
    even for an unknown key (it only warns), so any line it prints about the unit fails the
    test too."""
    analyze = systemd_analyze()
    copy = _runnable_copy(unit, tmp_path)
    completed = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True, text=True, timeout=BOUND_S, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    about_unit = [line for line in output.splitlines() if "pumpctl" in line]
    assert completed.returncode == 0, output
    assert not about_unit, output


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_security_rates_the_unit_within_its_bound(
    unit: Path, tmp_path: Path
) -> None:
    """`systemd-analyze security --offline=true`: each unit's overall exposure within its
    bound (the web side's tighter: it faces the network and needs nothing of the gateway)."""
    analyze = systemd_analyze()
    copy = _runnable_copy(unit, tmp_path)
    completed = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True, text=True, timeout=BOUND_S, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert found, output
    assert float(found[1]) <= EXPOSURE[unit.name], output


def test_unit_keeps_the_safety_relevant_directives() -> None:
    """Readiness and watchdog (a hung loop is restarted), restart on failure, its own user, a
    read-only system with the state directory the one writable place, and the serial lines."""
    unit = directives(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        values = unit.get(("Service", key), [])
        assert len(values) == 1, f"[Service] {key}= must be set once, got {values}"
        return values[0]

    assert one("Type") == "notify"
    assert one("ExecStart").split()[1:3] == ["serve", "--no-web"]  # the kernel alone
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
    # the tokens (both units), and the kernel's own secrets (a database URL), in its unit alone
    assert unit[("Service", "EnvironmentFile")] == [
        "-/etc/pumpctl/tokens.env",
        "-/etc/pumpctl/kernel.env",
    ]
    assert "dialout" in one("SupplementaryGroups").split()
    assert unit.get(("Service", "PrivateDevices"), ["no"]) == ["no"]
    assert one("DevicePolicy") == "auto"
    assert unit[("Install", "WantedBy")] == ["multi-user.target"]
    assert one("RuntimeDirectory") == "pumpctl"
    assert "PUMPCTL_KERNEL_SOCKET=/run/pumpctl/kernel.sock" in unit[("Service", "Environment")]
    assert "pumpctl-web.service" in unit[("Unit", "Wants")][0].split()
    # the kernel before the web side on the CPU (issue 18)
    web = directives(WEB_UNIT.read_text(encoding="utf-8"))
    assert int(one("CPUWeight")) >= 10 * int(web[("Service", "CPUWeight")][0])


def test_the_web_unit_reaches_nothing_but_the_kernels_socket() -> None:
    """The web side: a user of its own in the socket's group only (no dialout), no devices at
    all, the data directory inaccessible, restarted whatever ends it, and bounded in files,
    memory and tasks (issue 18: a flood or a leak of the web side never reaches a pump)."""
    unit = directives(WEB_UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        values = unit.get(("Service", key), [])
        assert len(values) == 1, f"[Service] {key}= must be set once, got {values}"
        return values[0]

    assert one("ExecStart").split()[1] == "web"
    assert one("User") == "pumpctl-web"
    assert one("SupplementaryGroups").split() == ["pumpctl-socket"]
    assert one("PrivateDevices") == "yes"
    assert one("DevicePolicy") == "closed"
    assert one("InaccessiblePaths") == "-/var/lib/pumpctl"
    assert one("Restart") == "always"
    assert int(one("LimitNOFILE")) >= 2 * MAX_CONNECTIONS
    assert one("MemoryMax").endswith(("M", "G"))
    assert int(one("TasksMax")) > 0
    assert "PUMPCTL_KERNEL_SOCKET=/run/pumpctl/kernel.sock" in unit[("Service", "Environment")]
    assert ("Service", "StateDirectory") not in unit
    assert one("EnvironmentFile") == "-/etc/pumpctl/tokens.env"  # never the kernel's kernel.env


@pytest.mark.parametrize(
    ("unit", "command"),
    [
        (UNIT, ["serve", "--no-web", "--config", "/etc/pumpctl/pumpctl.toml"]),
        (WEB_UNIT, ["web", "--config", "/etc/pumpctl/pumpctl.toml"]),
    ],
    ids=["kernel", "web"],
)
def test_every_pumpctl_name_in_the_unit_exists(unit: Path, command: list[str]) -> None:
    """Each PUMPCTL_* variable is a setting (pumpctl/settings.py, prefix PUMPCTL_), and the
    ExecStart command line is one pumpctl accepts (its --help names each option)."""
    text = unit.read_text(encoding="utf-8")
    fields = {f"PUMPCTL_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"\bPUMPCTL_[A-Z_]+\b", text))
    assert "PUMPCTL_KERNEL_SOCKET" in named
    assert named <= fields, f"not settings: {sorted(named - fields)}"
    assert directives(text)[("Service", "ExecStart")][0].split()[1:] == command
    helped = subprocess.run(
        [str(installed_pumpctl()), command[0], "--help"],
        capture_output=True, text=True, timeout=BOUND_S, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    for option in (c for c in command if c.startswith("--")):
        assert option in helped.stdout, option


def test_the_unit_is_shipped_in_the_package() -> None:
    """A plain `pip install .` carries the unit (inside the `config` package, beside the
    example configuration), not only a checkout."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = project["tool"]["setuptools"]["package-data"]["config"]
    assert "*.service" in shipped
    assert "*.toml" in shipped  # config/pumpctl.example.toml
