"""The service's PostgreSQL server frozen (SIGSTOP: what a hung host, a stalled disk or a
debugger does to it) under the real service (`pumpctl serve --simulate 1 --database
postgresql://...`, a real process, its pump on a pseudo-terminal).

Before, the reaction got no answer within 20 s, /health was silent and the pump ran on at
50 ml/h until the database came back 25 s after the press. Now the pump stops at once (I1),
the reaction is answered `recorded: false`, /health is 503 within its bound, and the records
are written once the server is thawed (tests/faults/test_store_faults.py has the SQLite faults).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from postgres_env import PostgresServer, postgres_server, server_processes
from service_process import serving
from test_store_faults import assert_degraded_then_recovered


@contextlib.contextmanager
def frozen(server: PostgresServer) -> Iterator[list[int]]:
    """Every process of the server stopped (SIGSTOP); continued (SIGCONT) when the block
    ends, whatever happens in it."""
    stopped = server_processes(server)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_i1_a_frozen_postgresql_stops_the_pump_at_once_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """I1 with the database frozen: the stop leaves, the answer says the record waits,
    /health says the store does not answer, and once thawed the record is complete."""
    with postgres_server() as server:
        url = server.url(server.create_database())
        async with serving(tmp_path, simulate=1, env={"PUMPCTL_DATABASE_URL": url}) as service:
            infusion = await service.running("pump-1", "MRN-FROZEN")
            with frozen(server) as stopped:

                def thaw() -> None:
                    for pid in stopped:
                        os.kill(pid, signal.SIGCONT)

                await assert_degraded_then_recovered(service, infusion, thaw, "answer")
