"""The service starts with serial pumps it cannot reach, and says so (A2), through its ASGI app.

The app's lifespan runs on the test's own event loop (httpx's ASGITransport), so the serial
simulator serving a real pseudo-terminal answers in the same loop. One pump's device does not
exist, another pump is on a line that is there but does not answer (no_reply): the service
starts, /health and /pumps report both links lost; when the silent pump answers it is linked
and read, its state left as it is, while the missing one stays lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.settings import PumpLink, Settings, parse_tokens
from pumpctl.store import migrate as migrations
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

VIEWER = {"Authorization": "Bearer v-tok-for-the-tests-only-32chars"}
#: Bound on the service coming up and on a pump being linked once it answers (its driver's
#: backoff between attempts is capped at 5 s; a first try is at once).
LINKED_WITHIN_S = 15.0


async def _until(
    http: httpx.AsyncClient, path: str, ready: Callable[[Any], bool], **kwargs: Any
) -> Any:
    """GET `path` until `ready(body)` holds (bounded by the caller); the body."""
    while True:
        response = await http.get(path, **kwargs)
        assert response.status_code == 200, response.text
        if ready(body := response.json()):
            return body
        await asyncio.sleep(0.05)  # the supervisors poll every 0.2 s: look again shortly


def _links(body: dict[str, Any]) -> dict[str, bool]:
    return {p["id"]: p["connected"] for p in body["pumps"]}


async def test_unreachable_serial_pumps_start_unlinked_and_the_silent_one_links_A2(
    tmp_path: Path, clock: VirtualClock
) -> None:
    database = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrations.upgrade(database)  # a gateway's store is migrated before the start
    silent = PumpModel("bed-2", clock, address=4)
    silent.set_rate(30)
    silent.set_vtbi(50)
    silent.run()  # infusing, started at its keypad: reported once linked, never changed
    silent.faults.no_reply = True
    async with SerialSimulator([silent]) as sim:
        settings = Settings(
            database=database,
            api_tokens=parse_tokens("v-tok-for-the-tests-only-32chars=vera:viewer"),
            poll_interval_s=0.2,
            command_timeout_s=0.5,
            pumps=[
                PumpLink(id="bed-1", transport="serial", port=str(tmp_path / "ttyNOPE")),
                PumpLink(id="bed-2", transport="serial", port=sim.path, address=4),
            ],
        )
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gateway") as http,
        ):
            health = await http.get("/api/v1/health")
            assert health.status_code == 200
            body = health.json()
            assert body["status"] == "ok"
            assert _links(body) == {"bed-1": False, "bed-2": False}
            assert all(p["last_contact_age_s"] is None for p in body["pumps"])
            pumps = (await http.get("/api/v1/pumps", headers=VIEWER)).json()
            assert {p["id"]: p["state"] for p in pumps} == {"bed-1": "offline", "bed-2": "offline"}
            silent.faults.no_reply = False  # the pump is answering now
            async with asyncio.timeout(LINKED_WITHIN_S):
                body = await _until(
                    http, "/api/v1/health", lambda b: _links(b) == {"bed-1": False, "bed-2": True}
                )
                pumps = await _until(
                    http,
                    "/api/v1/pumps",
                    lambda ps: any(p["id"] == "bed-2" and p["state"] == "running" for p in ps),
                    headers=VIEWER,
                )
            bed_2 = next(p for p in pumps if p["id"] == "bed-2")
            assert bed_2["rate_ml_h"] == 30
            assert bed_2["connected"]
            assert next(p for p in pumps if p["id"] == "bed-1")["state"] == "offline"
            assert silent.state is PumpState.RUNNING
            assert silent.status().rate_ml_h == 30
            assert {e.command.name for e in sim.received} <= {"SAF", "VER", "", "RAT", "VOL", "DIS"}


@pytest.mark.mosquitto
async def test_an_mqtt_broker_down_at_the_start_is_a_lost_link_that_comes_back_A2(
    tmp_path: Path, clock: VirtualClock, broker: Any
) -> None:
    """A gateway whose broker is down when the service starts: the service starts, the MQTT
    pump is reported link lost (never a service that does not run for its other pumps); once
    the broker is up and the pump online, it is linked and read, its state left as it is."""
    from simulator.mqtt_server import MqttPumpServer  # noqa: PLC0415 - only this test's

    database = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrations.upgrade(database)
    broker.stop()
    settings = Settings(
        database=database,
        api_tokens=parse_tokens("v-tok-for-the-tests-only-32chars=vera:viewer"),
        pumps=[PumpLink(id="bed-3", transport="mqtt", host=broker.host, mqtt_port=broker.port)],
        poll_interval_s=0.2,
        link_timeout_s=1.0,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as http,
    ):
        health = (await http.get("/api/v1/health")).json()
        assert _links(health) == {"bed-3": False}
        pumps = (await http.get("/api/v1/pumps", headers=VIEWER)).json()
        assert [(p["id"], p["state"]) for p in pumps] == [("bed-3", "offline")]
        broker.start()
        model = PumpModel("bed-3", clock)
        model.set_rate(20)
        model.set_vtbi(40)
        model.run()  # infusing, started at its keypad: reported once linked, never changed
        async with MqttPumpServer(model, broker.host, broker.port):
            async with asyncio.timeout(LINKED_WITHIN_S):
                await _until(http, "/api/v1/health", lambda b: _links(b) == {"bed-3": True})
                pumps = await _until(
                    http,
                    "/api/v1/pumps",
                    lambda b: b[0]["state"] == "running",
                    headers=VIEWER,
                )
            assert pumps[0]["rate_ml_h"] == 20
            assert model.status().rate_ml_h == 20
