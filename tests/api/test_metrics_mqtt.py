"""GET /metrics shows each MQTT broker connection's receive path (issue 21: the controller's
receive path measured so it never falls behind, its backlog on /metrics): what waits to be
routed, the most that ever waited, and what a full queue discarded (a dropped ack would be a
false A3). Through the service's app with simulated MQTT pumps on a real Mosquitto."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, settings
from fastapi.testclient import TestClient

from api.app import create_app

pytestmark = pytest.mark.mosquitto


def test_metrics_show_the_mqtt_receive_backlog_per_broker(tmp_path: Path, broker: Any) -> None:
    where = f"{broker.host}:{broker.port}"
    app = create_app(settings(tmp_path, link="mqtt", broker=where))
    with TestClient(app, base_url="http://gateway") as client:
        answer = client.get("/metrics", headers=AUTH["admin"])
        assert answer.status_code == 200, answer.text
        series = re.finditer(
            r'^(pumpctl_mqtt_\w+)\{broker="([^"]+)"\} (\S+)$', answer.text, re.MULTILINE
        )
        values = {m[1]: float(m[3]) for m in series if m[2] == where}
    assert set(values) == {
        "pumpctl_mqtt_receive_backlog",
        "pumpctl_mqtt_receive_backlog_peak",
        "pumpctl_mqtt_discarded",
    }, answer.text
    assert values["pumpctl_mqtt_discarded"] == 0
    assert values["pumpctl_mqtt_receive_backlog"] <= values["pumpctl_mqtt_receive_backlog_peak"]
