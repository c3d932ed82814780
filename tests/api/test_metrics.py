"""GET /metrics through HTTP: the stop-latency histogram counts every reaction whose stop the
pump confirmed (I1, the 201 answer's `stop_confirmed_ms`), and only those (A3: a stop the pump
never confirmed has no latency)."""

from __future__ import annotations

import pytest
from conftest import AUTH, ApiSteps
from prometheus_client.parser import text_string_to_metric_families

HISTOGRAM = "pumpctl_reaction_stop_seconds"


def _histogram(ward: ApiSteps) -> dict[str, float]:
    """The histogram's samples by name (`_count`, `_sum`, `_bucket` of le=+Inf)."""
    r = ward.c.get("/metrics", headers=AUTH["admin"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(r.text):
        if family.name == HISTOGRAM:
            return {
                s.name + (f"{{le={s.labels['le']}}}" if "le" in s.labels else ""): s.value
                for s in family.samples
            }
    raise AssertionError(f"{HISTOGRAM} is not in GET /metrics:\n{r.text}")


def test_I1_a_confirmed_stop_is_observed_in_the_stop_latency_histogram(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient())
    before = _histogram(ward)
    assert before[f"{HISTOGRAM}_count"] == 0
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
    )
    assert answer["stop"] == "confirmed"
    after = _histogram(ward)
    assert after[f"{HISTOGRAM}_count"] == 1
    assert after[f"{HISTOGRAM}_bucket{{le=+Inf}}"] == 1
    assert after[f"{HISTOGRAM}_sum"] == pytest.approx(answer["stop_confirmed_ms"] / 1000)


def test_A3_an_unconfirmed_stop_is_not_observed(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient())
    ward.post("/sim/pumps/pump-1/faults", "admin", {"fault": "no_reply"})
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 202
    )
    assert (answer["stop"], answer["alarm"]) == ("unconfirmed", "A3")
    assert _histogram(ward)[f"{HISTOGRAM}_count"] == 0


def test_A2_a_scrape_reports_the_link_of_each_pump_after_contact(ward: ApiSteps) -> None:
    """The scrape runs off the event loop; it once failed (500) as soon as a pump had answered."""
    ward.advance(1)
    assert all(p["connected"] for p in ward.get("/pumps"))
    r = ward.c.get("/metrics", headers=AUTH["admin"])
    assert r.status_code == 200, r.text
    links = {
        s.labels["pump"]: s.value
        for family in text_string_to_metric_families(r.text)
        if family.name == "pumpctl_pump_link_up"
        for s in family.samples
    }
    assert links == {"pump-1": 1.0, "pump-2": 1.0}
