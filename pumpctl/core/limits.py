"""The rate-limit chain: every rate the core commands passes it (after AndroidAPS' constraints).

Each link is a `Limit` naming its rule (L1 ladder step, L2 maximum, L6 minimum duration, I2 half
rate on resume). `constrain` takes the lowest, rounds down to the protocol's resolution, and
returns a `RateDecision` that records which limit bound the rate and why; that goes into the
audit event of the command.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pumpctl.core.rules import Rule

__all__ = [
    "Limit",
    "RateDecision",
    "constrain",
    "half_rate",
    "ladder_step",
    "min_duration_cap",
    "protocol_max",
    "round_down",
]

_EPSILON = 1e-9


def round_down(value: float, resolution: float) -> float:
    """Round down to a multiple of `resolution` (166.666 -> 166.6 at 0.1), free of float noise."""
    steps = math.floor(value / resolution + _EPSILON)
    return round(steps * resolution, 6)


@dataclass(frozen=True, slots=True)
class Limit:
    """One link of the chain: an upper bound on the rate, with the rule that sets it."""

    rule: Rule
    value_ml_h: float
    reason: str

    def to_json(self) -> dict[str, object]:
        """JSON-ready form, for audit events."""
        return {"rule": self.rule, "value_ml_h": self.value_ml_h, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RateDecision:
    """A rate that passed the chain, and the limit that bound it (the lowest one)."""

    rate_ml_h: float
    bound_by: Limit
    considered: tuple[Limit, ...]

    @property
    def rules(self) -> tuple[str, ...]:
        """Ids of every rule considered, in chain order."""
        return tuple(limit.rule for limit in self.considered)

    def to_json(self) -> dict[str, object]:
        """JSON-ready form, for audit events."""
        return {
            "rate_ml_h": self.rate_ml_h,
            "bound_by": self.bound_by.to_json(),
            "considered": [limit.to_json() for limit in self.considered],
        }


def constrain(limits: Iterable[Limit | None], resolution: float) -> RateDecision:
    """Pass the chain: the lowest limit wins (first on ties), rounded down to `resolution`."""
    considered = tuple(limit for limit in limits if limit is not None)
    if not considered:
        raise ValueError("rate chain: at least one limit is needed")
    bound = min(considered, key=lambda limit: limit.value_ml_h)
    rate = round_down(bound.value_ml_h, resolution)
    if rate <= 0:
        raise ValueError(f"rate chain: {bound.rule} leaves no positive rate ({bound.reason})")
    return RateDecision(rate_ml_h=rate, bound_by=bound, considered=considered)


def protocol_max(max_rate_ml_h: float) -> Limit:
    """L2: no commanded rate ever exceeds the protocol maximum."""
    return Limit(Rule.L2, max_rate_ml_h, f"protocol maximum {max_rate_ml_h:g} ml/h")


def ladder_step(current_ml_h: float, increment_ml_h: float) -> Limit:
    """L1: one increment above the current rate, after one full interval."""
    return Limit(
        Rule.L1,
        current_ml_h + increment_ml_h,
        f"one increment of {increment_ml_h:g} ml/h above {current_ml_h:g} ml/h",
    )


def min_duration_cap(
    remaining_ml: float, running_min: float, min_duration_min: float | None
) -> Limit | None:
    """L6: remaining volume / (minimum duration - running time so far); None once it can't bind."""
    if min_duration_min is None or running_min >= min_duration_min or remaining_ml <= 0:
        return None
    left_min = min_duration_min - running_min
    return Limit(
        Rule.L6,
        remaining_ml / (left_min / 60),
        f"{remaining_ml:g} ml left over the {left_min:g} min left of the "
        f"{min_duration_min:g} min minimum duration",
    )


def half_rate(last_rate_ml_h: float, fraction: float) -> Limit:
    """I2: resume at `fraction` (half) of the last non-zero rate before the interruption."""
    return Limit(
        Rule.I2,
        last_rate_ml_h * fraction,
        f"resume at {fraction:g} x the last rate {last_rate_ml_h:g} ml/h",
    )
