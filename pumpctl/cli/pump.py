"""`pumpctl pump status|stop|run|rate`: talk to one pump directly (for biomedical engineers)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer

from drivers.base import Pump, PumpError, PumpStatus, PumpTimeout
from drivers.serial import DEFAULT_BAUD, SerialLine, SerialPump

app = typer.Typer(
    help="Talk to one pump over serial or MQTT; prints its answer as JSON.", no_args_is_help=True
)


SerialOption = Annotated[
    str | None,
    typer.Option(
        "--serial", help="Serial port: a device, a pseudo-terminal path or socket://HOST:PORT."
    ),
]
AddressOption = Annotated[
    int, typer.Option("--address", min=0, max=99, help="The pump's address on the line.")
]
BaudOption = Annotated[int, typer.Option("--baud", help="Serial line speed (300-19200).")]
MqttOption = Annotated[str | None, typer.Option("--mqtt", help="MQTT broker, HOST:PORT.")]
PumpOption = Annotated[str | None, typer.Option("--pump", help="The pump's id (with --mqtt).")]


#: The commands without an argument, with their help; `rate` (it takes RATE) is defined below.
OPERATIONS = {
    "status": "Read the pump's status with queries only (never changes its mode or program).",
    "stop": "Stop the pump and print the status read after.",
    "run": "Start the pump (at its programmed rate) and print the status read after.",
}


def _operate(
    ctx: typer.Context,
    *,
    serial: SerialOption = None,
    address: AddressOption = 0,
    baud: BaudOption = DEFAULT_BAUD,
    mqtt: MqttOption = None,
    pump: PumpOption = None,
) -> None:
    """Carry out the command it was invoked as (one of OPERATIONS) on one pump."""
    operation = ctx.info_name
    assert operation in OPERATIONS, operation
    _main(operation, None, serial=serial, address=address, baud=baud, mqtt=mqtt, pump=pump)


# Typer has no options shared by subcommands, and options of a group callback would have to
# come before the subcommand (`pumpctl pump --serial URL status`): one body serves all three.
for _name, _help in OPERATIONS.items():
    app.command(_name, help=_help)(_operate)


@app.command()
def rate(
    rate_ml_h: Annotated[float, typer.Argument(metavar="RATE", help="Rate in ml/h.")],
    *,
    serial: SerialOption = None,
    address: AddressOption = 0,
    baud: BaudOption = DEFAULT_BAUD,
    mqtt: MqttOption = None,
    pump: PumpOption = None,
) -> None:
    """Program the rate (ml/h) and print the status read after."""
    _main("rate", rate_ml_h, serial=serial, address=address, baud=baud, mqtt=mqtt, pump=pump)


def _main(
    operation: str,
    rate_ml_h: float | None,
    *,
    serial: str | None,
    address: int,
    baud: int,
    mqtt: str | None,
    pump: str | None,
) -> None:
    # the JSON answer and its warnings say it all; keep the drivers' log off the terminal
    logging.getLogger("drivers").setLevel(logging.ERROR)
    if (serial is None) == (mqtt is None):
        raise typer.BadParameter("give exactly one of --serial URL and --mqtt HOST:PORT")
    if mqtt is not None and not pump:
        raise typer.BadParameter("--mqtt needs --pump ID")
    if serial is not None and pump is not None:
        raise typer.BadParameter("--pump goes with --mqtt; a serial pump is chosen by --address")
    try:
        if serial is not None:
            result = asyncio.run(_serial(operation, rate_ml_h, serial, address, baud))
        else:
            assert mqtt is not None
            assert pump is not None
            result = asyncio.run(_mqtt(operation, rate_ml_h, mqtt, pump))
    except (PumpError, ValueError) as exc:
        typer.echo(f"pumpctl pump {operation}: {exc}", err=True)
        raise typer.Exit(1) from None
    warnings = result.get("warnings")
    for warning in warnings if isinstance(warnings, list) else []:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(result))


async def _act(driver: Pump, operation: str, rate_ml_h: float | None) -> PumpStatus:
    if operation == "stop":
        return await driver.stop()
    if operation == "run":
        return await driver.run()
    if operation == "rate":
        assert rate_ml_h is not None
        return await driver.set_rate(rate_ml_h)
    last = driver.last_status
    return last if last is not None else await driver.read_status()


async def _serial(
    operation: str, rate_ml_h: float | None, url: str, address: int, baud: int
) -> dict[str, object]:
    """Talk to one New Era pump in the framing it is in; never sends SAF."""
    async with SerialLine(url, baud=baud) as line:
        driver = SerialPump(
            line, address, pump_id=f"serial:{url}#{address}", safe_mode_s=None, poll_interval_s=None
        )
        async with driver:
            status = await _act(driver, operation, rate_ml_h)
    result: dict[str, object] = {
        **status.to_json(),
        "transport": "serial",
        "port": url,
        "address": address,
        "firmware": driver.firmware,
        "safe_mode_s": driver.safe_mode_s,
        "acknowledged_alarms": [a.value for a in driver.acknowledged],
    }
    warnings = []
    if driver.acknowledged:
        names = ", ".join(a.value for a in driver.acknowledged)
        warnings.append(f"this command acknowledged the pump's alarm ({names})")
    if driver.safe_mode_s:
        warnings.append(
            f"the pump is in safe mode (SAF {driver.safe_mode_s}): its watchdog is running and"
            f" will stop the pump if nothing talks to it for {driver.safe_mode_s} s"
        )
    if warnings:
        result["warnings"] = warnings
    return result


async def _mqtt(
    operation: str, rate_ml_h: float | None, broker: str, pump_id: str
) -> dict[str, object]:
    from drivers.mqtt import MqttPump, parse_broker  # noqa: PLC0415 (only the branch in use)

    host, port = parse_broker(broker)
    driver = MqttPump(pump_id, host, port)
    try:
        async with driver:  # connecting reads the status once
            status = await _act(driver, operation, rate_ml_h)
    except PumpTimeout as exc:
        if driver.last_status is None:  # nothing retained either: most likely a wrong id
            raise PumpTimeout(
                pump_id,
                operation,
                f"no answer, and no status was ever published on {driver.topics.status}"
                " (is the pump id right, and the pump connected to this broker?)",
            ) from exc
        raise
    return {**status.to_json(), "transport": "mqtt", "broker": f"{host}:{port}"}
