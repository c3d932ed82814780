"""The infusions' public state on MQTT (interfaces.md, section 2): with a broker configured, the
service publishes `{prefix}/infusions/{id}` retained, QoS 1, as `GET /infusions/{id}` shows it,
after every change; a broker that is down stops neither the service nor a stop.

The app runs in FastAPI's TestClient (its own loop, in a thread); the subscribers are plain
aiomqtt clients on this test's loop, through a real Mosquitto of the test's own.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import HOUR, ApiSteps, settings
from fastapi.testclient import TestClient
from mqtt_env import RELINK_BOUND_S, Spy, spy

from api.app import create_app

pytestmark = pytest.mark.mosquitto

PREFIX = "pumpctl/v1"
#: View fields that grow with time alone (published as of the ward's last change).
ACCRUING = {"volume_infused_ml", "bag_infused_ml", "running_min", "time_left_min"}


def topic(infusion_id: int) -> str:
    return f"{PREFIX}/infusions/{infusion_id}"


async def view_until(
    watcher: Spy,
    infusion_id: int,
    state: str,
    *,
    stopped: bool = False,
    held: bool | None = None,
    bound_s: float = RELINK_BOUND_S,
) -> dict[str, Any]:
    """The first view of `infusion_id` published with `state` (with `stopped`, and the pump's
    stop confirmed: rate 0; with `held`, that hold), earlier ones skipped, bounded."""
    async with asyncio.timeout(bound_s):
        while True:
            view = await watcher.next_json(topic(infusion_id), bound_s)
            if view["state"] != state or (held is not None and view["held"] is not held):
                continue
            if not stopped or view["rate_ml_h"] == 0.0:
                return view


def service(tmp_path: Path, broker: Any) -> TestClient:
    app = create_app(settings(tmp_path, broker=f"{broker.host}:{broker.port}"))
    return TestClient(app, base_url="http://gateway")


async def test_a_started_infusion_is_published_retained_and_follows_a_reaction(
    tmp_path: Path, broker: Any
) -> None:
    with service(tmp_path, broker) as client:
        ward = ApiSteps(client)
        async with spy(broker, f"{PREFIX}/infusions/+") as early:
            infusion = ward.started(ward.patient())
            view = await view_until(early, infusion, "running")
            shown = ward.get(f"/infusions/{infusion}")
            # the JSON of GET /infusions/{id} as of the change (what runs on with time alone,
            # between two changes, is as of the last change)
            assert set(view) == set(shown)
            assert {k: v for k, v in view.items() if k not in ACCRUING} == {
                k: v for k, v in shown.items() if k not in ACCRUING
            }
            assert (view["id"], view["pump_id"], view["rate_ml_h"]) == (infusion, "pump-1", 50)

            # a subscriber that comes later still gets it: retained
            async with spy(broker, topic(infusion)) as late:
                message = await late.next(topic(infusion))
                assert message.retain
                assert message.qos == 1
                assert isinstance(message.payload, bytes)
                retained = json.loads(message.payload)
                assert (retained["id"], retained["state"]) == (infusion, "running")

            ward.advance(HOUR)
            answer = ward.post(
                f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
            )
            assert answer["stop"] == "confirmed", answer
            shown = ward.get(f"/infusions/{infusion}")
            assert shown["state"] == "paused"
            after = await view_until(early, infusion, "paused", stopped=True)
            assert after["reaction"] is not None
            assert after["reaction"]["grade"] == 2
            assert after["rate_ml_h"] == 0.0

        # and a newcomer now reads the new state, not the old one
        async with spy(broker, topic(infusion)) as late:
            message = await late.next(topic(infusion))
            assert message.retain
            assert isinstance(message.payload, bytes)
            assert json.loads(message.payload)["state"] == "paused"


async def test_a_broker_down_stops_neither_the_service_nor_a_stop(
    tmp_path: Path, broker: Any
) -> None:
    """The broker is down when the service starts and while a reaction stops the pump: the
    service answers, the stop is confirmed; once the broker is back, the view is there."""
    broker.stop()
    with service(tmp_path, broker) as client:
        ward = ApiSteps(client)
        infusion = ward.started(ward.patient())
        assert ward.get(f"/infusions/{infusion}")["state"] == "running"
        answer = ward.post(
            f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
        )
        assert answer["stop"] == "confirmed", answer
        assert ward.pump()["state"] == "stopped"
        assert ward.get(f"/infusions/{infusion}")["state"] == "paused"
        broker.start()
        async with spy(broker, topic(infusion)) as late:
            view = await view_until(late, infusion, "paused", stopped=True)
            assert view["reaction"] is not None


async def test_a_planned_infusion_is_published_and_its_cancellation_too(
    tmp_path: Path, broker: Any
) -> None:
    """Published from the plan on; an infusion that leaves supervision (cancelled) has its
    last view published, then is left alone."""
    with service(tmp_path, broker) as client:
        ward = ApiSteps(client)
        async with spy(broker, f"{PREFIX}/infusions/+") as watcher:
            patient = ward.patient()
            body = {"patient_id": patient, "pump_id": "pump-2"}
            infusion = ward.post("/infusions", "clinician", body, 201)["id"]
            planned = await view_until(watcher, infusion, "planned")
            assert planned["pump_id"] == "pump-2"
            ward.post(f"/infusions/{infusion}/cancel", "clinician", {"reason": "not today"})
            cancelled = await view_until(watcher, infusion, "cancelled")
            assert cancelled["supervised"] is False


async def test_a_change_builds_again_only_the_views_of_the_infusions_it_changed(
    tmp_path: Path, broker: Any
) -> None:
    """A reaction on one pump's infusion rebuilds that infusion's view, not the room's: the
    publisher's cost follows what changed (with 100 pumps, every change rebuilding every
    view took most of the service's event loop)."""
    with service(tmp_path, broker) as client:
        ward = ApiSteps(client)
        publisher = client.app.state.publisher  # type: ignore[attr-defined]
        async with spy(broker, f"{PREFIX}/infusions/+") as watcher:
            one = ward.started(ward.patient(), pump="pump-1")
            other = ward.started(ward.patient("MRN-2"), pump="pump-2")
            await view_until(watcher, one, "running")
            await view_until(watcher, other, "running")
            # the records are written by the store's writer thread, and the publisher told
            # once they are: the health probe's write comes after every one of them, and the
            # hold's view comes after every burst they caused
            ward.get("/health")
            ward.post(f"/infusions/{one}/hold", "clinician")
            await view_until(watcher, one, "running", held=True)
            before = dict(publisher.views_built)
            answer = ward.post(
                f"/infusions/{one}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
            )
            assert answer["stop"] == "confirmed", answer
            await view_until(watcher, one, "paused", stopped=True)
            assert publisher.views_built[one] > before[one]
            assert publisher.views_built[other] == before[other], (before, publisher.views_built)
