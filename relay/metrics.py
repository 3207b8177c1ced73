"""Prometheus metrics of one relay instance, on a registry of its own.

The hot path (every frame, every push) only adds to plain integers; a custom
collector turns them into Prometheus families when ``/metrics`` is scraped. The
relay's loop is single-threaded, so no lock is needed, and prometheus-client's
per-increment mutex was a measurable share of the relay's CPU under load.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .store.base import StoreStats

__all__ = ["LatencyHistogram", "RelayMetrics"]

_PREFIX = "backchannel_relay_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Bucket counts and a sum, in seconds."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


class RelayMetrics(Collector):
    """Counters and gauges the relay exports at ``GET /metrics``.

    Labels take values from small fixed sets (operation names, error codes), never
    from anything a client chose, so no mailbox or client can be told apart.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.connections = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.pushed = 0
        self.expired = 0
        self.expired_mailboxes = 0
        self.requests: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.rejected: defaultdict[str, int] = defaultdict(int)
        self.disconnects: defaultdict[str, int] = defaultdict(int)
        self.store_latency: defaultdict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
        self.last_stats = StoreStats(0, 0, 0)
        self.registry.register(self)

    def count_request(self, op: str, result: str) -> None:
        self.requests[(op, result)] += 1

    def latency(self, op: str) -> LatencyHistogram:
        """The store-latency histogram for ``op``."""
        return self.store_latency[op]

    def render(self, stats: StoreStats) -> bytes:
        """The exposition text, with the store gauges refreshed from ``stats``."""
        self.last_stats = stats
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(_PREFIX + name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(_PREFIX + name, doc, value=value)

        yield gauge("connections", "Open WebSocket connections.", self.connections)
        requests = CounterMetricFamily(
            _PREFIX + "requests", "Requests by operation and result.", labels=["op", "result"]
        )
        for (op, result), value in sorted(self.requests.items()):
            requests.add_metric([op, result], value)
        yield requests
        yield counter("received_bytes", "WebSocket frame bytes received.", self.received_bytes)
        yield counter("sent_bytes", "WebSocket frame bytes sent.", self.sent_bytes)
        yield counter("pushed_entries", "Entries pushed to subscribers.", self.pushed)
        latency = HistogramMetricFamily(
            _PREFIX + "store_latency_seconds", "Time the store took per operation.", labels=["op"]
        )
        for op, hist in sorted(self.store_latency.items()):
            buckets, running = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist.counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            latency.add_metric([op], buckets, hist.sum)
        yield latency
        yield gauge("stored_messages", "Entries held.", self.last_stats.entries)
        yield gauge("stored_bytes", "Blob bytes held.", self.last_stats.bytes)
        yield gauge("mailboxes", "Mailboxes held.", self.last_stats.mailboxes)
        yield counter("expired_entries", "Entries removed on expiry.", self.expired)
        yield counter("expired_mailboxes", "Mailboxes removed on expiry.", self.expired_mailboxes)
        for name, doc, table in (
            ("rejected", "Requests and connections refused, by reason.", self.rejected),
            ("disconnects", "Connections the relay closed, by reason.", self.disconnects),
        ):
            family = CounterMetricFamily(_PREFIX + name, doc, labels=["reason"])
            for reason, value in sorted(table.items()):
                family.add_metric([reason], value)
            yield family
