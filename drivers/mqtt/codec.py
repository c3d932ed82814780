"""MQTT topics and JSON payloads of interfaces.md section 2: pure values, no I/O.

Shared by the driver (controller side) and the simulator (pump side): one codec. Every
incoming payload is validated strictly (types, ranges, no unknown keys); a payload that fails
raises `PayloadError` naming the field, and the caller logs it and never acts on it.

Contract versions: a status of contract 2 (`MQTT_CONTRACT`) names its `contract` and the pump's
`heartbeat_s`; one without either is contract 1 (interfaces.md section 2, "Versions"), still
accepted; a contract above `MQTT_CONTRACT` is malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.base import Alarm, PumpState, PumpStatus

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_HEARTBEAT_S",
    "MAX_PAYLOAD_BYTES",
    "MAX_RATE_ML_H",
    "MAX_SEQ",
    "MAX_VOLUME_ML",
    "MQTT_CONTRACT",
    "OFFLINE_PAYLOAD",
    "AckPayload",
    "CommandPayload",
    "OfflinePayload",
    "Op",
    "PayloadError",
    "StatusPayload",
    "Topics",
    "command_id_of",
    "decode_ack",
    "decode_command",
    "decode_status",
]

#: Topic prefix of interfaces.md section 2 (its `v1` is the topics' layout, not the contract).
DEFAULT_PREFIX = "pumpctl/v1"
#: The version of interfaces.md section 2 this codec speaks (a status without one is 1).
MQTT_CONTRACT = 2
#: Largest heartbeat interval (s) a contract-2 status may announce.
MAX_HEARTBEAT_S = 60.0
#: Largest payload either side parses; anything bigger is malformed by definition.
MAX_PAYLOAD_BYTES = 16 * 1024
#: The last will (and clean-shutdown message) a pump leaves retained on its status topic.
OFFLINE_PAYLOAD = b'{"state": "offline"}'

_MQTT_FORBIDDEN = ("+", "#", "\x00")
_M = TypeVar("_M", bound="BaseModel")


class PayloadError(ValueError):
    """A payload that is not valid JSON of the expected shape (message names the field)."""


class Op(StrEnum):
    """Command operations on `{prefix}/pumps/{id}/cmd`."""

    SET_RATE = "set_rate"
    SET_VTBI = "set_vtbi"
    START = "start"
    STOP = "stop"
    CLEAR_VOLUME = "clear_volume"
    STATUS = "status"


#: The parameter each op carries (none for the others).
OP_PARAMETER: dict[Op, str] = {Op.SET_RATE: "rate_ml_h", Op.SET_VTBI: "vtbi_ml"}


def _check_segment(kind: str, value: str) -> None:
    if not value or any(c in value for c in _MQTT_FORBIDDEN):
        raise ValueError(f"{kind} {value!r} must be non-empty without MQTT wildcards (+ #)")


@dataclass(frozen=True, slots=True)
class Topics:
    """The three topics of one pump."""

    status: str
    cmd: str
    ack: str

    @classmethod
    def for_pump(cls, pump_id: str, prefix: str = DEFAULT_PREFIX) -> Self:
        """Topics of `pump_id` under `prefix` (ValueError for an id or prefix unusable in MQTT)."""
        _check_segment("prefix", prefix)
        _check_segment("pump_id", pump_id)
        if "/" in pump_id:
            raise ValueError(f"pump_id {pump_id!r} must not contain '/'")
        base = f"{prefix.rstrip('/')}/pumps/{pump_id}"
        return cls(status=f"{base}/status", cmd=f"{base}/cmd", ack=f"{base}/ack")


#: Largest rate (ml/h) and volumes (ml) a status may carry: beyond them a reading is garbage,
#: not a pump's (an NE pump's fields hold 4 digits; no infusion pump delivers 10 l/h).
MAX_RATE_ML_H = 9999.0
MAX_VOLUME_ML = 999_999.0
#: Largest `seq`: a 63-bit counter never wraps in a pump's life.
MAX_SEQ = 2**63 - 1

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
_Rate = Annotated[float, Field(ge=0, le=MAX_RATE_ML_H)]
_Volume = Annotated[float, Field(ge=0, le=MAX_VOLUME_ML)]
_Id = Annotated[str, Field(min_length=1, max_length=128)]


class StatusPayload(BaseModel):
    """A pump's status: state, rate, VTBI, volume infused, alarms, `seq` and `ts`; from contract
    2 on also `contract` and `heartbeat_s` (both absent: a contract-1 pump)."""

    model_config = _STRICT

    contract: Annotated[int, Field(ge=2, le=MQTT_CONTRACT)] | None = None
    heartbeat_s: Annotated[float, Field(gt=0, le=MAX_HEARTBEAT_S)] | None = None
    state: PumpState
    rate_ml_h: _Rate
    vtbi_ml: _Volume
    volume_infused_ml: _Volume
    alarms: list[Alarm]
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]
    ts: AwareDatetime

    @model_validator(mode="after")
    def _ts_in_utc(self) -> Self:
        if self.ts.utcoffset() != timedelta(0):
            raise ValueError(f"ts {self.ts.isoformat()} must be in UTC")
        return self

    @model_validator(mode="after")
    def _heartbeat_iff_contract(self) -> Self:
        if self.contract is not None and self.heartbeat_s is None:
            raise ValueError(f"heartbeat_s is required with contract {self.contract}")
        if self.contract is None and self.heartbeat_s is not None:
            raise ValueError("heartbeat_s needs a contract (2 or later)")
        return self

    @property
    def version(self) -> int:
        """The contract this status speaks (1 when it names none)."""
        return self.contract or 1

    @classmethod
    def from_status(
        cls, status: PumpStatus, *, seq: int, ts: datetime, heartbeat_s: float | None
    ) -> Self:
        """The payload a pump publishes for `status`, numbered `seq`, stamped `ts` (its clock):
        contract 2 announcing `heartbeat_s`, or with None the contract-1 payload."""
        return cls(
            contract=None if heartbeat_s is None else MQTT_CONTRACT,
            heartbeat_s=heartbeat_s,
            state=status.state,
            rate_ml_h=status.rate_ml_h,
            vtbi_ml=status.vtbi_ml,
            volume_infused_ml=status.volume_infused_ml,
            alarms=sorted(status.alarms),
            seq=seq,
            ts=ts,
        )

    def to_status(self, pump_id: str, last_contact: float) -> PumpStatus:
        """The driver-side reading this payload describes."""
        return PumpStatus(
            pump_id=pump_id,
            state=self.state,
            rate_ml_h=self.rate_ml_h,
            vtbi_ml=self.vtbi_ml,
            volume_infused_ml=self.volume_infused_ml,
            alarms=frozenset(self.alarms),
            last_contact=last_contact,
        )

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON (a contract-1 status without the keys it does not have)."""
        return self.model_dump_json(exclude_none=True).encode()


class OfflinePayload(BaseModel):
    """The last will `{"state": "offline"}`, left by the broker when a pump's link dies."""

    model_config = _STRICT

    state: Literal[PumpState.OFFLINE]


class CommandPayload(BaseModel):
    """A command `{"id", "op", ...}`: `rate_ml_h` with set_rate, `vtbi_ml` with set_vtbi only."""

    model_config = _STRICT

    id: _Id
    op: Op
    rate_ml_h: float | None = None
    vtbi_ml: float | None = None

    @model_validator(mode="after")
    def _parameter_matches_op(self) -> Self:
        wanted = OP_PARAMETER.get(self.op)
        for name in ("rate_ml_h", "vtbi_ml"):
            given = getattr(self, name) is not None
            if name == wanted and not given:
                raise ValueError(f"{name} is required with op {self.op.value}")
            if name != wanted and given:
                raise ValueError(f"{name} is not allowed with op {self.op.value}")
        return self

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON without the absent parameters."""
        return self.model_dump_json(exclude_none=True).encode()


class AckPayload(BaseModel):
    """An acknowledgement `{"id", "ok", "error"?, "message"?, "status"}`; error iff not ok."""

    model_config = _STRICT

    id: _Id
    ok: bool
    error: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    message: Annotated[str, Field(max_length=1024)] | None = None
    status: StatusPayload

    @model_validator(mode="after")
    def _error_iff_refused(self) -> Self:
        if self.ok and self.error is not None:
            raise ValueError("error must be absent when ok is true")
        if not self.ok and self.error is None:
            raise ValueError("error is required when ok is false")
        return self

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON without the absent fields."""
        return self.model_dump_json(exclude_none=True).encode()


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _validate(model: type[_M], data: bytes, what: str) -> _M:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what}: {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} byte cap")
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise PayloadError(f"{what}: {_describe(exc)}") from None


def _loads(data: bytes) -> Any:
    """`data` as JSON, or None: never raises (deep nesting makes `json` raise RecursionError)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def decode_status(data: bytes) -> StatusPayload | OfflinePayload:
    """Parse a status-topic payload: a full status or the offline last will."""
    raw = _loads(data)
    if isinstance(raw, dict) and raw.get("state") == PumpState.OFFLINE.value and len(raw) == 1:
        return _validate(OfflinePayload, data, "status")
    return _validate(StatusPayload, data, "status")


def decode_ack(data: bytes) -> AckPayload:
    """Parse an ack-topic payload."""
    return _validate(AckPayload, data, "ack")


def decode_command(data: bytes) -> CommandPayload:
    """Parse a cmd-topic payload."""
    return _validate(CommandPayload, data, "command")


def command_id_of(data: bytes) -> str | None:
    """The `id` of a command that failed validation, if one can be read (to refuse it by id)."""
    raw = _loads(data)
    if isinstance(raw, dict):
        cmd_id = raw.get("id")
        if isinstance(cmd_id, str) and 0 < len(cmd_id) <= 128:
            return cmd_id
    return None
