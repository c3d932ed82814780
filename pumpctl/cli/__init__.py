"""The `pumpctl` command line: the one place that wires the layers together. Kept thin."""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from pumpctl.cli import audit, db, plan, pump, serve, simulate, user

app = typer.Typer(
    name="pumpctl",
    help="Supervise infusion pumps through the daratumumab rate ladder and IRR rules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("plan")(plan.plan)
app.add_typer(simulate.app, name="simulate")
app.add_typer(pump.app, name="pump")
app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(user.app, name="user")
app.command("serve")(serve.serve)
app.command("demo")(serve.demo)
app.command("web")(serve.web)


def main() -> None:
    """Console-script entry point: usage errors are one line on stderr, never a traceback."""
    try:
        status = app(standalone_mode=False)
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
