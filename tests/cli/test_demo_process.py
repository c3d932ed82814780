"""`pumpctl demo` as a real process: it names its URL and one token per role on stdout, its
first pump is infusing (running, rate > 0) as GET /api/v1/pumps shows within a bounded wait,
and SIGTERM ends it cleanly. A data directory it cannot write is one line on stderr, exit 2."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from pumpctl_process import BOUND_S, pumpctl_server

from tests.conftest import free_port

ROLES = ("viewer", "nurse", "clinician", "admin")
URL = re.compile(r"^pumpctl demo: .* at (http://127\.0\.0\.1:(\d+)/)")
TOKEN = re.compile(r"^\s+(viewer|nurse|clinician|admin)\s+(\S+)$")
LAST_BANNER_LINE = "Ctrl-C stops the demo."
INFUSING_WITHIN_S = 30.0


async def _banner(process: asyncio.subprocess.Process) -> list[str]:
    """The demo's lines up to the last of its banner (bounded)."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(BOUND_S):
        while not lines or lines[-1].strip() != LAST_BANNER_LINE:
            line = (await process.stdout.readline()).decode()
            assert line, f"the demo ended before its banner: {lines}"
            lines.append(line.rstrip("\n"))
    return lines


def _url_and_tokens(lines: list[str]) -> tuple[str, int, dict[str, str]]:
    found = [m for m in (URL.match(line) for line in lines) if m]
    assert len(found) == 1, lines
    tokens = {m[1]: m[2] for m in (TOKEN.match(line) for line in lines) if m}
    assert set(tokens) == set(ROLES), lines
    assert len(set(tokens.values())) == len(ROLES), "one token per role"
    return found[0][1], int(found[0][2]), tokens


async def _infusing_pump(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Poll GET /api/v1/pumps (deadline) until a pump runs at a rate above zero."""
    pumps: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(INFUSING_WITHIN_S):
            while True:
                try:
                    r = await http.get(
                        "/api/v1/pumps", headers={"Authorization": f"Bearer {token}"}
                    )
                except httpx.TransportError:
                    r = None
                if r is not None and r.status_code == 200:
                    pumps = r.json()
                    running = [p for p in pumps if p["state"] == "running" and p["rate_ml_h"] > 0]
                    if running:
                        return running[0]
                await asyncio.sleep(0.2)  # polling a condition with a deadline
    except TimeoutError:
        raise AssertionError(f"no pump infusing within {INFUSING_WITHIN_S} s: {pumps}") from None


async def _terminated(process: asyncio.subprocess.Process) -> str:
    """SIGTERM; the exit (bounded) and what it wrote to stderr."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(BOUND_S):
        _out, err = await process.communicate()
    # the service ends in order on SIGTERM and exits 0, never killed
    assert process.returncode == 0, (process.returncode, err.decode())
    return err.decode()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_demo_names_its_url_and_tokens_and_its_first_pump_infuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUMPCTL_DATA_DIR", str(tmp_path / "data"))
    port = free_port()
    async with pumpctl_server("demo", "--port", str(port), "--pumps", "2") as process:
        url, named_port, tokens = _url_and_tokens(await _banner(process))
        assert named_port == port
        async with httpx.AsyncClient(base_url=url, timeout=15.0) as http:
            pump = await _infusing_pump(http, tokens["viewer"])
            assert pump["id"] == "pump-1"
            assert pump["infusion_id"] is not None
            me = await http.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {tokens['nurse']}"}
            )
            assert me.json() == {"name": "demo-nurse", "role": "nurse"}
            assert (await http.get("/api/v1/me")).status_code == 401
        assert process.stdout is not None
        started = (await asyncio.wait_for(process.stdout.readline(), BOUND_S)).decode()
        assert started.strip().startswith("infusion 1 started on pump-1"), started
        err = await _terminated(process)
    assert "Traceback" not in err, err
    assert (tmp_path / "data" / "pumpctl.db").is_file()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_demo_on_a_taken_port_names_the_port_it_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUMPCTL_DATA_DIR", str(tmp_path / "data"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with pumpctl_server("demo", "--port", str(port), "--pumps", "1") as process:
            lines = await _banner(process)
            url, named_port, tokens = _url_and_tokens(lines)
            assert named_port != port
            assert f"  (port {port} is taken; using {named_port})" in lines
            async with httpx.AsyncClient(base_url=url, timeout=15.0) as http:
                await _infusing_pump(http, tokens["admin"])
            err = await _terminated(process)
    assert "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_demo_on_port_0_names_the_free_port_it_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 0 asks for any free port: the banner names the one chosen (never "0 is taken")."""
    monkeypatch.setenv("PUMPCTL_DATA_DIR", str(tmp_path / "data"))
    async with pumpctl_server("demo", "--port", "0", "--pumps", "1") as process:
        lines = await _banner(process)
        url, named_port, tokens = _url_and_tokens(lines)
        assert named_port != 0
        assert f"  (port 0: the free port {named_port} was chosen)" in lines
        assert not any("is taken" in line for line in lines), lines
        async with httpx.AsyncClient(base_url=url, timeout=15.0) as http:
            await _infusing_pump(http, tokens["admin"])
        err = await _terminated(process)
    assert "Traceback" not in err, err


async def test_the_demo_refuses_a_data_directory_it_cannot_write_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path under a regular file: no directory can be made there, not even by root."""
    (tmp_path / "file").write_text("not a directory\n")
    where = tmp_path / "file" / "sub"
    monkeypatch.setenv("PUMPCTL_DATA_DIR", str(where))
    async with pumpctl_server("demo", "--port", str(free_port())) as process:
        async with asyncio.timeout(BOUND_S):
            out, err = await process.communicate()
    assert process.returncode == 2, (process.returncode, out, err)
    lines = err.decode().strip().splitlines()
    assert lines == [f"pumpctl demo: data directory {where} is not writable (Not a directory)"], (
        lines
    )
    assert "Traceback" not in err.decode()
    assert b"http://" not in out, "nothing is announced that is not served"
