"""A4 with real processes: the controller (tests/helpers/controller_process.py) against the serial
simulator in another process, SIGKILLed at seeded points and restarted on the same SQLite store.

Both processes run on one scaled clinical clock (`scaled:F@EPOCH`, wall clock based), so a
60 min step takes under a second. Each scenario runs ten times in a row (seeds 0-9); the seed picks
where in its window the kill lands. The checks are invariants on what the pump really did (the
simulator's history) and on the store (audit trail, command ledger), never exact timings:

- every rate the pump ran at is a rung of the ladder, or a half-rate resume and its own rungs,
  never above 200 ml/h; a rise is one increment at most (L1, L2, I2);
- no rise comes less than one interval after the previous change of rate, across the restart
  (L1), and the first rise after the restart comes no earlier than the restart plus what was
  left of the interval at the crash (A4: downtime is not running time, no rise because it
  restarted);
- after the restart the ladder is not restarted: the pump never runs below the rate it had
  before the crash, except at the half rate of a resume after a reaction (I2);
- no non-stop command is carried out twice: each ledger id is sent once across both processes,
  and the pump shows no more set_rate / set_vtbi / run effects than the ledger holds (A3, A4);
- the audit trail read after the crash is a prefix of the one read at the end (append-only) and
  holds the `restarted` event under A4.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pumpctl_process import Served, simulate_serial
from sqlalchemy import text
from sqlmodel import Session, select

from pumpctl.clock import ScaledClock
from pumpctl.store import Store, migrate
from pumpctl.store.models import CommandLedger
from simulator.control import control_request

pytestmark = pytest.mark.slow

#: Clinical seconds per wall second: a 60 min step is 0.75 wall seconds, the 15 h bag 11 s.
FACTOR = 4800.0
INTERVAL = timedelta(minutes=60)
#: Slack for the two processes reading the wall clock a moment apart (1 clinical min = 12 ms).
TOLERANCE = timedelta(minutes=1)
MAX_RATE = 200.0
INCREMENT = 50.0
FIRST_RATE = 50.0
#: Wall-second bounds: a line the harness must print, a state the pump must reach.
LINE_BOUND_S = 20.0
PUMP_BOUND_S = 15.0
#: SAF periods: one far longer than a restart (the pump runs on), one shorter (it stops itself).
SAFE_LONG_S = 255
SAFE_SHORT_S = 2
HARNESS = Path(__file__).resolve().parents[1] / "helpers" / "controller_process.py"
ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(10)
HOLD_ENV = "PUMPCTL_HARNESS_HOLD_COMMIT"
COMMAND_LINE = re.compile(r"^log: command pump=\S+ infusion=\S+ command=(\S+) op=(\S+)$")
#: The pump's history names a command's effect by the model's operation; the ledger by CommandOp.
EFFECT_OF = {"set_rate": "set_rate", "set_vtbi": "set_vtbi", "start": "run"}


@dataclass
class Harness:
    """One controller process: its output lines (logs) and its JSON answers."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    cursor: int = 0

    async def _read(self) -> str:
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            raise AssertionError(f"the controller exited: {self.lines[-5:]}")
        return raw.decode().rstrip("\n")

    async def line(self, predicate: Callable[[str], bool], bound_s: float = LINE_BOUND_S) -> str:
        """The next output line (after the last one matched) for which `predicate` holds."""
        try:
            async with asyncio.timeout(bound_s):
                while True:
                    while self.cursor < len(self.lines):
                        found = self.lines[self.cursor]
                        self.cursor += 1
                        if predicate(found):
                            return found
                    self.lines.append(await self._read())
        except TimeoutError:
            shown = "\n".join(self.lines[-15:])
            raise AssertionError(
                f"no such line within {bound_s} s; the last ones:\n{shown}"
            ) from None

    async def ask(self, op: str, **fields: object) -> dict[str, Any]:
        """Send one command; its JSON answer (log lines on the way are kept for `line`)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(LINE_BOUND_S):
            while True:
                found = await self._read()
                if found.startswith("{"):
                    answer: dict[str, Any] = json.loads(found)
                    return answer
                self.lines.append(found)

    async def kill(self) -> None:
        """SIGKILL: no clean stop of anything."""
        if self.process.returncode is None:
            self.process.kill()
        async with asyncio.timeout(LINE_BOUND_S):
            await self.process.wait()

    def commands(self) -> list[tuple[str, str]]:
        """(ledger id, op) of every command this process handed to the driver."""
        return [(m[1], m[2]) for line in self.lines if (m := COMMAND_LINE.match(line)) is not None]


@dataclass
class Rig:
    """A simulator process, a migrated SQLite store, and the controller processes of one run."""

    served: Served
    url: str
    spec: str
    clock: ScaledClock
    safe_mode_s: int
    harnesses: list[Harness] = field(default_factory=list)
    #: Controller bugs these tests found (since fixed): a run that meets one again fails.
    known_bugs: list[str] = field(default_factory=list)
    #: Ledger ids the store held when the controller was killed.
    ledger_at_crash: set[str] = field(default_factory=set)

    def finish(self) -> None:
        """End the run: it fails naming any bug it met, once every invariant was checked."""
        assert not self.known_bugs, "; ".join(sorted(set(self.known_bugs)))

    async def controller(self, env: dict[str, str] | None = None) -> tuple[Harness, datetime]:
        """Start a controller process; it and the clinical instant it was started at."""
        spawned = self.clock.now()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HARNESS),
            self.url,
            self.served.path,
            "0",
            str(self.safe_mode_s),
            self.spec,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        harness = Harness(process)
        self.harnesses.append(harness)
        ready = await harness.line(lambda line: line.startswith('{"ready"'))
        assert json.loads(ready)["ready"] is True
        return harness, spawned

    async def pump(self) -> dict[str, Any]:
        """The simulated pump's real state and history (control interface)."""
        answer = await control_request(
            "127.0.0.1", self.served.control_port, {"pump": 0, "history": True}
        )
        assert answer["ok"] is True, answer
        pump = answer["pump"]
        assert isinstance(pump, dict)
        return pump

    async def until_pump(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The pump's state once `predicate` holds for it (asked again and again, bounded)."""
        async with asyncio.timeout(PUMP_BOUND_S):
            while True:
                pump = await self.pump()
                if predicate(pump):
                    return pump
                await asyncio.sleep(0.02)  # a polling period, not a synchronisation

    async def at_pump(self, request: dict[str, object]) -> None:
        """A nurse at the pump (control interface)."""
        answer = await control_request(
            "127.0.0.1", self.served.control_port, {"pump": 0, **request}
        )
        assert answer["ok"] is True, answer

    def audit(self) -> list[tuple[int | None, str, str | None, str]]:
        with Store.open(self.url) as store:
            return [(a.id, a.type, a.rule, a.at.isoformat()) for a in store.audit_of(1)]

    def ledger(self) -> list[CommandLedger]:
        with Store.open(self.url) as store, Session(store.engine) as session:
            return list(session.exec(select(CommandLedger)))


@asynccontextmanager
async def rig(tmp_path: Path, safe_mode_s: int = SAFE_LONG_S) -> AsyncIterator[Rig]:
    url = f"sqlite:///{tmp_path}/pumpctl.db"
    migrate.upgrade(url)
    epoch = time.time()
    spec = f"scaled:{FACTOR}@{epoch!r}"
    clock = ScaledClock(FACTOR, wall_epoch=epoch)
    async with simulate_serial("--pumps", "1", "--clock", spec) as served:
        built = Rig(served, url, spec, clock, safe_mode_s)
        try:
            yield built
        except BaseException:
            for n, harness in enumerate(built.harnesses):  # shown by pytest for a failure
                print(f"--- controller process {n + 1}:", *harness.lines, sep="\n")  # noqa: T201
            raise
        finally:
            for harness in built.harnesses:
                if harness.process.stdin is not None:
                    harness.process.stdin.close()
                await harness.kill()


# -- the pump's history ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    at: datetime
    cause: str
    state: str
    rate: float


def changes(pump: dict[str, Any]) -> list[Change]:
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


def check_restart(
    history: list[Change],
    *,
    crash_at: datetime,
    spawned_at: datetime,
    restarted_at: datetime,
    half_rate_resume: bool,
) -> None:
    """A4: no rise because it restarted, downtime is not running time, no ladder restart."""
    before, _ = rate_at(history, spawned_at)
    changed = last_rate_change(history, spawned_at)
    ran = max(timedelta(0), crash_at - changed)
    earliest = restarted_at + INTERVAL - ran - TOLERANCE
    after = [c for c in history if c.at > spawned_at and c.state == "running"]
    for change in after:
        if change.rate > before:
            assert change.at >= earliest, (
                f"rise to {change.rate} ml/h at {change.at}, before {earliest}: the restart "
                f"counted downtime as running time or stepped because it restarted"
            )
            break
    floor = before / 2 if half_rate_resume else before
    for change in after:
        assert change.rate >= floor - 0.1, f"ladder restarted: {change.rate} < {floor}"


#: Controller bug (reported, not fixed here; since d3bc5b3 decisions are written by a
#: `call_soon` after the turn that made them): a non-stop command's task starts before its
#: decision and ledger row are written, so a SIGKILL in between leaves a command carried out by
#: the pump that the store never heard of; the restarted controller decides it again under the
#: same ledger id and the pump carries it out twice.
SENT_BEFORE_COMMIT_BUG = "a non-stop command left before its decision was written"


def check_commands(rig_: Rig, history: list[Change]) -> None:
    """A3/A4: no non-stop command carried out twice, across both processes."""
    sent = Counter(lid for h in rig_.harnesses for lid, op in h.commands() if op != "stop")
    first = {lid for lid, op in rig_.harnesses[0].commands() if op != "stop"}
    uncommitted = first - rig_.ledger_at_crash
    twice = {lid for lid, n in sent.items() if n > 1}
    if twice and twice <= uncommitted:
        rig_.known_bugs.append(SENT_BEFORE_COMMIT_BUG)
        return
    assert not twice, f"sent twice: {sent}"
    ledger = rig_.ledger()
    assert len({(row.infusion_id, row.command_id) for row in ledger}) == len(ledger)
    held = Counter(EFFECT_OF[row.op] for row in ledger if row.op in EFFECT_OF)
    effects = Counter(c.cause for c in history if c.cause in EFFECT_OF.values())
    for effect, n in effects.items():
        assert n <= held[effect], f"{n} {effect} effects at the pump, {held[effect]} in the ledger"


def check_audit(rig_: Rig, at_crash: list[tuple[int | None, str, str | None, str]]) -> None:
    """The trail is append-only and the restart is in it under A4."""
    final = rig_.audit()
    assert final[: len(at_crash)] == at_crash
    assert ("restarted", "A4") in {(a[1], a[2]) for a in final[len(at_crash) :]}


@dataclass(frozen=True)
class Crash:
    """One crash: when the controller was killed, when the next one was started, and the audit
    trail as it stood in between."""

    at: datetime
    spawned_at: datetime
    trail: list[tuple[int | None, str, str | None, str]]


def check_all(rig_: Rig, history: list[Change], crash_: Crash, *, half_rate_resume: bool) -> None:
    """Every invariant of the module docstring, for one crash and restart."""
    check_ladder(history)
    check_restart(
        history,
        crash_at=crash_.at,
        spawned_at=crash_.spawned_at,
        restarted_at=restarted_at(rig_),
        half_rate_resume=half_rate_resume,
    )
    check_commands(rig_, history)
    check_audit(rig_, crash_.trail)


def restarted_at(rig_: Rig) -> datetime:
    with Store.open(rig_.url) as store:
        return max(a.at for a in store.audit_of(1) if a.type == "restarted")


async def started(rig_: Rig, harness: Harness, steps: int) -> None:
    """Plan and start infusion 1; return once `steps` rate steps are confirmed after the run
    (xfail when the safety envelope stops the pump on one of them: ENVELOPE_BUG)."""
    assert (await harness.ask("plan"))["ok"] is True
    assert (await harness.ask("start"))["ok"] is True
    await harness.line(lambda line: "type=confirmed_running" in line)
    for _ in range(steps):
        if not await goes_on(harness):
            rig_.known_bugs.append(ENVELOPE_BUG)
            rig_.finish()


async def crash(rig_: Rig, harness: Harness) -> tuple[datetime, list[Any]]:
    """SIGKILL the controller; the clinical instant and the audit trail right after."""
    await harness.kill()
    at = rig_.clock.now()
    rig_.ledger_at_crash = {row.id for row in rig_.ledger()}
    return at, rig_.audit()


async def acknowledge(harness: Harness) -> set[str]:
    """A nurse acknowledges every alarm the restarted controller latched (A3: a command whose
    fate the restart could not confirm); the alarms cleared."""
    state = (await harness.ask("state"))["state"]
    latched = set(state["latched"])
    for alarm in sorted(latched):
        cleared = await harness.ask("clear_alarm", alarm=alarm)
        assert cleared["ok"] is True, cleared
    return latched


#: Controller bug (reported, not fixed here): the core counts a rate's interval from its
#: confirmation, the safety envelope from the read-back it is shown a moment later (and after a
#: restart from the first poll, `PumpSupervisor.restarted` never shows it its read-back). When
#: the core's step, exactly one interval after its confirmation, reaches the envelope sooner
#: than that moment, the envelope trips on a lawful step: the pump is stopped (safe) and a
#: clinician must clear it. The invariants are still checked; the run then ends xfail.
ENVELOPE_BUG = "the safety envelope trips on a step exactly one interval after the last"


async def kill_point(rig_: Rig, harness: Harness, kill_at: str) -> None:
    """Return at the first line holding `kill_at` (xfail if the envelope trips first)."""
    found = await harness.line(lambda line: kill_at in line or "kind=safety_envelope" in line)
    if kill_at not in found:
        rig_.known_bugs.append(ENVELOPE_BUG)
        rig_.finish()


async def goes_on(harness: Harness) -> bool:
    """The restarted controller's ladder goes on: its next step is confirmed (bounded); False
    when the safety envelope stopped the pump instead (ENVELOPE_BUG)."""
    found = await harness.line(
        lambda line: "op=set_rate fate=command_confirmed" in line or "kind=safety_envelope" in line
    )
    return "kind=safety_envelope" not in found


# -- the scenarios --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
async def test_A4_L1_sigkill_mid_step_goes_on_at_the_same_step(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    steps = rng.choice([0, 1])
    kill_at = rng.choice(["type=rate_step", "op=set_rate", "op=set_rate fate="])
    delay_s = rng.uniform(0, 0.03)
    async with rig(tmp_path) as r:
        first, _ = await r.controller()
        await started(r, first, steps)
        await kill_point(r, first, kill_at)
        await asyncio.sleep(delay_s)  # the seeded kill point, not a synchronisation
        crash_at, trail = await crash(r, first)
        second, spawned = await r.controller()
        assert await acknowledge(second) <= {"command_unconfirmed"}
        went_on = await goes_on(second)
        pump = await r.pump()
        history = changes(pump)
        assert pump["state"] == "running" or not went_on
        check_all(r, history, Crash(crash_at, spawned, trail), half_rate_resume=False)
    if not went_on:
        r.known_bugs.append(ENVELOPE_BUG)
    r.finish()


@pytest.mark.parametrize("seed", SEEDS)
async def test_A4_I1_sigkill_between_a_reactions_stop_and_its_commit(
    tmp_path: Path, seed: int
) -> None:
    """The stop reached the pump, the reaction never reached the store: the restarted
    controller finds the pump stopped with no record why, and refuses to resume naming A4 until
    the nurse says "reaction" (I2: half rate) or "no reaction" (A1: the same rate)."""
    rng = random.Random(seed)
    steps = rng.choice([0, 1, 2])
    kill_at = rng.choice(["stopped at the pump", "op=stop fate="])
    answer = rng.choice(["reaction", "no reaction"])
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    async with rig(tmp_path) as r:
        first, _ = await r.controller({HOLD_ENV: str(fifo)})
        await started(r, first, steps)
        assert (await first.ask("reaction", grade=2))["ok"] is True
        await first.line(lambda line: line == "about-to-commit")
        if kill_at == "stopped at the pump":
            await r.until_pump(lambda p: p["state"] != "running")
        else:
            await kill_point(r, first, kill_at)
        crash_at, trail = await crash(r, first)
        assert (await r.pump())["state"] != "running"  # the stop had left before the commit
        before = rate_before_stop(changes(await r.pump()))
        with Store.open(r.url) as store:
            assert store.reactions(1) == []  # ... and the reaction was never committed
            assert store.load_infusion(1).state.phase.value == "running"
        second, spawned = await r.controller()
        refused = await second.ask("resume")
        assert refused["ok"] is False
        assert refused["refusal"]["rule"] == "A4"
        if answer == "reaction":
            assert (await second.ask("reaction", grade=2))["ok"] is True
            assert (await second.ask("idle"))["ok"] is True  # its stop confirmed (A3)
            assert (await second.ask("resume"))["ok"] is True
            expected = round(before / 2, 1)
        else:
            assert (await second.ask("resume", no_reaction=True))["ok"] is True
            expected = before
        assert (await second.ask("idle"))["ok"] is True
        pump = await r.until_pump(lambda p: p["state"] == "running")
        assert pump["rate_ml_h"] == expected
        history = changes(pump)
        check_all(
            r, history, Crash(crash_at, spawned, trail), half_rate_resume=answer == "reaction"
        )
        with Store.open(r.url) as store:
            grades = [x.grade for x in store.reactions(1)]
        assert grades == ([2] if answer == "reaction" else [])
    r.finish()


@pytest.mark.parametrize("seed", SEEDS)
async def test_A4_I2_sigkill_mid_resume_never_resumes_above_half(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    steps = rng.choice([0, 1])
    kill_at = rng.choice(
        ["type=resumed", "op=set_rate", "op=set_rate fate=", "op=start", "op=start fate="]
    )
    delay_s = rng.uniform(0, 0.03)
    async with rig(tmp_path) as r:
        first, _ = await r.controller()
        await started(r, first, steps)
        assert (await first.ask("reaction", grade=2))["ok"] is True
        await first.line(lambda line: "op=stop fate=command_confirmed" in line)
        before = rate_before_stop(changes(await r.pump()))
        assert (await first.ask("resume"))["ok"] is True
        await kill_point(r, first, kill_at)
        await asyncio.sleep(delay_s)  # the seeded kill point, not a synchronisation
        crash_at, trail = await crash(r, first)
        second, spawned = await r.controller()
        half = round(before / 2, 1)
        if (await r.pump())["state"] != "running":
            resumed = await second.ask("resume")
            if not resumed["ok"]:  # found stopped while the store says it resumed
                assert resumed["refusal"]["rule"] == "A4"
                assert (await second.ask("resume", no_reaction=True))["ok"] is True
        pump = await r.until_pump(lambda p: p["state"] == "running")
        assert pump["rate_ml_h"] == half  # I2, whatever the crash cut short
        went_on = await goes_on(second)
        pump = await r.pump()
        history = changes(pump)
        check_all(r, history, Crash(crash_at, spawned, trail), half_rate_resume=True)
        with Store.open(r.url) as store:
            assert [x.grade for x in store.reactions(1)] == [2]
    if not went_on:
        r.known_bugs.append(ENVELOPE_BUG)
    r.finish()


@pytest.mark.parametrize("seed", SEEDS)
async def test_A4_A1_safe_mode_pump_kept_running_or_stopped_itself(
    tmp_path: Path, seed: int
) -> None:
    """Even seeds: SAF 255 outlives the restart, the pump runs on and the ladder goes on.
    Odd seeds: SAF 2 is shorter than the restart (the test waits for the pump's comm_timeout
    before restarting): the restarted controller shows an alarm, the nurse clears the pump and
    acknowledges the alarm, resumes, and the pump runs at the rate it had, never higher."""
    rng = random.Random(seed)
    long_window = seed % 2 == 0
    steps = rng.choice([0, 1, 2])
    delay_s = rng.uniform(0, 0.5)
    async with rig(tmp_path, SAFE_LONG_S if long_window else SAFE_SHORT_S) as r:
        first, _ = await r.controller()
        await started(r, first, steps)
        await asyncio.sleep(delay_s)  # the seeded kill point, not a synchronisation
        crash_at, trail = await crash(r, first)
        before = rate_at(changes(await r.pump()), crash_at)[0]
        if not long_window:
            await r.until_pump(lambda p: "comm_timeout" in p["alarms"])
        second, spawned = await r.controller()
        state = (await second.ask("state"))["state"]
        if long_window:
            pump = await r.pump()
            assert (pump["state"], pump["rate_ml_h"]) == ("running", before)
            assert "stop" not in [c.cause for c in changes(pump)]
            assert state["latched"] == []
            went_on = await goes_on(second)
        else:
            shown = set(state["alarms"]) | set(state["latched"])
            assert shown, "the restarted controller shows no alarm for a pump that stopped"
            assert (await second.ask("resume"))["ok"] is False  # not before the nurse acts
            await r.at_pump({"clear_alarm": "comm_timeout"})
            for alarm in sorted(shown):
                assert (await second.ask("clear_alarm", alarm=alarm))["ok"] is True
            resumed = await second.ask("resume")
            if not resumed["ok"]:  # A4: stopped with no record why; the nurse says why
                assert resumed["refusal"]["rule"] == "A4"
                assert (await second.ask("resume", no_reaction=True))["ok"] is True
            assert (await second.ask("idle"))["ok"] is True
            pump = await r.until_pump(lambda p: p["state"] == "running")
            assert pump["rate_ml_h"] == before  # A1: the same rate, never higher
            went_on = True
        pump = await r.pump()
        history = changes(pump)
        check_all(r, history, Crash(crash_at, spawned, trail), half_rate_resume=False)
    if not went_on:
        r.known_bugs.append(ENVELOPE_BUG)
    r.finish()


def test_the_audit_trail_refuses_update_and_delete(tmp_path: Path) -> None:
    """What `check_audit`'s prefix comparison relies on: the store's triggers (SQLite)."""
    url = f"sqlite:///{tmp_path}/pumpctl.db"
    migrate.upgrade(url)
    with Store.open(url) as store:
        store.create_patient("MRN-1", 70.0, actor="dr", at=ScaledClock(1.0).now())
        for statement in ("UPDATE audit SET type = 'x'", "DELETE FROM audit"):
            with pytest.raises(Exception, match=r"append-only|audit"), store.engine.begin() as c:
                c.execute(text(statement))
    with contextlib.suppress(OSError):
        Path(tmp_path / "pumpctl.db").unlink()
