"""Drive the infusion machine through clinical time with a small, obedient pump (tests only).

`Scenario` feeds events at its own `now`, carries every command to `FakePump`, and (unless told
not to) feeds back the pump's read-back at the same instant, as the controller's ledger would.
`advance` moves time deadline by deadline (and to the moment the pump has delivered its VTBI),
so a test proves what the machine does on time alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import settings

from pumpctl.core.history import CourseState, InfusionRecord, Sign
from pumpctl.core.machine import (
    AuditEvent,
    ClearVolume,
    Command,
    CommandConfirmed,
    Decision,
    Event,
    InfusionPhase,
    InfusionState,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    RaiseAlarm,
    Run,
    SetRate,
    SetVtbi,
    Start,
    StopPump,
    TimePassed,
    decide,
    initial_state,
    next_deadline,
)
from pumpctl.core.protocol import Protocol, RowKind
from pumpctl.protocols import load_protocol

#: Under `--hypothesis-profile=mutation` (scripts/mutation, docs/mutation.md) every surviving
#: mutant runs every test that reaches it, so the property tests draw at most this many examples
#: (and stateful runs take at most this many steps): a mutant that only a rare example would
#: catch counts as surviving there, so the reported kill rate errs low, never high.
MUTATION_EXAMPLES = 12

#: `Scenario.advance_to` fails when time has not moved after this many events at one instant.
_STALL_LIMIT = 3


def examples(n: int) -> int:
    """`n` examples (or steps), or at most `MUTATION_EXAMPLES` under the mutation profile."""
    if settings.get_current_profile_name() == "mutation":
        return min(n, MUTATION_EXAMPLES)
    return n


T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
OTHER = frozenset({Sign.OTHER})
# Read from the checkout by path: a `tests/config` folder can shadow the `config` package.
REVIEW = load_protocol("daratumumab")
LABEL = load_protocol("daratumumab-label")


def minutes(n: float) -> timedelta:
    """A span of `n` minutes."""
    return timedelta(minutes=n)


def planned(
    kind: RowKind = RowKind.FIRST,
    protocol: Protocol = REVIEW,
    course: CourseState | None = None,
    infusion_number: int | None = None,
    prepared_at: datetime = T0,
) -> InfusionState:
    """A planned infusion on `kind`'s row of `protocol`."""
    number = {RowKind.FIRST: 1, RowKind.SECOND: 2, RowKind.SUBSEQUENT: 3}[kind]
    return initial_state(
        protocol,
        infusion_number=infusion_number or number,
        course=course if course is not None else clean_course(number),
        bag_prepared_at=prepared_at,
    )


def running_first(at: datetime, **changes: object) -> InfusionState:
    """A course's first infusion (the review's protocol), its bag prepared and started at
    `at`, the pump running at 50 ml/h; then `changes`."""
    state = initial_state(REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=at)
    base: dict[str, object] = {
        "phase": InfusionPhase.RUNNING,
        "started_at": at,
        "pump_running": True,
        "pump_rate_ml_h": 50.0,
        "rate_ml_h": 50.0,
    }
    return state.updated({**base, **changes})


def clean_course(infusion_number: int) -> CourseState:
    """A course whose earlier infusions had no reaction and reached 200 ml/h (L4, L5 allow all)."""
    return CourseState(
        infusions=tuple(
            InfusionRecord(infusion_number=n, highest_rate_ml_h=200.0)
            for n in range(1, infusion_number)
        )
    )


def facts(
    audit: tuple[AuditEvent, ...] | list[AuditEvent],
) -> list[tuple[str, str, dict[str, object]]]:
    """An audit trail as (type, rule, data): what a test pins of it, fact by fact.

    Every audit event carries the instant it happened: one without a time fails here."""
    assert all(isinstance(a.at, datetime) for a in audit), audit
    return [(a.type.value, a.rule.value, dict(a.data)) for a in audit]


@dataclass
class FakePump:
    """A pump that does what it is told, at once, and infuses at its rate while running."""

    running: bool = False
    rate: float = 0.0
    vtbi: float = 0.0
    volume: float = 0.0  # since the VTBI was programmed

    def apply(self, command: Command) -> bool:
        """Carry out one command; True if the pump was told something."""
        match command:
            case SetVtbi(volume_ml=ml):
                self.vtbi, self.volume = ml, 0.0
            case ClearVolume():
                self.volume = 0.0
            case SetRate(rate_ml_h=rate):
                self.rate = rate
            case Run():
                self.running = True
            case StopPump():
                self.running = False
            case _:
                return False
        return True

    def infuse(self, span: timedelta) -> None:
        """Infuse for `span` (up to the VTBI)."""
        if self.running:
            hours = span.total_seconds() / 3600
            self.volume = min(self.vtbi, self.volume + self.rate * hours)

    def until_done(self) -> timedelta | None:
        """Time until the VTBI is delivered, if running."""
        if not self.running or self.rate <= 0:
            return None
        return timedelta(hours=max(0.0, self.vtbi - self.volume) / self.rate)

    def confirm(self, command_id: int) -> CommandConfirmed:
        """The ledger's confirmation of `command_id`: the read-back after carrying it out."""
        return CommandConfirmed(
            command_id=command_id,
            running=self.running,
            rate_ml_h=self.rate if self.running else 0.0,
            volume_infused_ml=self.volume,
            vtbi_ml=self.vtbi,
        )

    def readback(self) -> Event:
        """What the pump reads back now."""
        if self.running:
            return PumpConfirmedRunning(rate_ml_h=self.rate, volume_infused_ml=self.volume)
        return PumpConfirmedStopped(volume_infused_ml=self.volume)


@dataclass
class Scenario:
    """A machine, a pump and a clock: send events, advance time, read what happened."""

    state: InfusionState
    now: datetime = T0
    pump: FakePump = field(default_factory=FakePump)
    auto_confirm: bool = True
    decisions: list[Decision] = field(default_factory=list)
    # (running_min, rate) of every SetRate, in order: the rate profile.
    profile: list[tuple[float, float]] = field(default_factory=list)

    def send(self, event: Event) -> Decision:
        """Feed `event` at `now`; carry out its commands and feed back the read-back."""
        decision = self._decide(event)
        self._carry(decision)
        return decision

    def _decide(self, event: Event) -> Decision:
        decision = decide(self.state, event, self.now)
        self.state = decision.state
        self.decisions.append(decision)
        for command in decision.commands:
            if isinstance(command, SetRate):
                self.profile.append((round(self.state.running_min, 6), command.rate_ml_h))
        return decision

    def _carry(self, decision: Decision) -> None:
        """Carry each command out and, like the controller's ledger, report its fate (A3)."""
        for command in decision.pump_commands:
            self.pump.apply(command)
            if self.auto_confirm:
                self.send(self.pump.confirm(command.id))

    def advance(self, span: timedelta) -> None:
        """Move time forward by `span`, stopping at every deadline and at VTBI delivered."""
        self.advance_to(self.now + span)

    def advance_to(self, until: datetime) -> None:
        """Move time to `until`, stopping at every deadline and at VTBI delivered.

        A deadline the machine leaves due at the instant it was just told of is a machine that
        does not move forward: that fails here at once, rather than looping until a timeout.
        """
        stalled = 0
        while self.now < until:
            due = next_deadline(self.state)
            done = self.pump.until_done()
            step_to = until
            if due is not None and due.at < step_to:
                step_to = due.at
            completes = done is not None and self.now + done <= step_to
            if completes and done is not None:
                step_to = self.now + done
            stalled = stalled + 1 if step_to <= self.now else 0
            if stalled > _STALL_LIMIT:
                raise AssertionError(f"machine: {due} is still due at {self.now.isoformat()}")
            self.pump.infuse(step_to - self.now)
            self.now = max(step_to, self.now)
            if completes:
                self.pump.running = False
                self.send(PumpCompleted(volume_infused_ml=self.pump.volume))
            else:
                self.send(TimePassed())

    def run_to_end(self, limit: timedelta = timedelta(hours=30)) -> None:
        """Advance until the infusion is terminal (or `limit` has passed)."""
        end = self.now + limit
        while not self.state.terminal and self.now < end:
            self.advance_to(min(end, self.now + timedelta(hours=1)))

    def phase(self) -> InfusionPhase:
        """The infusion's phase now (a call, so type checkers do not keep an earlier narrowing)."""
        return self.state.phase

    @property
    def commands(self) -> list[Command]:
        """Every command so far."""
        return [c for d in self.decisions for c in d.commands]

    @property
    def audit(self) -> list[AuditEvent]:
        """Every audit event so far."""
        return [a for d in self.decisions for a in d.audit]

    def alarms(self) -> list[RaiseAlarm]:
        """Every alarm the machine raised so far."""
        return [c for c in self.commands if isinstance(c, RaiseAlarm)]

    def mark(self) -> int:
        """A position in the decision log (for `since`)."""
        return len(self.decisions)

    def since(self, mark: int) -> list[Command]:
        """Commands issued after `mark`."""
        return [c for d in self.decisions[mark:] for c in d.commands]


def started(kind: RowKind = RowKind.FIRST, **kwargs: object) -> Scenario:
    """A scenario whose infusion has been started and confirmed running."""
    scenario = Scenario(planned(kind, **kwargs))  # type: ignore[arg-type]
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    return scenario
