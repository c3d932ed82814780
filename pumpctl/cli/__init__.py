"""The `pumpctl` command line: the one place that wires the layers together. Kept thin."""

from __future__ import annotations

import typer

from pumpctl.cli import plan, pump, simulate

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


def main() -> None:
    """Console-script entry point."""
    app()
