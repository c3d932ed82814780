"""`pumpctl simulate serial|mqtt`: serve simulated pumps until stopped."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Serve simulated pumps (serial pseudo-terminal or MQTT).", no_args_is_help=True
)
