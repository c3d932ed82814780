"""The store's write bounds leave out time the process did not run (pumpctl/store/awake.py).

A child process holds the clock and a `StoreWriter` on SQLite; the test SIGSTOPs it (for the
fault's length, 2 s) and SIGCONTs it, as an operator's `kill -STOP` or a frozen container
would. The clock stands still through the pause; a write under way when the process was
stopped is not a slow database (the store stays up); a write that really takes longer than
its bound still is one (degraded). A CI run saw the kernel SIGSTOPped mid-write and woken
call its store degraded and answer a nurse's acknowledgement "not yet recorded"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

PAUSE_S = 2.0
BOUND_S = 20.0

CHILD = r"""
import asyncio, json, sys, time
from pumpctl.store import Store, migrate
from pumpctl.store.awake import AwakeClock
from pumpctl.store.writer import StoreWriter

url, job_s = sys.argv[1], float(sys.argv[2])
migrate.upgrade(url)


def write():
    print("writing", flush=True)
    time.sleep(job_s)  # the database's own time for this write


async def main():
    clock = AwakeClock(pause_s=0.2)
    with Store.open(url) as store:
        writer = StoreWriter(store, clock=clock)
        writer.start()
        awake0, mono0 = clock.now(), time.monotonic()
        written = writer.record(write, what="a test write")
        seen = set()  # every reason the store was degraded for, looked at every 5 ms
        while not written.done():
            health = writer.health()
            if health.degraded:
                seen.add(health.reason.split(" for ")[0])
            await asyncio.sleep(0.005)
        print(json.dumps({
            "written": written.result(),
            "awake_s": clock.now() - awake0,
            "monotonic_s": time.monotonic() - mono0,
            "degraded_for": sorted(seen),
        }), flush=True)
        writer.close()

asyncio.run(main())
"""


def _child(tmp_path: Path, job_s: float, *, stop_s: float) -> dict[str, Any]:
    """What the child saw: its write done, the clocks, the store's degraded reasons."""
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(job_s)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "writing"  # the write is under way
            if stop_s:
                child.send_signal(signal.SIGSTOP)
                time.sleep(stop_s)  # the fault's length, not a synchronisation
                child.send_signal(signal.SIGCONT)
            line = child.stdout.readline()
            assert child.wait(BOUND_S) == 0
        finally:
            if child.poll() is None:
                child.kill()
    said: dict[str, Any] = json.loads(line)
    return said


@pytest.mark.slow
def test_a_process_stopped_mid_write_does_not_call_its_store_degraded(tmp_path: Path) -> None:
    said = _child(tmp_path, 0.4, stop_s=PAUSE_S)
    assert said["written"] is True
    assert said["monotonic_s"] >= PAUSE_S
    assert said["awake_s"] < PAUSE_S - 1.0, said  # the clock stood still through the pause
    assert said["degraded_for"] == [], said


@pytest.mark.slow
def test_a_write_that_takes_longer_than_its_bound_is_still_a_slow_database(
    tmp_path: Path,
) -> None:
    said = _child(tmp_path, 1.5, stop_s=0.0)
    assert said["written"] is True
    assert said["degraded_for"] == ["the database has not answered a write"], said
