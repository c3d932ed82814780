"""The kernel's live events hub (api/live.py) looks at every pump's cached status at each tick,
but builds a pump's view (a dict and its JSON) only when what it shows changed: an unchanged
fleet costs no view at all (issue 21: at 1,000 pumps the views built at every tick were a fifth
of the kernel's event loop). A change (A1: a pump's alarm) is still sent at the next tick."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import ApiSteps
from fastapi.testclient import TestClient

import api.live
from api.live import LiveHub

BOUND_S = 10.0


class Built:
    """`api.live.pump_view`, counted: the real one is called."""

    def __init__(self) -> None:
        self.real = api.live.pump_view
        self.pumps: list[str] = []

    def __call__(self, ward: Any, supervisor: Any) -> dict[str, Any]:
        self.pumps.append(supervisor.pump.pump_id)
        return self.real(ward, supervisor)


def _until(client: TestClient, holds: Any) -> None:
    """Look at `holds()` on the app's loop until it is true, bounded."""

    async def wait() -> None:
        async with asyncio.timeout(BOUND_S):
            while not holds():  # noqa: ASYNC110 - polling a condition with a deadline
                await asyncio.sleep(0.02)

    assert client.portal is not None
    client.portal.call(wait)


def test_a1_an_unchanged_pump_costs_no_view_and_its_alarm_is_sent_at_the_next_tick(
    client: TestClient, ward: ApiSteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub: LiveHub = client.app.state.live  # type: ignore[attr-defined]
    built = Built()
    monkeypatch.setattr(api.live, "pump_view", built)
    supervisors = hub.ward.supervisors
    # both pumps stopped and linked, their first status sent
    _until(client, lambda: all(s.link_up and s.status is not None for s in supervisors.values()))
    assert client.portal is not None
    client.portal.call(hub._tick)
    built.pumps.clear()
    for _ in range(3):
        client.portal.call(hub._tick)
    assert built.pumps == []  # nothing shown changed: no view built, none sent

    ward.post("/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    pump1 = supervisors["pump-1"]
    _until(client, lambda: pump1.status is not None and pump1.status.alarms)
    client.portal.call(hub._tick)
    assert "pump-1" in built.pumps
    assert "pump-2" not in built.pumps
    sent = hub._statuses["pump-1"]  # the last status event sent for pump-1
    assert sent["event"] == "pump_status"
    assert json.loads(sent["data"])["alarms"] == ["occlusion"]
