"""`--simulate N --link memory` (interfaces.md, "Simulation"): the simulated pumps in process, no
wire (simulator/memory.py), through the one composition root: shown as `memory`, linked, and
their link lost (A2) and back through the simulation's `drop_connection` fault."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, ApiSteps, settings
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from pumpctl.settings import Settings

#: The link timeout here (A2): long enough that a loaded machine's slow loop never makes the
#: other pump, polled every 0.2 s, look stale.
LINK_TIMEOUT_S = 3.0
#: Bound on what the service reaches on wire time.
BOUND_S = 20.0


def _pumps_until(ward: ApiSteps, holds: Callable[[list[dict[str, Any]]], bool]) -> Any:
    """GET /pumps, again until `holds` (bounded by `BOUND_S`, wire time)."""
    deadline = time.monotonic() + BOUND_S
    while not holds(pumps := ward.get("/pumps")):
        assert time.monotonic() < deadline, pumps
        ward.advance(0)  # returns once every pump's status now has been processed
    return pumps


def test_memory_pumps_are_in_process_and_linked(ward: ApiSteps) -> None:
    pumps = _pumps_until(ward, lambda ps: all(p["connected"] for p in ps))
    assert [(p["id"], p["transport"], p["connected"]) for p in pumps] == [
        ("pump-1", "memory", True),
        ("pump-2", "memory", True),
    ]
    assert ward.c.app.state.sim.where == "in process (no wire)"  # type: ignore[attr-defined]


def test_A2_a_dropped_in_process_link_is_lost_then_back(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, link_timeout_s=LINK_TIMEOUT_S))
    with TestClient(app, base_url="http://gateway") as client:
        ward = ApiSteps(client)
        _pumps_until(ward, lambda ps: all(p["connected"] for p in ps))  # once first read
        ward.post("/sim/pumps/pump-1/faults", "admin", {"fault": "drop_connection"})
        pumps = _pumps_until(ward, lambda ps: not ps[0]["connected"])
        assert pumps[1]["connected"]  # the other pump's link is its own
        r = client.delete("/api/v1/sim/pumps/pump-1/faults/drop_connection", headers=AUTH["admin"])
        assert r.status_code == 200, r.text
        _pumps_until(ward, lambda ps: ps[0]["connected"])


def test_an_unknown_link_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="link"):
        Settings(simulate=1, link="pigeon")  # type: ignore[arg-type]
