"""A7 on the service as users run it: `pumpctl serve --simulate 1 --clock real`, a real
process, its wall clock (CLOCK_REALTIME only) stepped +1 h, -1 h and +1 day by libfaketime
while a first infusion runs at 50 ml/h. Clinical time runs on the monotonic clock: the pump
stays at 50 ml/h (no L1 step before a full hour of running), and the step is seen on
`/health`, in the log and in the audit trail.

libfaketime reads the offset from a file on every call (`FAKETIME_NO_CACHE`), so the test
steps the clock by writing that file; the monotonic clock is left alone
(`FAKETIME_DONT_FAKE_MONOTONIC`), as NTP leaves it alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from needs import free_port, missing
from page_env import chromium_binary, signed_in
from playwright.async_api import async_playwright, expect
from service_process import Service

#: Debian's libfaketime, under the machine's multiarch directory.
LIBFAKETIME = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
)
BOUND_S = 20.0  # the watch looks every second; a loaded CI machine is slower
TWO_S = timedelta(seconds=2)


def _need_libfaketime() -> None:
    if not LIBFAKETIME.is_file():
        missing(f"libfaketime is missing ({LIBFAKETIME}; Debian package libfaketime)")


@pytest.fixture
async def stepped(tmp_path: Path) -> AsyncIterator[tuple[Service, Path]]:
    """The real service under libfaketime; the file that holds its wall clock's offset."""
    _need_libfaketime()
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }
    service = Service(port=free_port(), data_dir=tmp_path, simulate=1, env=env, clock="real")
    await service.start()
    try:
        yield service, offset
    finally:
        await service.stop()


async def _until(service: Service, holds: Any) -> Any:
    """GET /health until `holds(body)`, bounded (the step is seen within a second or two)."""
    assert service.http is not None
    async with asyncio.timeout(BOUND_S):
        while True:
            body = (await service.http.get("/api/v1/health")).json()
            if holds(body):
                return body
            await asyncio.sleep(0.1)  # polling a condition with a deadline


@pytest.mark.parametrize(("step", "seconds"), [("+1h", 3600), ("-1h", -3600), ("+1d", 86_400)])
async def test_a7_l1_a_stepped_wall_clock_moves_no_clinical_time_on_the_real_service(
    stepped: tuple[Service, Path], step: str, seconds: int
) -> None:
    """A7, L1: the wall clock stepped under a running first infusion: the pump stays at
    50 ml/h, no rate step is audited, the clinical clock took no step, and the step is on
    /health, in the log and in the audit trail (rule A7)."""
    service, offset = stepped
    infusion = await _running(service)
    before = await service.now()
    offset.write_text(f"{step}\n")
    health = await _until(service, lambda body: body["clock"]["wall_steps"] == 1)
    assert health["clock"]["last_wall_step_s"] == pytest.approx(seconds, abs=5)
    seen = datetime.fromisoformat(health["clock"]["now"])
    # two seconds of clinical time after the step was seen, the supervisor's deadlines and
    # several status reads (every 0.2 s) have run: an L1 deadline the step reached is past
    await _until(service, lambda body: datetime.fromisoformat(body["clock"]["now"]) > seen + TWO_S)
    after = await service.now()
    assert 0 <= (after - before).total_seconds() < 60, (before, after)  # never back, no jump
    assert (await service.pump("pump-1"))["rate_ml_h"] == 50
    events = await service.api("GET", f"/infusions/{infusion}/events", "viewer")
    assert [e["type"] for e in events if e["type"] == "rate_step"] == []
    log = service.log.read_text()
    assert "rule=A7" in log
    assert "wall clock was stepped" in log
    with sqlite3.connect(service.data_dir / "pumpctl.db") as db:
        audited = db.execute("SELECT rule FROM audit WHERE type = 'clock_step'").fetchall()
    assert audited == [("A7",)]


async def _running(service: Service) -> int:
    """A first infusion started on pump-1 (premedication an hour before, D3), once the pump
    reads back running at 50 ml/h (real time: a status read every 0.2 s)."""
    patient = await service.api(
        "POST", "/patients", "clinician", {"mrn": "MRN-W", "weight_kg": 70}, 201
    )
    body = {"patient_id": patient["id"], "pump_id": "pump-1"}
    infusion = await service.api("POST", "/infusions", "clinician", body, 201)
    given = (await service.now()) - timedelta(minutes=60)
    path = f"/infusions/{infusion['id']}"
    await service.api("POST", f"{path}/premedication", "nurse", {"given_at": given.isoformat()})
    await service.api("POST", f"{path}/start", "clinician", {})
    async with asyncio.timeout(BOUND_S):
        while True:
            if (await service.pump("pump-1"))["rate_ml_h"] == 50:
                return int(infusion["id"])
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def test_a7_the_page_says_the_wall_clock_was_stepped(stepped: tuple[Service, Path]) -> None:
    """A7: the nurse station page tells the staff the gateway's wall clock was stepped, and
    that clinical time did not move (read from GET /clock)."""
    service, offset = stepped
    offset.write_text("+1h\n")
    await _until(service, lambda body: body["clock"]["wall_steps"] == 1)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_binary())
        try:
            page = await signed_in(browser, service, "nurse")
            note = page.locator("#clock-note")
            await expect(note).to_contain_text("wall clock was stepped by +3600 s (A7)")
            await expect(note).to_contain_text("clinical time did not move")
        finally:
            await browser.close()
