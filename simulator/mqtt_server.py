"""The pump side of the MQTT contract (interfaces.md section 2) for simulated pumps.

One `MqttPumpServer` per `PumpModel`, speaking contract 2 (`MQTT_CONTRACT`) by default. A
server publishes a retained status on every change of its model, at the model's clinical
completion, and as a heartbeat every `heartbeat_s` (wire time) in every state, on a phase of its
own (`heartbeat_phase`: a fraction of the interval drawn from its pump id, so a fleet's
heartbeats are spread over the interval, never sent together). Each command is answered by its
ack, which carries the status the command left the pump in (seq + 1), and then by that status on
the status topic: one round trip confirms a command. It executes commands once per id (the last
1,024 ids are remembered and re-acknowledged without re-execution) and honours the model's wire
`Faults`.

`contract=1` serves the contract before version 2 instead (interfaces.md section 2,
"Versions"): no `contract` or `heartbeat_s` in its statuses, a heartbeat only while running, and
the status published (and its PUBACK awaited) before each ack. It stands for a pump not yet
updated, for the tests of the controller that keeps it working.

Connections: by default each server has its own broker connection, so each pump has its own
last will (`{"state": "offline"}`, retained), fired by the broker when that connection dies.
`MqttSimulator(..., shared=True)` serves all its pumps on one connection (a fleet: a thousand
pumps need not be a thousand sockets). One connection has one will, so a shared simulator has
none that speaks for a pump: on a clean shutdown every pump publishes its retained offline
status, as the per-pump servers do; when the simulator dies abruptly each pump's last retained
status stays and the driver finds it stale by freshness (A2: a pump beats every heartbeat).
A pump's `drop_connection` fault on a shared connection is emulated for that pump
alone: it publishes the offline status its will would have carried, stops serving for a backoff
(its commands meanwhile are lost, as on a dropped socket), then comes back with a fresh status.
The will tests use per-pump connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Self

import aiomqtt

from drivers.base import PumpState
from drivers.mqtt import (
    DEFAULT_PREFIX,
    MQTT_CONTRACT,
    OFFLINE_PAYLOAD,
    AckPayload,
    CommandPayload,
    Op,
    PayloadError,
    StatusPayload,
    Topics,
    backoff_delay,
    command_id_of,
    decode_command,
)
from drivers.mqtt.bus import (
    MAX_INFLIGHT,
    SUBSCRIBE_BATCH,
    Session,
    bounded,
    cancel_and_wait,
    new_client,
)
from simulator.model import PumpModel, SimulatorError

__all__ = [
    "HEARTBEAT_S",
    "REMEMBERED_IDS",
    "MqttPumpServer",
    "MqttSimulator",
    "heartbeat_phase",
    "serve",
]

_log = logging.getLogger(__name__)

#: interfaces.md section 2: the simulated pump's heartbeat (s), said in each of its statuses.
HEARTBEAT_S = 1.0
#: interfaces.md section 2: a pump remembers at least its last 1,024 command ids.
REMEMBERED_IDS = 1024
#: Keepalive (s): the broker fires the last will after 1.5 keepalives of silence.
KEEPALIVE_S = 5
#: Reconnection backoff of the simulated pump (wire seconds).
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
#: How long a clean shutdown may spend announcing "offline".
SHUTDOWN_PUBLISH_S = 1.0
#: Wire seconds a connect, subscribe or publish may take before the link counts as down (the
#: bound aiomqtt's own timeout gave; drivers/mqtt/bus.py says why the bound is ours).
CALL_BOUND_S = 10.0


async def keep_connected(
    connect: Callable[[], aiomqtt.Client],
    serve: Callable[[aiomqtt.Client], Awaitable[None]],
    gone: Callable[[], None],
    *,
    name: str,
    reconnect: tuple[float, float],
) -> None:
    """Serve on a connection until cancelled; when the link drops, `gone()`, then connect again
    after a capped exponential backoff with jitter (`reconnect`: first delay, cap)."""
    attempt = 0
    while True:
        client = connect()
        try:
            async with Session(client, CALL_BOUND_S):
                attempt = 0
                await serve(client)
        except* aiomqtt.MqttError as group:
            _log.info("%s: link down: %s", name, group.exceptions)
        finally:
            gone()
        await asyncio.sleep(backoff_delay(attempt, *reconnect))
        attempt += 1


def heartbeat_phase(pump_id: str, heartbeat_s: float) -> float:
    """Wire seconds, in (0, heartbeat_s], from a connection to a pump's first heartbeat: a
    fraction of the interval drawn from its id (CRC-32), the same at every run."""
    fraction = zlib.crc32(pump_id.encode()) / 2**32
    return heartbeat_s * (1.0 - fraction)


class MqttPumpServer:
    """One simulated pump on a broker: status, commands, acks, last will, faults."""

    def __init__(
        self,
        model: PumpModel,
        host: str,
        port: int = 1883,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_s: float = HEARTBEAT_S,
        contract: int = MQTT_CONTRACT,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not 1 <= contract <= MQTT_CONTRACT:
            raise ValueError(f"contract must be 1 to {MQTT_CONTRACT}, got {contract}")
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        self.model = model
        self.host = host
        self.port = port
        self._login = {"username": username, "password": password}  # for the client only
        self._tls = tls_context  # TLS to the broker, None: plain MQTT
        self.topics = Topics.for_pump(model.pump_id, prefix)
        self.heartbeat_s = heartbeat_s
        self.contract = contract
        #: contract 2 and later: status by push (heartbeat in every state), the ack first
        self.pushes = contract >= 2
        self.phase_s = heartbeat_phase(model.pump_id, heartbeat_s)
        self.client_id = f"pumpctl-sim-{model.pump_id}-{uuid.uuid4().hex[:8]}"
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self.seq = 0  # seq of the last status published
        self.executed: collections.Counter[Op] = collections.Counter()
        self.connections = 0
        self.online = asyncio.Event()  # connected, subscribed, first status published
        self.offline = asyncio.Event()  # not connected (set until the first connection)
        self.offline.set()
        self._acks: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._client: aiomqtt.Client | None = None
        self._dirty = asyncio.Event()  # a status is due
        self._replan = asyncio.Event()  # the model changed: completion time may have moved
        self._task: asyncio.Task[None] | None = None
        self.shared = False  # served on an MqttSimulator's shared connection
        self._inbox: asyncio.Queue[aiomqtt.Message | None] = asyncio.Queue()  # shared only
        self._dropped = False  # shared only: a drop_connection fault is being emulated

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start serving (a named task owned by this server)."""
        if self._task is not None:
            raise RuntimeError(f"simulated pump {self.model.pump_id}: already started")
        self._task = asyncio.create_task(self.run(), name=f"sim-mqtt-{self.model.pump_id}")

    async def close(self) -> None:
        """Announce "offline" (retained), disconnect cleanly and stop serving."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    @property
    def client(self) -> aiomqtt.Client | None:
        """The live broker client, or None while disconnected."""
        return self._client

    def _model_changed(self) -> None:
        self._dirty.set()
        self._replan.set()

    @contextlib.contextmanager
    def _listening(self) -> Iterator[None]:
        self.model.listeners.append(self._model_changed)
        try:
            yield
        finally:
            self.model.listeners.remove(self._model_changed)

    def _gone(self) -> None:
        self._client = None
        self.online.clear()
        self.offline.set()

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff and jitter when the link drops."""
        with self._listening():
            await keep_connected(
                lambda: new_client(
                    self.host,
                    self.port,
                    identifier=self.client_id,
                    will=aiomqtt.Will(self.topics.status, OFFLINE_PAYLOAD, qos=1, retain=True),
                    keepalive=KEEPALIVE_S,
                    tls_context=self._tls,
                    **self._login,
                ),
                self._serve,
                self._gone,
                name=f"simulated pump {self.model.pump_id}",
                reconnect=self._reconnect,
            )

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection of its own: subscribe, then serve until the link drops."""
        await bounded(client.subscribe(self.topics.cmd, qos=1), CALL_BOUND_S, "subscribe")
        await self._serve_on(client, client.messages)

    async def serve_shared(self, client: aiomqtt.Client) -> None:
        """Serve on a shared connection (subscribed by its owner, which routes this pump's
        commands to `deliver`) until cancelled; a drop_connection fault is emulated."""
        self.shared = True
        attempt = 0
        with self._listening():
            while True:
                self._dropped = False
                while not self._inbox.empty():  # lost with the dropped socket
                    self._inbox.get_nowait()
                await self._serve_on(client, self._shared_messages())
                # dropped: what the broker would have done with this pump's will
                self._gone()
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(SHUTDOWN_PUBLISH_S):
                        await client.publish(
                            self.topics.status, OFFLINE_PAYLOAD, qos=1, retain=True
                        )
                await asyncio.sleep(backoff_delay(attempt, *self._reconnect))
                attempt += 1

    def deliver(self, message: aiomqtt.Message) -> None:
        """A command for this pump from the shared connection (served in order, by this pump)."""
        self._inbox.put_nowait(message)

    async def _shared_messages(self) -> AsyncIterator[aiomqtt.Message]:
        while (message := await self._inbox.get()) is not None and not self._dropped:
            yield message

    async def _serve_on(
        self, client: aiomqtt.Client, messages: AsyncIterator[aiomqtt.Message]
    ) -> None:
        """Announce the status, then serve `messages` until they end (a shared connection's
        emulated drop) or the link drops."""
        self._client = client
        self.connections += 1
        await self._publish_status(client)
        self.offline.clear()
        self.online.set()
        try:
            async with asyncio.TaskGroup() as tg:
                pid = self.model.pump_id
                tasks = [
                    tg.create_task(self._publisher(client), name=f"sim-mqtt-{pid}-publisher"),
                    tg.create_task(self._ticker(client), name=f"sim-mqtt-{pid}-ticker"),
                    tg.create_task(self._completion_watch(), name=f"sim-mqtt-{pid}-completion"),
                ]
                async for message in messages:
                    await self._on_message(client, message)
                for task in tasks:
                    task.cancel()
        except asyncio.CancelledError:
            # Clean shutdown: say so, since a clean DISCONNECT suppresses the last will.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(SHUTDOWN_PUBLISH_S):
                    await client.publish(self.topics.status, OFFLINE_PAYLOAD, qos=1, retain=True)
            raise

    def drop_connection(self) -> None:
        """Close the socket abruptly (no DISCONNECT), so the broker fires the last will; on a
        shared connection, emulate that for this pump alone (module docstring)."""
        client = self._client
        if client is None:
            return
        if self.shared:
            _log.info("simulated pump %s: emulating a dropped connection", self.model.pump_id)
            self._dropped = True
            self._inbox.put_nowait(None)
            return
        sock = client._client.socket()  # aiomqtt has no abrupt close
        if isinstance(sock, socket.socket):
            _log.info("simulated pump %s: dropping the connection", self.model.pump_id)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _take_drop(self) -> bool:
        if self.model.faults.drop_connection:
            self.model.faults.drop_connection = False  # one shot
            self.drop_connection()
            return True
        return False

    # -- status --------------------------------------------------------------------------

    def _next_status(self) -> StatusPayload | None:
        """The model's status now, numbered seq + 1 (no status is due after it until the model
        changes again); None while hung (no_reply)."""
        self._dirty.clear()
        if self.model.faults.no_reply:
            return None
        self.seq += 1
        return StatusPayload.from_status(
            self.model.status(),
            seq=self.seq,
            ts=self.model.clock.now(),
            heartbeat_s=self.heartbeat_s if self.pushes else None,
        )

    async def _send_status(self, client: aiomqtt.Client, payload: StatusPayload) -> None:
        await bounded(
            client.publish(self.topics.status, payload.to_bytes(), qos=1, retain=True),
            CALL_BOUND_S,
            "status",
        )

    async def _publish_status(self, client: aiomqtt.Client) -> StatusPayload | None:
        """Publish the model's status now (retained, seq + 1); None while hung (no_reply)."""
        payload = self._next_status()
        if payload is not None:
            await self._send_status(client, payload)
        return payload

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            await self._dirty.wait()
            if self._dirty.is_set():  # a command may have published it meanwhile
                await self._publish_status(client)

    async def _ticker(self, client: aiomqtt.Client) -> None:
        """Wire-time heartbeat on the pump's own phase (contract 1: only while running); a
        pending drop_connection fault."""
        del client
        loop = asyncio.get_running_loop()
        beat_at = loop.time() + self.phase_s
        while True:
            await asyncio.sleep(max(0.0, beat_at - loop.time()))
            # the next beat on the same grid; one missed (a loaded loop) is skipped, not caught up
            beat_at = max(beat_at + self.heartbeat_s, loop.time())
            if self._take_drop():
                return
            if self.pushes or self.model.state is PumpState.RUNNING:
                self._dirty.set()

    async def _completion_watch(self) -> None:
        """Publish when the running pump reaches its VTBI (the model integrates lazily)."""
        pid = self.model.pump_id
        while True:
            self._replan.clear()
            at = self.model.completion_at()
            if at is None:
                await self._replan.wait()
                continue
            sleeper = asyncio.create_task(
                self.model.clock.sleep_until(at), name=f"sim-mqtt-{pid}-completion-sleep"
            )
            replan = asyncio.create_task(self._replan.wait(), name=f"sim-mqtt-{pid}-replan")
            try:
                await asyncio.wait((sleeper, replan), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                replan.cancel()
                await asyncio.gather(sleeper, replan, return_exceptions=True)
            if sleeper.done() and not sleeper.cancelled():
                self._dirty.set()

    # -- commands ------------------------------------------------------------------------

    async def _on_message(  # noqa: PLR0911 - one return per malformed-command case
        self, client: aiomqtt.Client, message: aiomqtt.Message
    ) -> None:
        data = message.payload
        if not isinstance(data, bytes | bytearray):
            return
        data = bytes(data)
        faults = self.model.faults
        if self._take_drop():
            return
        if faults.no_reply:
            _log.info("simulated pump %s: swallowing a command (no_reply)", self.model.pump_id)
            return
        try:
            command = decode_command(data)
        except PayloadError as exc:
            _log.warning("simulated pump %s: malformed command: %s", self.model.pump_id, exc)
            cmd_id = command_id_of(data)
            if cmd_id is not None:  # refuse by id, change nothing
                await self._answer(client, cmd_id, "COM", str(exc))
            return
        previous = self._acks.get(command.id)
        if previous is not None:  # QoS 1 redelivery or a retry: acknowledge, don't re-execute
            self._acks.move_to_end(command.id)
            await self._reply(client, previous)
            return
        if faults.take_refusal():
            await self._answer(client, command.id, "NA", f"{command.op.value}: refused (fault)")
            return
        try:
            self._execute(command)
        except SimulatorError as exc:
            await self._answer(client, command.id, exc.code, str(exc))
            return
        await self._answer(client, command.id, None, None)

    def _execute(self, command: CommandPayload) -> None:
        model = self.model
        if command.op is Op.SET_RATE and command.rate_ml_h is not None:
            model.set_rate(command.rate_ml_h)
        elif command.op is Op.SET_VTBI and command.vtbi_ml is not None:
            model.set_vtbi(command.vtbi_ml)
        elif command.op is Op.START:
            model.run()
        elif command.op is Op.STOP:
            model.stop()
        elif command.op is Op.CLEAR_VOLUME:
            model.clear_volume()
        self.executed[command.op] += 1

    async def _answer(
        self, client: aiomqtt.Client, cmd_id: str, error: str | None, message: str | None
    ) -> None:
        """Contract 2: the ack, carrying the status the command left the pump in, then that
        status on the status topic (unless a newer one went out meanwhile: the retained status
        never goes back). Contract 1: the status first, its PUBACK awaited, then the ack."""
        status = self._next_status()
        if status is None:
            return
        if not self.pushes:
            await self._send_status(client, status)
        ack = AckPayload(id=cmd_id, ok=error is None, error=error, message=message, status=status)
        data = ack.to_bytes()
        self._acks[cmd_id] = data
        while len(self._acks) > REMEMBERED_IDS:
            self._acks.popitem(last=False)
        await self._reply(client, data)
        if self.pushes and self.seq == status.seq:
            await self._send_status(client, status)

    async def _reply(self, client: aiomqtt.Client, data: bytes) -> None:
        faults = self.model.faults
        if faults.late_reply_s > 0:
            await asyncio.sleep(faults.late_reply_s)
        if faults.take_garble():
            data = data[: len(data) // 2]  # truncated JSON: never valid
        await bounded(client.publish(self.topics.ack, data, qos=1), CALL_BOUND_S, "ack")


class MqttSimulator:
    """Many simulated pumps on one broker: one connection and last will per pump, or with
    `shared` one connection for all (no will per pump: module docstring)."""

    def __init__(
        self,
        models: Iterable[PumpModel],
        host: str,
        port: int = 1883,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_s: float = HEARTBEAT_S,
        contract: int = MQTT_CONTRACT,
        shared: bool = False,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._login = {"username": username, "password": password}  # for the client only
        self._tls = tls_context  # TLS to the broker, None: plain MQTT
        self.servers = {
            m.pump_id: MqttPumpServer(
                m,
                host,
                port,
                prefix=prefix,
                heartbeat_s=heartbeat_s,
                contract=contract,
                reconnect_min_s=reconnect_min_s,
                reconnect_max_s=reconnect_max_s,
                username=username,
                password=password,
                tls_context=tls_context,
            )
            for m in models
        }
        self.host = host
        self.port = port
        self.shared = shared
        self.client_id = f"pumpctl-sim-{uuid.uuid4().hex[:8]}"
        self.connections = 0  # of the shared connection
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def client(self) -> aiomqtt.Client | None:
        """The shared connection's live client (None while down, or without `shared`)."""
        return self._client

    async def __aenter__(self) -> Self:
        if self.shared:
            self._task = asyncio.create_task(self._run_shared(), name="sim-mqtt-shared")
        else:
            for server in self.servers.values():
                server.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await asyncio.gather(*(s.close() for s in self.servers.values()))

    async def wait_online(self) -> None:
        """Return once every pump is connected and has published its status."""
        await asyncio.gather(*(s.online.wait() for s in self.servers.values()))

    async def _run_shared(self) -> None:
        """Serve every pump on one connection, reconnecting with backoff and jitter."""
        await keep_connected(
            self._connect,
            self._serve_shared,
            self._gone,
            name=f"simulator {self.client_id}",
            reconnect=self._reconnect,
        )

    def _connect(self) -> aiomqtt.Client:
        client = new_client(
            self.host,
            self.port,
            identifier=self.client_id,
            keepalive=KEEPALIVE_S,
            max_inflight_messages=MAX_INFLIGHT,
            tls_context=self._tls,
            **self._login,
        )
        client.pending_calls_threshold = MAX_INFLIGHT  # many in flight is the point
        return client

    def _gone(self) -> None:
        self._client = None
        for server in self.servers.values():
            server._gone()

    async def _serve_shared(self, client: aiomqtt.Client) -> None:
        routes = {s.topics.cmd: s for s in self.servers.values()}
        topics = [(topic, 1) for topic in routes]
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = topics[start : start + SUBSCRIBE_BATCH]
            await bounded(client.subscribe(batch), CALL_BOUND_S, "subscribe")
        self._client = client
        self.connections += 1
        async with asyncio.TaskGroup() as tg:
            for pid, server in self.servers.items():
                tg.create_task(server.serve_shared(client), name=f"sim-mqtt-{pid}-shared")
            async for message in client.messages:
                target = routes.get(message.topic.value)
                if target is not None:
                    target.deliver(message)


async def serve(
    simulator: MqttSimulator,
    stop: asyncio.Event,
    *,
    announce: Callable[[MqttSimulator], None],
    online_timeout_s: float = 10.0,
) -> None:
    """Serve until `stop` is set; `announce` once every pump is online (TimeoutError if never)."""
    async with simulator:
        async with asyncio.timeout(online_timeout_s):
            await simulator.wait_online()
        announce(simulator)
        await stop.wait()
