"""`pumpctl plan`: print the planned infusion (bag, rates, steps, duration, rules).

Exit codes: 0 planned; 1 refused by a rule (L4/L5 without history, I8 withdrawn course);
2 bad arguments or input files. Errors are one line on stderr, never a traceback.
`--json` prints `bag_ml`, `initial_rate_ml_h`, `dose_mg` (null without `--weight`), `steps`
(`start_min`, `rate_ml_h`, `bound_by`, `why`), `duration_min`, `rules`, plus `protocol`,
`infusion_number`, `day`, `row`, `row_reasons`, `duration_hm` and `premedication`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer

from pumpctl.core import planner
from pumpctl.core.dose import DoseError, compute_dose, premedication
from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.history_entry import HistoryEntryError, parse_history
from pumpctl.core.planner import MissingHistoryError, Plan, PlanningError, is_split_first_dose
from pumpctl.core.protocol import Protocol, ProtocolError
from pumpctl.protocols import DEFAULT_PROTOCOL, load_protocol

__all__ = ["assumed_clean_history", "plan", "plan_json"]

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"pumpctl plan: {message}", err=True)
    raise typer.Exit(code)


def assumed_clean_history(protocol: Protocol, before: int) -> CourseState:
    """Infusions 1..before-1 as if each ran its planned ladder with no reaction."""
    history = CourseState()
    for number in range(1, before):
        days: tuple[Literal[1, 2] | None, ...] = (
            (1, 2) if is_split_first_dose(protocol, number) else (None,)
        )
        for day in days:
            earlier = planner.plan(protocol, number, history, split_day=day)
            top = max(step.rate_ml_h for step in earlier.steps)
            history = history.record(
                InfusionRecord(infusion_number=number, highest_rate_ml_h=top, day=day)
            )
    return history


def _hm(minutes: float) -> str:
    whole = round(minutes)
    return f"{whole // 60} h {whole % 60:02d} min"


def plan_json(result: Plan, history: CourseState) -> dict[str, object]:
    """The `--json` document of a plan."""
    return {
        "protocol": result.protocol,
        "infusion_number": result.infusion_number,
        "day": result.split_day,
        "row": result.row.kind.value,
        "row_reasons": [r.to_json() for r in result.row.rules],
        "bag_ml": result.bag_ml,
        "initial_rate_ml_h": result.initial_rate_ml_h,
        "dose_mg": result.dose_mg,
        "steps": [step.to_json() for step in result.steps],
        "duration_min": round(result.duration_min, 2),
        "duration_hm": _hm(result.duration_min),
        "rules": list(result.rules),
        "premedication": [m.to_json() for m in premedication(result.infusion_number, history)],
    }


def _print_table(
    result: Plan, protocol: Protocol, history: CourseState, weight_kg: float | None
) -> None:
    day = f", day {result.split_day} of 2" if result.split_day is not None else ""
    lines = [
        f"Protocol   {protocol.name}: {protocol.title}",
        f"Infusion   {result.infusion_number}{day}: {result.row.kind.value}-infusion row",
    ]
    lines += [f"           {r.rule}: {r.reason}" for r in result.row.rules]
    lines.append(f"Bag        {result.bag_ml:g} ml (L3: VTBI {result.bag_ml:g} ml)")
    if weight_kg is not None:
        dose = compute_dose(
            protocol, weight_kg, mg_per_kg=result.row.mg_per_kg, bag_ml=result.bag_ml
        )
        lines.append(f"Dose       {dose.dose_mg:g} mg")
        lines += [f"           {line}" for line in dose.sheet()]
    lines.append(
        f"Duration   {_hm(result.duration_min)} ({result.duration_min:.2f} min of running time, "
        "no reaction)"
    )
    lines += ["", f"  {'start':>11}  {'ml/h':>7}  bound by"]
    lines += [
        f"  {_hm(s.start_min):>11}  {s.rate_ml_h:7.1f}  {s.decision.bound_by.rule}: "
        f"{s.decision.bound_by.reason}"
        for s in result.steps
    ]
    lines += ["", "Premedication about 1 h before the start (D3):"]
    for med in premedication(result.infusion_number, history):
        optional = " (optional)" if med.optional else ""
        note = f" [{med.note}]" if med.note else ""
        lines.append(f"  {med.drug} {med.dose} {med.route.value}{optional}{note}")
    lines += ["", f"Rules      {', '.join(result.rules)}"]
    typer.echo("\n".join(lines))


def _history(
    protocol: Protocol, infusion: int, history_file: Path | None, assume_clean: bool
) -> CourseState:
    if history_file is not None and assume_clean:
        _fail("--history and --assume-no-reactions exclude each other", EXIT_USAGE)
    if history_file is not None:
        try:
            text = history_file.read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"--history {history_file}: cannot read: {exc.strerror or exc}", EXIT_USAGE)
        try:
            return parse_history(text, f"--history {history_file}")
        except HistoryEntryError as exc:
            _fail(str(exc), EXIT_USAGE)
    if assume_clean:
        return assumed_clean_history(protocol, infusion)
    return CourseState()


def plan(
    *,
    infusion: Annotated[
        int, typer.Option("--infusion", help="Infusion number (1 = the first).", show_default=False)
    ],
    history_file: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="JSON file of earlier infusions (format: config/README.md). L4/L5 read it.",
            dir_okay=False,
        ),
    ] = None,
    assume_no_reactions: Annotated[
        bool,
        typer.Option(
            "--assume-no-reactions",
            help="Plan as if every earlier infusion ran its ladder with no reaction.",
        ),
    ] = False,
    weight: Annotated[
        float | None, typer.Option("--weight", help="Weight in kg: adds the dose (D1).")
    ] = None,
    protocol_name: Annotated[
        str, typer.Option("--protocol", help="Shipped protocol name, or a path to a .toml file.")
    ] = DEFAULT_PROTOCOL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    day: Annotated[
        int | None,
        typer.Option(
            "--day",
            help="Day 1 or 2 of a split first dose (split protocol, infusion 1; default 1).",
        ),
    ] = None,
) -> None:
    """Print the plan of one infusion: bag (VTBI), rate steps, duration, dose, rules."""
    if infusion < 1:
        _fail(f"--infusion: must be 1 or more, not {infusion}", EXIT_USAGE)
    if weight is not None and not weight > 0:
        _fail(f"--weight: must be a positive number of kg, not {weight:g}", EXIT_USAGE)
    try:
        protocol = load_protocol(protocol_name)
    except ProtocolError as exc:
        _fail(f"--protocol: {exc}", EXIT_USAGE)
    history = _history(protocol, infusion, history_file, assume_no_reactions)
    if infusion >= 2 and history_file is None and not assume_no_reactions:
        rule = "L4" if infusion == 2 else "L5"
        _fail(
            f"{rule}: infusion {infusion} depends on earlier infusions' reactions: "
            "give --history FILE or --assume-no-reactions",
            EXIT_REFUSED,
        )
    try:
        result = planner.plan(protocol, infusion, history, weight_kg=weight, split_day=day)
    except MissingHistoryError as exc:
        _fail(str(exc), EXIT_REFUSED)
    except DoseError as exc:
        _fail(f"--weight: {exc}", EXIT_USAGE)
    except PlanningError as exc:
        code = EXIT_REFUSED if str(exc).startswith("I8") else EXIT_USAGE
        message = str(exc).replace("day:", "--day:", 1) if str(exc).startswith("day:") else str(exc)
        _fail(message, code)
    if as_json:
        typer.echo(json.dumps(plan_json(result, history), indent=2))
    else:
        _print_table(result, protocol, history, weight)
