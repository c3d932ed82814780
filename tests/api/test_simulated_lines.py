"""`--simulate N --link serial` with more pumps than one RS-232 line carries: the simulated pumps
go on as many pseudo-terminals as the serial driver's line-capacity limit asks (10 to a line at
19200 baud), as a gateway with that many pumps has more lines; before, an 11th pump was refused
and the service did not start."""

from __future__ import annotations

from pathlib import Path

from conftest import settings
from fastapi.testclient import TestClient

from api.app import create_app
from api.sim import line_groups

HEADERS = {"Authorization": "Bearer a-tok-for-the-tests-only-32chars"}


def test_pumps_fill_a_line_up_to_its_capacity_then_take_the_next() -> None:
    ids = [f"pump-{i}" for i in range(1, 101)]
    groups = line_groups(ids)
    assert [len(g) for g in groups] == [10] * 10
    assert [p for g in groups for p in g] == ids  # every pump once, in order
    assert line_groups(ids[:3]) == [ids[:3]]
    assert line_groups([]) == []


def test_eleven_simulated_serial_pumps_start_on_two_lines(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, link="serial").model_copy(update={"simulate": 11}))
    with TestClient(app, base_url="http://gateway") as client:
        # returns once every pump's status at the new instant has been processed
        assert client.post("/api/v1/sim/advance", json={"seconds": 1}, headers=HEADERS).is_success
        pumps = client.get("/api/v1/pumps", headers=HEADERS).json()
        assert [p["id"] for p in pumps] == [f"pump-{i}" for i in range(1, 12)]
        assert all(p["connected"] for p in pumps), pumps
        assert len(app.state.sim.where.split(", ")) == 2
        health = client.get("/api/v1/health").json()
        assert len(health["pumps"]) == 11
