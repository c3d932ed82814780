"""A3 for a serial stop through the reaction route (issue 19, point 3), at the service's default
timing: command timeout 2 s, the reaction's answer waiting `stop_answer_s` 4.5 s
(interfaces.md section 3: the 202 comes after the command timeout and one retry, about 4.5 s,
or at once when the link is already lost).

Simulated serial pumps on a real pseudo-terminal; the simulator's wire faults make the pump
silent (`no_reply`) or answer 1.8 s late (`late_reply_s`, the pump stopping at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, TOKENS, ApiSteps
from decided import fate_of, until
from fastapi.testclient import TestClient

from api.app import create_app
from pumpctl.controller.supervisor import PumpSupervisor
from pumpctl.core.machine import CommandOp, CommandUnconfirmed
from pumpctl.settings import Settings, parse_tokens

COMMAND_TIMEOUT_S = 2.0
STOP_ANSWER_S = 4.5
#: Scheduling slack on a loaded machine, on top of a stated time.
MARGIN_S = 3.0
#: Bound on a condition the service reaches on wire time.
BOUND_S = 30.0
REACTION = {"grade": 2, "signs": ["other"]}


def _client(tmp_path: Path, **extra: Any) -> TestClient:
    settings = Settings(
        database=f"sqlite:///{tmp_path / 'pumpctl.db'}",
        clock="virtual",
        simulate=2,
        api_tokens=parse_tokens(TOKENS),
        command_timeout_s=COMMAND_TIMEOUT_S,
        stop_answer_s=STOP_ANSWER_S,
        **extra,
    )
    return TestClient(create_app(settings), base_url="http://gateway")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path) as client:
        yield client


def _supervisor(client: TestClient, infusion: int) -> PumpSupervisor:
    supervisor = client.app.state.ward.live(infusion)  # type: ignore[attr-defined]
    assert supervisor is not None
    return supervisor


def _until(client: TestClient, infusion: int, holds: Callable[[PumpSupervisor], bool]) -> None:
    """Wait (bounded, on the service's own loop) until the infusion's supervisor `holds`,
    looked at after each of its decisions."""
    supervisor = _supervisor(client, infusion)

    async def wait() -> None:
        await until(supervisor, holds, BOUND_S)

    client.portal.call(wait)  # type: ignore[union-attr]


def _stop_fates(client: TestClient, infusion: int) -> list[Any]:
    """The fates of the stops the infusion awaits now, each awaited through its future."""
    supervisor = _supervisor(client, infusion)

    async def wait() -> list[Any]:
        assert supervisor.state is not None
        stops = [c.id for c in supervisor.state.outstanding if c.op is CommandOp.STOP]
        return [await fate_of(supervisor, i, BOUND_S) for i in stops]

    return client.portal.call(wait)  # type: ignore[union-attr,no-any-return]


def _fault(ward: ApiSteps, fault: str, value: Any) -> None:
    ward.post("/sim/pumps/pump-1/faults", "admin", {"fault": fault, "value": value})


def _clear(ward: ApiSteps, fault: str) -> None:
    r = ward.c.delete(f"/api/v1/sim/pumps/pump-1/faults/{fault}", headers=AUTH["admin"])
    assert r.status_code == 200, r.text


def test_A3_a_serial_stop_not_answered_is_a_202_only_after_the_timeout_and_a_retry(
    service: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A3: the silent pump's stop is sent again past the command timeout; the 202 (A3, "Pump
    did not stop: clamp the line") comes at about `stop_answer_s`, not after the line's own
    3 x 0.5 s. The fate, unconfirmed, then raises the A3 alarm; once the pump answers the stop
    goes again and lands (I9)."""
    ward = ApiSteps(service)
    infusion = ward.started(ward.patient())
    caplog.set_level(logging.DEBUG, logger="drivers.serial.line")
    _fault(ward, "no_reply", True)
    start = time.monotonic()
    answer = ward.post(f"/infusions/{infusion}/reactions", "nurse", REACTION, 202)
    elapsed = time.monotonic() - start
    assert (answer["stop"], answer["alarm"], answer["message"]) == (
        "unconfirmed",
        "A3",
        "Pump did not stop: clamp the line",
    )
    assert elapsed >= 2 * COMMAND_TIMEOUT_S, f"202 after {elapsed:.2f} s: no retry after 2 s"
    assert elapsed <= STOP_ANSWER_S + MARGIN_S, f"202 after {elapsed:.2f} s"
    stops = [
        r.created
        for r in caplog.records
        if "pump-1 sends" in r.getMessage() and "STP" in r.getMessage()
    ]
    assert stops, "no STP went out"
    assert stops[-1] - stops[0] >= COMMAND_TIMEOUT_S, f"STP sent over {stops[-1] - stops[0]:.2f} s"
    fates = _stop_fates(service, infusion)  # the reaction's stop, still tried past the 202
    assert all(isinstance(f, CommandUnconfirmed) for f in fates), fates
    assert _supervisor(service, infusion).state.stop_unconfirmed  # type: ignore[union-attr]
    assert "pump_not_stopped" in ward.get(f"/infusions/{infusion}")["latched_alarms"]
    _clear(ward, "no_reply")
    _until(service, infusion, lambda s: s.state is not None and not s.state.stop_outstanding)
    assert ward.pump()["state"] == "stopped"


def test_A3_a_serial_stop_answered_late_is_a_201_with_its_real_time_and_no_false_alarm(
    service: TestClient,
) -> None:
    """A3: the pump stops at once but answers 1.8 s late (within the command timeout): the
    stop is confirmed by its real read-back, 201 with the real `stop_confirmed_ms`, and no
    "pump did not stop" alarm is raised."""
    ward = ApiSteps(service)
    infusion = ward.started(ward.patient())
    _fault(ward, "late_reply_s", 1.8)
    try:
        answer = ward.post(f"/infusions/{infusion}/reactions", "nurse", REACTION, 201)
    finally:
        _clear(ward, "late_reply_s")
    assert answer["stop"] == "confirmed", answer
    assert 1800 <= answer["stop_confirmed_ms"] <= STOP_ANSWER_S * 1000, answer
    assert answer["state"] == "paused"
    view = ward.get(f"/infusions/{infusion}")
    assert "pump_not_stopped" not in view["latched_alarms"], view
    assert (view["stop_unconfirmed"], view["stop_pending"]) == (False, False)
    assert ward.pump()["state"] == "stopped"


def test_A3_A2_a_stop_on_a_link_already_lost_is_a_202_at_once(tmp_path: Path) -> None:
    """A3, A2: the link is known lost before the report: the 202 comes at once, not after the
    command timeout and a retry (the stop goes on being tried meanwhile)."""
    with _client(tmp_path, link_timeout_s=1.0) as client:
        ward = ApiSteps(client)
        infusion = ward.started(ward.patient())
        _fault(ward, "no_reply", True)
        _until(client, infusion, lambda s: s.state is not None and s.state.link_lost)
        start = time.monotonic()
        answer = ward.post(f"/infusions/{infusion}/reactions", "nurse", REACTION, 202)
        elapsed = time.monotonic() - start
        assert (answer["stop"], answer["alarm"]) == ("unconfirmed", "A3")
        assert elapsed < COMMAND_TIMEOUT_S, f"202 after {elapsed:.2f} s"
        _clear(ward, "no_reply")
        _until(client, infusion, lambda s: s.state is not None and not s.state.stop_outstanding)
