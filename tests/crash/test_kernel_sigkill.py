"""A4 on the service as users run it: `pumpctl serve` (the kernel, its web side a child) with a
serial pump simulated in a process of its own (`pumpctl simulate serial`), on the scaled clock
of a bench, SIGKILLed between a reaction's stop and its record, then started again on the same
store. The record cannot be written (another process holds SQLite's write lock), so the answer
said `recorded: false`; the kernel then dies with the record in memory.

On the restart the pump is found stopped with no record why: A4, never a pump that runs on,
and nothing acknowledged as recorded is missing; the web side, its child, dies with it
(tests/crash/test_sigkill_recovery.py tries the kernel alone, `--no-web`, at seeded points).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from needs import free_port
from pumpctl_process import run_pumpctl, simulate_serial
from service_process import Service

#: Clinical seconds per wall second (a bench's clock: the pump is a simulator).
FACTOR = 60.0
BOUND_S = 30.0


async def _until(probe: Any, bound_s: float = BOUND_S) -> Any:
    async with asyncio.timeout(bound_s):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def _running_rate(service: Service) -> float:
    pump = await service.pump("pump-1")
    return float(pump["rate_ml_h"]) if pump["state"] == "running" else 0.0


async def _none_left(kernel: int) -> bool:
    return not _orphans(kernel)


def _orphans(kernel: int) -> list[int]:
    """Web sides the kernel `kernel` started still running (it is gone: they must be too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                tail = argv[argv.index(b"--from-kernel") + 1 :] if b"--from-kernel" in argv else []
                if b"web" in argv and tail[:1] == [str(kernel).encode()]:
                    found.append(int(entry.name))
    return found


async def test_a4_i1_sigkill_between_a_reactions_stop_and_its_record(tmp_path: Path) -> None:
    """The stop reached the pump, its record did not reach the disk, the kernel died: the
    restart finds the pump stopped, pauses the infusion under A4 (no record why), never sends
    it running again, and its web side died with it."""
    env = {"PUMPCTL_DATA_DIR": str(tmp_path)}
    upgraded = await run_pumpctl("db", "upgrade", "--database", f"sqlite:///{tmp_path}/pumpctl.db")
    assert upgraded.returncode == 0, upgraded.stderr
    spec = f"scaled:{FACTOR}@{time.time()!r}"
    async with simulate_serial("--pumps", "1", "--clock", spec) as served:
        pump = f"pump-1=serial://{served.path}?address=0&safe=255"
        options: dict[str, Any] = {
            "port": free_port(),
            "data_dir": tmp_path,
            "simulate": 0,
            "clock": spec,
            "env": env,
            "args": ["--pump", pump, "--bench"],
        }
        service = Service(**options)
        await service.start()
        try:
            patient = await service.api(
                "POST", "/patients", "clinician", {"mrn": "MRN-CRASH", "weight_kg": 70}, 201
            )
            body = {"patient_id": patient["id"], "pump_id": "pump-1"}
            infusion = (await service.api("POST", "/infusions", "clinician", body, 201))["id"]
            given = (await service.now()) - timedelta(minutes=60)
            path = f"/infusions/{infusion}"
            await service.api(
                "POST", f"{path}/premedication", "nurse", {"given_at": given.isoformat()}
            )
            await service.api("POST", f"{path}/start", "clinician", {})
            await _until(lambda: _running_rate(service))
            holder = sqlite3.connect(tmp_path / "pumpctl.db", isolation_level=None, timeout=10)
            holder.execute("BEGIN IMMEDIATE")
            try:
                answer = await service.api(
                    "POST", f"{path}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
                )
                assert answer["stop"] == "confirmed", answer
                assert answer["recorded"] is False, answer
                assert service.process is not None
                kernel = service.process.pid
                assert _orphans(kernel), "no web side to outlive the kernel"
                service.process.send_signal(signal.SIGKILL)  # the kernel, the record in memory
                await service.process.wait()
            finally:
                holder.rollback()
                holder.close()
            await _until(lambda: _none_left(kernel))
            await service.kill()
            await service.start()  # the same store, the same pump
            shown = await service.api("GET", path, "nurse")
            assert shown["state"] == "paused", shown
            assert shown["state_reason"]["rule"] == "A4", shown
            assert shown["reaction"] is None  # never recorded: the answer said so
            events = [e["type"] for e in await service.api("GET", f"{path}/events", "nurse")]
            assert "restarted" in events, events
            assert "reaction" not in events, events
            pump_now = await service.pump("pump-1")
            assert pump_now["state"] == "stopped", pump_now  # never sent running again
        finally:
            await service.stop()
