"""`pumpctl simulate serial|mqtt`: serve simulated pumps until stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
from typing import Annotated

import typer

from drivers.mqtt import DEFAULT_PREFIX, MQTT_CONTRACT, parse_broker
from drivers.mqtt.codec import MAX_HEARTBEAT_S
from pumpctl.clock import RealClock, ScaledClock, parse_clock
from simulator.control import ControlServer
from simulator.model import PumpModel
from simulator.mqtt_server import HEARTBEAT_S, MqttSimulator
from simulator.mqtt_server import serve as serve_mqtt
from simulator.serial_server import serve as serve_serial

app = typer.Typer(
    help="Serve simulated pumps (serial pseudo-terminal or MQTT).", no_args_is_help=True
)


@app.command("mqtt")
def mqtt(
    broker: Annotated[str, typer.Option(help="The MQTT broker, HOST:PORT.")],
    pumps: Annotated[int, typer.Option(min=1, max=100, help="How many pumps.")] = 1,
    clock: Annotated[str, typer.Option(help="Clinical clock: real or scaled:FACTOR.")] = "real",
    prefix: Annotated[str, typer.Option(help="Topic prefix.")] = DEFAULT_PREFIX,
    control_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Control port on loopback (0: any free).")
    ] = 0,
    *,
    heartbeat: Annotated[
        float,
        typer.Option(min=0.01, max=MAX_HEARTBEAT_S, help="Seconds between two heartbeat statuses."),
    ] = HEARTBEAT_S,
    contract: Annotated[
        int,
        typer.Option(
            min=1,
            max=MQTT_CONTRACT,
            help="MQTT contract spoken (1: a pump not yet updated, docs/interfaces.md 2).",
        ),
    ] = MQTT_CONTRACT,
) -> None:
    """Serve simulated MQTT pumps pump-1..pump-N until SIGINT/SIGTERM.

    The first line printed is JSON naming the broker, each pump's topics and the control
    interface (simulator/control.py: inject faults and alarms, one JSON object per line).
    Each pump publishes its status on every change and as a heartbeat every `--heartbeat`
    seconds (contract 2), on a phase of its own.
    """
    try:
        host, port = parse_broker(broker)
        pump_clock = parse_clock(clock)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not isinstance(pump_clock, RealClock | ScaledClock):
        raise typer.BadParameter("--clock must be real or scaled:FACTOR for a served simulator")
    models = [PumpModel(f"pump-{n}", pump_clock) for n in range(1, pumps + 1)]
    try:
        simulator = MqttSimulator(
            models, host, port, prefix=prefix, heartbeat_s=heartbeat, contract=contract
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with ControlServer({m.pump_id: m for m in models}, port=control_port) as control:

            def announce(sim: MqttSimulator) -> None:
                topics = {pid: dataclasses.asdict(s.topics) for pid, s in sim.servers.items()}
                line = {
                    "transport": "mqtt",
                    "broker": f"{host}:{port}",
                    "prefix": prefix,
                    "pumps": topics,
                    "control": control.address,
                }
                typer.echo(json.dumps(line))

            await serve_mqtt(simulator, stop, announce=announce)

    try:
        asyncio.run(main())
    except TimeoutError:
        typer.echo(f"pumpctl simulate mqtt: broker {host}:{port} not reachable", err=True)
        raise typer.Exit(1) from None


@app.command("serial")
def serial(
    pumps: Annotated[
        int, typer.Option(min=1, max=100, help="How many pumps (addresses 0..N-1).")
    ] = 1,
    baud: Annotated[int, typer.Option(help="Baud rate whose wire time is emulated.")] = 19200,
    clock: Annotated[str, typer.Option(help="Clinical clock: real or scaled:FACTOR.")] = "real",
    control_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Control port on loopback (0: any free).")
    ] = 0,
    wire_time: Annotated[
        bool, typer.Option(help="Delay replies by their time on the wire at --baud.")
    ] = True,
    *,
    tcp: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve the line on this loopback TCP port instead (0: any free)."
        ),
    ] = None,
) -> None:
    """Serve simulated New Era pumps on a pseudo-terminal (or TCP port) until SIGINT/SIGTERM.

    The first line printed is the pseudo-terminal's path, or `socket://127.0.0.1:PORT` with
    --tcp (open it as the serial port); the second is the control interface,
    `control: tcp://127.0.0.1:PORT` (simulator/README.md).
    """
    if baud not in (300, 1200, 2400, 9600, 19200):
        raise typer.BadParameter(f"--baud {baud}: a New Era pump supports 300-19200")
    try:
        pump_clock = parse_clock(clock)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not isinstance(pump_clock, RealClock | ScaledClock):
        raise typer.BadParameter("--clock must be real or scaled:FACTOR for a served simulator")
    models = [PumpModel(f"ne-{a:02d}", pump_clock, address=a) for a in range(pumps)]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_serial(
            models,
            stop,
            announce=typer.echo,
            baud=baud,
            emulate_wire_time=wire_time,
            control_port=control_port,
            tcp_port=tcp,
        )

    asyncio.run(main())
