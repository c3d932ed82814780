"""The service through HTTP (FastAPI's TestClient runs the app's lifespan on its own loop):
simulated pumps in process (`link` "memory", simulator/memory.py: the rules, no wire), a virtual
clock, SQLite in tmp_path. A test about the wire puts its pumps on a real pseudo-terminal with
`@pytest.mark.parametrize("link", ["serial"])` (the `link` fixture), or `settings(...,
link="serial")`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from pumpctl.settings import Settings, parse_tokens

TOKENS = (
    "v-tok-for-the-tests-only-32chars=vera:viewer,"
    "n-tok-for-the-tests-only-32chars=nina:nurse,"
    "c-tok-for-the-tests-only-32chars=carl:clinician,"
    "a-tok-for-the-tests-only-32chars=ada:admin"
)
AUTH = {
    role: {"Authorization": f"Bearer {token}"}
    for role, token in {
        "viewer": "v-tok-for-the-tests-only-32chars",
        "nurse": "n-tok-for-the-tests-only-32chars",
        "clinician": "c-tok-for-the-tests-only-32chars",
        "admin": "a-tok-for-the-tests-only-32chars",
    }.items()
}
HOUR = 3600


def settings(tmp_path: Path, **extra: Any) -> Settings:
    """Two simulated pumps, in process unless `link` says otherwise."""
    extra.setdefault("link", "memory")
    return Settings(
        database=f"sqlite:///{tmp_path / 'pumpctl.db'}",
        clock="virtual",
        simulate=2,
        api_tokens=parse_tokens(TOKENS),
        command_timeout_s=0.5,
        poll_interval_s=0.2,
        stop_answer_s=2.0,
        **extra,
    )


@pytest.fixture
def link() -> str:
    """How `client`'s simulated pumps are reached: in process; a test about the wire
    parametrizes it (`@pytest.mark.parametrize("link", ["serial"])`)."""
    return "memory"


@pytest.fixture
def client(tmp_path: Path, link: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path, link=link)), base_url="http://gateway") as c:
        yield c


class ApiSteps:
    """Clinical steps through the API (a test helper, not the ward: that is
    `pumpctl.controller.ward.Ward`)."""

    def __init__(self, client: TestClient) -> None:
        self.c = client

    def post(self, path: str, role: str, body: Any = None, expect: int = 200) -> Any:
        r = self.c.post(f"/api/v1{path}", json=body, headers=AUTH[role])
        assert r.status_code == expect, (path, r.status_code, r.text)
        return r.json()

    def get(self, path: str, role: str = "viewer") -> Any:
        r = self.c.get(f"/api/v1{path}", headers=AUTH[role])
        assert r.status_code == 200, (path, r.text)
        return r.json()

    def advance(self, seconds: float) -> None:
        self.post("/sim/advance", "admin", {"seconds": seconds})

    def week_later(self) -> None:
        """A week of clinical time: the next infusion is due (D2, weekly in weeks 1-8)."""
        for _day in range(7):
            self.advance(24 * HOUR)

    def patient(self, mrn: str = "MRN-1", weight: float = 70) -> int:
        return int(
            self.post("/patients", "clinician", {"mrn": mrn, "weight_kg": weight}, 201)["id"]
        )

    def started(self, patient_id: int, pump: str = "pump-1") -> int:
        inf = self.post("/infusions", "clinician", {"patient_id": patient_id, "pump_id": pump}, 201)
        # D3: premedication given an hour before the start
        self.post(f"/infusions/{inf['id']}/premedication", "nurse", {"given_at": self._ago(60)})
        self.post(f"/infusions/{inf['id']}/start", "clinician", {})
        self.advance(1)
        return int(inf["id"])

    def _ago(self, minutes: float) -> str:
        now = datetime.fromisoformat(self.get("/clock")["now"])
        return (now - timedelta(minutes=minutes)).isoformat()

    def pump(self, pump_id: str = "pump-1") -> Any:
        return next(p for p in self.get("/pumps") if p["id"] == pump_id)


@pytest.fixture
def ward(client: TestClient) -> ApiSteps:
    return ApiSteps(client)
