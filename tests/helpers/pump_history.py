"""What a simulated pump really did: its change history (the simulator's control interface,
`{"pump": 0, "history": true}`) read as a list of changes, and the ladder's invariants checked
on it (L1, L2, I2). Shared by the crash tests (tests/crash/test_sigkill_recovery.py) and the
fault tests on the kernel (tests/faults/test_kernel_faults.py).

Times are clinical (the simulator's clock); two processes on one `scaled:F@EPOCH` clock read
the wall clock a moment apart, hence `TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

#: The first infusion's row of Table 3 (L1, L2).
INTERVAL = timedelta(minutes=60)
MAX_RATE = 200.0
INCREMENT = 50.0
FIRST_RATE = 50.0
#: Slack for two processes reading the wall clock a moment apart (1 clinical min: 12 ms of wall
#: time at 4800x, 1 s at 60x).
TOLERANCE = timedelta(minutes=1)


@dataclass(frozen=True)
class Change:
    """One change of the pump: when (clinical), what caused it (the model's operation: set_rate,
    set_vtbi, run, stop, pause, clear_volume, alarm, clear_alarm), and its state and rate after."""

    at: datetime
    cause: str
    state: str
    rate: float


def changes(pump: dict[str, Any]) -> list[Change]:
    """The history of a pump as the control interface reports it (`"history": true`)."""
    return [
        Change(datetime.fromisoformat(c["at"]), c["cause"], c["state"], c["rate_ml_h"])
        for c in pump["history"]
    ]


def rate_at(history: list[Change], at: datetime) -> tuple[float, bool]:
    """(programmed rate, running) at `at`."""
    rate, running = 0.0, False
    for change in history:
        if change.at > at:
            break
        rate, running = change.rate, change.state == "running"
    return rate, running


def rate_before_stop(history: list[Change]) -> float:
    """The rate the pump ran at when it was first stopped (the reaction's stop)."""
    rate = 0.0
    for change in history:
        if change.cause == "stop":
            return rate
        if change.state == "running":
            rate = change.rate
    raise AssertionError(f"the pump was never stopped: {history}")


def last_rate_change(history: list[Change], before: datetime) -> datetime:
    """When the programmed rate last took a new value at or before `before`."""
    when, rate = history[0].at, None
    for change in history:
        if change.at > before:
            break
        if change.rate != rate:
            when, rate = change.at, change.rate
    return when


def allowed_rates() -> set[float]:
    """Rungs of the ladder, half-rate resumes, and the rungs above a half rate (I2)."""
    rates = {FIRST_RATE}
    for _ in range(4):
        rungs = {min(MAX_RATE, r + INCREMENT * k) for r in rates for k in range(5)}
        rates = rungs | {round(r / 2, 1) for r in rungs}
    return rates


def check_ladder(history: list[Change]) -> None:
    """L1, L2, I2: rates are rungs or half-rate resumes; a rise is one increment, a full
    interval after the previous change of rate."""
    allowed = allowed_rates()
    rate, changed_at = 0.0, None
    for change in history:
        if change.state == "running":
            assert change.rate in allowed, f"{change.rate} ml/h is no rung: {history}"
            assert change.rate <= MAX_RATE
        if change.rate == rate:
            continue
        if change.rate > rate > 0:
            assert change.rate - rate <= INCREMENT, f"a jump {rate} -> {change.rate}"
            assert changed_at is not None
            assert change.at - changed_at >= INTERVAL - TOLERANCE, (
                f"rise to {change.rate} ml/h only {change.at - changed_at} after the last change"
            )
        rate, changed_at = change.rate, change.at
