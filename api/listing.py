"""`GET /infusions` served from memory (issue 18: a flood of authorised reads must not cost the
kernel's event loop, which every stop passes through).

Building the list reads every infusion from the store and computes each one's public view (its
plan, next step, time left): work that grows with the ward's history. So a finished infusion's
view is kept once built, and its stored state (whose parse is most of a read's cost: about
25 ms for 150 infusions, all of it holding the interpreter's lock the kernel's loop needs) is
not read again while nothing changed it (`Store.infusions_but`). Done on the loop for every
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

from api.views import facts_view
from pumpctl.clock import ScaledClock
from pumpctl.controller.ward import InfusionFacts, Ward

__all__ = ["LIST_FRESH_S", "InfusionList"]

#: Seconds a built list is served while nothing changed (its times move with the clock).
LIST_FRESH_S = 1.0
#: Finished infusions' views kept encoded at most (the oldest forgotten first, built again
#: when asked).
FINISHED_KEPT = 20_000

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
        # the views of finished infusions, encoded once (with their state, for the filter):
        # a build computes only the others' (a ward's history grows, its live infusions do not)
        self._finished: dict[int, tuple[str, bytes]] = {}
        self._finished_seq = 0
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
        for _attempt in range(2):
            read_at = self.ward.changes_since(0)[0]  # the ward's change count before the read
            finished = self._finished_views()  # none the ward changed up to `read_at`
            ids, facts = await self.ward.all_facts(pump_id, kept=finished.keys())
            _now, since = self.ward.changes_since(read_at)
            if since is not None and not since & finished.keys():
                return await self._encode(
                    state, ids, facts=facts, finished=finished, since=since, stamp=stamp
                )
            # a kept view changed during the read: once more, that one read afresh
        ids, facts = await self.ward.all_facts(pump_id)
        _now, since = self.ward.changes_since(read_at)
        return await self._encode(state, ids, facts=facts, finished={}, since=since, stamp=stamp)

    async def _encode(
        self,
        state: str | None,
        ids: list[int],
        *,
        facts: list[InfusionFacts],
        finished: dict[int, tuple[str, bytes]],
        since: set[int] | None,
        stamp: _Built,
    ) -> _Built:
        """The list in `ids`' order: the kept views of finished infusions as they are, the
        others' views computed (on a reader thread: CPU)."""

        def encode() -> tuple[bytes, dict[int, tuple[str, bytes]]]:
            made: dict[int, tuple[str, bytes]] = {}
            for f in facts:
                view = facts_view(self.ward, f)
                done = (str(view["state"]), json.dumps(view, separators=(",", ":")).encode())
                made[f.stored.id] = done
            parts: list[bytes] = []
            for i in ids:
                shown = finished.get(i) or made.get(i)
                if shown is not None and (state is None or shown[0] == state):
                    parts.append(shown[1])
            fresh = {f.stored.id: made[f.stored.id] for f in facts if _finished(self.ward, f)}
            return b"[" + b",".join(parts) + b"]", fresh

        body, made = await self.ward.read(encode, what="the infusions")
        if since is not None:  # a view made from a read older than a change is not kept
            self._finished.update((i, v) for i, v in made.items() if i not in since)
        while len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]
        return _Built(stamp.seq, stamp.at, stamp.clinical_at, body)

    def _finished_views(self) -> dict[int, tuple[str, bytes]]:
        """The finished infusions' views kept, less any the ward changed since they were
        made (all of them when it cannot say which): a copy for a reader thread."""
        seq, changed = self.ward.changes_since(self._finished_seq)
        if changed is None:
            self._finished.clear()
        else:
            for infusion_id in changed:
                self._finished.pop(infusion_id, None)
        self._finished_seq = seq
        return dict(self._finished)


def _finished(ward: Ward, facts: InfusionFacts) -> bool:
    """Over for good and held by no supervisor (no I4/I5 window open): its view moves only
    when the ward changes it (an alarm cleared or acknowledged, a late reaction), never with
    the clock."""
    return facts.stored.state.terminal and ward.live(facts.stored.id) is None
