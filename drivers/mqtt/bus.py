"""One broker connection shared by many `MqttPump`s (a controller supervising a fleet).

`MqttBus` owns one aiomqtt client and its one message loop. Each pump attached to it has its
status (retained) and ack topics subscribed on that connection; every message that arrives is
routed to its pump by exact topic (a dict lookup), and the pump decodes and acts on it exactly
as it does on a connection of its own. When the broker goes away the bus tells every attached
pump its link is down (their pending commands fail with `PumpConnectionError`), reconnects with
capped exponential backoff and jitter, subscribes every attached pump again (so each receives
its retained status again) and tells each pump its link is back. Freshness and the last will
stay each pump's own (A2): the bus knows only whether the broker connection is up.

Topics, payloads and QoS are those of interfaces.md section 2: the bus changes only how many
TCP connections carry them.

Cancellation: aiomqtt bounds each of its calls (CONNECT, SUBSCRIBE, PUBLISH, DISCONNECT) with
`asyncio.wait_for`, which on Python 3.11 swallows a cancellation that lands in the loop
iteration where the awaited acknowledgement arrives: the call returns normally and the cancelled
task goes on (a supervisor's poller polled on after its controller shut down, so the task group
waiting for it never ended). Every client of the project is therefore built by `new_client`,
with no aiomqtt timeout (aiomqtt then awaits the acknowledgement directly, and a cancellation
passes), and every call is bounded by its caller with `asyncio.timeout`: `bounded` for a call,
`Session` for a connection's CONNECT and DISCONNECT (tests/drivers/test_mqtt_cancellation.py).

A lost connection: aiomqtt's PUBLISH, SUBSCRIBE and UNSUBSCRIBE await their acknowledgement and
nothing else, so a call in flight when the connection drops waits for an acknowledgement that
can no longer come, until its caller's bound. A simulated pump's ack in flight when the broker
was killed held its message loop for its whole 10 s bound: it noticed the outage, reconnected and
subscribed its commands only then, and the command the controller sent once relinked was lost
(issue 19). A `new_client` client is therefore a `LinkClient`, whose calls end with an `MqttError`
as soon as their connection is lost: a relink never waits out a call of the connection before it
(a command in flight fails at once, a subscription in flight is made again on the next
connection; tests/drivers/test_mqtt_lost_link.py).

Credentials: a bus given `username` (and `password`) sends them in its CONNECT (a broker with
`allow_anonymous false`, config/mosquitto.conf). A broker that refuses them (CONNACK "not
authorized" or "bad user name or password") is a connection that failed like any other: the
attached pumps' link is down (A2) and the bus tries again with backoff, so a broker whose
password file is fixed is joined again without a restart. What is logged, once per kind of
failure, names the broker, the user and that authentication failed; the password never is (it
is kept in a private attribute, handed only to the client's CONNECT).

TLS: a bus given `tls_context` (an `ssl.SSLContext`, built once by its caller) connects over
TLS with it. A broker whose certificate does not verify (another CA, another name) is a failed
connection like any other: the pumps' link is down (A2) with the TLS error as its reason, logged
once, and the bus tries again with backoff.

Sized for a fleet (interfaces.md section 2, "Sizing for a fleet"): up to `MAX_INFLIGHT` QoS 1
messages in flight, and every `new_client` client's queues bounded (`MAX_QUEUED`: what the
broker sent and the loop has not yet routed, and what waits to be sent). The bus routes what
arrives in batches (`ROUTE_BATCH` a turn, not one loop turn per message, so a burst from a
thousand pumps is taken up at once) and keeps its receive backlog (`backlog`, `backlog_peak`) and
what a full queue made it discard (`discarded`: a dropped ack is a false A3, so it is counted
and logged, never silent). It subscribes the statuses at QoS 0 (`STATUS_QOS`: no PUBACK per
heartbeat; a status lost is asked for once overdue) and the acks at QoS 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from drivers.backoff import RECONNECT_MAX_S, RECONNECT_MIN_S, backoff_delay
from drivers.base import LINK_TIMEOUT_S, PumpConfigError

if TYPE_CHECKING:
    from drivers.mqtt.pump import MqttPump

__all__ = [
    "MAX_INFLIGHT",
    "MAX_QUEUED",
    "ROUTE_BATCH",
    "STATUS_QOS",
    "SUBSCRIBE_BATCH",
    "TCP_NODELAY_OPTION",
    "LinkClient",
    "MqttBus",
    "Session",
    "auth_refused",
    "bounded",
    "cancel_and_wait",
    "describe_failure",
    "new_client",
    "require_positive",
]

_log = logging.getLogger(__name__)

#: interfaces.md section 2 (latency): every client sets TCP_NODELAY on its socket.
TCP_NODELAY_OPTION = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
#: QoS 1 messages the client keeps in flight before paho queues more (paho's default is 20,
#: which a fleet of pumps polled once a second outruns).
MAX_INFLIGHT = 1024
#: Topics per SUBSCRIBE packet when (re)subscribing every attached pump.
SUBSCRIBE_BATCH = 200
#: Bound of a client's queue of messages received and not yet routed, and of its queue of
#: messages waiting to be sent (every queue bounded; beyond it a message is discarded, counted).
MAX_QUEUED = 65_536
#: Messages the bus routes in one turn of the event loop before it lets other work run.
ROUTE_BATCH = 256
#: The QoS the bus subscribes the pumps' status topics at (interfaces.md section 2, "Sizing for
#: a fleet"): 0, so the broker delivers each pushed status without a PUBACK to send and track
#: (a fleet's statuses were most of the controller's MQTT work); acks stay at QoS 1.
STATUS_QOS = 0


_T = TypeVar("_T")


class LinkClient(aiomqtt.Client):
    """An aiomqtt client whose PUBLISH, SUBSCRIBE and UNSUBSCRIBE end with an `MqttError` as soon
    as the connection they were sent on is lost (module docstring), instead of awaiting an
    acknowledgement that can no longer come. A cancellation passes as before.

    Its receive queue is bounded (aiomqtt discards a message arriving at a full queue):
    `on_discard` is called for each one discarded, `backlog` is the queue's length and
    `take_nowait` takes the next message without a turn of the loop."""

    on_discard: Callable[[], None] | None = None

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if self._queue.full() and self.on_discard is not None:
            self.on_discard()
        super()._on_message(client, userdata, message)

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken."""
        return self._queue.qsize()

    def take_nowait(self) -> aiomqtt.Message:
        """The next message received (`asyncio.QueueEmpty` when none waits)."""
        return self._queue.get_nowait()

    async def publish(self, /, *args: Any, **kwargs: Any) -> None:
        await self._until_lost(super().publish(*args, **kwargs), "publish")

    async def subscribe(self, /, *args: Any, **kwargs: Any) -> tuple[int, ...] | list[ReasonCode]:
        return await self._until_lost(super().subscribe(*args, **kwargs), "subscribe")

    async def unsubscribe(self, /, *args: Any, **kwargs: Any) -> None:
        await self._until_lost(super().unsubscribe(*args, **kwargs), "unsubscribe")

    async def _until_lost(self, call: Awaitable[_T], what: str) -> _T:
        """Await `call` in this task, ended (an `MqttError`) once the connection is lost."""
        lost = self._disconnected  # this connection's: aiomqtt makes a new one per connection
        scope = asyncio.timeout(None)  # expired by the loss: the call ends as a timeout would
        watching = True

        def expire(_: asyncio.Future[None]) -> None:
            if watching and not scope.expired():  # not when already left (a scheduled call)
                scope.reschedule(asyncio.get_running_loop().time())

        try:
            async with scope:
                lost.add_done_callback(expire)  # already lost: called in the next iteration
                try:
                    return await call
                finally:
                    watching = False
                    lost.remove_done_callback(expire)
        except TimeoutError:
            if not scope.expired():
                raise
            cause = None if lost.cancelled() else lost.exception()
            raise aiomqtt.MqttError(
                f"{what}: connection lost before the broker acknowledged it"
            ) from cause


def new_client(host: str, port: int, **options: Any) -> LinkClient:
    """An aiomqtt client with TCP_NODELAY and no aiomqtt timeout (module docstring: its calls
    must be bounded by the caller, with `bounded` and `Session`) whose calls end when its
    connection is lost (`LinkClient`), its queues bounded by `MAX_QUEUED`."""
    options.setdefault("max_queued_incoming_messages", MAX_QUEUED)
    options.setdefault("max_queued_outgoing_messages", MAX_QUEUED)
    return LinkClient(host, port, timeout=math.inf, socket_options=TCP_NODELAY_OPTION, **options)


#: CONNACK codes of a refused login: MQTT 3.1.1's 4 and 5, MQTT 5's 0x86 and 0x87 (paho reports
#: a 3.1.1 code as its MQTT 5 reason code).
AUTH_REFUSED_CODES = frozenset({4, 5, 0x86, 0x87})


def auth_refused(error: BaseException) -> bool:
    """True if `error` is a broker's CONNACK refusing the credentials (or their absence)."""
    if not isinstance(error, MqttConnectError):
        return False
    rc = error.rc
    value = rc if isinstance(rc, int) else getattr(rc, "value", None)
    return value in AUTH_REFUSED_CODES


def describe_failure(error: BaseException, host: str, port: int, username: str | None) -> str:
    """One line on a failed or lost connection to broker `host:port` (never a password)."""
    if auth_refused(error):
        who = f"user {username!r}" if username is not None else "anonymous (no user name)"
        return f"broker {host}:{port} refused authentication as {who}: {error}"
    return f"broker {host}:{port} link lost: {error}"


async def bounded(call: Awaitable[_T], bound_s: float, what: str) -> _T:
    """Await one call of a `new_client` client, bounded by `bound_s`: past it an `MqttError`
    (as aiomqtt's own timeout raised); a cancellation always passes."""
    try:
        async with asyncio.timeout(bound_s):
            return await call
    except TimeoutError:
        raise aiomqtt.MqttError(f"{what}: not acknowledged within {bound_s} s") from None


class Session:
    """`async with Session(client, bound_s) as client`: a `new_client` client's connection, its
    CONNECT and its clean DISCONNECT each bounded by `bound_s` (an `MqttError` past it).

    A DISCONNECT that times out while an exception (a cancellation) is leaving the block is
    logged, never raised: it must not replace that exception (an `MqttError` there would turn a
    cancelled connection loop into a reconnection)."""

    def __init__(self, client: aiomqtt.Client, bound_s: float) -> None:
        self.client = client
        self.bound_s = bound_s

    async def __aenter__(self) -> aiomqtt.Client:
        try:
            await bounded(self.client.__aenter__(), self.bound_s, "connect")
        except BaseException:
            # aiomqtt leaves a connection abandoned before its CONNACK open (socket, reader
            # and its keepalive task): close it, or it lingers as a second client of this id.
            self.client._client._sock_close()  # aiomqtt has no abort
            raise
        return self.client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await bounded(self.client.__aexit__(exc_type, exc, tb), self.bound_s, "disconnect")
        except aiomqtt.MqttError as error:
            if exc is None:
                raise
            _log.info("client %s: %s", self.client.identifier, error)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended; an exception it ended with (other than its
    cancellation) is raised. A cancellation of the caller passes (`contextlib.suppress` of
    `CancelledError` around `await task` would swallow it: a closing owner cancelled by its own
    task group would then return as if closed normally, and that group go on)."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error


def require_positive(owner: str, **settings: float) -> None:
    """`PumpConfigError` naming the first of `settings` that is not > 0."""
    for name, value in settings.items():
        if not value > 0:
            raise PumpConfigError(owner, "configure", f"{name} must be > 0, got {value}")


class MqttBus:
    """A shared broker connection for many pumps. Use as an async context manager.

    Attach pumps by constructing them with `bus=` and connecting them (`MqttPump.connect`); a
    pump's `close` detaches it (its topics are unsubscribed; the others go on).
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str | None = None,
        link_timeout_s: float = LINK_TIMEOUT_S,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        max_inflight: int = MAX_INFLIGHT,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if password is not None and username is None:
            raise PumpConfigError("bus", "configure", "a password needs a user name")
        require_positive(
            "bus",
            link_timeout_s=link_timeout_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            max_inflight=max_inflight,
        )
        self.host = host
        self.port = port
        self.client_id = client_id or f"pumpctl-bus-{uuid.uuid4().hex[:8]}"
        self.link_timeout_s = link_timeout_s
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._max_inflight = max_inflight
        self.username = username
        self._password = password  # only ever handed to the client
        self._tls = tls_context  # TLS to the broker (built once by the caller: no file read here)
        #: why the last connection attempt failed or the link was lost (None while linked)
        self.last_failure: str | None = None
        self.auth_failed = False  # the last attempt's CONNACK refused the credentials
        self._pumps: dict[str, MqttPump] = {}  # pump_id -> pump
        self._routes: dict[str, MqttPump] = {}  # status and ack topic -> pump
        self._subscribed: set[str] = set()  # pump ids subscribed on the current connection
        self._client: aiomqtt.Client | None = None  # set only while connected
        self._linked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # successful connections (subscriptions made)
        #: the receive path: its largest backlog seen, and messages discarded at a full queue
        self.backlog_peak = 0
        self.discarded = 0

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
        """Start the task that keeps the connection (returns at once; see `wait_linked`)."""
        if self._task is not None:
            raise RuntimeError(f"bus {self.client_id}: already started")
        self._task = asyncio.create_task(self._supervise(), name=f"mqtt-bus-{self.client_id}")

    async def close(self) -> None:
        """Disconnect cleanly and stop; every attached pump is told its link is down."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    @property
    def started(self) -> bool:
        """True between `start` and `close`."""
        return self._task is not None

    @property
    def connected(self) -> bool:
        """True while the broker connection is up (and every attached pump subscribed)."""
        return self._client is not None

    @property
    def client(self) -> aiomqtt.Client | None:
        """The live client, or None while disconnected."""
        return self._client

    @property
    def backlog(self) -> int:
        """Messages received on the live connection and not yet routed (0 while unlinked)."""
        client = self._client
        return client.backlog if isinstance(client, LinkClient) else 0

    async def wait_linked(self) -> None:
        """Return once the connection is up (bound it with a timeout)."""
        await self._linked.wait()

    def __len__(self) -> int:
        """How many pumps are attached."""
        return len(self._pumps)

    # -- pumps ---------------------------------------------------------------------------

    async def attach(self, pump: MqttPump) -> None:
        """Route `pump`'s topics to it; subscribe them now if connected (else on connection).

        The pump is told its link is up once its topics are subscribed on a live connection.
        """
        if self._task is None:
            raise RuntimeError(f"bus {self.client_id}: not started")
        known = self._pumps.get(pump.pump_id)
        if known is pump:
            return
        if known is not None:
            raise PumpConfigError(pump.pump_id, "connect", "another pump of this id is on the bus")
        self._pumps[pump.pump_id] = pump
        self._routes[pump.topics.status] = pump
        self._routes[pump.topics.ack] = pump
        client = self._client
        if client is None:
            return  # the connection subscribes it when it comes
        with contextlib.suppress(aiomqtt.MqttError):
            await self._subscribe(client, [pump])
            # the connection may have been lost meanwhile, or the pump detached: only a pump
            # still attached and subscribed on the live connection is linked
            if self._client is client and self._pumps.get(pump.pump_id) is pump:
                self._subscribed.add(pump.pump_id)
                pump._bus_linked()

    async def detach(self, pump: MqttPump, *, unsubscribe: bool = True) -> None:
        """Stop routing to `pump` and tell it its link is down; unsubscribe its topics (bounded
        by the link timeout, skipped when the connection is closing anyway)."""
        if self._pumps.get(pump.pump_id) is not pump:
            return
        del self._pumps[pump.pump_id]
        self._routes.pop(pump.topics.status, None)
        self._routes.pop(pump.topics.ack, None)
        was_subscribed = pump.pump_id in self._subscribed
        self._subscribed.discard(pump.pump_id)
        pump._bus_lost("link closed")
        client = self._client
        if unsubscribe and was_subscribed and client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self.link_timeout_s):
                    await client.unsubscribe([pump.topics.status, pump.topics.ack])

    async def _subscribe(self, client: aiomqtt.Client, pumps: Iterable[MqttPump]) -> None:
        topics = [
            (t, q) for p in pumps for t, q in ((p.topics.status, STATUS_QOS), (p.topics.ack, 1))
        ]
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = topics[start : start + SUBSCRIBE_BATCH]
            await bounded(client.subscribe(batch), self.link_timeout_s, "subscribe")

    # -- the connection ------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep one subscribed connection, reconnecting with backoff and jitter."""
        attempt = 0
        logged: bool | None = None  # the kind of failure logged (auth or not), None: none
        while True:
            client = new_client(
                self.host,
                self.port,
                identifier=self.client_id,
                keepalive=max(1, round(self.link_timeout_s)),
                max_inflight_messages=self._max_inflight,
                username=self.username,
                password=self._password,
                tls_context=self._tls,
            )
            client.pending_calls_threshold = self._max_inflight  # many in flight is the point
            client.on_discard = self._discard
            try:
                async with Session(client, self.link_timeout_s):
                    await self._link(client)
                    if self.connections > 1:
                        _log.warning(
                            "bus %s: broker link recovered (%d pumps)",
                            self.client_id,
                            len(self._pumps),
                        )
                    logged, attempt = None, 0
                    self.last_failure, self.auth_failed = None, False
                    async for message in client.messages:
                        self._route(message)
                        self._route_backlog(client)
            except aiomqtt.MqttError as exc:
                self.last_failure = describe_failure(exc, self.host, self.port, self.username)
                self.auth_failed = auth_refused(exc)
                if logged is not self.auth_failed:  # once per outage and kind of failure
                    logged = self.auth_failed
                    _log.warning("bus %s: %s", self.client_id, self.last_failure)
            finally:
                self._unlink(self.last_failure or f"broker {self.host}:{self.port} link lost")
            await asyncio.sleep(backoff_delay(attempt, *self._reconnect))
            attempt += 1

    async def _link(self, client: aiomqtt.Client) -> None:
        """Subscribe every attached pump (also those attached meanwhile), then go live."""
        self._subscribed = set()
        while missing := [p for i, p in self._pumps.items() if i not in self._subscribed]:
            await self._subscribe(client, missing)
            self._subscribed.update(p.pump_id for p in missing)
        # no await from the last check to here: every attached pump is subscribed
        self._subscribed &= set(self._pumps)  # detached meanwhile
        self._client = client
        self.connections += 1
        self._linked.set()
        for pump_id in self._subscribed:
            self._pumps[pump_id]._bus_linked()

    def _unlink(self, reason: str) -> None:
        self._client = None
        self._linked.clear()
        self._subscribed = set()
        for pump in list(self._pumps.values()):
            pump._bus_lost(reason)

    def _discard(self) -> None:
        """The receive queue was full: a message was discarded (aiomqtt logs it too)."""
        self.discarded += 1
        if self.discarded == 1 or self.discarded % 1000 == 0:
            _log.error(
                "bus %s: %d message(s) discarded at a full receive queue (%d): an ack lost is"
                " a command unconfirmed (A3)",
                self.client_id,
                self.discarded,
                MAX_QUEUED,
            )

    def _route_backlog(self, client: LinkClient) -> None:
        """Route what else has arrived, up to `ROUTE_BATCH` messages, in this turn."""
        backlog = client.backlog
        self.backlog_peak = max(self.backlog_peak, backlog + 1)  # with the one just routed
        for _ in range(min(backlog, ROUTE_BATCH)):
            self._route(client.take_nowait())

    def _route(self, message: aiomqtt.Message) -> None:
        """Hand one message to the pump whose topic it is (none: unsubscribed meanwhile)."""
        pump = self._routes.get(message.topic.value)
        if pump is None:
            _log.debug("bus %s: message on %s for no attached pump", self.client_id, message.topic)
            return
        pump._dispatch(message)
