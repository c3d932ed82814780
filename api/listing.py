"""`GET /infusions` served from memory (issue 18: a flood of authorised reads must not cost the
kernel's event loop, which every stop passes through).

Building the list reads every infusion from the store and computes each one's public view (its
plan, next step, time left): work that grows with the ward's history. Done on the loop for every
request, a few clients asking it as fast as they are answered put the nurse's press at 6x its
floor (bench/isolation.py, get-flood). So the list is built off the loop (the store's reader
threads: its read and the views, bounded as every read is), at most one build per filter at a
time (requests meanwhile wait for that one), and kept, encoded, until the ward says something
changed or `LIST_FRESH_S` has passed, on the clinical clock and on the loop's (the views hold
the time left and the running minutes, which move with the clinical clock; a virtual or scaled
clock moves faster than the loop's). A list is never older than that: a change is seen by the
next request, which never joins a build begun before the change.

The list depends on nothing but the filter, so the route marks it shareable for the web side
(`api.readcache.SHARED_HEADER`, `InfusionList.keep_s`): there, every caller of a role is served
one copy until the kernel's events carry a change, and the kernel sees one request where a
flood of readers asked many.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.views import facts_view
from pumpctl.clock import ScaledClock
from pumpctl.controller.ward import Ward

__all__ = ["LIST_FRESH_S", "InfusionList"]

#: Seconds a built list is served while nothing changed (its times move with the clock).
LIST_FRESH_S = 1.0

Key = tuple[str | None, str | None]  # (state, pump_id)


@dataclass(frozen=True)
class _Built:
    seq: int  # the ward's change count it was built at
    at: float  # loop time it was built at
    clinical_at: datetime  # clinical time it was built at
    body: bytes  # the JSON list

    def fresh(self, seq: int, at: float, clinical_at: datetime) -> bool:
        """Still the list at change count `seq`, loop time `at`, clinical time `clinical_at`."""
        return (
            seq == self.seq
            and at - self.at < LIST_FRESH_S
            and (clinical_at - self.clinical_at).total_seconds() < LIST_FRESH_S
        )


class InfusionList:
    """The ward's infusions as `GET /infusions` answers them, newest first, kept in memory."""

    def __init__(self, ward: Ward) -> None:
        self.ward = ward
        factor = ward.clock.factor if isinstance(ward.clock, ScaledClock) else 1.0
        #: wall seconds a list stays fresh while nothing changes: `LIST_FRESH_S` of clinical
        #: time on a scaled clock (a demo's 120x: 1/120 s); a virtual clock moves only by a
        #: request (`/sim/advance`), which the web side counts as a change
        self.keep_s = LIST_FRESH_S / factor
        self._kept: dict[Key, _Built] = {}
        # the build under way per filter and change count: a request joins one only when nothing
        # changed since it began
        self._building: dict[tuple[Key, int], asyncio.Future[_Built]] = {}

    async def body(self, state: str | None, pump_id: str | None) -> bytes:
        """The list for the filter (`state`, `pump_id`), as JSON bytes."""
        key = (state, pump_id)
        loop = asyncio.get_running_loop()
        seq, at, clinical_at = self.ward.changes_since(0)[0], loop.time(), self.ward.clock.now()
        kept = self._kept.get(key)
        if kept is not None and kept.fresh(seq, at, clinical_at):
            return kept.body
        building = self._building.get((key, seq))
        if building is not None:
            return (await asyncio.shield(building)).body
        building = loop.create_future()
        self._building[key, seq] = building
        try:
            built = await self._build(key, _Built(seq, at, clinical_at, b""))
        except BaseException as error:
            building.set_exception(error)
            building.exception()  # retrieved: the waiters get it, nobody else must
            raise
        else:
            building.set_result(built)
            newest = self._kept.get(key)
            if newest is None or newest.seq <= built.seq:
                self._kept[key] = built
        finally:
            del self._building[key, seq]
        return built.body

    async def _build(self, key: Key, stamp: _Built) -> _Built:
        state, pump_id = key
        facts = await self.ward.all_facts(pump_id)  # a reader thread, bounded

        def encode() -> bytes:  # the views: CPU, on a reader thread too
            views: list[dict[str, Any]] = [facts_view(self.ward, f) for f in facts]
            chosen = [v for v in views if state is None or v["state"] == state]
            return json.dumps(chosen, separators=(",", ":")).encode()

        body = await self.ward.read(encode, what="the infusions")
        return _Built(stamp.seq, stamp.at, stamp.clinical_at, body)
