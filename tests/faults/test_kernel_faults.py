"""Faults of the gateway itself under a running infusion (issue 19's fault campaign), tried on
the processes users run: the kernel as its systemd unit runs it (`pumpctl serve --no-web`, built
by its one composition root, api/gateway.py) and a New Era pump simulated by `pumpctl simulate
serial` in a process of its own on a pseudo-terminal, both on one scaled clinical clock
(`--bench --clock scaled:F@EPOCH`). What the pump really did is read from the simulator's
change history (tests/helpers/pump_history.py), never from the kernel's own account.

The faults, and what a nurse is promised through each:

- **The kernel frozen** (SIGSTOP) for at least twice the pump's safe-mode watchdog (`SAF 2`):
  the pump hears nothing, stops itself and raises `comm_timeout`, as it is built to. On SIGCONT
  the kernel reads the pump's real state (A2, A4): the infusion is shown paused with the pump's
  alarm, in the view and the log; the kernel never starts the pump again on its own; a nurse
  clears the alarm at the pump, acknowledges it, resumes, and the pump runs at the rate it had,
  never higher (A1). Once for a freeze shorter than the link timeout, once for one past it.
- **The serial line unplugged** (the simulator's `drop_connection`: the pump is off the line, as
  with a pulled cable; its safe-mode period, 255 s, outlasts the test, so it runs on): the
  communication-loss alarm comes within the link timeout, on /health, the infusion's view and
  the log, and escalation waits (no step falls while the link is lost, L1, A2). A reaction
  pressed meanwhile is answered at once with 202 "Pump did not stop: clamp the line" (A3),
  never a hang nor a 500. Plugged back, the kernel reads the pump's real state and never starts
  or speeds it up because the link came back (A2); the stop it still owes is sent again and
  confirmed (A3); the nurse clears the alarm and resumes at half the rate (I2). Also when the
  infusion started before the kernel's first status read of the pump, so that the start's
  read-backs were its only contact (a regression test: that link loss was never raised).
- **Both cores eaten by other processes** (one `while True: pass` per core) while the ladder
  climbs and a nurse presses a reaction: the stop is confirmed at the pump and the answer comes
  within the service's stop bound (`stop_answer_s`), and no step came early (L1, I1).

Every wait is bounded; a fault's own length (how long the kernel stays frozen) is the only
sleep, never a synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kernel_process import COMMAND_LINE, KernelProcess
from pump_history import TOLERANCE, Change, changes, check_ladder, rate_before_stop
from pumpctl_process import Served, simulate_serial

from pumpctl.clock import ScaledClock
from pumpctl.settings import DEFAULT_SAFE_MODE_S, Settings
from pumpctl.store import migrate
from simulator.control import control_request

pytestmark = pytest.mark.slow

PUMP = "pump-1"
#: The settings under test, given to the kernel explicitly: every bound below is the setting.
LINK_TIMEOUT_S = float(Settings.model_fields["link_timeout_s"].default)
STOP_ANSWER_S = float(Settings.model_fields["stop_answer_s"].default)
POLL_INTERVAL_S = 0.2
#: The supervisor's link watchdog looks this often (pumpctl/controller/supervisor.py).
WATCHDOG_TICK_S = min(0.5, LINK_TIMEOUT_S / 4)
#: A loaded 2-core machine's scheduling on top of a wire-time bound.
SLACK_S = 1.0
#: "At once" (README: the 202 comes at once when the link is already lost).
AT_ONCE_S = 1.0
#: The pump's safe-mode watchdog when the test has it stop itself, and one that outlasts a test.
SAF_S = 2
SAF_LONG_S = 255
#: Bounds on what a process must reach (a cold start, a loaded CI machine).
BOUND_S = 20.0
#: Clinical seconds per wall second. 60: a step is a wall minute away, none falls during the
#: freeze. 360: the first step (10 s) falls due while the line is unplugged. 600: a step (6 s)
#: falls under the busy cores before the press.
FACTOR_FROZEN = 60.0
FACTOR_UNPLUGGED = 360.0
FACTOR_BUSY = 600.0


@dataclass
class Bench:
    """A simulated serial pump in its own process and the kernel (`pumpctl serve --no-web`)."""

    served: Served
    kernel: KernelProcess
    clock: ScaledClock
    infusion: int = 0

    @property
    def path(self) -> str:
        return f"/infusions/{self.infusion}"

    async def pump(self) -> dict[str, Any]:
        """The simulated pump's real state, with its change history (control interface)."""
        answer = await control_request(
            "127.0.0.1", self.served.control_port, {"pump": 0, "history": True}
        )
        assert answer["ok"] is True, answer
        pump: dict[str, Any] = answer["pump"]
        return pump

    async def until_pump(
        self, holds: Callable[[dict[str, Any]], bool], bound_s: float = BOUND_S
    ) -> dict[str, Any]:
        """The pump's state once `holds` for it (asked again and again, bounded)."""
        async with asyncio.timeout(bound_s):
            while True:
                pump = await self.pump()
                if holds(pump):
                    return pump
                await asyncio.sleep(0.02)  # polling a condition with a deadline

    async def at_pump(self, request: dict[str, object]) -> None:
        """Someone at the pump, or at its cable (control interface)."""
        answer = await control_request(
            "127.0.0.1", self.served.control_port, {"pump": 0, **request}
        )
        assert answer["ok"] is True, answer

    async def view(self) -> dict[str, Any]:
        shown: dict[str, Any] = await self.kernel.api("GET", self.path, "viewer")
        return shown

    async def health(self) -> httpx.Response:
        assert self.kernel.http is not None
        return await self.kernel.http.get("/api/v1/health")

    async def act(self, action: str, body: Any = None, role: str = "nurse") -> httpx.Response:
        return await self.kernel.request("POST", f"{self.path}/{action}", role, body)

    async def kernel_now(self) -> datetime:
        return datetime.fromisoformat((await self.kernel.api("GET", "/clock", "viewer"))["now"])

    async def start_infusion(self) -> None:
        """A patient's first infusion planned and started (premedication an hour before, D3);
        returns once the kernel has the pump confirmed running."""
        patient = await self.kernel.api(
            "POST", "/patients", "clinician", {"mrn": "MRN-FAULT", "weight_kg": 70}, 201
        )
        body = {"patient_id": patient["id"], "pump_id": PUMP}
        self.infusion = (await self.kernel.api("POST", "/infusions", "clinician", body, 201))["id"]
        given = {"given_at": (await self.kernel_now() - timedelta(minutes=60)).isoformat()}
        await self.kernel.api("POST", f"{self.path}/premedication", "nurse", given)
        await self.kernel.api("POST", f"{self.path}/start", "clinician", {})
        if self.kernel.output is None:
            await self.kernel.line(lambda line: "type=confirmed_running" in line)
        else:  # its log is not read here: the pump says it
            await self.until_pump(lambda p: p["state"] == "running")
            await until(lambda: self._shown("running"))

    async def _shown(self, state: str) -> bool:
        return bool((await self.view())["state"] == state)

    async def acknowledge_all(self) -> list[str]:
        """A nurse acknowledges every alarm the infusion shows, one at a time (clearing one
        may clear another: a serial pump's alarm is latched twice); the alarms cleared."""
        cleared: list[str] = []
        for _ in range(10):
            view = await self.view()
            standing = sorted(set(view["latched_alarms"]) | set(view["pump_alarms"]))
            if not standing:
                return cleared
            answer = await self.act(f"alarms/{standing[0]}/clear", {})
            assert answer.status_code == 200, (standing[0], answer.status_code, answer.text)
            cleared.append(standing[0])
        raise AssertionError(f"alarms still standing after {cleared}")


@asynccontextmanager
async def bench(
    tmp_path: Path,
    factor: float,
    safe_mode_s: int,
    poll_interval_s: float = POLL_INTERVAL_S,
    output: int | None = None,
) -> AsyncIterator[Bench]:
    """A migrated SQLite store, the simulator and the kernel on one scaled clock; the kernel
    reads the pump's status every `poll_interval_s` (wire seconds), its output to `output`
    when given (else read by the test's KernelProcess)."""
    migrate.upgrade(f"sqlite:///{tmp_path}/pumpctl.db")
    epoch = time.time()
    spec = f"scaled:{factor}@{epoch!r}"
    async with simulate_serial("--pumps", "1", "--clock", spec) as served:
        url = f"{PUMP}=serial://{served.path}?address=0&safe={safe_mode_s}"
        kernel = KernelProcess(
            tmp_path,
            ["--pump", url, "--bench", "--clock", spec],
            env={
                "PUMPCTL_POLL_INTERVAL_S": str(poll_interval_s),
                "PUMPCTL_LINK_TIMEOUT_S": str(LINK_TIMEOUT_S),
                "PUMPCTL_STOP_ANSWER_S": str(STOP_ANSWER_S),
            },
            output=output,
        )
        try:
            await kernel.start()
            yield Bench(served, kernel, ScaledClock(factor, wall_epoch=epoch))
        except BaseException:
            print("--- the kernel's log:", *kernel.lines, sep="\n")  # noqa: T201 - for a failure
            raise
        finally:
            if kernel.process is not None and kernel.process.returncode is None:
                kernel.process.send_signal(signal.SIGCONT)  # never leave it frozen
            await kernel.kill()


async def until(probe: Callable[[], Awaitable[bool]], bound_s: float = BOUND_S) -> None:
    """Return once `probe()` holds (asked again and again, bounded)."""
    async with asyncio.timeout(bound_s):
        while True:
            if await probe():
                return
            await asyncio.sleep(0.05)  # polling a condition with a deadline


def between(history: list[Change], after: datetime, before: datetime) -> list[Change]:
    return [c for c in history if after < c.at < before]


def logged(kernel: KernelProcess, since: int, *words: str) -> list[str]:
    """The kernel's log lines from line `since` on that hold every one of `words`."""
    return [line for line in kernel.lines[since:] if all(w in line for w in words)]


def sent(kernel: KernelProcess, since: int, until_line: int | None = None) -> list[str]:
    """The ops of the commands the kernel handed to the driver in its log lines
    `since`..`until_line`."""
    lines = kernel.lines[since:until_line]
    return [m[2] for line in lines if (m := COMMAND_LINE.search(line))]


# -- the kernel frozen past the pump's watchdog ------------------------------------------------


@pytest.mark.parametrize(
    "frozen_s",
    [2 * SAF_S + 0.5, LINK_TIMEOUT_S + 1.5],
    ids=["twice-the-watchdog", "past-the-link-timeout"],
)
async def test_A2_A4_A1_kernel_sigstopped_past_the_pump_watchdog_reads_the_real_state(
    tmp_path: Path, frozen_s: float
) -> None:
    """A2, A4, A1: the kernel SIGSTOPped for at least twice the pump's safe-mode watchdog. The
    pump stops itself (comm_timeout); on SIGCONT the kernel shows the infusion paused with the
    pump's alarm (view, log), never starts the pump on its own, refuses a resume while the alarm
    stands (A1), and after the nurse clears the pump and acknowledges the alarms, resumes it at
    the rate it had, never higher (A1: no halving, no step, L1)."""
    loop = asyncio.get_running_loop()
    async with bench(tmp_path, FACTOR_FROZEN, SAF_S) as b:
        await b.start_infusion()
        running = await b.until_pump(lambda p: p["state"] == "running")
        before = running["rate_ml_h"]
        assert b.kernel.process is not None
        frozen_at = loop.time()
        b.kernel.process.send_signal(signal.SIGSTOP)
        try:
            await b.until_pump(
                lambda p: "comm_timeout" in p["alarms"] and p["state"] != "running",
                bound_s=SAF_S + BOUND_S,
            )
            # the fault's length (at least twice the watchdog), not a synchronisation
            await asyncio.sleep(max(0.0, frozen_s - (loop.time() - frozen_at)))
        finally:
            since = len(b.kernel.lines)
            b.kernel.process.send_signal(signal.SIGCONT)
        assert loop.time() - frozen_at >= 2 * SAF_S

        # A2/A4: the pump's real state is read, within the link timeout of waking up
        await b.kernel.line(
            lambda line: "event=alarm_raised type=pump_alarm rule=A1" in line,
            bound_s=LINK_TIMEOUT_S + SLACK_S,
        )
        assert logged(b.kernel, since, "pump-1", "(comm_timeout)"), "the log names no alarm"
        view = await b.view()
        assert view["state"] != "running", view["state"]
        assert view["state_reason"]["rule"] in {"A1", "A2"}, view["state_reason"]
        assert "comm_timeout" in set(view["pump_alarms"]) | set(view["latched_alarms"]), view
        assert view["rate_ml_h"] == 0.0
        shown = next(p for p in await b.kernel.api("GET", "/pumps", "viewer") if p["id"] == PUMP)
        assert (shown["state"], shown["alarms"]) == ("alarm", ["comm_timeout"]), shown

        # A1: no resume while the pump's alarm stands, and the refusal starts nothing
        refused = await b.act("resume")
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"]["rule"] in {"A1", "A2"}, refused.text
        await b.at_pump({"clear_alarm": "comm_timeout"})  # the nurse at the pump
        cleared = await b.acknowledge_all()
        assert "comm_timeout" in cleared, cleared
        assert (await b.pump())["state"] == "stopped"  # acknowledging never starts it (A1)

        resumed_at, before_resume = b.clock.now(), len(b.kernel.lines)
        resumed = await b.act("resume")
        if resumed.status_code == 409:  # A4: a stop with no record why; the nurse says why
            assert resumed.json()["detail"]["rule"] == "A4", resumed.text
            resumed = await b.act("resume", {"reaction": False})
        assert resumed.status_code == 200, resumed.text
        pump = await b.until_pump(lambda p: p["state"] == "running")
        assert pump["rate_ml_h"] == before  # A1: the same rate, never higher
        assert logged(b.kernel, since, "type=resumed", "rule=A1")

        history = changes(await b.pump())
        stopped = next(c for c in history if c.cause == "stop")
        assert rate_before_stop(history) == before
        assert [c.cause for c in between(history, stopped.at, resumed_at)] == [
            "alarm",  # the pump's own watchdog, then only the nurse at the pump:
            "clear_alarm",  # nothing the kernel sent started or changed it (A2, A4)
        ], between(history, stopped.at, resumed_at)
        assert all(c.rate <= before for c in history if c.at > stopped.at)
        check_ladder(history)
        # A2: from waking up to the nurse's resume, the kernel sent nothing that runs the pump
        assert set(sent(b.kernel, since, before_resume)) <= {"stop"}


# -- the serial line unplugged -----------------------------------------------------------------


async def test_A2_A3_serial_line_unplugged_loses_the_link_then_the_owed_stop_lands(
    tmp_path: Path,
) -> None:
    """A2, A3, L1, I2: the line unplugged under a running infusion. Communication loss within
    the link timeout, on /health, the view and the log; no step while the link is lost (L1,
    A2); a reaction pressed meanwhile is answered at once, 202 naming A3; plugged back, the
    kernel never starts or speeds up the pump (A2), sends the stop it owes until the pump
    confirms it (A3), and the nurse's resume runs it at half the rate (I2)."""
    loop = asyncio.get_running_loop()
    async with bench(tmp_path, FACTOR_UNPLUGGED, SAF_LONG_S) as b:
        await b.start_infusion()
        running = await b.until_pump(lambda p: p["state"] == "running")
        before = running["rate_ml_h"]
        step_due = (await b.view())["next_escalation_at"]
        assert step_due is not None
        step_due_at = datetime.fromisoformat(step_due)

        unplugged_at, unplugged_clinical = loop.time(), b.clock.now()
        since = len(b.kernel.lines)
        await b.at_pump({"fault": "drop_connection", "value": True})
        unplugged_by = loop.time()  # the line is dead by now: no reply leaves the pump after
        try:
            lost = await b.kernel.line(
                lambda line: "kind=comm_loss" in line,
                bound_s=LINK_TIMEOUT_S + WATCHDOG_TICK_S + SLACK_S,
            )
            lost_after_s = loop.time() - unplugged_at
            assert "rule=A2" in lost, lost
            assert lost_after_s >= LINK_TIMEOUT_S - POLL_INTERVAL_S - SLACK_S, lost_after_s
            assert step_due_at > b.clock.now(), "the step fell due before the link was lost"

            # A2: shown on /health (a lost link is reported, not a 503) and in the view
            asked = loop.time()
            health = await b.health()
            assert health.status_code == 200, health.text
            (shown,) = health.json()["pumps"]
            assert shown["connected"] is False, shown
            # the age of the last contact counts from the unplug (same monotonic clock): a
            # reply already on its way when the line was cut is heard at most a poll later (a
            # fresh-clone run saw 5.474 s against 5.481 s), nothing after that resets it
            assert shown["last_contact_age_s"] >= asked - unplugged_by - POLL_INTERVAL_S, shown
            view = await b.view()
            assert view["link_lost"] is True
            assert "comm_loss" in view["latched_alarms"], view["latched_alarms"]
            assert view["state_reason"]["rule"] == "A2", view["state_reason"]

            # L1, A2: the step falls due while the link is lost, and is not taken
            async def past_the_step() -> bool:
                return await b.kernel_now() > step_due_at + timedelta(minutes=2)

            await until(past_the_step)
            assert not logged(b.kernel, since, "type=rate_step"), "a step with the link lost"
            assert sent(b.kernel, since) == []
            assert (await b.view())["next_escalation_at"] is None  # suspended, not overdue

            # A3: a reaction pressed while unplugged is answered at once: the stop is unconfirmed
            pressed = loop.time()
            answer = await b.act("reactions", {"grade": 2, "signs": ["other"]})
            answered_s = loop.time() - pressed
            assert answer.status_code == 202, answer.text
            reply = answer.json()
            assert (reply["stop"], reply["alarm"]) == ("unconfirmed", "A3"), reply
            assert reply["message"] == "Pump did not stop: clamp the line"
            assert answered_s <= AT_ONCE_S, answered_s
            assert (await b.pump())["state"] == "running"  # the stop could not reach it

            # the stop is retried, then unconfirmed: the loudest alarm, on the view
            await b.kernel.line(lambda line: "op=stop fate=command_unconfirmed" in line)
            view = await b.view()
            assert (view["stop_unconfirmed"], view["stop_pending"]) == (True, True), view
            assert view["state_reason"]["rule"] == "A3", view["state_reason"]
            assert "pump_not_stopped" in view["latched_alarms"], view["latched_alarms"]
            refused = await b.act("resume")
            assert refused.status_code == 409, refused.text
            assert refused.json()["detail"]["rule"] == "A3", refused.text
        finally:
            plugged_at = b.clock.now()
            await b.at_pump({"fault": "drop_connection", "value": False})

        # A3: the stop it owes is sent again and lands; A2: nothing else is sent
        await b.until_pump(lambda p: p["state"] != "running", bound_s=LINK_TIMEOUT_S + SLACK_S)
        await b.kernel.line(lambda line: "op=stop fate=command_confirmed" in line)

        async def settled() -> bool:
            view = await b.view()
            return not view["stop_pending"] and not view["link_lost"]

        await until(settled)
        view = await b.view()
        assert view["stop_unconfirmed"] is False
        assert "comm_loss" in view["latched_alarms"]  # A2: held until a nurse clears it
        assert view["state"] == "paused", view["state"]
        assert logged(b.kernel, since, "type=link_restored", "rule=A2")
        history = changes(await b.pump())
        since_unplug = [c for c in history if c.at > unplugged_clinical]
        assert [c.cause for c in since_unplug] == ["stop"], since_unplug
        assert since_unplug[0].at >= plugged_at - TOLERANCE  # it could land only once plugged
        assert set(sent(b.kernel, since)) == {"stop"}  # A2: only the stop it owes, resent (A3)

        # the nurse's way back: clear the lost link and the stop's alarm (its fate is known
        # now, A1), resume at half the rate (I2)
        assert sorted(await b.acknowledge_all()) == ["comm_loss", "pump_not_stopped"]
        assert (await b.pump())["state"] == "stopped"  # clearing never starts it (A1)
        resumed = await b.act("resume")
        assert resumed.status_code == 200, resumed.text
        pump = await b.until_pump(lambda p: p["state"] == "running")
        assert pump["rate_ml_h"] == before / 2  # I2, never the step it never took
        check_ladder(changes(pump))


async def test_A2_L1_a_line_unplugged_before_the_kernels_first_status_read_raises_comm_loss(
    tmp_path: Path,
) -> None:
    """A2, L1: the infusion starts before the kernel's first status read of the pump (its
    polls a minute apart), so the start's read-backs are the only contact; the line is then
    unplugged. A running pump that answered every command is shown linked, not offline; the
    communication-loss alarm comes within the link timeout; the step that falls due while
    the link is lost is not taken (no command to a pump that does not answer).

    Regression: the supervisor counted only status reads as valid contact (`link_up`, A2's
    freshness), so such a pump was shown offline, its lost link was never raised (the guard
    of `on_link_lost`), and the ladder stepped into the dead line."""
    loop = asyncio.get_running_loop()
    async with bench(tmp_path, FACTOR_UNPLUGGED, SAF_LONG_S, poll_interval_s=60.0) as b:
        await b.start_infusion()
        await b.until_pump(lambda p: p["state"] == "running")
        (shown,) = await b.kernel.api("GET", "/pumps", "viewer")
        assert (shown["connected"], shown["state"]) == (True, "running"), shown
        step_due_at = datetime.fromisoformat((await b.view())["next_escalation_at"])

        unplugged_at, since = loop.time(), len(b.kernel.lines)
        await b.at_pump({"fault": "drop_connection", "value": True})
        try:
            lost = await b.kernel.line(
                lambda line: "kind=comm_loss" in line or "type=rate_step" in line,
                bound_s=LINK_TIMEOUT_S + WATCHDOG_TICK_S + SLACK_S,
            )
            assert "kind=comm_loss rule=A2" in lost, lost
            assert loop.time() - unplugged_at >= LINK_TIMEOUT_S - SLACK_S
            view = await b.view()
            assert (view["link_lost"], view["state_reason"]["rule"]) == (True, "A2"), view

            async def past_the_step() -> bool:
                return await b.kernel_now() > step_due_at + timedelta(minutes=2)

            await until(past_the_step)
            assert not logged(b.kernel, since, "type=rate_step"), "a step with the link lost"
            assert sent(b.kernel, since) == []
        finally:
            await b.at_pump({"fault": "drop_connection", "value": False})
        assert (await b.pump())["rate_ml_h"] == 50.0


# -- both cores busy during a press ------------------------------------------------------------


def _cpu_ticks(pid: int) -> int:
    """User + system clock ticks `pid` has used (/proc/PID/stat)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


@asynccontextmanager
async def busy_cores(n: int) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """`n` processes each eating a core, running once each has used CPU; killed on exit."""
    burners: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(n):
            burner = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
            burners.append(burner)

        async def burning() -> bool:
            return all(_cpu_ticks(p.pid) >= 10 for p in burners)

        await until(burning)
        yield burners
    finally:
        for burner in burners:
            if burner.returncode is None:
                burner.kill()
        for burner in burners:
            async with asyncio.timeout(BOUND_S):
                await burner.wait()


async def test_I1_L1_a_press_while_other_processes_eat_every_core_stops_within_the_bound(
    tmp_path: Path,
) -> None:
    """I1, L1: with every core eaten by other processes, the ladder steps no earlier than a full
    interval (L1), and a nurse's reaction press is answered within `stop_answer_s` with the
    stop confirmed at the pump (I1): the pump stopped within that bound of the press."""
    loop = asyncio.get_running_loop()
    async with bench(tmp_path, FACTOR_BUSY, DEFAULT_SAFE_MODE_S) as b:
        await b.start_infusion()
        async with busy_cores(max(2, os.cpu_count() or 2)) as burners:
            # a step of the ladder under the load
            await b.kernel.line(lambda line: "op=set_rate fate=command_confirmed" in line)
            stepped = await b.until_pump(lambda p: p["state"] == "running" and p["rate_ml_h"] > 50)
            pressed_at, pressed = b.clock.now(), loop.time()
            answer = await b.act("reactions", {"grade": 1, "signs": ["other"]})
            answered_s = loop.time() - pressed
            at_the_pump = await b.pump()
            assert all(p.returncode is None for p in burners), "the load ended before the press"
        assert answer.status_code == 201, answer.text
        reply = answer.json()
        assert reply["stop"] == "confirmed", reply
        assert reply["stop_confirmed_ms"] <= STOP_ANSWER_S * 1000, reply
        assert answered_s <= STOP_ANSWER_S, answered_s
        assert at_the_pump["state"] != "running", at_the_pump["state"]

        history = changes(at_the_pump)
        stop = next(c for c in history if c.cause == "stop")
        assert stop.at >= pressed_at - TOLERANCE, "the pump was stopped before the press"
        assert (stop.at - pressed_at).total_seconds() / FACTOR_BUSY <= STOP_ANSWER_S
        assert rate_before_stop(history) == stepped["rate_ml_h"]
        check_ladder(history)  # L1: no rise before a full interval, under the load too


# -- the log's reader stops reading -------------------------------------------------------------


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: a process writing to it blocks at once (a journal
    or terminal that stopped reading the service's output)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"." * 4096)
    os.set_blocking(write_end, True)
    return read_end, write_end


def _drain(fd: int, into: bytearray) -> None:
    """Read `fd` to its end (a thread of the test's: the reader that comes back)."""
    while chunk := os.read(fd, 65536):
        into += chunk


async def test_I1_a_log_reader_that_stops_reading_never_holds_the_kernel_or_a_stop(
    tmp_path: Path,
) -> None:
    """Issue 18 (nothing slow on a stop's path), I1: the kernel's stdout and stderr are a pipe
    nobody reads and whose buffer is full, as when the journal or a terminal stops reading.
    Before, the first log line blocked the kernel's event loop: it never answered. Its log now
    goes through a bounded queue to a thread of its own (pumpctl/cli/logsetup.py): the kernel
    comes up, starts the infusion, and a reaction pressed meanwhile stops the pump and is
    answered 201 within the stop bound; once someone reads the pipe again the kernel's lines
    are there (queued, not lost)."""
    read_end, write_end = _full_pipe()
    out = bytearray()
    drained: asyncio.Task[None] | None = None
    try:
        async with bench(tmp_path, FACTOR_FROZEN, SAF_LONG_S, output=write_end) as b:
            await b.start_infusion()
            loop = asyncio.get_running_loop()
            pressed_at = loop.time()
            answer = await b.act("reactions", {"grade": 2, "signs": ["other"]})
            answered_s = loop.time() - pressed_at
            assert answer.status_code == 201, answer.text
            assert answer.json()["stop"] == "confirmed"
            assert answered_s < STOP_ANSWER_S + SLACK_S, answered_s
            await b.until_pump(lambda p: p["state"] != "running")
            drained = asyncio.create_task(asyncio.to_thread(_drain, read_end, out))
            await until(lambda: _holds(b"type=confirmed_running" in out))
            await until(lambda: _holds(b"reaction" in out.lower()))
    finally:
        os.close(write_end)
    if drained is not None:
        async with asyncio.timeout(BOUND_S):
            await drained  # the kernel gone and the write end closed: the pipe ends
    os.close(read_end)


async def _holds(value: bool) -> bool:
    return value
