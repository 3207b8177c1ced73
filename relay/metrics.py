"""Prometheus metrics of one relay instance, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .store.base import StoreStats

__all__ = ["RelayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RelayMetrics:
    """Counters and gauges the relay exports at ``GET /metrics``.

    Labels take values from small fixed sets (operation names, error codes), never
    from anything a client chose, so no mailbox or client can be told apart.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge(
            "backchannel_relay_connections", "Open WebSocket connections.", registry=r
        )
        self.requests = Counter(
            "backchannel_relay_requests",
            "Requests by operation and result.",
            ["op", "result"],
            registry=r,
        )
        self.received_bytes = Counter(
            "backchannel_relay_received_bytes", "WebSocket frame bytes received.", registry=r
        )
        self.sent_bytes = Counter(
            "backchannel_relay_sent_bytes", "WebSocket frame bytes sent.", registry=r
        )
        self.pushed = Counter(
            "backchannel_relay_pushed_entries", "Entries pushed to subscribers.", registry=r
        )
        self.store_latency = Histogram(
            "backchannel_relay_store_latency_seconds",
            "Time the store took per operation.",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stored_messages = Gauge(
            "backchannel_relay_stored_messages", "Entries held.", registry=r
        )
        self.stored_bytes = Gauge("backchannel_relay_stored_bytes", "Blob bytes held.", registry=r)
        self.mailboxes = Gauge("backchannel_relay_mailboxes", "Mailboxes held.", registry=r)
        self.expired = Counter(
            "backchannel_relay_expired_entries", "Entries removed on expiry.", registry=r
        )
        self.expired_mailboxes = Counter(
            "backchannel_relay_expired_mailboxes", "Mailboxes removed on expiry.", registry=r
        )
        self.rejected = Counter(
            "backchannel_relay_rejected",
            "Requests and connections refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.disconnects = Counter(
            "backchannel_relay_disconnects",
            "Connections the relay closed, by reason.",
            ["reason"],
            registry=r,
        )

    def render(self, stats: StoreStats) -> bytes:
        """The exposition text, with the store gauges refreshed from ``stats``."""
        self.stored_messages.set(stats.entries)
        self.stored_bytes.set(stats.bytes)
        self.mailboxes.set(stats.mailboxes)
        return generate_latest(self.registry)
