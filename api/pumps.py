"""The service's pumps from its settings: real drivers for configured links (serial lines are
shared by the pumps on them, MQTT pumps by one connection per broker and credentials: a pump
URL's own user and password, else the settings' `mqtt_username`/`mqtt_password`). Simulated pumps
come from `api.sim` instead (the only part of the service that imports the simulator).

A pump that cannot be reached at the start (a serial device missing, a pump silent, a broker down
or refusing the login, an MQTT pump offline) opens with its link lost (A2) and its driver keeps
trying; only a configuration that can never work refuses the start."""

from __future__ import annotations

from contextlib import AsyncExitStack

from drivers.base import Pump
from drivers.mqtt import MqttBus, MqttPump
from drivers.serial import SerialLine, SerialPump
from pumpctl.settings import Settings

__all__ = ["open_pumps"]


async def open_pumps(settings: Settings, stack: AsyncExitStack) -> dict[str, tuple[Pump, str]]:
    """Open every configured pump; {pump id: (driver, transport)}. Closed with `stack`."""
    lines: dict[tuple[str, int], SerialLine] = {}
    buses: dict[tuple[str, int, str | None, str | None], MqttBus] = {}
    pumps: dict[str, tuple[Pump, str]] = {}
    for link in settings.pumps:
        pump: Pump
        if link.transport == "serial":
            key = (link.port, link.baud)
            if key not in lines:
                lines[key] = await stack.enter_async_context(SerialLine(link.port, baud=link.baud))
            pump = SerialPump(
                lines[key],
                link.address,
                pump_id=link.id,
                safe_mode_s=link.safe_mode_s,
                link_timeout_s=settings.link_timeout_s,
                command_timeout_s=settings.command_timeout_s,  # A3: the stop's read-back
            )
        else:
            username, password = settings.mqtt_credentials(link)
            login = (link.host, link.mqtt_port, username, password)
            if login not in buses:
                buses[login] = await stack.enter_async_context(
                    MqttBus(
                        link.host,
                        link.mqtt_port,
                        username=username,
                        password=password,
                        tls_context=settings.mqtt_tls(),
                    )
                )
            pump = MqttPump(
                link.pump or link.id,
                bus=buses[login],
                prefix=settings.mqtt_prefix,
                link_timeout_s=settings.link_timeout_s,
                # a broker down or refusing, or a pump offline, is a lost link (A2), never a
                # service that does not start: the other pumps need supervising
                start_unlinked=True,
            )
        pumps[link.id] = (await stack.enter_async_context(pump), link.transport)
    return pumps
