"""Issue 17's edges on the service as users run it: `pumpctl serve --simulate 2 --clock
virtual` as a real process on a free port, over TCP. After a SIGKILL and a restart the
infusion's state says why its pump stands stopped (A4); refusals name their rule (A5) and a
non-finite number is a 422 naming the field, with nothing of the input in the log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from service_process import TOKENS, Service, serving


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with serving(tmp_path) as served:
        yield served


async def test_a4_after_a_sigkill_the_restarted_service_shows_paused_naming_a4(
    service: Service,
) -> None:
    """A4: the service SIGKILLed mid-infusion comes back on the same store; its simulated pump
    came back stopped, so the infusion shows `paused` with the reason A4 (a nurse decides),
    not `running` at 0 ml/h."""
    infusion = await service.running("pump-1", "MRN-K", hours=0.5)
    before = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (before["state"], before["state_reason"]) == ("running", None)
    await service.kill()
    await service.start()
    await service.advance(1)
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert view["state"] == "paused", view
    assert view["state_reason"]["rule"] == "A4", view["state_reason"]
    assert view["time_left_min"] is None


async def test_a5_and_a_nan_through_the_real_process(service: Service) -> None:
    """A5: a busy pump's 409 names A5 in words; Clarification All: `NaN` in a reaction's grade
    is a 422 naming `grade`, the infusion unchanged, and the MRN in no log line."""
    infusion = await service.running("pump-1", "MRN-SECRET-17")
    other = await service.api(
        "POST", "/patients", "clinician", {"mrn": "MRN-2", "weight_kg": 60}, 201
    )
    busy = await service.api(
        "POST", "/infusions", "clinician", {"patient_id": other["id"], "pump_id": "pump-1"}, 409
    )
    assert busy["detail"]["rule"] == "A5"
    assert "uq_" not in busy["detail"]["message"]
    async with httpx.AsyncClient(base_url=service.url, timeout=15.0) as http:
        answer = await http.post(
            f"/api/v1/infusions/{infusion}/reactions",
            content=b'{"grade": NaN, "signs": ["other"]}',
            headers={
                "Authorization": f"Bearer {TOKENS['nurse']}",
                "content-type": "application/json",
            },
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "grade"]
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert (view["state"], view["reactions"]) == ("running", [])
    assert "MRN-SECRET-17" not in service.log.read_text()
