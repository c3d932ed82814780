"""`/api/v1/sim/...` (admin; only with simulated pumps): the clock, `advance`, pump alarms and
the simulator's wire faults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from api.auth import User
from api.deps import WardDep, get_settings, require
from api.errors import responses
from api.schemas import Instant
from api.sim import SimulatedPumps
from drivers.base import Alarm
from pumpctl.clock import VirtualClock
from pumpctl.settings import Role, Settings
from simulator.model import FAULT_NAMES, PumpModel

router = APIRouter(prefix="/sim", tags=["simulation"], responses=responses(401, 403))
Admin = Annotated[User, Depends(require({Role.ADMIN}))]
#: The admin's routes whose handler does not need to know who asked.
ADMIN_ONLY = [Depends(require({Role.ADMIN}))]
SettingsDep = Annotated[Settings, Depends(get_settings)]
#: Longest single advance (interfaces.md: at most 86,400 s a call).
MAX_ADVANCE_S = 86_400


def _one_error(words: str) -> Callable[[Any, ValidatorFunctionWrapHandler], Any]:
    """A union's refusal as one error at the field (pydantic gives one per member)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("fault_value", "Input should be " + words) from None

    return validate


class AdvanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: Annotated[StrictInt | StrictFloat, Field(ge=0, le=MAX_ADVANCE_S, allow_inf_nan=False)]


class FaultIn(BaseModel):
    """Either a pump alarm (`alarm`) or a wire fault of the simulator (`fault`, `value`)."""

    model_config = ConfigDict(extra="forbid")
    alarm: Alarm | None = None
    fault: str | None = None
    # a count, a flag or seconds: finite and bounded (a non-finite number is 422, never a fault)
    value: Annotated[
        StrictBool
        | Annotated[StrictInt, Field(ge=0, le=1_000_000)]
        | Annotated[StrictFloat, Field(ge=0, le=86_400, allow_inf_nan=False)]
        | None,
        WrapValidator(_one_error("a flag, a count up to 1,000,000 or seconds up to 86,400")),
    ] = None


def _sim(request: Request) -> SimulatedPumps:
    sim: SimulatedPumps = request.app.state.sim
    return sim


def _model(request: Request, pump_id: str) -> PumpModel:
    model = _sim(request).models.get(pump_id)
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no simulated pump {pump_id}")
    return model


@router.get("/clock", response_model=Instant, dependencies=ADMIN_ONLY)
async def clock(ward: WardDep, settings: Annotated[Settings, Depends(get_settings)]) -> Instant:
    """The simulation's clinical time."""
    return Instant(now=ward.clock.now(), mode=settings.clock_mode)


@router.post("/advance", response_model=Instant, responses=responses(409), dependencies=ADMIN_ONLY)
async def advance(
    body: AdvanceIn,
    ward: WardDep,
    settings: Annotated[Settings, Depends(get_settings)],
) -> Instant:
    """Move virtual time; returns once every timer due in the span has run, every command it
    caused has its fate, and every pump's status at the new instant has been processed."""
    if not isinstance(ward.clock, VirtualClock):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {
                "rule": "L1",
                "message": "advance needs the virtual clock (--clock virtual): clinical time "
                "that also runs on its own is never moved by hand, or L1's intervals would "
                "shorten (L1)",
            },
        )
    await ward.clock.advance(float(body.seconds))
    ward.notify()
    return Instant(now=ward.clock.now(), mode=settings.clock_mode)


@router.post("/pumps/{pump_id}/faults", responses=responses(404), dependencies=ADMIN_ONLY)
async def set_fault(pump_id: str, body: FaultIn, request: Request) -> dict[str, Any]:
    """Raise a pump alarm, or turn a wire fault of the simulator on."""
    model = _model(request, pump_id)
    if (body.alarm is None) == (body.fault is None):
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "alarm"],
                    "msg": "give either alarm or fault",
                    "type": "value_error",
                }
            ],
        )
    if body.alarm is not None:
        model.raise_alarm(body.alarm)
    else:
        assert body.fault is not None
        if body.fault not in FAULT_NAMES:
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", "fault"],
                        "msg": f"one of {', '.join(FAULT_NAMES)}",
                        "type": "value_error",
                    }
                ],
            )
        value = True if body.value is None else body.value
        try:
            model.faults.set(body.fault, value)
        except (ValueError, TypeError) as exc:
            raise HTTPException(
                422,
                [{"loc": ["body", "value"], "msg": str(exc), "type": "value_error"}],
            ) from None
    return _faults(model)


@router.delete("/pumps/{pump_id}/faults/{name}", responses=responses(404), dependencies=ADMIN_ONLY)
async def clear_fault(pump_id: str, name: str, request: Request) -> dict[str, Any]:
    """Clear a pump alarm or a wire fault."""
    model = _model(request, pump_id)
    if name in {a.value for a in Alarm}:
        model.clear_alarm(Alarm(name))
    elif name in FAULT_NAMES:
        current = getattr(model.faults, name)
        model.faults.set(name, False if isinstance(current, bool) else 0)
    else:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alarm or fault {name!r}")
    return _faults(model)


def _faults(model: PumpModel) -> dict[str, Any]:
    return {
        "pump_id": model.pump_id,
        "alarms": sorted(a.value for a in model.alarms),
        "faults": asdict(model.faults),
    }
