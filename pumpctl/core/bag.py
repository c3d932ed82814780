"""L9: the diluted bag's life (15 h at room temperature, infusion time included; label).

The service records when a bag was prepared, warns `warn_before_min` (1 h) before it expires,
and at expiry stops the pump and asks for a new bag. A new bag continues the same infusion at
the current step with the volume still to give, and its own 15 h start from its preparation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pumpctl.core.protocol import Bag
from pumpctl.core.rules import Rule

__all__ = ["BagLife", "BagReplacement", "BagState", "BagStatus", "replace_bag"]


class BagState(StrEnum):
    """Where a bag is in its life."""

    GOOD = "good"
    WARNING = "warning"  # inside the last warn_before_min: prepare the next bag
    EXPIRED = "expired"  # L9: stop the pump, ask for a new bag


@dataclass(frozen=True, slots=True)
class BagStatus:
    """A bag's state at `now`, and the minutes left before it expires (0 once expired)."""

    state: BagState
    minutes_left: float
    expires_at: datetime
    rule: Rule = Rule.L9


@dataclass(frozen=True, slots=True)
class BagLife:
    """L9: one bag, from its preparation time and the protocol's `[bag]` numbers."""

    prepared_at: datetime
    stability_min: int
    warn_before_min: int

    @classmethod
    def from_protocol(cls, bag: Bag, prepared_at: datetime) -> BagLife:
        """A bag prepared at `prepared_at` under the protocol's `[bag]` table."""
        return cls(prepared_at, bag.stability_min, bag.warn_before_min)

    @property
    def expires_at(self) -> datetime:
        """When the bag may no longer be given (prepared_at + 15 h)."""
        return self.prepared_at + timedelta(minutes=self.stability_min)

    @property
    def warn_at(self) -> datetime:
        """When the warning is raised (1 h before expiry)."""
        return self.expires_at - timedelta(minutes=self.warn_before_min)

    def status(self, now: datetime) -> BagStatus:
        """The bag's state at `now` (refuses a `now` before the bag was prepared)."""
        if now < self.prepared_at:
            raise ValueError(f"now: {now.isoformat()} is before the bag was prepared (L9)")
        left = (self.expires_at - now).total_seconds() / 60
        if left <= 0:
            return BagStatus(BagState.EXPIRED, 0.0, self.expires_at)
        state = BagState.WARNING if now >= self.warn_at else BagState.GOOD
        return BagStatus(state, left, self.expires_at)

    def next_deadline(self, now: datetime) -> datetime | None:
        """The next L9 moment after `now` (the warning, then expiry), or None once expired."""
        for moment in (self.warn_at, self.expires_at):
            if now < moment:
                return moment
        return None


@dataclass(frozen=True, slots=True)
class BagReplacement:
    """L9: a new bag continuing the same infusion: its life, the VTBI to program, the rate."""

    bag: BagLife
    vtbi_ml: float
    rate_ml_h: float
    rule: Rule = Rule.L9


def replace_bag(
    bag: Bag, prepared_at: datetime, remaining_ml: float, current_rate_ml_h: float
) -> BagReplacement:
    """L9: a new bag prepared at `prepared_at`, given at the current step for the remaining volume.

    The volume still to give becomes the VTBI (L3), exactly: rounding it up could program more
    than the bags together hold. The rate is the current step's, unchanged.
    """
    if not remaining_ml > 0:
        raise ValueError(
            f"remaining_ml: must be above 0, not {remaining_ml} (nothing left to give)"
        )
    if not current_rate_ml_h > 0:
        raise ValueError(f"current_rate_ml_h: must be above 0, not {current_rate_ml_h}")
    return BagReplacement(
        bag=BagLife.from_protocol(bag, prepared_at),
        vtbi_ml=remaining_ml,
        rate_ml_h=current_rate_ml_h,
    )
