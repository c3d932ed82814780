"""The controller side of the MQTT contract (interfaces.md section 2) for one pump.

A pump reaches the broker through an `MqttBus` (drivers/mqtt/bus.py): its own, private one (one
connection per pump, `MqttPump(pump_id, host, port)`), or one shared with other pumps
(`MqttPump(pump_id, bus=bus)`, a fleet on one connection). Either way the bus subscribes the
pump's status (retained) and ack topics, routes what arrives to it, and reconnects with capped
exponential backoff and jitter when the broker goes away. Commands are published QoS 1 with the
controller's ledger id (a fresh one without it) and matched to their ack by id (`pending[id] =
future`, removed in `finally`); they fail fast with `PumpConnectionError` while the link is down
or the pump is offline (A2), and with `PumpTimeout` when no valid ack arrives within the command
timeout (A3); a command whose publish is in flight when the link drops fails at once with
`PumpConnectionError` (the publish ends with the connection, bus.py `LinkClient`), never waits
out its timeout. Link health is the bus's connection plus the pump's own freshness and last will.

Status by push (contract 2, interfaces.md section 2): the pump publishes its status on change
and as a heartbeat every `heartbeat_s`, which each status names. `fresh_status` answers from the
last status pushed (or carried by an ack) while it is fresh, and asks the pump (`status`) only
once it is overdue: no live contact for `OVERDUE_FACTOR` x the heartbeat, capped at half the link
timeout. A contract-1 pump (no heartbeat named) is taken to beat every `CONTRACT_1_HEARTBEAT_S`
while running and is asked whenever overdue otherwise, as it always was asked. A2 does not rest
on the asks: `is_stale` (the link timeout) holds whether or not one was sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid

import aiomqtt

from drivers.backoff import RECONNECT_MAX_S, RECONNECT_MIN_S, backoff_delay
from drivers.base import (
    LINK_TIMEOUT_S,
    STOP_ATTEMPTS,
    Pump,
    PumpCommandRejected,
    PumpConfigError,
    PumpConnectionError,
    PumpState,
    PumpStatus,
    PumpTimeout,
)
from drivers.mqtt.bus import TCP_NODELAY_OPTION, MqttBus, require_positive
from drivers.mqtt.codec import (
    DEFAULT_PREFIX,
    AckPayload,
    CommandPayload,
    OfflinePayload,
    Op,
    PayloadError,
    StatusPayload,
    Topics,
    decode_ack,
    decode_status,
)

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CONTRACT_1_HEARTBEAT_S",
    "LINK_TIMEOUT_S",
    "OVERDUE_FACTOR",
    "TCP_NODELAY_OPTION",
    "MqttBus",
    "MqttPump",
    "backoff_delay",
    "parse_broker",
]

_log = logging.getLogger(__name__)

#: A3: a command not acknowledged within this many wire seconds is unconfirmed.
COMMAND_TIMEOUT_S = 2.0
#: A3: resends (same id) prompted by malformed acks, within one command timeout.
MAX_RESENDS = 2
#: A pushed status is overdue once no live status or ack came for this many heartbeats.
OVERDUE_FACTOR = 1.5
#: The heartbeat assumed of a contract-1 pump (it publishes at least once a second while
#: running, and names no heartbeat).
CONTRACT_1_HEARTBEAT_S = 1.0


def parse_broker(text: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); ValueError naming what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"broker address must be HOST:PORT with a port 1-65535, got {text!r}")
    return host.strip("[]"), int(port_text)


class MqttPump(Pump):
    """A pump reached through an MQTT broker. Use as an async context manager.

    `MqttPump(pump_id, host, port)` opens a connection of its own; `MqttPump(pump_id, bus=bus)`
    shares the started `MqttBus` `bus` with other pumps (the connection settings, `client_id`,
    `reconnect_*`, `username` and `password`, are then the bus's).
    """

    def __init__(
        self,
        pump_id: str,
        host: str | None = None,
        port: int = 1883,
        *,
        bus: MqttBus | None = None,
        prefix: str = DEFAULT_PREFIX,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        link_timeout_s: float = LINK_TIMEOUT_S,
        client_id: str | None = None,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        username: str | None = None,
        password: str | None = None,
        start_unlinked: bool = False,
    ) -> None:
        try:
            self.topics = Topics.for_pump(pump_id, prefix)
        except ValueError as exc:
            raise PumpConfigError(pump_id, "configure", str(exc)) from None
        require_positive(
            pump_id,
            command_timeout_s=command_timeout_s,
            link_timeout_s=link_timeout_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )
        if (host is None) == (bus is None):
            raise PumpConfigError(pump_id, "configure", "give either a broker host or a bus")
        if bus is not None and client_id is not None:
            raise PumpConfigError(pump_id, "configure", "on a bus the client_id is the bus's")
        if bus is not None and (username is not None or password is not None):
            raise PumpConfigError(pump_id, "configure", "on a bus the credentials are the bus's")
        if password is not None and username is None:
            raise PumpConfigError(pump_id, "configure", "a password needs a user name")
        super().__init__(pump_id, link_timeout_s=link_timeout_s)
        self._owns_bus = bus is None
        if bus is None:
            assert host is not None
            bus = MqttBus(
                host,
                port,
                client_id=client_id or f"pumpctl-{pump_id}-{uuid.uuid4().hex[:8]}",
                link_timeout_s=link_timeout_s,
                reconnect_min_s=reconnect_min_s,
                reconnect_max_s=reconnect_max_s,
                username=username,
                password=password,
            )
        self.bus = bus
        self.host = bus.host
        self.port = bus.port
        self.client_id = bus.client_id
        self.command_timeout_s = command_timeout_s
        self._connecting = False
        self._pending: dict[str, asyncio.Future[AckPayload | None]] = {}
        self._last_seq: int | None = None  # highest seq accepted since the pump came online
        self._ever_linked = False
        self.reconnections = 0  # links regained after the first (for supervision)
        #: the contract the pump's statuses speak (None before the first) and the heartbeat
        #: its last status named (None for contract 1)
        self.contract: int | None = None
        self.heartbeat_s: float | None = None
        self.asks = 0  # `status` commands sent (a status overdue, or a caller asking now)
        #: connect() that finds no link (broker down or refusing, pump offline or silent)
        #: returns with the pump unlinked (A2), its bus retrying, instead of raising.
        self.start_unlinked = start_unlinked

    # -- link ----------------------------------------------------------------------------

    @property
    def _client(self) -> aiomqtt.Client | None:
        """The bus's live client while this pump is linked on it, else None."""
        return self.bus.client if self.connected else None

    async def connect(self) -> None:
        """Attach to the bus (starting it if it is the pump's own), wait for the link (link
        timeout), then read the status."""
        if self._connecting:
            raise RuntimeError(f"pump {self.pump_id}: already connected")
        self._connecting = True
        if self._owns_bus:
            self.bus.start()
        try:
            await self.bus.attach(self)
            if self.start_unlinked and self.bus.last_failure and not self.bus.connected:
                # the bus already failed to link for an earlier pump: no second wait per pump
                self._start_unlinked(self.bus.last_failure)
                return
            async with asyncio.timeout(self.link_timeout_s):
                await self._linked.wait()
        except TimeoutError:
            why = f"broker {self.host}:{self.port} not reachable within {self.link_timeout_s} s"
            if self.bus.auth_failed and self.bus.last_failure:  # reachable, but refusing us
                why = f"{self.bus.last_failure} (no link within {self.link_timeout_s} s)"
            if self.start_unlinked:
                self._start_unlinked(why)
                return
            await self.close()
            raise PumpConnectionError(self.pump_id, "connect", why) from None
        except BaseException:
            await self.close()
            raise
        try:
            await self.read_status()
        except (PumpConnectionError, PumpTimeout) as exc:
            if self.start_unlinked:
                self._start_unlinked(str(exc))
                return
            await self.close()
            raise
        except BaseException:
            await self.close()
            raise

    def _start_unlinked(self, why: str) -> None:
        _log.warning(
            "pump %s: starts with its link lost (A2), the bus keeps trying: %s", self.pump_id, why
        )

    async def close(self) -> None:
        """Let in-flight stops finish, then leave the bus: a shared one unsubscribes this pump's
        topics and serves on; the pump's own disconnects cleanly."""
        await self._finish_stops()
        if not self._connecting:
            return
        self._connecting = False
        await self.bus.detach(self, unsubscribe=not self._owns_bus)
        if self._owns_bus:
            await self.bus.close()
        self._set_linked(linked=False)
        self._fail_pending("link closed")

    def _bus_linked(self) -> None:
        """The bus subscribed this pump on a live connection: the link is up."""
        self._last_seq = None  # the retained status starts a new sequence
        if self._ever_linked:
            self.reconnections += 1
            _log.info("pump %s: broker link recovered", self.pump_id)
        self._ever_linked = True
        self._set_linked(linked=True)

    def _bus_lost(self, reason: str) -> None:
        """The bus lost its connection (or this pump left it): pending commands fail."""
        self._set_linked(linked=False)
        self._fail_pending(reason)

    def _fail_pending(self, reason: str) -> None:
        for cmd_id, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(PumpConnectionError(self.pump_id, cmd_id, reason))

    # -- incoming ------------------------------------------------------------------------

    def _dispatch(self, message: aiomqtt.Message) -> None:
        """Route one message; a malformed payload is logged and never acted on."""
        data = message.payload
        if not isinstance(data, bytes | bytearray):
            _log.warning("pump %s: non-bytes payload on %s ignored", self.pump_id, message.topic)
            return
        is_ack = message.topic.matches(self.topics.ack)
        try:
            if is_ack:
                self._on_ack(decode_ack(bytes(data)))
            elif message.topic.matches(self.topics.status):
                self._on_status(decode_status(bytes(data)), live=not message.retain)
        except PayloadError as exc:
            _log.warning("pump %s: malformed payload ignored: %s", self.pump_id, exc)
            if is_ack:  # whose ack it was is unknowable: let every pending command ask again
                for future in self._pending.values():
                    if not future.done():
                        future.set_result(None)

    def _on_status(self, payload: StatusPayload | OfflinePayload, *, live: bool) -> None:
        if isinstance(payload, OfflinePayload):
            self._went_offline()
            return
        self._accept(payload, live=live)

    def _on_ack(self, ack: AckPayload) -> None:
        self._accept(ack.status, live=True)
        future = self._pending.get(ack.id)
        if future is None or future.done():
            _log.info("pump %s: ack for unknown or answered id %s ignored", self.pump_id, ack.id)
            return
        future.set_result(ack)

    def _accept(self, payload: StatusPayload, *, live: bool) -> None:
        """Record a status unless it is older than one already seen (seq, QoS 1 duplicates)."""
        if live:
            self._touch()
        if self._last_seq is not None and payload.seq <= self._last_seq:
            return
        self._learn_contract(payload)
        if self._last_seq is not None and payload.seq != self._last_seq + 1:
            _log.info(
                "pump %s: status seq jumped %d -> %d", self.pump_id, self._last_seq, payload.seq
            )
        self._last_seq = payload.seq
        self._broadcast.publish(payload.to_status(self.pump_id, self._last_contact or 0.0))

    def _learn_contract(self, payload: StatusPayload) -> None:
        """Note the contract and heartbeat the pump speaks; say so when it changes."""
        heartbeat = payload.heartbeat_s
        if payload.version == self.contract and heartbeat == self.heartbeat_s:
            return
        self.contract, self.heartbeat_s = payload.version, heartbeat
        if heartbeat is None:
            _log.info(
                "pump %s speaks MQTT contract %d (no heartbeat): its status is asked for when"
                " overdue, %.2f s after the last contact",
                self.pump_id,
                payload.version,
                self.overdue_s,
            )
            return
        _log.debug(  # the usual case: one line per pump at every start would be noise
            "pump %s speaks MQTT contract %d, heartbeat %g s: its status is asked for only when"
            " overdue, %.2f s after the last contact",
            self.pump_id,
            payload.version,
            heartbeat,
            self.overdue_s,
        )
        if heartbeat > self.link_timeout_s / 3:
            _log.warning(
                "pump %s: heartbeat %g s is more than a third of the link timeout (%g s, A2):"
                " its status is asked for whenever it is %.2f s old",
                self.pump_id,
                heartbeat,
                self.link_timeout_s,
                self.overdue_s,
            )

    @property
    def overdue_s(self) -> float:
        """Wire seconds after the last live contact at which the pump's status is overdue:
        `OVERDUE_FACTOR` heartbeats, never more than half the link timeout (A2)."""
        heartbeat = self.heartbeat_s if self.heartbeat_s is not None else CONTRACT_1_HEARTBEAT_S
        return min(OVERDUE_FACTOR * heartbeat, self.link_timeout_s / 2)

    def status_overdue(self, now: float | None = None) -> bool:
        """True when the status pushed last cannot stand for the pump's state now: none yet,
        the pump offline or unlinked, or no live contact within `overdue_s`."""
        last, contact = self._broadcast.last, self._last_contact
        if last is None or contact is None or not self.connected:
            return True
        if last.state is PumpState.OFFLINE:
            return True
        if now is None:
            now = asyncio.get_running_loop().time()
        return now - contact > self.overdue_s

    async def fresh_status(self) -> PumpStatus:
        """The last status pushed while it is fresh; asked for (`status`) once it is overdue."""
        last = self._broadcast.last
        if last is not None and not self.status_overdue():
            return last
        return await self.read_status()

    def _went_offline(self) -> None:
        """The pump's last will: it is offline (A2); pending commands cannot be answered."""
        self._last_seq = None  # a pump coming back may start counting again
        last = self._broadcast.last
        self._broadcast.publish(
            PumpStatus(
                pump_id=self.pump_id,
                state=PumpState.OFFLINE,
                rate_ml_h=last.rate_ml_h if last else 0.0,
                vtbi_ml=last.vtbi_ml if last else 0.0,
                volume_infused_ml=last.volume_infused_ml if last else 0.0,
                alarms=last.alarms if last else frozenset(),
                last_contact=self._last_contact or 0.0,
            )
        )
        self._fail_pending("pump went offline (last will)")

    # -- commands ------------------------------------------------------------------------

    async def _command(
        self, operation: str, op: Op, command_id: str | None, **parameter: float
    ) -> PumpStatus:
        """Publish one command and wait for its ack (A3); returns the status the ack carries.

        The command's `id` is `command_id` (the ledger's), or a fresh one without it. A
        malformed ack is never acted on; it only prompts a resend of the pending commands under
        the same id (the pump re-acknowledges a known id without executing it again), at most
        MAX_RESENDS times, all within the one command timeout.
        """
        cmd_id = command_id or uuid.uuid4().hex
        for name, value in parameter.items():
            if not math.isfinite(value):
                raise PumpCommandRejected(
                    self.pump_id,
                    operation,
                    f"{name} must be a finite number, got {value}",
                    "OOR",
                    command_id=cmd_id,
                )
        command = CommandPayload(id=cmd_id, op=op, **parameter)
        client = self._client
        if client is None:
            raise PumpConnectionError(
                self.pump_id,
                operation,
                f"no link to broker {self.host}:{self.port}",
                command_id=cmd_id,
            )
        last = self._broadcast.last
        if last is not None and last.state is PumpState.OFFLINE:
            raise PumpConnectionError(
                self.pump_id, operation, "pump is offline (last will)", command_id=cmd_id
            )
        loop = asyncio.get_running_loop()
        resends = 0
        try:
            async with asyncio.timeout(self.command_timeout_s):
                send = True
                while True:
                    future: asyncio.Future[AckPayload | None] = loop.create_future()
                    self._pending[command.id] = future
                    if send:  # bounded by the command timeout (bus.py: never by aiomqtt's)
                        await client.publish(self.topics.cmd, command.to_bytes(), qos=1)
                    ack = await future
                    if ack is not None:
                        break
                    send = resends < MAX_RESENDS  # garbled: ask again, a bounded number of times
                    resends += send
        except TimeoutError:
            raise PumpTimeout(
                self.pump_id,
                operation,
                f"no valid ack within {self.command_timeout_s} s",
                command_id=cmd_id,
            ) from None
        except aiomqtt.MqttError as exc:
            raise PumpConnectionError(
                self.pump_id, operation, f"publish failed: {exc}", command_id=cmd_id
            ) from None
        except PumpConnectionError as exc:
            raise PumpConnectionError(
                self.pump_id, operation, exc.message, command_id=cmd_id
            ) from None
        finally:
            self._drop_pending(cmd_id)
        status = ack.status.to_status(self.pump_id, self._last_contact or 0.0)
        if not ack.ok:
            code = ack.error or "?"
            raise PumpCommandRejected(
                self.pump_id,
                operation,
                ack.message or f"refused ({code})",
                code=code,
                command_id=cmd_id,
            )
        return status

    def _drop_pending(self, cmd_id: str) -> None:
        """Forget command `cmd_id`'s ack future. One the link's loss failed while the command's
        publish was in flight was never awaited: its exception is taken, or asyncio would log it
        as never retrieved (the publish's own `MqttError` says why the command failed)."""
        future = self._pending.pop(cmd_id, None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()

    async def read_status(self, *, command_id: str | None = None) -> PumpStatus:
        """Ask the pump for its state now (`status` command)."""
        self.asks += 1
        return await self._command("read_status", Op.STATUS, command_id)

    async def set_rate(self, rate_ml_h: float, *, command_id: str | None = None) -> PumpStatus:
        """Program the rate (ml/h); allowed while running."""
        return await self._command("set_rate", Op.SET_RATE, command_id, rate_ml_h=rate_ml_h)

    async def set_vtbi(self, vtbi_ml: float, *, command_id: str | None = None) -> PumpStatus:
        """Program the volume to be infused (ml)."""
        return await self._command("set_vtbi", Op.SET_VTBI, command_id, vtbi_ml=vtbi_ml)

    async def run(self, *, command_id: str | None = None) -> PumpStatus:
        """Start infusing."""
        return await self._command("run", Op.START, command_id)

    async def clear_volume(self, *, command_id: str | None = None) -> PumpStatus:
        """Reset the volume infused to zero."""
        return await self._command("clear_volume", Op.CLEAR_VOLUME, command_id)

    async def _stop_once(self, command_id: str | None) -> tuple[PumpStatus, str | None]:
        """One `stop` command; its ack carries the read-back (A3)."""
        status = await self._command("stop", Op.STOP, command_id)
        if status.state is not PumpState.RUNNING:
            return status, None
        return status, "the pump still reports running"

    @property
    def stop_worst_case_s(self) -> float:
        """`STOP_ATTEMPTS` x the command timeout: each stop command, resends included, is bounded
        by one command timeout (2 x 2.0 s = 4.0 s by default). A link already down fails at once.
        """
        return STOP_ATTEMPTS * self.command_timeout_s
