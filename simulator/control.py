"""Control of running simulated pumps: inject faults and alarms, read their real state.

Transport-agnostic core (`handle_request` acts on a dict of `PumpModel`s by pump id) and a
line-oriented JSON server on a local TCP port (`ControlServer`), shared by the serial and MQTT
simulators. One JSON object per line in, one per line out. See simulator/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict

from drivers.base import Alarm
from simulator.model import FAULT_NAMES, PumpModel, SimulatorError

__all__ = [
    "ControlError",
    "ControlServer",
    "control_request",
    "describe",
    "find_model",
    "handle_request",
]

#: Keys a request may carry.
REQUEST_KEYS = (
    "pump",
    "fault",
    "value",
    "alarm",
    "clear_alarm",
    "pause",
    "status",
    "list",
    "history",
)
#: Longest request line accepted.
MAX_LINE = 64 * 1024

Describe = Callable[[PumpModel], Mapping[str, object]]


class ControlError(ValueError):
    """A control request that cannot be carried out (names the field); nothing was changed."""


def describe(
    model: PumpModel, extra: Describe | None = None, *, history: bool = False
) -> dict[str, object]:
    """The model's real state: status, address, faults, whether its VTBI completed; with
    `history`, also its recorded changes, oldest first (`PumpModel.history`)."""
    report: dict[str, object] = dict(model.status().to_json())
    report["address"] = model.address
    report["completed"] = model.completed
    report["faults"] = asdict(model.faults)
    if extra is not None:
        report.update(extra(model))
    if history:
        report["history"] = [change.to_json() for change in model.history]
    return report


def find_model(models: Mapping[str, PumpModel], key: object) -> PumpModel:
    """The model named by `key`: its pump id, or its address (an int or a digit string)."""
    if isinstance(key, str) and key in models:
        return models[key]
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, int) and not isinstance(key, bool):
        for model in models.values():
            if model.address == key:
                return model
    known = ", ".join(f"{m.pump_id} (address {m.address})" for m in models.values())
    raise ControlError(f"pump: no simulated pump {key!r} (known: {known})")


def _alarm(field: str, value: object) -> Alarm:
    try:
        return Alarm(str(value))
    except ValueError:
        names = ", ".join(a.value for a in Alarm)
        raise ControlError(f"{field}: unknown alarm {value!r} (known: {names})") from None


def _fault_value(name: object, value: object) -> tuple[str, float | bool]:
    if name not in FAULT_NAMES:
        raise ControlError(f"fault: unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
    if not isinstance(value, bool | int | float):
        raise ControlError(f"value: fault {name} needs a number or true/false, got {value!r}")
    if not isinstance(value, bool) and value < 0:
        raise ControlError(f"value: fault {name} cannot be negative ({value})")
    return str(name), value


def handle_request(
    models: Mapping[str, PumpModel],
    request: object,
    *,
    extra: Describe | None = None,
) -> dict[str, object]:
    """Carry out one request; returns `{"ok": true, ...}` or `{"ok": false, "error": ...}`.

    The request is checked whole before anything changes: a bad one changes nothing.
    """
    try:
        return {"ok": True, **_apply(models, request, extra)}
    except (ControlError, SimulatorError) as exc:
        return {"ok": False, "error": str(exc)}


def _history_flag(request: Mapping[str, object]) -> bool:
    history = request.get("history", False)
    if not isinstance(history, bool):
        raise ControlError(f"history: expected true or false, got {history!r}")
    return history


def _apply(
    models: Mapping[str, PumpModel], request: object, extra: Describe | None
) -> dict[str, object]:
    if not isinstance(request, dict):
        raise ControlError(f"request: expected a JSON object, got {type(request).__name__}")
    unknown = sorted(set(request) - set(REQUEST_KEYS))
    if unknown:
        raise ControlError(f"{unknown[0]}: unknown field (known: {', '.join(REQUEST_KEYS)})")
    history = _history_flag(request)
    if request.get("list"):
        return {"pumps": [describe(m, extra, history=history) for m in models.values()]}
    if "pump" not in request:
        raise ControlError("pump: missing (a pump id or an address)")
    model = find_model(models, request["pump"])
    # check everything first: an invalid request changes nothing
    fault = None
    if "fault" in request:
        if "value" not in request:
            raise ControlError("value: missing for fault")
        fault = _fault_value(request["fault"], request["value"])
    elif "value" in request:
        raise ControlError("value: given without a fault")
    raise_alarm = _alarm("alarm", request["alarm"]) if "alarm" in request else None
    clear_alarm = (
        _alarm("clear_alarm", request["clear_alarm"]) if "clear_alarm" in request else None
    )
    if clear_alarm is not None and clear_alarm not in model.alarms and clear_alarm != raise_alarm:
        raise ControlError(f"clear_alarm: {clear_alarm.value} is not raised on {model.pump_id}")
    if fault is not None:
        model.faults.set(*fault)
    if raise_alarm is not None:
        model.raise_alarm(raise_alarm)
    if clear_alarm is not None:
        model.clear_alarm(clear_alarm)
    if request.get("pause"):
        model.pause()
    return {"pump": describe(model, extra, history=history)}


class ControlServer:
    """Line-oriented JSON control over a local TCP port (0: any free port)."""

    def __init__(
        self,
        models: Mapping[str, PumpModel],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra: Describe | None = None,
    ) -> None:
        self.models = models
        self.host = host
        self.port = port
        self.extra = extra
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """Where to reach it, as `tcp://host:port`."""
        return f"tcp://{self.host}:{self.port}"

    async def __aenter__(self) -> ControlServer:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while line := await reader.readline():
                if len(line) > MAX_LINE:
                    answer: dict[str, object] = {"ok": False, "error": "request: line too long"}
                else:
                    try:
                        request = json.loads(line)
                    except json.JSONDecodeError as exc:
                        answer = {"ok": False, "error": f"request: not JSON ({exc.msg})"}
                    else:
                        answer = handle_request(self.models, request, extra=self.extra)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def control_request(host: str, port: int, request: Mapping[str, object]) -> dict[str, object]:
    """Send one request to a ControlServer and return its answer (a small client)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        answer: dict[str, object] = json.loads(await reader.readline())
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
