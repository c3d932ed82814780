"""Steps the driver tests share: a running pump, and a pump whose motor ignores the stop."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.base import PumpState, PumpStatus


async def running(env: Any, rate: float = 120.0, vtbi: float = 500.0) -> PumpStatus:
    """Program `rate` and `vtbi` through `env.driver` and start it; the status after RUN."""
    await env.driver.set_rate(rate)
    await env.driver.set_vtbi(vtbi)
    status: PumpStatus = await env.driver.run()
    assert status.state is PumpState.RUNNING
    return status


def stuck_motor(env: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pump acknowledges every stop but its motor keeps running; returns the stops seen."""
    seen: list[str] = []
    monkeypatch.setattr(env.model, "stop", lambda: seen.append("stop"))
    return seen
