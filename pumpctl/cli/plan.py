"""`pumpctl plan`: print the planned infusion (bag, rates, steps, duration, rules)."""

from __future__ import annotations


def plan() -> None:
    """Print the plan of one infusion."""
    raise NotImplementedError("being written")
