"""The relay benchmark's workload and phases: settings, what is measured, and the runs.

:func:`run_idle` and :func:`run_throughput` drive the load processes
(``bench/loadgen.py``) against running servers (``bench/servers.py``) and fill in a
:class:`Figures`; ``bench/relay_throughput.py`` decides which phases run and reports.
"""

from __future__ import annotations

import array
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from bench import pg_cluster
from bench.loadgen import load_processes
from bench.servers import Server
from bench.sysstats import (
    cpu_seconds,
    machine_cpu,
    named_cpu_seconds,
    rss_bytes,
    store_latency,
    thread_cpu,
)

__all__ = ["DEFAULTS", "Figures", "Settings", "run_idle", "run_throughput"]


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """The workload; defaults are the issue's, ``--quick`` shortens the phases."""

    rooms: int = 20
    members: int = 5
    blob_bytes: int = 1024
    window: int = 1
    rate: float = 0.0
    duration: float = 20.0
    warmup: float = 2.0
    idle: int = 1000
    procs: int = 2
    quick: bool = False
    store: str = "sqlite"
    nodes: int = 1


DEFAULTS = Settings()


# -- phases ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """Everything measured for one server."""

    msgs_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rss_bytes: int = 0
    peak_rss_bytes: int = 0
    idle_bytes_per_connection: float = 0.0
    idle_connections: int = 0
    sent: int = 0
    delivered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu_percent: float = 0.0
    load_cpu_percent: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def run_idle(server: Server, settings: Settings, figures: Figures) -> None:
    """Open ``settings.idle`` idle connections and record the server's RSS per connection."""
    counts = [c for c in _split(settings.idle, settings.procs) if c]
    jobs = [
        {
            "type": "idle",
            "kind": server.kind,
            "urls": [server.url],
            "index": i,
            "count": count,
            "warm": settings.members * 2,
            "members": settings.members,
        }
        for i, count in enumerate(counts)
    ]
    with load_processes(jobs) as load:
        load.expect("warm", 60)
        time.sleep(0.5)
        before = rss_bytes(server.process.pid)
        load.send("go")
        opened = load.expect("ready", 120)
        time.sleep(1.0)
        after = rss_bytes(server.process.pid)
        load.send("close")
        load.expect("done", 60)
    idle = sum(opened) - len(jobs) * settings.members * 2
    figures.idle_connections = idle
    figures.idle_bytes_per_connection = (after - before) / idle
    figures.extra["idle_rss_before"] = before
    figures.extra["idle_rss_after"] = after


def _percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted latencies in seconds, in milliseconds."""
    return ordered[int(q * (len(ordered) - 1))] * 1000 if ordered else 0.0


def run_throughput(
    servers: list[Server], settings: Settings, figures: Figures, *, postgres: str | None = None
) -> None:
    """Drive the room workload and record deliveries, latency, RSS and CPU.

    With several servers (relay nodes of one cluster), member ``i`` of every room
    connects to node ``i % len(servers)``; RSS and CPU are summed over the nodes.
    ``postgres``: the database URL; also measure the CPU of the machine's PostgreSQL
    processes and the reads of stored entries per append (catch-up reads).
    """
    kind = servers[0].kind
    per_proc = _split(settings.rooms, settings.procs)
    jobs, first_room = [], 0
    for i, count in enumerate(per_proc):
        if not count:
            continue
        rooms = list(range(first_room, first_room + count))
        jobs.append(
            {
                "type": "throughput",
                "kind": kind,
                "urls": [s.url for s in servers],
                "index": i,
                "rooms": rooms,
                "members": settings.members,
                "first_ident": first_room * settings.members,
                "window": settings.window,
                "rate": settings.rate,
                "blob_bytes": settings.blob_bytes,
            }
        )
        first_room += count
    pids = [s.process.pid for s in servers]

    def sample() -> tuple[float, float, tuple[float, float], dict[int, float], tuple[int, int]]:
        # Server CPU, the servers' main (event-loop) threads, the machine, PostgreSQL.
        return (
            sum(cpu_seconds(pid) for pid in pids),
            sum(thread_cpu(pid).get(pid, 0.0) for pid in pids),
            machine_cpu(),
            named_cpu_seconds("postgres") if postgres else {},
            pg_cluster.entry_stats(postgres) if postgres else (0, 0),
        )

    with load_processes(jobs) as load:
        load.expect("ready", 120)
        start = time.time() + 0.3
        window_start = start + settings.warmup
        window_end = window_start + settings.duration
        load.send((start, window_start, window_end))
        time.sleep(max(0.0, window_start - time.time()))
        cpu_start, main_start, machine_start, pg_start, entries_start = sample()
        time.sleep(max(0.0, window_end - time.time()))
        cpu_end, main_end, machine_end, pg_end, entries_end = sample()
        results = load.expect("result", 60)
    latencies: array.array[float] = array.array("d")
    cross: array.array[float] = array.array("d")
    same: array.array[float] = array.array("d")
    for r in results:
        for key, into in (
            ("latencies", latencies),
            ("cross_latencies", cross),
            ("same_latencies", same),
        ):
            chunk: array.array[float] = array.array("d")
            chunk.frombytes(r[key])
            into.extend(chunk)
        figures.sent += r["sent"]
        for code, n in r["errors"].items():
            figures.errors[code] = figures.errors.get(code, 0) + n
    figures.delivered = sum(r["delivered"] for r in results)
    figures.msgs_per_s = figures.delivered / settings.duration
    ordered = sorted(latencies)
    figures.p50_ms = _percentile(ordered, 0.50)
    figures.p99_ms = _percentile(ordered, 0.99)
    # Every accepted send must reach every member of its room once: after the drain,
    # fewer deliveries than that were lost (or late by seconds), more were duplicated.
    figures.extra["deliveries_all_run"] = sum(r["delivered_total"] for r in results)
    figures.extra["deliveries_expected"] = sum(r["expected_total"] for r in results)
    figures.extra["deliveries_missing"] = (
        figures.extra["deliveries_expected"] - figures.extra["deliveries_all_run"]
    )
    if len(servers) > 1:
        ordered_cross, local = sorted(cross), sorted(same)
        figures.extra["nodes"] = len(servers)
        figures.extra["cross_node_share"] = len(cross) / len(latencies) if latencies else 0.0
        figures.extra["cross_node_p50_ms"] = _percentile(ordered_cross, 0.50)
        figures.extra["cross_node_p99_ms"] = _percentile(ordered_cross, 0.99)
        figures.extra["cross_node_max_ms"] = ordered_cross[-1] * 1000 if ordered_cross else 0.0
        figures.extra["same_node_p50_ms"] = _percentile(local, 0.50)
        figures.extra["same_node_p99_ms"] = _percentile(local, 0.99)
    figures.server_cpu_percent = 100 * (cpu_end - cpu_start) / settings.duration
    # The event loop runs on the main thread (tid == pid); the relay's SQLite writer and
    # readers are the other threads. Their split shows which side is saturated.
    main_thread = main_end - main_start
    figures.extra["event_loop_cpu_percent"] = 100 * main_thread / settings.duration
    figures.extra["other_threads_cpu_percent"] = max(
        0.0, 100 * (cpu_end - cpu_start - main_thread) / settings.duration
    )
    pg_seconds = sum(pg_end[pid] - pg_start[pid] for pid in pg_end.keys() & pg_start.keys())
    if postgres:
        # Every PostgreSQL process on the machine: this run's backends, and anyone else's.
        figures.extra["postgres_cpu_percent"] = 100 * pg_seconds / settings.duration
        scans, inserts = (
            end - start for start, end in zip(entries_start, entries_end, strict=True)
        )
        # Appends do not read relay_entries; subscriptions catching up from the store do
        # (a hint from another node, or an entry that committed out of order).
        figures.extra["postgres_entry_scans_per_s"] = scans / settings.duration
        figures.extra["postgres_entry_scans_per_append"] = scans / inserts if inserts else None
    busy, total = (b - a for a, b in zip(machine_start, machine_end, strict=True))
    figures.extra["machine_busy_percent"] = 100 * busy / total if total else 0.0
    figures.load_cpu_percent = 100 * sum(r["cpu"] for r in results) / settings.duration
    # CPU the servers, PostgreSQL and the load did not use: other processes (or loopback
    # softirq work charged to no one). Well above zero means the machine was not ours alone.
    figures.extra["other_cpu_percent"] = max(
        0.0,
        100 * busy / settings.duration
        - figures.server_cpu_percent
        - figures.load_cpu_percent
        - 100 * pg_seconds / settings.duration,
    )
    figures.rss_bytes = sum(rss_bytes(pid) for pid in pids)
    figures.peak_rss_bytes = sum(rss_bytes(pid, "VmHWM") for pid in pids)
    if kind == "relay":
        texts = []
        for server in servers:
            with contextlib.suppress(OSError):
                texts.append(server.http("/metrics").decode())
        if texts:
            figures.extra["store"] = store_latency(*texts)
