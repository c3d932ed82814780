"""A small controller process for the crash tests (a test harness, not production code).

    python tests/helpers/controller_process.py DB_URL SERIAL_PATH ADDRESS SAFE_MODE_S CLOCK

It opens the store at DB_URL (already migrated), a `SerialLine` on SERIAL_PATH and a
`SerialPump` at ADDRESS with `safe_mode_s=SAFE_MODE_S`, one `PumpSupervisor` recording into the
store (`StoreRecorder`) under a `Controller`, runs `recover` (A4) and prints one JSON line
`{"ready": true, "recovered": [...]}`. Then it reads JSON-line commands on stdin and answers each
with one JSON line on stdout:

- `{"op": "plan"}`: patient, course and infusion 1 (daratumumab) in the store, attached;
- `{"op": "start"}`, `{"op": "reaction", "grade": 2}`, `{"op": "resume", "no_reaction": false}`,
  `{"op": "clear_alarm", "alarm": "pump_stopped"}`: one event each, answered with the decision
  (`refusal` with its rule, the audit types, the phase);
- `{"op": "idle"}`: answered once no command is queued or in flight (bounded);
- `{"op": "state"}`: the infusion's state JSON.

Every record of the `pumpctl.controller` logger (INFO and up) is printed as `log: MESSAGE`,
flushed, so a test can SIGKILL the process at a seeded point of its work. CLOCK is a
`parse_clock` spec; the tests use `scaled:F@EPOCH`, shared with the simulator.

Harness-only hook: with `PUMPCTL_HARNESS_HOLD_COMMIT=FIFO` in the environment, the first
accepted `ReactionReported` decision is not committed at once: the process prints
`about-to-commit` and holds that record (and every later one, in order) until a line can be read
from FIFO. The event loop goes on meanwhile, so the reaction's stop, handed to the driver before
the recorder is called, reaches the pump; a SIGKILL then lands between the stop and its commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from drivers.serial import SerialLine, SerialPump
from pumpctl.clock import Clock, parse_clock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.controller.recording import StoreRecorder, recover
from pumpctl.core.history import Sign
from pumpctl.core.machine import (
    Decision,
    Event,
    ReactionReported,
    ResumeRequested,
    Start,
    initial_state,
)
from pumpctl.protocols import load_protocol
from pumpctl.store import Store

HOLD_ENV = "PUMPCTL_HARNESS_HOLD_COMMIT"
IDLE_BOUND_S = 20.0
#: Seconds between saves of decisions that changed only time: every one is saved here, so a
#: crash loses no running time the tests would have to allow for.
QUIET_SAVE_S = 0.0


def emit(line: str) -> None:
    """One line on stdout, flushed at once (the test reads it to decide when to kill)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _PrintLogs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit(f"log: {record.getMessage()}")


@dataclass
class HoldingRecorder:
    """The harness's hook: holds the first reaction's commit until a line comes on `fifo`."""

    inner: StoreRecorder
    fifo: str
    held: list[tuple[str, Event, Decision]] | None = None
    _release: asyncio.Task[None] | None = field(default=None, repr=False)

    def __call__(self, infusion_id: str, event: Event, decision: Decision) -> None:
        if self.held is not None:
            self.held.append((infusion_id, event, decision))
            return
        if isinstance(event, ReactionReported) and decision.refusal is None:
            self.held = [(infusion_id, event, decision)]
            emit("about-to-commit")
            self._release = asyncio.get_running_loop().create_task(self._wait_then_commit())
            return
        self.inner(infusion_id, event, decision)

    async def _wait_then_commit(self) -> None:
        await asyncio.to_thread(_read_line, self.fifo)
        held, self.held = self.held or [], None
        for record in held:
            self.inner(*record)


def _read_line(path: str) -> str:
    with open(path, encoding="utf-8") as fifo:
        return fifo.readline()


@dataclass
class Harness:
    """The controller under test and the store it records into."""

    store: Store
    clock: Clock
    supervisor: PumpSupervisor
    course_id: int | None = None

    def answer(self, decision: Decision) -> dict[str, Any]:
        refusal = decision.refusal
        return {
            "ok": refusal is None,
            "refusal": None
            if refusal is None
            else {"rule": refusal.rule, "reason": refusal.reason, "kind": refusal.kind},
            "audit": [a.type.value for a in decision.audit],
            "phase": decision.state.phase.value,
        }

    def course(self) -> Any:
        state = self.supervisor.state
        assert state is not None
        return state.course

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0911
        supervisor = self.supervisor
        match request.get("op"):
            case "plan":
                now = self.clock.now()
                patient = self.store.create_patient("MRN-CRASH", 70.0, actor="dr", at=now)
                course = self.store.create_course(patient, "daratumumab", actor="dr", at=now)
                state = initial_state(
                    load_protocol("daratumumab"),
                    infusion_number=1,
                    course=self.store.course_history(course),
                    bag_prepared_at=now,
                )
                pump_id = supervisor.pump.pump_id
                infusion = self.store.create_infusion(course, pump_id, state, at=now, actor="dr")
                supervisor.attach(str(infusion), self.store.load_infusion(infusion).state)
                return {"ok": True, "infusion": infusion}
            case "start":
                return self.answer(supervisor.submit(Start(actor="nurse", course=self.course())))
            case "reaction":
                event = ReactionReported(
                    grade=int(request["grade"]), signs=frozenset({Sign.OTHER}), actor="nurse"
                )
                return self.answer(supervisor.submit(event))
            case "resume":
                no_reaction = bool(request.get("no_reaction", False))
                resume = ResumeRequested(actor="nurse", no_reaction=no_reaction)
                return self.answer(supervisor.submit(resume))
            case "clear_alarm":
                alarm = str(request["alarm"])
                return self.answer(supervisor.clear_alarm(alarm, actor="nurse", role="nurse"))
            case "idle":
                async with asyncio.timeout(IDLE_BOUND_S):
                    await supervisor.wait_idle()
                return {"ok": True}
            case "state":
                state = supervisor.state
                return {"ok": True, "state": None if state is None else json.loads(state.to_json())}
        return {"ok": False, "error": f"op: unknown {request.get('op')!r}"}


async def main(url: str, path: str, address: int, safe_mode_s: int, clock_spec: str) -> None:
    handler = _PrintLogs()
    logger = logging.getLogger("pumpctl.controller")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    clock = parse_clock(clock_spec)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    with Store.open(url) as store:
        async with (
            SerialLine(path) as line,
            SerialPump(line, address, pump_id=f"ne-{address:02d}", safe_mode_s=safe_mode_s) as pump,
        ):
            recorder = StoreRecorder(store, pump.pump_id, quiet_save_s=QUIET_SAVE_S)
            fifo = os.environ.get(HOLD_ENV)
            supervisor = PumpSupervisor(
                pump,
                clock,
                recorder=HoldingRecorder(recorder, fifo) if fifo else recorder,
                poll_interval_s=0.2,
                keep_decisions=False,
            )
            harness = Harness(store, clock, supervisor)
            async with Controller(clock, [supervisor]):
                recovered = await recover(store, {pump.pump_id: supervisor})
                if recovered:
                    stored = store.load_infusion(int(recovered[0]))
                    harness.course_id = stored.course_id
                emit(json.dumps({"ready": True, "recovered": recovered}))
                while line_in := await stdin.readline():
                    emit(json.dumps(await harness.handle(json.loads(line_in))))


if __name__ == "__main__":
    db_url, serial_path, pump_address, safe_s, spec = sys.argv[1:6]
    asyncio.run(main(db_url, serial_path, int(pump_address), int(safe_s), spec))
