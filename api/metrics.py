"""`GET /metrics` (Prometheus text format, prometheus-client): stop latency, commands by fate,
alarms active by kind, link state per pump. Each app has its own registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pumpctl.controller.ward import Ward

__all__ = ["ServiceMetrics"]


class _Live(Collector):
    """Read at every scrape from the ward: nothing to keep in step. A scrape may run off the
    event loop (a sync route runs in the threadpool), so the link's age is measured on the
    clock of the loop the service runs on, taken when it was built."""

    def __init__(self, ward: Ward) -> None:
        self.ward = ward
        self.loop = asyncio.get_running_loop()

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
        for kind, count in sorted(self.ward.store.open_alarm_counts().items()):
            alarms.add_metric([kind], float(count))
        yield alarms
        fates = GaugeMetricFamily(
            "pumpctl_commands", "Commands of the ledger by fate (A3)", labels=["fate"]
        )
        for fate, count in sorted(self.ward.store.command_fate_counts().items()):
            fates.add_metric([fate], float(count))
        yield fates


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
        self.registry.register(_Live(ward))
