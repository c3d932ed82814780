"""The store fails under the real service (`pumpctl serve --simulate 1`, a real process, its
pump on a pseudo-terminal): write-locked by another process, on a full disk, its file deleted,
and (tests/faults/test_postgres_frozen.py) a PostgreSQL server frozen.

In every case the nurse's reaction still stops the pump at once (I1) and is answered with its
stop's fate and `recorded: false`; `/health` answers 503 naming the store within its bound; an
action that needs a record first is refused (503), nothing of it done; and once the database
answers again the records that waited are written, in order: the legal record loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from needs import missing
from service_process import Service, serving

#: Seconds within which /health must answer (the probe's bound is 0.8 s; the rest is HTTP on a
#: loaded CI machine).
HEALTH_WITHIN_S = 1.5
#: Seconds a condition of the service has to come true (the writer retries every 0.5 s).
BOUND_S = 20.0


async def health(service: Service) -> tuple[int, dict[str, Any]]:
    """GET /health, which must answer within `HEALTH_WITHIN_S` whatever the store does."""
    assert service.http is not None
    answer = await service.http.get("/api/v1/health", timeout=HEALTH_WITHIN_S)
    return answer.status_code, answer.json()


async def until_health(service: Service, status: int) -> dict[str, Any]:
    """/health until it answers `status` (200: with no record left waiting), bounded."""
    async with asyncio.timeout(BOUND_S):
        while True:
            code, body = await health(service)
            if code == status and (status != 200 or body["store_detail"]["records_waiting"] == 0):
                return body
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def until_logged(service: Service, words: str) -> None:
    """The service's log says `words`, bounded (the store's watch looks every 0.25 s)."""
    async with asyncio.timeout(BOUND_S):
        while words not in service.log.read_text():  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def press(service: Service, infusion: int) -> dict[str, Any]:
    """The nurse's reaction button, grade 2 (I1: the pump stops first)."""
    assert service.http is not None
    answer = await service.http.post(
        f"/api/v1/infusions/{infusion}/reactions",
        json={"grade": 2, "signs": ["other"]},
        headers={"Authorization": "Bearer n-tok-for-the-tests-only-32chars"},
        timeout=10.0,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def assert_degraded_then_recovered(
    service: Service, infusion: int, release: Any, reason_words: str
) -> None:
    """The common course of every store fault (module docstring); `release()` ends the fault."""
    body = await until_health(service, 503)  # (a probe of the last 0.5 s may still say ok)
    assert body["store"] == "degraded"
    assert reason_words in body["store_detail"]["reason"], body
    answer = await press(service, infusion)
    assert answer["stop"] == "confirmed", answer  # I1: the stop did not wait for the disk
    assert answer["recorded"] is False, answer
    assert "not yet recorded" in answer["record_message"]
    pump = await service.pump("pump-1")
    assert pump["state"] == "stopped", pump  # (a stopped pump keeps its programmed rate)
    # write-ahead: nothing that needs a record first is done while none can be written
    refused = await service.api(
        "POST", "/patients", "clinician", {"mrn": "MRN-NOT", "weight_kg": 60}, 503
    )
    assert refused["detail"]["store"] == "degraded"
    assert "not recorded" in refused["detail"]["message"]
    # an action that sends a pump nothing (L7's hold) is done, and says its record waits
    held = await service.api("POST", f"/infusions/{infusion}/hold", "clinician", None, 202)
    assert held["recorded"] is False, held
    assert held["state"] == "paused", held
    release()
    body = await until_health(service, 200)
    assert body["store_detail"]["records_lost"] == 0
    events = await service.api("GET", f"/infusions/{infusion}/events", "nurse")
    types = [e["type"] for e in events]
    assert "reaction" in types
    assert "paused" in types, types  # written once it answered
    assert types.index("reaction") < types.index("paused")  # in order
    patients = [p for p in ("MRN-NOT",) if p in service.log.read_text()]
    assert patients == []  # a refused request's input is never logged
    shown = await service.api("GET", f"/infusions/{infusion}", "nurse")
    assert shown["state"] == "paused"
    assert shown["reaction"]["grade"] == 2
    assert shown["held"] is True, types
    assert "hold" in types, types


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with serving(tmp_path, simulate=1) as served:
        yield served


async def test_i1_a_write_locked_sqlite_file_stops_the_pump_at_once_and_loses_nothing(
    service: Service,
) -> None:
    """Another process holds SQLite's write lock: the reaction stops the pump and is answered
    at once (I1), recorded when the lock goes."""
    infusion = await service.running("pump-1", "MRN-LOCK")
    holder = sqlite3.connect(service.data_dir / "pumpctl.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        await assert_degraded_then_recovered(service, infusion, holder.rollback, "answer")
    finally:
        holder.close()
    # an episode shorter than the watch's look is logged at its next look (0.25 s), which may
    # come after the health that says it is over
    await until_logged(service, "store DEGRADED")


async def test_a3_a_resume_met_by_a_hung_store_is_refused_and_never_runs_the_pump_later(
    service: Service,
) -> None:
    """Write-ahead, bounded: the store hangs just before a nurse's resume, before the kernel
    knows it degraded. The resume waits for its record at most 2 s, then is answered 503
    "nothing was sent"; the pump stays stopped, and stays so once the database answers again
    and every record is written (never a pump that starts on its own later); an alarm (A3)
    says the run was not sent, and a resume after that runs it (I2)."""
    infusion = await service.running("pump-1", "MRN-HUNG")
    await service.api(
        "POST", f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
    )
    await until_health(service, 200)  # every record written
    holder = sqlite3.connect(service.data_dir / "pumpctl.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        refused = await service.api("POST", f"/infusions/{infusion}/resume", "nurse", {}, 503)
        assert refused["detail"]["store"] == "degraded", refused
        assert "nothing was sent to the pump" in refused["detail"]["message"], refused
        assert (await service.pump("pump-1"))["state"] != "running"
    finally:
        holder.rollback()
        holder.close()
    body = await until_health(service, 200)  # the database answers; what waited is written
    assert body["store_detail"]["records_lost"] == 0
    assert (await service.pump("pump-1"))["state"] != "running"  # never run on its own
    shown = await service.api("GET", f"/infusions/{infusion}", "nurse")
    denied = [a for a in shown["alarms"] if a["kind"] == "command_denied"]
    assert denied, shown["alarms"]
    assert "not sent" in denied[0]["message"]
    events = await service.api("GET", f"/infusions/{infusion}/events", "nurse")
    assert "command_denied" in [e["type"] for e in events]
    await service.api("POST", f"/infusions/{infusion}/alarms/command_denied/clear", "nurse", {})
    await service.api("POST", f"/infusions/{infusion}/resume", "nurse", {})
    async with asyncio.timeout(30):
        while (await service.pump("pump-1"))["state"] != "running":  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling a condition with a deadline
    assert (await service.pump("pump-1"))["rate_ml_h"] == 25.0  # I2: half of 50 ml/h


async def test_i1_a_deleted_database_file_is_a_loud_alarm_never_silence(service: Service) -> None:
    """The SQLite file deleted under the running service: /health says so at once (503 naming
    the file), the stop still leaves, and nothing is written into the unlinked file."""
    infusion = await service.running("pump-1", "MRN-GONE")
    database = service.data_dir / "pumpctl.db"
    kept = service.data_dir / "kept.db"
    os.link(database, kept)  # the engineer's "backup": the same file under another name
    database.unlink()
    body = await until_health(service, 503)
    assert "was deleted" in body["store_detail"]["reason"], body
    answer = await press(service, infusion)
    assert answer["stop"] == "confirmed", answer
    assert answer["recorded"] is False, answer
    pump = await service.pump("pump-1")
    assert pump["state"] == "stopped", pump
    # the file put back where it was: the records that waited are written into it
    os.link(kept, database)
    await until_health(service, 200)
    with sqlite3.connect(database) as db:
        types = [
            r[0] for r in db.execute("SELECT type FROM audit WHERE infusion_id = ?", (infusion,))
        ]
    assert "reaction" in types, types
    assert "paused" in types, types
    assert "the database file" in service.log.read_text()


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs at `where` (root only: a full disk the test can fill and empty)."""
    if os.geteuid() != 0:
        missing("a full disk needs a tmpfs of its own: run as root (CI does)")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_i1_a_full_disk_stops_the_pump_at_once_and_writes_what_waited_once_freed(
    tmp_path: Path,
) -> None:
    """The data directory's disk fills: the reaction is answered with its stop and
    `recorded: false` (before, it was 201 and the record was lost for good), /health is 503,
    and everything is written once space returns."""
    with small_disk(tmp_path / "disk") as disk:
        async with serving(disk, simulate=1) as service:
            infusion = await service.running("pump-1", "MRN-FULL")
            filler = disk / "filler"
            with filler.open("wb") as out, contextlib.suppress(OSError):
                while True:  # until ENOSPC
                    out.write(b"\0" * 65536)
                    out.flush()
            # the next write fails: a record (the press's own) shows the disk is full
            answer = await press(service, infusion)
            assert answer["stop"] == "confirmed", answer
            assert answer["recorded"] is False, answer
            code, body = await health(service)
            assert code == 503, body
            assert "full" in body["store_detail"]["reason"], body
            filler.unlink()
            body = await until_health(service, 200)
            assert body["store_detail"]["records_lost"] == 0
            events = await service.api("GET", f"/infusions/{infusion}/events", "nurse")
            types = [e["type"] for e in events]
            assert "reaction" in types, types
            assert "paused" in types, types


@contextlib.contextmanager
def ext4_disk(where: Path, image: Path) -> Iterator[str]:
    """A 16 MiB ext4 file system on a loop device at `where`, mounted `errors=remount-ro`
    (root only); its name under /sys/fs/ext4, whose `trigger_fs_error` makes the kernel take it
    read-only at once, as it does on a real disk error."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        missing("a file system that goes read-only needs root and mkfs.ext4 (CI has both)")
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    where.mkdir()
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(where)], check=True)
    try:
        device = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(where)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        yield Path(device).name
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        subprocess.run(["losetup", "-d", device], check=False)


def disk_error(device: str) -> None:
    """An error of the ext4 file system on `device`: the kernel takes it read-only."""
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("pumpctl test\n")


async def test_i1_a_file_system_gone_read_only_stops_the_pump_and_acknowledges_no_record(
    tmp_path: Path,
) -> None:
    """The data directory's file system goes read-only under the service (a disk error):
    the reaction is answered with its stop and `recorded: false` (before, 201 as if written,
    and lost at the restart), /health is 503, and the records wait in memory, none lost, none
    acknowledged as written."""
    with ext4_disk(tmp_path / "disk", tmp_path / "disk.img") as device:
        async with serving(tmp_path / "disk", simulate=1) as service:
            infusion = await service.running("pump-1", "MRN-RO")
            disk_error(device)
            answer = await press(service, infusion)
            assert answer["stop"] == "confirmed", answer
            assert answer["recorded"] is False, answer
            body = await until_health(service, 503)
            said = body["store_detail"]["reason"]  # (SQLite says EROFS as an I/O error)
            assert any(w in said for w in ("read-only", "readonly", "I/O error")), body
            assert body["store_detail"]["records_waiting"] >= 1
            assert body["store_detail"]["records_lost"] == 0
            refused = await service.api(
                "POST", "/patients", "clinician", {"mrn": "MRN-RO-2", "weight_kg": 60}, 503
            )
            assert "not recorded" in refused["detail"]["message"]
            pump = await service.pump("pump-1")
            assert pump["state"] == "stopped", pump


async def test_the_page_says_the_database_does_not_answer(service: Service) -> None:
    """The nurse station page shows, as an alert, that the gateway's database does not answer
    while it is held, that stops and reactions still work, and takes it back once it answers
    (the kernel's `store_status` live event)."""
    from page_env import chromium_binary, signed_in  # noqa: PLC0415 - the browser tests only
    from playwright.async_api import async_playwright, expect  # noqa: PLC0415

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_binary())
        try:
            page = await signed_in(browser, service, "nurse")
            note = page.locator("#store-note")
            await expect(note).to_be_hidden()
            holder = sqlite3.connect(
                service.data_dir / "pumpctl.db", isolation_level=None, timeout=10
            )
            holder.execute("BEGIN IMMEDIATE")
            try:
                await until_health(service, 503)
                await expect(note).to_contain_text("database is not answering")
                await expect(note).to_contain_text("stops and reactions work")
                await expect(note).to_have_attribute("role", "alert")
            finally:
                holder.rollback()
                holder.close()
            await until_health(service, 200)
            await expect(note).to_be_hidden()
        finally:
            await browser.close()


async def test_a_schema_dropped_under_the_service_is_a_loud_alarm(service: Service) -> None:
    """The store's schema version dropped by another process (a restore gone wrong, a
    migration run by hand): /health's write probe fails, 503 naming the missing table, and the
    log says the store is degraded; the pump's supervision goes on and a reaction still stops
    it (I1)."""
    infusion = await service.running("pump-1", "MRN-SCHEMA")
    with sqlite3.connect(service.data_dir / "pumpctl.db") as db:
        db.execute("DROP TABLE alembic_version")
    body = await until_health(service, 503)
    assert "alembic_version" in body["store_detail"]["reason"], body
    answer = await press(service, infusion)
    assert answer["stop"] == "confirmed", answer
    pump = await service.pump("pump-1")
    assert pump["state"] == "stopped", pump
    await until_logged(service, "store DEGRADED: no such table: alembic_version")
