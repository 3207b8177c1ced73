"""Relay throughput, latency and memory against a bare aiohttp broadcast baseline.

What it does, in one run, all on 127.0.0.1:

1. **Idle memory.** For each server (the relay, then the baseline) a fresh server
   subprocess is started; the load processes open a few warm-up connections, the
   server's VmRSS is read, then ``--idle`` more connections are opened and held
   (relay: each authenticates *read* on a mailbox and subscribes from 0; baseline:
   each joins a room), and VmRSS is read again after a short settle. Memory per
   connection is the RSS delta divided by the number of connections.
2. **Throughput and latency.** A fresh server again, then ``--rooms`` rooms of
   ``--members`` members each. On the relay every room is one mailbox (created, then
   every member authenticates read and write and subscribes from 0); on the baseline
   every member joins the room. Every member is its own WebSocket and sends
   ``--blob-bytes`` blobs; each blob starts with the send time (``time.time()``, one
   clock shared by all processes on the machine) and the sender's number. Every member
   receives every blob of its room, its own included, so one send is ``members``
   deliveries.

Pacing: closed loop. A member keeps at most ``--window`` of its own messages in
flight, where "in flight" means sent and not yet received back by that member (its
own push or broadcast), the same definition for both servers. So both servers run at
the highest load they sustain with that much concurrency (100 messages in flight by
default), and delivered messages per second is that sustained throughput. The
default window is 1: the relay handles one request per connection at a time (answers
stay in order), so a larger window only queues appends in its socket buffers, adds
latency and, measured, lowers its throughput; 1 is the relay's best case and what a
chat client waiting for its message to appear does. ``--rate`` adds an open-loop
schedule (messages per second per member, still capped by the window) to compare
latency at an equal offered load instead.

Counted in the measurement window only (after ``--warmup``): deliveries (pushes or
broadcasts received by members) per second, and the end-to-end latency of each
delivery (receive time minus send time), p50 and p99. Server RSS is read from
``/proc/PID/status`` after the run, and CPU time over the window from ``/proc``: the
server's (split into its event-loop thread and its other threads, i.e. the relay's
SQLite writer and readers), the load processes', and the rest of the machine's, which
should be near zero (the script warns when the machine is busy before it starts).

The relay is the real one (``python -m relay serve``), durable: SQLite in WAL mode
with ``synchronous=FULL`` and group commit, so an append is acknowledged (and pushed)
only after its fsync. Its per-connection append rate limit (50/s, burst 200 by
default) is raised through ``BACKCHANNEL_RELAY_APPENDS_PER_SECOND`` and
``BACKCHANNEL_RELAY_APPEND_BURST`` so that the benchmark measures the relay, not its
limiter. The baseline is ``bench/baseline_server.py``. Both use uvloop when it is
installed, and so do the load processes (``--procs``, default 2: the machine this was
written for has 2 cores, shared by the server and the load).

``--store postgres`` (with ``--nodes N``, default 2) measures, in one run and on the
same workload, throughput only: the baseline, the relay on SQLite, the relay on
PostgreSQL with one node, and N relay nodes sharing one PostgreSQL database (member
``i`` of every room connects to node ``i % N``, so deliveries cross nodes through
LISTEN/NOTIFY). Each PostgreSQL phase gets a fresh schema, dropped afterwards (see
``bench/pg_cluster.py``); the JSON holds ``ratios`` such as ``postgres_1_vs_sqlite``
and ``postgres_2_vs_postgres_1``. When PostgreSQL does not answer, the run is skipped
with a message and ``{"skipped": true, ...}`` as the last line.

Usage::

    .venv/bin/python bench/relay_throughput.py            # ~20 s per throughput phase
    .venv/bin/python bench/relay_throughput.py --quick    # under 30 s in all
    .venv/bin/python bench/relay_throughput.py --store postgres [--nodes 2] [--quick]

The last line of stdout is one JSON object with the ratios and every raw figure.
Targets (reported as PASS/MISS; the exit status is 0 either way): relay throughput at
least 0.5x the baseline's, relay p99 at most 3x the baseline's, relay idle memory per
connection at most 1.5x the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: import the project's packages
    sys.path.insert(0, str(REPO))

from bench import pg_cluster  # noqa: E402
from bench.loadgen import HEADER, BenchError  # noqa: E402
from bench.relay_phases import (  # noqa: E402
    DEFAULTS,
    Figures,
    Settings,
    run_idle,
    run_throughput,
)
from bench.servers import RELAY_RATE_LIMIT, Server, start_server, stop_server  # noqa: E402
from bench.sysstats import ProcError, machine_cpu  # noqa: E402

#: Targets from the issue: relay/baseline ratios.
TARGET_THROUGHPUT = 0.5
TARGET_P99 = 3.0
TARGET_IDLE_MEMORY = 1.5


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Relay vs bare aiohttp broadcast: throughput, latency, memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="whole run in under 30 s")
    parser.add_argument("--rooms", type=int, default=DEFAULTS.rooms)
    parser.add_argument("--members", type=int, default=DEFAULTS.members, help="per room")
    parser.add_argument("--blob-bytes", type=int, default=DEFAULTS.blob_bytes)
    parser.add_argument(
        "--window", type=int, default=DEFAULTS.window, help="own messages in flight per member"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="per-member send rate (0: closed loop only)"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per throughput phase")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each window")
    parser.add_argument("--idle", type=int, help="idle connections per server")
    parser.add_argument("--procs", type=int, default=DEFAULTS.procs, help="load processes")
    parser.add_argument(
        "--data-dir", type=Path, help="parent directory for the relay's store (default: a temp dir)"
    )
    parser.add_argument(
        "--profile-relay",
        type=Path,
        metavar="FILE",
        help="run the relay's throughput phase under cProfile and write the stats to FILE",
    )
    parser.add_argument(
        "--only",
        choices=["relay", "baseline"],
        help="measure one server only (no ratios); for investigating",
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: measure SQLite, PostgreSQL with 1 node and with --nodes nodes, in one run "
        f"(server: ${pg_cluster.ENV_VAR} or {pg_cluster.DEFAULT_URL})",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        help="relay nodes on one PostgreSQL database for the cluster phase (default 2)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    postgres = args.store == "postgres"
    if not postgres and args.nodes not in (None, 1):
        parser.error("--nodes needs --store postgres (SQLite serves one node)")
    if postgres and (args.only or args.profile_relay):
        parser.error("--only and --profile-relay measure the default (SQLite) mode only")
    settings = Settings(
        rooms=args.rooms,
        members=args.members,
        blob_bytes=args.blob_bytes,
        window=args.window,
        rate=args.rate,
        # --store postgres runs four throughput phases and no idle phases: 2.5 s each
        # keeps --quick under about 30 s, 15 s each keeps the full run near 90 s.
        duration=args.duration
        if args.duration is not None
        else (2.5 if quick and postgres else 3.0 if quick else 15.0 if postgres else 20.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 2.0),
        idle=args.idle if args.idle is not None else (400 if quick else 1000),
        procs=args.procs,
        quick=quick,
        store=args.store,
        nodes=args.nodes if args.nodes is not None else (2 if postgres else 1),
    )
    if settings.blob_bytes < HEADER.size:
        parser.error(f"--blob-bytes must be at least {HEADER.size}")
    if (
        min(
            settings.rooms,
            settings.members,
            settings.window,
            settings.procs,
            settings.idle,
            settings.nodes,
        )
        < 1
    ):
        parser.error("--rooms, --members, --window, --procs, --idle and --nodes must be positive")
    return settings, args


# -- report ----------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _rows(settings: Settings, postgres: bool) -> list[tuple[str, Callable[[Figures], str]]]:
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("delivered msgs/s", lambda f: f"{f.msgs_per_s:,.0f}"),
        ("sends/s", lambda f: f"{f.sent / settings.duration:,.0f}"),
        ("p50 latency", lambda f: f"{f.p50_ms:.2f} ms"),
        ("p99 latency", lambda f: f"{f.p99_ms:.2f} ms"),
        ("server RSS after run", lambda f: _mib(f.rss_bytes)),
        ("server peak RSS", lambda f: _mib(f.peak_rss_bytes)),
        ("server CPU (of one core)", lambda f: f"{f.server_cpu_percent:.0f}%"),
        (
            "  event-loop thread / others",
            lambda f: (
                f"{f.extra.get('event_loop_cpu_percent', 0):.0f}% / "
                f"{f.extra.get('other_threads_cpu_percent', 0):.0f}%"
            ),
        ),
        ("load processes CPU", lambda f: f"{f.load_cpu_percent:.0f}%"),
        ("machine busy (all CPUs)", lambda f: f"{f.extra.get('machine_busy_percent', 0):.0f}%"),
        ("CPU of other processes", lambda f: f"{f.extra.get('other_cpu_percent', 0):.0f}%"),
        ("load average before", lambda f: f"{f.extra.get('loadavg_before', 0.0):.2f}"),
    ]
    if postgres:
        rows[9:9] = [
            ("PostgreSQL CPU", lambda f: _pct(f.extra.get("postgres_cpu_percent"))),
            (
                "entries reads/s (catch-up)",
                lambda f: _num(f.extra.get("postgres_entry_scans_per_s")),
            ),
            ("  per append", lambda f: _num(f.extra.get("postgres_entry_scans_per_append"), 2)),
        ]
        rows += [
            ("cross-node share", lambda f: _pct(_scaled(f.extra.get("cross_node_share"), 100))),
            ("cross-node p50 / p99", lambda f: _pair(f, "cross_node")),
            ("same-node p50 / p99", lambda f: _pair(f, "same_node")),
            ("cross-node max latency", lambda f: _ms(f.extra.get("cross_node_max_ms"))),
        ]
    else:
        rows.append(
            (
                "idle memory per connection",
                lambda f: f"{f.idle_bytes_per_connection:,.0f} B ({f.idle_connections} conns)",
            )
        )
    rows += [
        ("refused appends", lambda f: str(sum(f.errors.values()))),
        ("deliveries missing (drain)", lambda f: str(f.extra.get("deliveries_missing", "-"))),
    ]
    return rows


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _pair(f: Figures, prefix: str) -> str:
    p50, p99 = f.extra.get(f"{prefix}_p50_ms"), f.extra.get(f"{prefix}_p99_ms")
    return "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f} ms"


def _print_table(
    settings: Settings, figures: dict[str, Figures], headers: dict[str, str], postgres: bool
) -> None:
    print(f"{'':28}" + "".join(f"{headers.get(k, k):>22}" for k in figures))
    for label, fmt in _rows(settings, postgres):
        print(f"{label:28}" + "".join(f"{fmt(f):>22}" for f in figures.values()))
    for kind, f in figures.items():
        store = f.extra.get("store")
        if not store:
            continue
        print()
        for op, s in sorted(store.items()):
            print(
                f"{headers.get(kind, kind)} store {op:8} n={s['count']:>9,.0f} "
                f"mean {s['mean_ms']:.2f} ms, p50 <= {s['p50_le_ms']:g} ms, "
                f"p99 <= {s['p99_le_ms']:g} ms"
            )


def _describe(settings: Settings) -> None:
    print(
        f"workload: {settings.rooms} rooms x {settings.members} members, every member sending "
        f"{settings.blob_bytes} B blobs, closed loop with at most {settings.window} own messages "
        f"in flight per member"
        + (f", paced at {settings.rate:g}/s per member" if settings.rate else "")
        + f"; {settings.duration:g} s measured after {settings.warmup:g} s warm-up; "
        f"{settings.procs} load processes; {os.cpu_count()} CPUs"
    )


def report(settings: Settings, figures: dict[str, Figures]) -> dict[str, Any]:
    """Print the table and the target verdicts; return the JSON summary."""
    _describe(settings)
    print(
        f"relay: durable SQLite (WAL, synchronous=FULL, group commit); append rate limit "
        f"raised to {RELAY_RATE_LIMIT}/s (burst {RELAY_RATE_LIMIT}) via "
        "BACKCHANNEL_RELAY_APPENDS_PER_SECOND / BACKCHANNEL_RELAY_APPEND_BURST"
    )
    print()
    _print_table(settings, figures, {}, postgres=False)
    summary: dict[str, Any] = {
        "settings": asdict(settings),
        **{kind: asdict(f) for kind, f in figures.items()},
    }
    if "relay" in figures:
        summary["idle_bytes_per_connection"] = round(figures["relay"].idle_bytes_per_connection)
    if len(figures) == 2:
        relay, base = figures["relay"], figures["baseline"]
        ratios = {
            "throughput_ratio": _ratio(relay.msgs_per_s, base.msgs_per_s),
            "p99_ratio": _ratio(relay.p99_ms, base.p99_ms),
            "idle_memory_ratio": _ratio(
                relay.idle_bytes_per_connection, base.idle_bytes_per_connection
            ),
        }
        checks = {
            "throughput": (ratios["throughput_ratio"], ">=", TARGET_THROUGHPUT),
            "p99": (ratios["p99_ratio"], "<=", TARGET_P99),
            "idle_memory": (ratios["idle_memory_ratio"], "<=", TARGET_IDLE_MEMORY),
        }
        print()
        targets = {}
        for name, (value, op, target) in checks.items():
            ok = value is not None and (value >= target if op == ">=" else value <= target)
            targets[name] = ok
            shown = "n/a" if value is None else f"{value:.2f}x"
            print(
                f"{'PASS' if ok else 'MISS'}  {name:12} relay/baseline = {shown:>8}  "
                f"(target {op} {target}x)"
            )
        summary |= ratios
        summary["targets_met"] = targets
    return summary


def report_postgres(settings: Settings, figures: dict[str, Figures], url: str) -> dict[str, Any]:
    """The ``--store postgres`` table and ratios; return the JSON summary."""
    n = settings.nodes
    cluster = f"postgres_{n}"
    headers = {
        "baseline": "baseline",
        "sqlite": "relay SQLite",
        "postgres_1": "relay PG 1 node",
        cluster: f"relay PG {n} nodes",
    }
    _describe(settings)
    print(
        "relay: SQLite (WAL, synchronous=FULL, group commit) and PostgreSQL at "
        f"{pg_cluster.redacted(url)} (a fresh schema per phase); append rate limit raised to "
        f"{RELAY_RATE_LIMIT}/s. With {n} nodes, member i of every room is connected to node "
        f"i % {n}. Server RSS and CPU are summed over the nodes; PostgreSQL CPU counts every "
        "postgres process on the machine."
    )
    print()
    _print_table(settings, figures, headers, postgres=True)
    pairs = [
        ("postgres_1", "sqlite"),
        (cluster, "postgres_1"),
        ("sqlite", "baseline"),
        ("postgres_1", "baseline"),
        (cluster, "baseline"),
    ]
    ratios: dict[str, dict[str, float | None]] = {}
    print()
    for a, b in pairs:
        if a == b or a not in figures or b not in figures:
            continue
        fa, fb = figures[a], figures[b]
        ratios[f"{a}_vs_{b}"] = r = {
            "throughput": _ratio(fa.msgs_per_s, fb.msgs_per_s),
            "p50": _ratio(fa.p50_ms, fb.p50_ms),
            "p99": _ratio(fa.p99_ms, fb.p99_ms),
            "rss": _ratio(fa.rss_bytes, fb.rss_bytes),
        }
        shown = {k: "n/a" if v is None else f"{v:.2f}x" for k, v in r.items()}
        print(
            f"{headers[a] + ' / ' + headers[b]:36} throughput {shown['throughput']:>7}, "
            f"p50 {shown['p50']:>7}, p99 {shown['p99']:>7}, RSS {shown['rss']:>7}"
        )
    return {
        "settings": asdict(settings),
        "postgres_url": pg_cluster.redacted(url),
        **{kind: asdict(f) for kind, f in figures.items()},
        "ratios": ratios,
    }


# -- main ------------------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE (inherited by the servers and load processes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < needed:
            raise BenchError(
                f"This needs about {needed} open files, but the hard limit is {hard}; "
                "raise it (ulimit -Hn) or pass a smaller --idle."
            )


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def _busy_before() -> float:
    """How busy the machine is (percent of all CPUs, over one second); warn when it is."""
    busy_start = machine_cpu()
    time.sleep(1.0)
    busy_end = machine_cpu()
    busy = 100 * (busy_end[0] - busy_start[0]) / max(1e-9, busy_end[1] - busy_start[1])
    if busy > 20:
        print(
            f"warning: the machine was {busy:.0f}% busy before the benchmark started; "
            "other processes will skew the figures",
            file=sys.stderr,
        )
    return busy


def _phase(label: str, figures: Figures) -> None:
    """Say which phase starts, and note the load average (others may share the machine)."""
    load1 = os.getloadavg()[0]
    figures.extra.setdefault("loadavg_before", load1)
    print(f"[{label}] (load average {load1:.2f}) ...", file=sys.stderr, flush=True)


def main_postgres(settings: Settings, args: argparse.Namespace) -> int:
    """``--store postgres``: baseline, SQLite, PostgreSQL with 1 and with N nodes."""
    url = pg_cluster.postgres_url()
    why = pg_cluster.unreachable(url)
    if why is not None:
        reason = (
            f"PostgreSQL is not reachable at {pg_cluster.redacted(url)} ({why}); start it or "
            f"point ${pg_cluster.ENV_VAR} at one"
        )
        print(f"skipped: {reason}", file=sys.stderr)
        print(json.dumps({"skipped": True, "reason": reason, "store": "postgres"}))
        return 0
    busy_before = _busy_before()
    phases: dict[str, tuple[str, int]] = {  # label: (store, nodes)
        "baseline": ("", 1),
        "sqlite": ("sqlite", 1),
        "postgres_1": ("postgres", 1),
        f"postgres_{settings.nodes}": ("postgres", settings.nodes),
    }
    figures = {label: Figures() for label in phases}
    servers: list[Server] = []
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bc-bench-") as tmp:
            workdir = Path(tmp)
            for label, (store, nodes) in phases.items():
                _phase(f"{label}: throughput", figures[label])
                kind = "baseline" if not store else "relay"
                with contextlib.ExitStack() as stack:
                    database_url = None
                    if store == "postgres":
                        database_url = stack.enter_context(pg_cluster.fresh_schema(url, label))
                    nodes_up = [
                        start_server(
                            kind,
                            workdir,
                            servers,
                            data_parent=args.data_dir,
                            profile=None,
                            database_url=database_url,
                        )
                        for _ in range(nodes)
                    ]
                    try:
                        run_throughput(nodes_up, settings, figures[label], postgres=database_url)
                    finally:
                        for server in nodes_up:  # before the schema is dropped
                            stop_server(server)
    except (BenchError, ProcError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            stop_server(server)
    print(f"[done in {time.monotonic() - began:.1f} s]", file=sys.stderr)
    summary = report_postgres(settings, figures, url)
    summary["machine_busy_before_percent"] = round(busy_before, 1)
    print(json.dumps(summary, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Servers and load processes each hold one end of every connection, plus slack.
    raise_fd_limit(2 * max(settings.idle, settings.rooms * settings.members) + 1024)
    if settings.store == "postgres":
        return main_postgres(settings, args)
    kinds = [args.only] if args.only else ["relay", "baseline"]
    # The figures mean little if something else is using the CPUs: say so up front.
    busy_before = _busy_before()
    servers: list[Server] = []
    figures = {kind: Figures() for kind in kinds}
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bc-bench-") as tmp:
            workdir = Path(tmp)
            for kind in kinds:
                # A fresh server per phase: one phase's leftovers never skew the other.
                _phase(f"{kind}: idle connections", figures[kind])
                server = start_server(
                    kind, workdir, servers, data_parent=args.data_dir, profile=None
                )
                run_idle(server, settings, figures[kind])
                stop_server(server)
                _phase(f"{kind}: throughput", figures[kind])
                profile = args.profile_relay if kind == "relay" else None
                server = start_server(
                    kind, workdir, servers, data_parent=args.data_dir, profile=profile
                )
                run_throughput([server], settings, figures[kind])
                stop_server(server)
    except (BenchError, ProcError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            stop_server(server)
    print(f"[done in {time.monotonic() - began:.1f} s]", file=sys.stderr)
    if args.profile_relay is not None and args.profile_relay.exists():
        print(
            f"\ncProfile of the relay's event-loop thread ({args.profile_relay}):", file=sys.stderr
        )
        stats = pstats.Stats(str(args.profile_relay), stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
    summary = report(settings, figures)
    summary["machine_busy_before_percent"] = round(busy_before, 1)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
