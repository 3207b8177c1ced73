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

Usage::

    .venv/bin/python bench/relay_throughput.py            # ~20 s per throughput phase
    .venv/bin/python bench/relay_throughput.py --quick    # under 30 s in all

The last line of stdout is one JSON object with the ratios and every raw figure.
Targets (reported as PASS/MISS; the exit status is 0 either way): relay throughput at
least 0.5x the baseline's, relay p99 at most 3x the baseline's, relay idle memory per
connection at most 1.5x the baseline's.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import os
import pstats
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: import the project's packages
    sys.path.insert(0, str(REPO))

from bench.loadgen import HEADER, BenchError, load_processes  # noqa: E402

HOST = "127.0.0.1"
#: Appends per second and burst the relay is started with (its limiter is not under test).
RELAY_RATE_LIMIT = 1_000_000
#: Targets from the issue: relay/baseline ratios.
TARGET_THROUGHPUT = 0.5
TARGET_P99 = 3.0
TARGET_IDLE_MEMORY = 1.5


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


DEFAULTS = Settings()


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
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    settings = Settings(
        rooms=args.rooms,
        members=args.members,
        blob_bytes=args.blob_bytes,
        window=args.window,
        rate=args.rate,
        duration=args.duration if args.duration is not None else (3.0 if quick else 20.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 2.0),
        idle=args.idle if args.idle is not None else (400 if quick else 1000),
        procs=args.procs,
        quick=quick,
    )
    if settings.blob_bytes < HEADER.size:
        parser.error(f"--blob-bytes must be at least {HEADER.size}")
    if min(settings.rooms, settings.members, settings.window, settings.procs, settings.idle) < 1:
        parser.error("--rooms, --members, --window, --procs and --idle must be positive")
    return settings, args


# -- server subprocesses ----------------------------------------------------------------------


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server subprocess and where it listens."""

    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return (
            f"ws://{HOST}:{self.port}/v1/ws"
            if self.kind == "relay"
            else f"ws://{HOST}:{self.port}/ws"
        )

    def http(self, path: str) -> bytes:
        # No proxy: every request goes to 127.0.0.1 directly.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{HOST}:{self.port}{path}", timeout=5) as response:
            body: bytes = response.read()
            return body

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _relay_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_RELAY_")}
    env["BACKCHANNEL_RELAY_APPENDS_PER_SECOND"] = str(RELAY_RATE_LIMIT)
    env["BACKCHANNEL_RELAY_APPEND_BURST"] = str(RELAY_RATE_LIMIT)
    return env


def start_server(
    kind: str,
    workdir: Path,
    servers: list[Server],
    *,
    data_parent: Path | None,
    profile: Path | None,
) -> Server:
    """Start the relay or the baseline on a free port and wait until it answers /healthz."""
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        log = workdir / f"{kind}-{port}.log"
        if kind == "relay":
            data_dir = Path(tempfile.mkdtemp(prefix="relay-store-", dir=data_parent or workdir))
            prefix = [sys.executable]
            if profile is not None:
                prefix += ["-m", "cProfile", "-o", str(profile)]
            command = [
                *prefix,
                "-m",
                "relay",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "warning",
            ]
            env = _relay_env()
        else:
            command = [
                sys.executable,
                str(REPO / "bench" / "baseline_server.py"),
                "--port",
                str(port),
            ]
            env = dict(os.environ)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(kind, process, port, log)
        servers.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if server.http("/healthz"):
                    return server
            time.sleep(0.05)
        last_error = server.log_tail()
        stop_server(server)
        servers.remove(server)
    raise BenchError(
        f"The {kind} server did not start on 127.0.0.1 (tried 3 free ports). Its output:\n"
        f"{last_error or '(nothing)'}"
    )


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """SIGTERM (graceful: lets cProfile write its file), then SIGKILL if it lingers."""
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    """VmRSS (or VmHWM) of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise BenchError(f"/proc/{pid}/status has no {field_name}; is this Linux?")
    return int(match.group(1)) * 1024


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU time of a process (all its threads) or one thread, in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        stat = Path(path).read_text()
    except OSError:  # the thread ended
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of a process."""
    return {int(t): cpu_seconds(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


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
            "url": server.url,
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


def run_throughput(server: Server, settings: Settings, figures: Figures) -> None:
    """Drive the room workload and record deliveries, latency, RSS and CPU."""
    per_proc = _split(settings.rooms, settings.procs)
    jobs, first_room = [], 0
    for i, count in enumerate(per_proc):
        if not count:
            continue
        rooms = list(range(first_room, first_room + count))
        jobs.append(
            {
                "type": "throughput",
                "kind": server.kind,
                "url": server.url,
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
    pid = server.process.pid
    with load_processes(jobs) as load:
        load.expect("ready", 120)
        start = time.time() + 0.3
        window_start = start + settings.warmup
        window_end = window_start + settings.duration
        load.send((start, window_start, window_end))
        time.sleep(max(0.0, window_start - time.time()))
        cpu_start, threads_start, machine_start = cpu_seconds(pid), thread_cpu(pid), machine_cpu()
        time.sleep(max(0.0, window_end - time.time()))
        cpu_end, threads_end, machine_end = cpu_seconds(pid), thread_cpu(pid), machine_cpu()
        results = load.expect("result", 60)
    latencies: array.array[float] = array.array("d")
    for r in results:
        chunk: array.array[float] = array.array("d")
        chunk.frombytes(r["latencies"])
        latencies.extend(chunk)
        figures.sent += r["sent"]
        for code, n in r["errors"].items():
            figures.errors[code] = figures.errors.get(code, 0) + n
    figures.delivered = sum(r["delivered"] for r in results)
    figures.msgs_per_s = figures.delivered / settings.duration
    ordered = sorted(latencies)
    if ordered:
        figures.p50_ms = ordered[int(0.50 * (len(ordered) - 1))] * 1000
        figures.p99_ms = ordered[int(0.99 * (len(ordered) - 1))] * 1000
    figures.server_cpu_percent = 100 * (cpu_end - cpu_start) / settings.duration
    # The event loop runs on the main thread (tid == pid); the relay's SQLite writer and
    # readers are the other threads. Their split shows which side is saturated.
    main_thread = threads_end.get(pid, 0.0) - threads_start.get(pid, 0.0)
    figures.extra["event_loop_cpu_percent"] = 100 * main_thread / settings.duration
    figures.extra["other_threads_cpu_percent"] = (
        100 * (cpu_end - cpu_start - main_thread) / settings.duration
    )
    busy, total = (b - a for a, b in zip(machine_start, machine_end, strict=True))
    figures.extra["machine_busy_percent"] = 100 * busy / total if total else 0.0
    # CPU the server and the load did not use: other processes (or loopback softirq work
    # charged to no one). Well above zero means the machine was not ours alone.
    figures.extra["other_cpu_percent"] = max(
        0.0,
        100 * busy / settings.duration
        - figures.server_cpu_percent
        - 100 * sum(r["cpu"] for r in results) / settings.duration,
    )
    figures.load_cpu_percent = 100 * sum(r["cpu"] for r in results) / settings.duration
    figures.rss_bytes = rss_bytes(pid)
    figures.peak_rss_bytes = rss_bytes(pid, "VmHWM")
    if server.kind == "relay":
        with contextlib.suppress(OSError):
            figures.extra["store"] = store_latency(server.http("/metrics").decode())


def store_latency(text: str) -> dict[str, dict[str, float]]:
    """Mean and bucket-bounded p50/p99 per op from ``backchannel_relay_store_latency_seconds``."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    name = "backchannel_relay_store_latency_seconds"
    for line in text.splitlines():
        if m := re.match(rf'{name}_bucket{{le="([^"]+)",op="([^"]+)"}} (\S+)', line):
            buckets.setdefault(m.group(2), []).append((float(m.group(1)), float(m.group(3))))
        elif m := re.match(rf'{name}_sum{{op="([^"]+)"}} (\S+)', line):
            sums[m.group(1)] = float(m.group(2))
        elif m := re.match(rf'{name}_count{{op="([^"]+)"}} (\S+)', line):
            counts[m.group(1)] = float(m.group(2))
    out = {}
    for op, count in counts.items():
        if not count:
            continue

        def bound(q: float, op: str = op, count: float = count) -> float:
            for le, cumulative in sorted(buckets.get(op, [])):
                if cumulative >= q * count:
                    return le * 1000
            return float("inf")

        out[op] = {
            "count": count,
            "mean_ms": sums.get(op, 0.0) / count * 1000,
            "p50_le_ms": bound(0.5),
            "p99_le_ms": bound(0.99),
        }
    return out


# -- report ----------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def report(settings: Settings, figures: dict[str, Figures]) -> dict[str, Any]:
    """Print the table and the target verdicts; return the JSON summary."""
    print(
        f"workload: {settings.rooms} rooms x {settings.members} members, every member sending "
        f"{settings.blob_bytes} B blobs, closed loop with at most {settings.window} own messages "
        f"in flight per member"
        + (f", paced at {settings.rate:g}/s per member" if settings.rate else "")
        + f"; {settings.duration:g} s measured after {settings.warmup:g} s warm-up; "
        f"{settings.procs} load processes; {os.cpu_count()} CPUs"
    )
    print(
        f"relay: durable SQLite (WAL, synchronous=FULL, group commit); append rate limit "
        f"raised to {RELAY_RATE_LIMIT}/s (burst {RELAY_RATE_LIMIT}) via "
        "BACKCHANNEL_RELAY_APPENDS_PER_SECOND / BACKCHANNEL_RELAY_APPEND_BURST"
    )
    print()
    kinds = list(figures)
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
        (
            "idle memory per connection",
            lambda f: f"{f.idle_bytes_per_connection:,.0f} B ({f.idle_connections} conns)",
        ),
        ("refused appends", lambda f: str(sum(f.errors.values()))),
    ]
    print(f"{'':28}" + "".join(f"{k:>24}" for k in kinds))
    for label, fmt in rows:
        print(f"{label:28}" + "".join(f"{fmt(figures[k]):>24}" for k in kinds))
    store = figures["relay"].extra.get("store") if "relay" in figures else None
    if store:
        print()
        for op, s in sorted(store.items()):
            print(
                f"relay store {op:8} n={s['count']:>9,.0f} mean {s['mean_ms']:.2f} ms, "
                f"p50 <= {s['p50_le_ms']:g} ms, p99 <= {s['p99_le_ms']:g} ms"
            )
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


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Servers and load processes each hold one end of every connection, plus slack.
    raise_fd_limit(2 * max(settings.idle, settings.rooms * settings.members) + 1024)
    kinds = [args.only] if args.only else ["relay", "baseline"]
    # The figures mean little if something else is using the CPUs: say so up front.
    busy_start = machine_cpu()
    time.sleep(1.0)
    busy_end = machine_cpu()
    busy_before = 100 * (busy_end[0] - busy_start[0]) / max(1e-9, busy_end[1] - busy_start[1])
    if busy_before > 20:
        print(
            f"warning: the machine was {busy_before:.0f}% busy before the benchmark started; "
            "other processes will skew the figures",
            file=sys.stderr,
        )
    servers: list[Server] = []
    figures = {kind: Figures() for kind in kinds}
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bc-bench-") as tmp:
            workdir = Path(tmp)
            for kind in kinds:
                # A fresh server per phase: one phase's leftovers never skew the other.
                print(f"[{kind}] idle connections ...", file=sys.stderr, flush=True)
                server = start_server(
                    kind, workdir, servers, data_parent=args.data_dir, profile=None
                )
                run_idle(server, settings, figures[kind])
                stop_server(server)
                print(f"[{kind}] throughput ...", file=sys.stderr, flush=True)
                profile = args.profile_relay if kind == "relay" else None
                server = start_server(
                    kind, workdir, servers, data_parent=args.data_dir, profile=profile
                )
                run_throughput(server, settings, figures[kind])
                stop_server(server)
    except BenchError as exc:
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
