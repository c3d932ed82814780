"""The infusion state machine: `decide(state, event, now) -> Decision` (pure; L, I and A rules).

The controller feeds it events (nurse actions, pump facts, the passing of clinical time) and
carries out the commands it returns; the audit events go to the store. The machine never reads
a clock: `now` is an argument, and `next_deadline(state)` tells the time driver when to call
again with `TimePassed`. A deadline that passed unnoticed is processed at its own instant on the
next call, so a late driver changes nothing but the moment the commands leave.

One module per concern (the rule families they hold in brackets):

- `state`: the infusion's state, a validated value (phases, the open reaction, A3's pending
  command); `initial_state`, `infusion_record` (I10).
- `events`: what the controller feeds in (nurse actions, pump facts, time).
- `outputs`: commands for the pump, alarms, audit events, the `Decision`.
- `deadlines`: what falls due on time alone (L1, L9, I4, I5).
- `decide`: the entry check, the dispatch, catching up with time; total (never raises).
- `ladder`: start and escalation (L1, L2, L3, L6, L7), running on at the same rate (A1).
- `reactions`: reactions, reassessments, resume and withdrawal (I1-I11).
- `pump`: pump facts: statuses and the one reconcile, command fates, pump alarms, the link,
  restarts, power resets, completion, clearing alarms (A1-A4, L3).
- `volumes`: over- and under-infusion, bad reads, baselines (L3, A1, A2, A4).
- `alarms`: the alarms the machine raises, which suspend escalation, who clears them (A1),
  every alarm's priority (A8).
- `bag`: a new bag (L9).
- `context`: the per-call accumulator and the primitives shared by the handlers (A3 ids).
"""

from pumpctl.core.machine.alarms import (
    CLINICIAN_ONLY,
    PRIORITY,
    PUMP_ALARMS,
    SUSPENDING,
    MachineAlarm,
    Priority,
    alarm_rule,
    priority_of,
)
from pumpctl.core.machine.deadlines import Deadline, DeadlineKind, deadlines, next_deadline
from pumpctl.core.machine.decide import decide
from pumpctl.core.machine.events import (
    AcknowledgeAlarm,
    BagReplaced,
    ClearAlarm,
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    Event,
    Hold,
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    PumpPowerReset,
    ReactionReported,
    Reassessed,
    Release,
    Resolved,
    Restarted,
    ResumeRequested,
    SafetyEnvelopeTripped,
    Start,
    Stop,
    TimePassed,
)
from pumpctl.core.machine.outputs import (
    AuditEvent,
    AuditType,
    ClearVolume,
    Command,
    Decision,
    PumpCommand,
    RaiseAlarm,
    Refusal,
    Run,
    SetRate,
    SetVtbi,
    StopPump,
)
from pumpctl.core.machine.pump import lost_program
from pumpctl.core.machine.state import (
    TERMINAL_PHASES,
    AlarmMark,
    CommandOp,
    InfusionPhase,
    InfusionState,
    OpenReaction,
    RatePoint,
    SentCommand,
    infusion_record,
    initial_state,
)
from pumpctl.core.machine.volumes import COMPLETION_TOLERANCE_ML, goes_backwards

__all__ = [
    "CLINICIAN_ONLY",
    "COMPLETION_TOLERANCE_ML",
    "PRIORITY",
    "PUMP_ALARMS",
    "SUSPENDING",
    "TERMINAL_PHASES",
    "AcknowledgeAlarm",
    "AlarmMark",
    "AuditEvent",
    "AuditType",
    "BagReplaced",
    "ClearAlarm",
    "ClearVolume",
    "Command",
    "CommandConfirmed",
    "CommandDenied",
    "CommandOp",
    "CommandUnconfirmed",
    "Deadline",
    "DeadlineKind",
    "Decision",
    "Event",
    "Hold",
    "InfusionPhase",
    "InfusionState",
    "LinkLost",
    "LinkRestored",
    "MachineAlarm",
    "OpenReaction",
    "Priority",
    "PumpAlarmCleared",
    "PumpAlarmRaised",
    "PumpCommand",
    "PumpCompleted",
    "PumpConfirmedRunning",
    "PumpConfirmedStopped",
    "PumpPowerReset",
    "RaiseAlarm",
    "RatePoint",
    "ReactionReported",
    "Reassessed",
    "Refusal",
    "Release",
    "Resolved",
    "Restarted",
    "ResumeRequested",
    "Run",
    "SafetyEnvelopeTripped",
    "SentCommand",
    "SetRate",
    "SetVtbi",
    "Start",
    "Stop",
    "StopPump",
    "TimePassed",
    "alarm_rule",
    "deadlines",
    "decide",
    "goes_backwards",
    "infusion_record",
    "initial_state",
    "lost_program",
    "next_deadline",
    "priority_of",
]
