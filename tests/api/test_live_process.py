"""The service as a real process (`pumpctl serve --simulate 2 --clock virtual` on a free port),
spoken to over real TCP with httpx: the live event stream GET /api/v1/events (interfaces.md
section 3) shows a nurse's reaction stop (I1) and the pump's stopped status; a client that
reconnects with Last-Event-ID gets every audit event after it, in order, none missing; and the
rate ladder climbs hour by hour (L1, L2) as GET /pumps shows it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_process import HOUR, TOKENS, Service

from tests.conftest import free_port

#: Bound on an event the service must put on the stream (status events come once a second).
STREAM_BOUND_S = 20.0


@dataclass(frozen=True)
class Sse:
    """One Server-Sent Event."""

    event: str
    id: str
    data: Any

    @property
    def audit_id(self) -> int | None:
        """The audit row's id; None for a pump status (its id is `LAST.SUFFIX`)."""
        return None if "." in self.id or self.event == "resync" else int(self.id)


async def events(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of an SSE response as they come (comments and pings skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield Sse(
                    fields.get("event", "message"), fields.get("id", ""), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def read_until(
    stream: AsyncIterator[Sse], done: Callable[[list[Sse]], bool], seen: list[Sse]
) -> list[Sse]:
    """Append events to `seen` until `done(seen)` holds (bounded); return `seen`."""
    async with asyncio.timeout(STREAM_BOUND_S):
        while not done(seen):
            seen.append(await anext(stream))
    return seen


def _auth(role: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}", **extra}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    served = Service(port=free_port(), data_dir=tmp_path)
    await served.start()
    try:
        yield served
    finally:
        await served.stop()
    # the kernel ends in order on SIGTERM and exits 0 (uvicorn's re-raise of the signal, which
    # cut the end short, is not made: pumpctl/cli/server.py, Server), never a SIGKILL
    # (Service.stop's fallback), and the lifespan's shutdown ran to its end
    assert served.process is not None
    log = served.log.read_text()
    assert served.process.returncode == 0, (served.process.returncode, log)
    assert "Application shutdown complete" in log, log


def _stopped(infusion: int) -> Callable[[list[Sse]], bool]:
    def done(seen: list[Sse]) -> bool:
        types = {
            e.event for e in seen if e.audit_id is not None and e.data["infusion_id"] == infusion
        }
        pump_stopped = any(
            e.event == "pump_status" and e.data["id"] == "pump-1" and e.data["state"] == "stopped"
            for e in seen
        )
        return {"reaction", "confirmed_stopped"} <= types and pump_stopped

    return done


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_I1_the_stream_shows_the_stop_and_a_reconnect_gets_every_event_after_it(
    service: Service,
) -> None:
    infusion = await service.running("pump-1", "MRN-LIVE-1")
    assert (await service.pump("pump-1"))["state"] == "running"
    http = service.http
    assert http is not None

    # the nurse station's stream, then the button
    async with http.stream("GET", "/api/v1/events", headers=_auth("nurse")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        # the first status of each pump proves the stream is live before anything happens
        seen = await read_until(
            stream,
            lambda s: {e.data["id"] for e in s if e.event == "pump_status"} >= {"pump-1", "pump-2"},
            [],
        )
        assert all(e.audit_id is None for e in seen), "no replay without Last-Event-ID"
        first_status = next(e for e in seen if e.data["id"] == "pump-1")
        assert (first_status.data["state"], first_status.data["infusion_id"]) == (
            "running",
            infusion,
        )
        answer = await service.api(
            "POST",
            f"/infusions/{infusion}/reactions",
            "nurse",
            {"grade": 2, "signs": ["other"]},
            201,
        )
        assert answer["stop"] == "confirmed"
        seen = await read_until(stream, _stopped(infusion), seen)
        await stream.aclose()
    audited = [e for e in seen if e.audit_id is not None]
    ids = [e.audit_id for e in audited]
    assert ids == sorted(set(ids)), ids
    reaction = next(e for e in audited if e.event == "reaction")
    assert reaction.data["actor"] == "nina"
    stop = next(e for e in audited if e.event == "confirmed_stopped")
    assert ids.index(reaction.audit_id) < ids.index(stop.audit_id)
    last_id = audited[-1].id

    # disconnected: time passes, the reaction resolves (I4), the nurse resumes (I2)
    await service.advance(15 * 60)
    await service.api(
        "POST", f"/infusions/{infusion}/reactions/{answer['reaction_id']}/resolve", "nurse"
    )
    await service.api("POST", f"/infusions/{infusion}/resume", "nurse", {})
    await service.advance(1)
    assert (await service.pump("pump-1"))["state"] == "running"
    trail = await service.api("GET", f"/infusions/{infusion}/events", "viewer")
    missed = [row["id"] for row in trail if row["id"] > int(last_id)]
    assert {"resolved", "resumed", "confirmed_running"} <= {
        row["type"] for row in trail if row["id"] > int(last_id)
    }

    headers = _auth("nurse", **{"Last-Event-ID": last_id})
    async with http.stream("GET", "/api/v1/events", headers=headers) as response:
        assert response.status_code == 200
        stream = events(response)
        replayed = await read_until(
            stream, lambda s: max((e.audit_id or 0 for e in s), default=0) >= missed[-1], []
        )
        await stream.aclose()
    got = [e.audit_id for e in replayed if e.audit_id is not None]
    assert got == sorted(set(got)), got
    assert got[0] > int(last_id), "nothing at or before Last-Event-ID comes again"
    assert [i for i in got if i in set(missed)] == missed, "every event after it, in order"
    assert not any(e.event == "resync" for e in replayed)
    # the replayed rows are the audit rows themselves
    by_id = {row["id"]: row for row in trail}
    for e in replayed:
        if e.audit_id in by_id:
            assert (e.event, e.data["type"], e.data["at"]) == (
                by_id[e.audit_id]["type"],
                by_id[e.audit_id]["type"],
                by_id[e.audit_id]["at"],
            )


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_L1_L2_the_rate_climbs_hour_by_hour_on_the_real_process(service: Service) -> None:
    infusion = await service.running("pump-2", "MRN-LIVE-2")
    rates = [(await service.pump("pump-2"))["rate_ml_h"]]
    for _hour in range(4):
        await service.advance(HOUR)
        pump = await service.pump("pump-2")
        assert (pump["state"], pump["infusion_id"]) == ("running", infusion)
        rates.append(pump["rate_ml_h"])
    # L1: +50 ml/h every hour from 50; L2: never above the protocol's 200
    assert rates == [50, 100, 150, 200, 200]
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert [p["rate_ml_h"] for p in view["rate_history"]] == [50, 100, 150, 200]
    assert (await service.pump("pump-1"))["state"] != "running"  # the other pump was left alone
