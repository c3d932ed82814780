"""`GET /metrics` (Prometheus text format, prometheus-client): stop latency, commands by fate,
alarms active by kind, link state per pump, the store's state, each MQTT broker connection's
receive backlog. Each app has its own registry.

The counts come from the store through the ward's bounded reads before each scrape
(`ServiceMetrics.refresh`, on the event loop, never a database call on it); a store that does
not answer leaves the last counts and says so (`pumpctl_store_degraded`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.mqtt import MqttPump
from pumpctl.controller.ward import Ward
from pumpctl.store.writer import StoreUnavailable

__all__ = ["LOOP_PROBE_S", "ServiceMetrics"]

#: Seconds between two looks at the kernel loop's lag.
LOOP_PROBE_S = 0.05


class _Live(Collector):
    """Read at every scrape: the links from the supervisors, the store's state from its
    writer, the counts from the last `refresh`. The link's age is measured on the clock of the
    loop the service runs on, taken when it was built."""

    def __init__(self, ward: Ward) -> None:
        self.ward = ward
        self.loop = asyncio.get_running_loop()
        self.alarms: dict[str, int] = {}
        self.fates: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        link = GaugeMetricFamily(
            "pumpctl_pump_link_up", "1 while the pump's link is up (A2)", labels=["pump"]
        )
        for pump_id, supervisor in self.ward.supervisors.items():
            up = supervisor.link_up and not supervisor.pump.is_stale(self.loop.time())
            link.add_metric([pump_id], 1.0 if up else 0.0)
        yield link
        alarms = GaugeMetricFamily(
            "pumpctl_alarms_active", "Alarms raised and not yet cleared, by kind", labels=["kind"]
        )
        for kind, count in sorted(self.alarms.items()):
            alarms.add_metric([kind], float(count))
        yield alarms
        fates = GaugeMetricFamily(
            "pumpctl_commands", "Commands of the ledger by fate (A3)", labels=["fate"]
        )
        for fate, count in sorted(self.fates.items()):
            fates.add_metric([fate], float(count))
        yield fates
        health = self.ward.writer.health()
        yield GaugeMetricFamily(
            "pumpctl_store_degraded",
            "1 while the store fails or does not answer within its bound",
            value=1.0 if health.degraded else 0.0,
        )
        yield GaugeMetricFamily(
            "pumpctl_store_records_waiting",
            "Records waiting for the store (written once it answers)",
            value=float(health.waiting),
        )
        yield from self._buses()

    def _buses(self) -> Iterator[Metric]:
        """Each MQTT broker connection's receive path (issue 21): what arrived and waits to be
        routed, the most that ever waited, and what a full queue discarded (a dropped ack is a
        false A3: never silent)."""
        buses = {
            id(s.pump.bus): s.pump.bus
            for s in self.ward.supervisors.values()
            if isinstance(s.pump, MqttPump)
        }
        families = (
            ("pumpctl_mqtt_receive_backlog", "Messages received and not yet routed", "backlog"),
            ("pumpctl_mqtt_receive_backlog_peak", "The most ever waiting", "backlog_peak"),
            ("pumpctl_mqtt_discarded", "Messages discarded at a full receive queue", "discarded"),
        )
        for name, words, field in families:
            family = GaugeMetricFamily(name, words, labels=["broker"])
            for bus in buses.values():
                family.add_metric([f"{bus.host}:{bus.port}"], float(getattr(bus, field)))
            yield family


class ServiceMetrics:
    """The app's registry and its instruments (built in the app's lifespan, on its loop)."""

    def __init__(self, ward: Ward) -> None:
        self.registry = CollectorRegistry()
        self.stop_latency = Histogram(
            "pumpctl_reaction_stop_seconds",
            "Reaction press to the pump-confirmed stop (wire time)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "pumpctl_kernel_loop_lag_seconds",
            "How late the kernel's event loop ran a timer due every 50 ms (wire time)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.list_requests = Counter(
            "pumpctl_infusion_list_requests",
            "GET /infusions requests that reached the kernel (the web side serves one answer "
            "to all its callers until something changes: api/readcache.py)",
            registry=self.registry,
        )
        self.identity_checks = Counter(
            "pumpctl_kernel_identity_checks",
            "Bearer tokens the web side asked the kernel about (GET /kernel/v1/identity), by "
            "answer: the invalid ones it throttles per address never come (issue 20)",
            ["answer"],
            registry=self.registry,
        )
        self._live = _Live(ward)
        self.registry.register(self._live)

    async def watch_loop(self, every_s: float = LOOP_PROBE_S) -> None:
        """Until cancelled: how late this loop runs a timer, observed every `every_s` (a loop
        held by a blocking call shows here first)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + every_s
            await asyncio.sleep(every_s)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    async def refresh(self) -> None:
        """The store's counts, read off the loop and bounded; the last ones kept when the
        store does not answer."""
        with contextlib.suppress(StoreUnavailable):
            self._live.alarms, self._live.fates = await self._live.ward.counts()
