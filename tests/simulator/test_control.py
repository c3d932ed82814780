"""The simulator control interface: requests on a dict of models, and its TCP server."""

from __future__ import annotations

import asyncio
import json

import pytest

from drivers.base import Alarm, PumpState
from pumpctl.clock import VirtualClock
from simulator.control import ControlServer, control_request, handle_request
from simulator.model import PumpModel


@pytest.fixture
def models(clock: VirtualClock) -> dict[str, PumpModel]:
    pumps = (PumpModel("a", clock, address=0), PumpModel("b", clock, address=4))
    return {m.pump_id: m for m in pumps}


def test_fault_by_address_and_by_id(models: dict[str, PumpModel]) -> None:
    answer = handle_request(models, {"pump": 4, "fault": "no_reply", "value": True})
    assert answer["ok"] is True
    assert models["b"].faults.no_reply is True
    handle_request(models, {"pump": "b", "fault": "late_reply_s", "value": 0.5})
    assert models["b"].faults.late_reply_s == 0.5
    handle_request(models, {"pump": "0", "fault": "garble_replies", "value": 2})
    assert models["a"].faults.garble_replies == 2


def test_alarm_raise_and_clear(models: dict[str, PumpModel]) -> None:
    answer = handle_request(models, {"pump": 0, "alarm": "occlusion"})
    assert answer["ok"] is True
    pump = answer["pump"]
    assert isinstance(pump, dict)
    assert pump["alarms"] == ["occlusion"]
    assert models["a"].state is PumpState.ALARM
    handle_request(models, {"pump": 0, "clear_alarm": "occlusion"})
    assert models["a"].alarms == frozenset()


def test_status_and_list(models: dict[str, PumpModel]) -> None:
    status = handle_request(models, {"pump": "a", "status": True})
    assert status["ok"] is True
    listed = handle_request(models, {"list": True})
    pumps = listed["pumps"]
    assert isinstance(pumps, list)
    assert [p["address"] for p in pumps] == [0, 4]


def test_pause(models: dict[str, PumpModel]) -> None:
    m = models["a"]
    m.set_rate(10)
    m.run()
    handle_request(models, {"pump": 0, "pause": True})
    assert m.state is PumpState.PAUSED


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"pump": 9, "fault": "no_reply", "value": True}, "pump"),
        ({"fault": "no_reply", "value": True}, "pump"),
        ({"pump": 0, "fault": "explode", "value": True}, "fault"),
        ({"pump": 0, "fault": "no_reply"}, "value"),
        ({"pump": 0, "fault": "late_reply_s", "value": "soon"}, "value"),
        ({"pump": 0, "fault": "late_reply_s", "value": -1}, "value"),
        ({"pump": 0, "alarm": "fire"}, "alarm"),
        ({"pump": 0, "clear_alarm": "occlusion"}, "clear_alarm"),
        ({"pump": 0, "colour": "red"}, "colour"),
        ([1, 2], "request"),
        # a valid fault with an invalid alarm: nothing at all changes
        ({"pump": 0, "fault": "no_reply", "value": True, "alarm": "fire"}, "alarm"),
    ],
)
def test_bad_requests_name_the_field_and_change_nothing(
    models: dict[str, PumpModel], request_: object, field: str
) -> None:
    answer = handle_request(models, request_)
    assert answer["ok"] is False
    assert str(answer["error"]).startswith(field)
    for m in models.values():
        assert m.faults.no_reply is False
        assert m.alarms == frozenset()


async def test_tcp_control_server(models: dict[str, PumpModel]) -> None:
    async with ControlServer(models) as server:
        answer = await control_request("127.0.0.1", server.port, {"pump": 0, "alarm": "empty"})
        assert answer["ok"] is True
        assert models["a"].alarms == {Alarm.EMPTY}
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"not json\n" + json.dumps({"pump": 4, "status": True}).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(5):
            first = json.loads(await reader.readline())
            second = json.loads(await reader.readline())
        assert first["ok"] is False
        assert "not JSON" in first["error"]
        assert second["pump"]["pump_id"] == "b"
        writer.close()
        await writer.wait_closed()
