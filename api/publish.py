"""The infusions' public state, published retained on MQTT (interfaces.md, section 2):
`{prefix}/infusions/{id}`, QoS 1, retained, the JSON of `GET /api/v1/infusions/{id}`
(`api.views.infusion_view`), when the service has a broker configured (`settings.broker`).

`InfusionPublisher` keeps one connection of its own (not the pumps' `MqttBus`: a view never
waits in the window a stop goes through). The ward's listener only sets an event; the
publisher's task takes each burst of changes at once and publishes, for every infusion whose
view differs from the one last published on this connection, the new view: at most one publish
per infusion per burst, and the ward never waits for the broker. Which infusions: those the
store supervises, and those it did on the previous burst (so an infusion that ends, or is
cancelled, shows its last state).

The connection logs in with the settings' `mqtt_username`/`mqtt_password` (pumpctl/settings.py).
A broker that is down, slow or refusing (its CONNACK refusing the credentials too) never stops
the service: the publisher logs, backs off
and connects again, and a new connection publishes every current view again (a restarted
broker may have forgotten the retained ones). The calls are bounded by this module, never by
aiomqtt (drivers/mqtt/bus.py: a cancellation then always passes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import aiomqtt

from api.views import infusion_view
from drivers.backoff import RECONNECT_MAX_S, RECONNECT_MIN_S, backoff_delay
from drivers.mqtt import DEFAULT_PREFIX, parse_broker
from drivers.mqtt.bus import Session, auth_refused, bounded, cancel_and_wait, new_client
from pumpctl.controller.ward import Ward
from pumpctl.settings import Settings
from pumpctl.store.writer import StoreUnavailable

__all__ = ["CALL_BOUND_S", "InfusionPublisher", "infusion_topic"]

_log = logging.getLogger("pumpctl.api.publish")

#: Wire seconds a connect or publish may take before the link counts as down.
CALL_BOUND_S = 10.0
#: MQTT keepalive of the publisher's connection (s).
KEEPALIVE_S = 15


def infusion_topic(prefix: str, infusion_id: int) -> str:
    """`{prefix}/infusions/{id}` (interfaces.md, section 2)."""
    return f"{prefix}/infusions/{infusion_id}"


class InfusionPublisher:
    """`async with InfusionPublisher(ward, host, port)`: publish the ward's infusion views
    until the block ends (module docstring)."""

    def __init__(
        self,
        ward: Ward,
        host: str,
        port: int = 1883,
        *,
        prefix: str = DEFAULT_PREFIX,
        client_id: str | None = None,
        call_bound_s: float = CALL_BOUND_S,
        retry_min_s: float = RECONNECT_MIN_S,
        retry_max_s: float = RECONNECT_MAX_S,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ward = ward
        self.username = username
        self._password = password  # only ever handed to the client
        self._tls = tls_context  # TLS to the broker (Settings.mqtt_tls), None: plain MQTT
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        self.client_id = client_id or f"pumpctl-views-{uuid.uuid4().hex[:8]}"
        self.call_bound_s = call_bound_s
        self._retry = (retry_min_s, retry_max_s)
        self._changed = asyncio.Event()
        self._published: dict[int, dict[str, Any]] = {}  # on the current connection
        self._watched: set[int] = set()  # no longer live, last view not yet acknowledged
        self._seen = 0  # the ward's change count the views were last built at
        self._everything = True  # build every view on the next burst (a new connection)
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None  # the ward's listener, while open
        self.connections = 0
        self.published = 0  # publishes acknowledged (tests, metrics)
        self.views_built: Counter[int] = Counter()  # infusion id: views built for it

    @classmethod
    def for_settings(cls, ward: Ward, settings: Settings) -> Self:
        """The publisher of `settings.broker` (HOST:PORT; ValueError if it is not that)."""
        assert settings.broker is not None
        host, port = parse_broker(settings.broker)
        client_id = f"pumpctl-{settings.gateway_id}-views-{uuid.uuid4().hex[:8]}"
        username, password = settings.mqtt_credentials()
        return cls(
            ward,
            host,
            port,
            prefix=settings.mqtt_prefix,
            client_id=client_id,
            username=username,
            password=password,
            tls_context=settings.mqtt_tls(),
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._unlisten = self.ward.add_listener(self.changed)
        self._changed.set()  # what the store holds now is published once connected
        self._task = asyncio.create_task(self._run(), name=f"mqtt-views-{self.client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unlisten, self._unlisten = self._unlisten, None
        if unlisten is not None:
            unlisten()
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    def changed(self) -> None:
        """The ward's listener: something changed (never blocks, never raises)."""
        self._changed.set()

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        down_logged: bool | None = None  # the kind of failure logged (auth or not), None: none
        while True:
            client = new_client(
                self.host,
                self.port,
                identifier=self.client_id,
                keepalive=KEEPALIVE_S,
                username=self.username,
                password=self._password,
                tls_context=self._tls,
            )
            try:
                async with Session(client, self.call_bound_s):
                    self.connections += 1
                    if down_logged is not None:
                        _log.warning("views: broker %s:%s link recovered", self.host, self.port)
                    down_logged, attempt = None, 0
                    self._published = {}  # a new connection says everything again
                    self._everything = True
                    self._changed.set()
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                refused = auth_refused(exc)
                if down_logged is not refused:  # once per outage and kind of failure
                    down_logged = refused
                    if refused:
                        who = f"user {self.username!r}" if self.username else "anonymous"
                        _log.warning(
                            "views: broker %s:%s refused authentication as %s (retrying): %s",
                            self.host,
                            self.port,
                            who,
                            exc,
                        )
                    else:
                        _log.warning(
                            "views: broker %s:%s link down (retrying): %s",
                            self.host,
                            self.port,
                            exc,
                        )
            except Exception:  # noqa: BLE001 - a bug here must never stop the service: retried
                _log.exception("views: publisher failed (retrying)")
            await asyncio.sleep(backoff_delay(attempt, *self._retry))
            attempt += 1

    async def _serve(self, client: aiomqtt.Client) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()  # changes from here on make the next burst
            try:
                live, changes = await self._changes()
            except StoreUnavailable as error:  # the views wait for the store; try again soon
                _log.warning("publish: views wait for the store: %s", error)
                self._everything = True
                await asyncio.sleep(1.0)
                self._changed.set()
                continue
            # an infusion no longer live is watched until its last view is acknowledged
            self._watched = live | {infusion_id for infusion_id, _view in changes}
            for infusion_id, view in changes:
                payload = json.dumps(view, default=str, separators=(",", ":"))
                topic = infusion_topic(self.prefix, infusion_id)
                await bounded(
                    client.publish(topic, payload, qos=1, retain=True),
                    self.call_bound_s,
                    f"publish {topic}",
                )
                self._published[infusion_id] = view
                self.published += 1
                if infusion_id not in live:
                    self._watched.discard(infusion_id)

    async def _changes(self) -> tuple[set[int], list[tuple[int, dict[str, Any]]]]:
        """The infusions the store supervises, and (id, view) of each infusion, of those and
        those watched, whose view differs from the one last published. Only the views of
        infusions the ward names as changed since the last burst are built again (and those
        never published on this connection): a burst costs what changed, not the room."""
        live = await self.ward.live_infusion_ids()
        self._seen, changed = self.ward.changes_since(self._seen)
        candidates = live | self._watched
        if not self._everything and changed is not None:
            unpublished = {i for i in candidates if i not in self._published}
            candidates = (candidates & changed) | unpublished
        self._everything = False
        changes = []
        for infusion_id in sorted(candidates):
            self.views_built[infusion_id] += 1
            try:
                view = await infusion_view(self.ward, infusion_id)
            except StoreUnavailable:
                raise
            except Exception:  # noqa: BLE001 - one bad infusion never stops the others' views
                _log.exception("views: infusion %s: view not built", infusion_id)
                self._published.pop(infusion_id, None)  # so the next burst tries it again
                continue
            if self._published.get(infusion_id) != view:
                changes.append((infusion_id, view))
        return live, changes
