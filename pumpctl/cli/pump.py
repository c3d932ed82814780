"""`pumpctl pump status|stop|run|rate`: talk to one pump directly (for biomedical engineers)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Talk to one pump over serial or MQTT; prints its answer as JSON.", no_args_is_help=True
)
