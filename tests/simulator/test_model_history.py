"""The simulated pump keeps a bounded history of its changes; the control interface reports it."""

from __future__ import annotations

import pytest

from drivers.base import Alarm
from pumpctl.clock import VIRTUAL_EPOCH, VirtualClock
from simulator import model as model_module
from simulator.control import ControlServer, control_request, handle_request
from simulator.model import PumpModel


async def test_each_effect_is_one_entry_at_its_clinical_instant(clock: VirtualClock) -> None:
    pump = PumpModel("a", clock)
    pump.set_vtbi(100)
    pump.set_rate(50)
    pump.run()
    pump.run()  # already running: no effect, no entry
    await clock.advance(3600)
    pump.set_rate(100)
    pump.stop()
    pump.stop()  # already stopped: no entry
    pump.raise_alarm(Alarm.OCCLUSION)
    pump.clear_alarm(Alarm.OCCLUSION)
    entries = [(c.cause, c.state, c.rate_ml_h, c.vtbi_ml, c.volume_ml) for c in pump.history]
    assert entries == [
        ("set_vtbi", "stopped", 0.0, 100.0, 0.0),
        ("set_rate", "stopped", 50.0, 100.0, 0.0),
        ("run", "running", 50.0, 100.0, 0.0),
        ("set_rate", "running", 100.0, 100.0, 50.0),
        ("stop", "stopped", 100.0, 100.0, 50.0),
        ("alarm", "alarm", 100.0, 100.0, 50.0),
        ("clear_alarm", "stopped", 100.0, 100.0, 50.0),
    ]
    assert pump.history[0].at == VIRTUAL_EPOCH.isoformat()
    assert pump.history[3].at == clock.now().isoformat()


def test_the_history_is_bounded(clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "HISTORY_LIMIT", 3)
    pump = PumpModel("a", clock)
    for rate in (1.0, 2.0, 3.0, 4.0, 5.0):
        pump.set_rate(rate)
    assert [c.rate_ml_h for c in pump.history] == [3.0, 4.0, 5.0]
    monkeypatch.undo()
    assert PumpModel("b", clock).history.maxlen == 10_000


async def test_the_control_interface_reports_the_history_when_asked(clock: VirtualClock) -> None:
    models = {"a": PumpModel("a", clock)}
    models["a"].set_rate(25)
    plain = handle_request(models, {"pump": 0, "status": True})
    assert plain["ok"] is True
    pump = plain["pump"]
    assert isinstance(pump, dict)
    assert "history" not in pump
    async with ControlServer(models) as server:
        answer = await control_request(server.host, server.port, {"pump": 0, "history": True})
    assert answer["ok"] is True
    pump = answer["pump"]
    assert isinstance(pump, dict)
    assert pump["history"] == [
        {
            "at": clock.now().isoformat(),
            "cause": "set_rate",
            "state": "stopped",
            "rate_ml_h": 25.0,
            "vtbi_ml": 0.0,
            "volume_ml": 0.0,
        }
    ]
    listed = handle_request(models, {"list": True, "history": True})
    pumps = listed["pumps"]
    assert isinstance(pumps, list)
    assert len(pumps[0]["history"]) == 1


def test_history_must_be_a_boolean(clock: VirtualClock) -> None:
    answer = handle_request({"a": PumpModel("a", clock)}, {"pump": 0, "history": "yes"})
    assert answer == {"ok": False, "error": "history: expected true or false, got 'yes'"}
