"""The `pumpctl` command line: the one place that wires the layers together. Kept thin."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.exceptions import TyperException

#: Every command, in the order `pumpctl --help` lists them: (name, the module under
#: pumpctl.cli that holds it, whether it is a group of subcommands). Only the module of the
#: command asked for is imported: a simulator (`pumpctl simulate`) then starts without the
#: kernel's stack (FastAPI, SQLAlchemy, Alembic: about a second of CPU per process, measured
#: with `python -X importtime`), which every test and bench that starts one pays.
COMMANDS: tuple[tuple[str, str, bool], ...] = (
    ("plan", "plan", False),
    ("simulate", "simulate", True),
    ("pump", "pump", True),
    ("db", "db", True),
    ("audit", "audit", True),
    ("user", "user", True),
    ("serve", "serve", False),
    ("demo", "serve", False),
    ("web", "web", False),
)


def build(only: str | None = None) -> typer.Typer:
    """The command line with every command, or with `only` that one (a known name)."""
    app = typer.Typer(
        name="pumpctl",
        help="Supervise infusion pumps through the daratumumab rate ladder and IRR rules.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _pumpctl() -> None:
        """(A group even with one command registered: `pumpctl web` stays `pumpctl web`.)"""

    for name, module_name, group in COMMANDS:
        if only not in (None, name):
            continue
        module = importlib.import_module(f"pumpctl.cli.{module_name}")
        if group:
            app.add_typer(module.app, name=name)
        else:
            app.command(name)(getattr(module, name))
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole command line, for tests that invoke it in-process
        return build()
    raise AttributeError(name)


def main() -> None:
    """Console-script entry point: usage errors are one line on stderr, never a traceback."""
    try:
        asked = sys.argv[1] if len(sys.argv) > 1 else None
        known = asked in {name for name, _module, _group in COMMANDS}
        status = build(asked if known else None)(standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("pumpctl: aborted\n")
        sys.exit(130)
    except TyperException as exc:  # click's usage errors, as typer vendors them
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "pumpctl"
        if message := exc.format_message():  # empty when the help was shown instead
            sys.stderr.write(f"{where}: {message}\n")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(status if isinstance(status, int) else 0)
