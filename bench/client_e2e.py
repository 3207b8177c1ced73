"""Client end to end: a room of real clients, each in its own process, against the bare relay.

What it does, in one run, all on 127.0.0.1 against one real relay (``python -m relay
serve``, durable SQLite, append rate limit raised as in ``bench/servers.py``):

1. **Setup (not timed).** A facilitator profile creates a room with ``approval="auto"``
   and one multi-use invite; ``--members - 1`` more profiles are created, each joins
   from the link (``join`` then ``wait_join``; with auto approval the facilitator's
   running client commits each Add) and is closed. The facilitator sends one probe
   message to learn the size of a text message's ciphertext on the wire.
2. **Client phase.** One process per member (this script with ``--member``) opens its
   profile (``Client.open``, Argon2id), ``start()``, ``sync()``, then says READY. When
   all are ready the parent sends GO with a common start time. Every member sends at
   ``--rate / members`` messages per second (so ``--rate`` in total, phases staggered)
   for ``--duration`` seconds; each text carries its send time (``time.time()``, taken
   just before ``Client.send``; one clock shared by all processes on the machine). Every
   member reads ``Client.events()`` and, for each ``NewMessage`` of another member,
   records receive time minus send time: the send-to-display latency.
3. **Baseline phase.** The same number of processes, same schedule, but each uses
   ``RelayConnection`` directly on one shared mailbox: it follows it and appends
   plaintext blobs of the same size as the client's ciphertext (send time in the first
   bytes). No MLS, no encrypted store, no outbox, no room protocol.
4. **Profile open.** A profile holding one room with ``--history`` stored messages
   (inserted directly through its store), closed, then timed: ``Client.open``,
   ``start()`` and ``history(room, limit=50)``, median of 3. The baseline is the same
   on an empty profile. Both are dominated by the Argon2id unlock in ``Client.open``.

Figures: delivered messages per second (deliveries to recipients, a sender's own
message not counted, divided by the time from the first scheduled send to the last
delivery), p50/p99/max latency, CPU per delivery (the member processes' own CPU time
from GO to the end of the drain, plus the relay's from /proc), and ratios client /
baseline.

Usage::

    .venv/bin/python bench/client_e2e.py            # 20 members, 20 msg/s for 30 s
    .venv/bin/python bench/client_e2e.py --quick    # 5 members, 10 msg/s for 6 s

The last line of stdout is one JSON object with every figure and ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: import the project's packages
    sys.path.insert(0, str(REPO))

from bench.loadgen import BenchError  # noqa: E402
from bench.servers import RELAY_RATE_LIMIT, Server, start_server, stop_server  # noqa: E402
from bench.sysstats import cpu_seconds  # noqa: E402

PASSPHRASE = "bench passphrase: correct horse battery staple"
TEXT_PREFIX = "bench "
#: Baseline blob header: send time, sender index, message number.
HEADER = struct.Struct(">dII")
PROBE_TEXT = "bench-probe: a short message of the kind people type in a roundtable"


@dataclass
class Settings:
    members: int = 20
    rate: float = 20.0  # messages per second, all senders together
    duration: float = 30.0
    drain: float = 30.0
    history: int = 10_000
    open_repeats: int = 3
    quick: bool = False


@dataclass
class PhaseFigures:
    """One phase (client or baseline): what its member processes measured, combined."""

    processes: int = 0
    sent: int = 0
    expected_deliveries: int = 0
    delivered: int = 0
    msgs_per_s: float = 0.0
    offered_deliveries_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    last_delivery_after_s: float = 0.0
    max_send_lag_ms: float = 0.0
    startup_s: float = 0.0
    #: CPU seconds from GO to the end: all member processes, and the relay.
    members_cpu_s: float = 0.0
    relay_cpu_s: float = 0.0
    #: (members + relay CPU) per delivery.
    cpu_ms_per_delivery: float = 0.0
    per_member_missing: list[int] = field(default_factory=list)


# -- member processes ---------------------------------------------------------------------------


def _schedule(index: int, members: int, rate: float, duration: float) -> list[float]:
    """Offsets from GO of member ``index``'s sends: ``rate`` in total, phases staggered."""
    period = members / rate
    out, t = [], index / rate
    while t < duration:
        out.append(t)
        t += period
    return out


async def _read_go() -> float:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    word, _, value = line.strip().partition(" ")
    if word != "GO":
        raise SystemExit(f"expected GO, got {line!r}")
    return float(value)


def _expected(me: int, args: argparse.Namespace) -> int:
    return sum(
        len(_schedule(j, args.members, args.rate, args.duration))
        for j in range(args.members)
        if j != me
    )


async def _run_schedule(go: float, sched: list[float], send: Any) -> float:
    """Call ``send(k)`` at ``go + sched[k]``; return the largest lateness in ms."""
    lag = 0.0
    for k, offset in enumerate(sched):
        delay = go + offset - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(lag, (time.time() - go - offset) * 1000)
        await send(k)
    return lag


async def _drain(received: list[float], expected: int, deadline: float) -> None:
    while len(received) < expected and time.time() < deadline:  # noqa: ASYNC110 - polls a list
        await asyncio.sleep(0.05)


async def member_client(args: argparse.Namespace) -> dict[str, Any]:
    from backchannel.client import Client
    from backchannel.views import NewMessage

    began = time.monotonic()
    client = await Client.open(Path(args.home), PASSPHRASE)
    latencies: list[float] = []
    last: list[float] = [0.0]
    try:
        await client.start()
        await client.sync(120)
        room = (await client.rooms())[0].id

        async def read() -> None:
            async for event in client.events():
                if not isinstance(event, NewMessage) or event.message.outgoing:
                    continue
                now = time.time()
                parts = event.message.text.split(" ")
                if parts[0] + " " != TEXT_PREFIX or len(parts) < 4:
                    continue
                latencies.append((now - float(parts[1])) * 1000)
                last[0] = now

        reader = asyncio.create_task(read())
        startup = time.monotonic() - began
        print("READY", flush=True)
        go = await _read_go()
        cpu0 = time.process_time()
        sched = _schedule(args.index, args.members, args.rate, args.duration)

        async def send(k: int) -> None:
            await client.send(room, f"{TEXT_PREFIX}{time.time():.6f} {args.index} {k}")

        lag = await _run_schedule(go, sched, send)
        expected = _expected(args.index, args)
        await _drain(latencies, expected, go + args.duration + args.drain)
        cpu = time.process_time() - cpu0
        await client.sync(30)  # own messages out before closing
        reader.cancel()
    finally:
        await client.close()
    return {
        "sent": len(sched),
        "expected": expected,
        "latencies_ms": latencies,
        "last": last[0] - go if last[0] else 0.0,
        "lag_ms": lag,
        "startup_s": startup,
        "cpu_s": cpu,
    }


async def member_raw(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from backchannel.transport.connection import Entry, RelayConnection
    from backchannel.transport.session import MailboxCapability

    began = time.monotonic()
    raw = json.loads(Path(args.cap).read_text())  # noqa: ASYNC240 - tiny, once
    cap = MailboxCapability(
        bytes.fromhex(raw["mailbox"]),
        Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw["read"])),
        Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw["write"])),
    )
    conn = RelayConnection(args.url)
    await conn.start()
    latencies: list[float] = []
    last: list[float] = [0.0]
    pending: set[asyncio.Task[Any]] = set()
    try:
        await conn.follow(cap, after=0)
        await conn.wait_connected()

        async def read() -> None:
            async for event in conn.events():
                if not isinstance(event, Entry):
                    continue
                now = time.time()
                sent_at, sender, _k = HEADER.unpack_from(event.blob)
                await conn.ack(event.mailbox, event.seq)
                if sender != args.index:
                    latencies.append((now - sent_at) * 1000)
                    last[0] = now

        reader = asyncio.create_task(read())
        startup = time.monotonic() - began
        print("READY", flush=True)
        go = await _read_go()
        cpu0 = time.process_time()
        sched = _schedule(args.index, args.members, args.rate, args.duration)
        filler = bytes(max(0, args.blob_bytes - HEADER.size))

        async def send(k: int) -> None:
            # Like Client.send, return once queued: the append completes in the background.
            blob = HEADER.pack(time.time(), args.index, k) + filler
            task = asyncio.create_task(conn.append(cap.mailbox, blob, timeout=60))
            pending.add(task)
            task.add_done_callback(pending.discard)

        lag = await _run_schedule(go, sched, send)
        expected = _expected(args.index, args)
        await _drain(latencies, expected, go + args.duration + args.drain)
        cpu = time.process_time() - cpu0
        if pending:
            await asyncio.wait(list(pending), timeout=30)
        reader.cancel()
    finally:
        await conn.close()
    return {
        "sent": len(sched),
        "expected": expected,
        "latencies_ms": latencies,
        "last": last[0] - go if last[0] else 0.0,
        "lag_ms": lag,
        "startup_s": startup,
        "cpu_s": cpu,
    }


def member_main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    run = member_client if args.member == "client" else member_raw
    result = asyncio.run(run(args))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the parent: relay, setup, phases ----------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_phase(
    kind: str, settings: Settings, workdir: Path, extra: list[list[str]], relay_pid: int
) -> PhaseFigures:
    """Start one member process per entry of ``extra`` (its own arguments), GO, collect."""
    procs: list[subprocess.Popen[str]] = []
    logs = []
    began = time.monotonic()
    try:
        for i, own in enumerate(extra):
            log = (workdir / f"{kind}-{i:02d}.log").open("w")
            logs.append(log)
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--member",
                kind,
                "--index",
                str(i),
                "--members",
                str(settings.members),
                "--rate",
                str(settings.rate),
                "--duration",
                str(settings.duration),
                "--drain",
                str(settings.drain),
                *own,
            ]
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=REPO,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            )
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "READY":
                raise BenchError(f"{kind} member {i} did not start: {_tail(workdir, kind, i)}")
        startup = time.monotonic() - began
        print(f"  [{kind}] {len(procs)} members ready in {startup:.1f} s", file=sys.stderr)
        go = time.time() + 0.5
        relay_cpu = cpu_seconds(relay_pid)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"GO {go!r}\n")
            proc.stdin.flush()
        results = []
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("RESULT "):
                raise BenchError(f"{kind} member {i} failed: {_tail(workdir, kind, i)}")
            results.append(json.loads(line[len("RESULT ") :]))
            if i == 0:
                relay_cpu = cpu_seconds(relay_pid) - relay_cpu  # the others end about now too
            proc.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    latencies = [x for r in results for x in r["latencies_ms"]]
    last = max((r["last"] for r in results), default=0.0)
    members_cpu = sum(r["cpu_s"] for r in results)
    figures = PhaseFigures(
        processes=len(procs),
        sent=sum(r["sent"] for r in results),
        expected_deliveries=sum(r["expected"] for r in results),
        delivered=len(latencies),
        msgs_per_s=len(latencies) / max(last, settings.duration),
        offered_deliveries_per_s=sum(r["expected"] for r in results) / settings.duration,
        p50_ms=_pct(latencies, 0.50),
        p99_ms=_pct(latencies, 0.99),
        max_ms=max(latencies, default=0.0),
        mean_ms=statistics.fmean(latencies) if latencies else 0.0,
        last_delivery_after_s=last,
        max_send_lag_ms=max((r["lag_ms"] for r in results), default=0.0),
        startup_s=max(r["startup_s"] for r in results),
        per_member_missing=[r["expected"] - len(r["latencies_ms"]) for r in results],
        members_cpu_s=members_cpu,
        relay_cpu_s=relay_cpu,
        cpu_ms_per_delivery=1000 * (members_cpu + relay_cpu) / max(1, len(latencies)),
    )
    return figures


def _tail(workdir: Path, kind: str, i: int) -> str:
    try:
        text = (workdir / f"{kind}-{i:02d}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-15:]) or "(empty log)"


async def setup_room(settings: Settings, url: str, workdir: Path) -> tuple[list[Path], int]:
    """Profiles of a room of ``members`` members; returns their homes and the text blob size."""
    from backchannel.client import Client

    homes = [workdir / f"member-{i:02d}" for i in range(settings.members)]
    fac = await Client.create(homes[0], name="Member 00", passphrase=PASSPHRASE, relay_url=url)
    try:
        await fac.start()
        room = (await fac.create_room("Bench room", approval="auto")).id
        link = await fac.invite(room, uses=settings.members)
        for i, home in enumerate(homes[1:], start=1):
            t = time.monotonic()
            member = await Client.create(
                home, name=f"Member {i:02d}", passphrase=PASSPHRASE, relay_url=url
            )
            try:
                await member.start()
                rid = await member.join(link)
                answer = await member.wait_join(rid, 120)
                if answer is None or not answer.approved:
                    raise BenchError(f"member {i} was not admitted ({answer!r})")
                await member.sync(60)
            finally:
                await member.close()
            print(
                f"  [setup] member {i} joined in {time.monotonic() - t:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        await fac.sync(60)
        # The size of a short text on the wire: record the facilitator's appends.
        assert fac.connection is not None
        sizes: list[int] = []
        original = fac.connection.append

        async def recording(mailbox: bytes, blob: bytes, *a: Any, **kw: Any) -> Any:
            sizes.append(len(blob))
            return await original(mailbox, blob, *a, **kw)

        fac.connection.append = recording  # type: ignore[method-assign]
        await fac.send(room, PROBE_TEXT)
        await fac.sync(30)
        fac.connection.append = original  # type: ignore[method-assign]
        members = (await fac.room(room)).members
        if members != settings.members:
            raise BenchError(f"the room has {members} members, not {settings.members}")
    finally:
        await fac.close()
    if not sizes:
        raise BenchError("the probe message was not sent")
    return homes, max(sizes)


async def make_mailbox(url: str, path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from backchannel.transport.connection import RelayConnection
    from backchannel.transport.session import MailboxCapability

    cap = MailboxCapability.generate()
    async with RelayConnection(url) as conn:
        await conn.create_mailbox(cap, timeout=30)

    def raw(key: Any) -> str:
        return str(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex())

    path.write_text(  # noqa: ASYNC240 - tiny, once
        json.dumps({"mailbox": cap.mailbox.hex(), "read": raw(cap.read), "write": raw(cap.write)})
    )


async def profile_open(settings: Settings, url: str, workdir: Path) -> dict[str, Any]:
    """Median time to open a profile with ``history`` stored messages, and an empty one."""
    from backchannel.client import Client
    from backchannel.store.records import Message

    full, empty = workdir / "history-full", workdir / "history-empty"
    client = await Client.create(full, name="Archivist", passphrase=PASSPHRASE, relay_url=url)
    try:
        await client.start()
        room = (await client.create_room("Archive")).id
        room_id = bytes.fromhex(room)
        sender = os.urandom(32)
        base = time.time() - settings.history
        text = "A stored message of ordinary length, as people write them in a long dialogue."
        t = time.monotonic()
        added = await client.store.add_messages(
            [
                Message(
                    room_id=room_id,
                    message_id=os.urandom(16),
                    sender_id=sender,
                    sender_name="Someone",
                    sent_at=base + i,
                    received_at=base + i,
                    kind="text",
                    body=f"{text} #{i}",
                )
                for i in range(settings.history)
            ]
        )
        insert_s = time.monotonic() - t
        if added != settings.history:
            raise BenchError(f"stored {added} messages, not {settings.history}")
    finally:
        await client.close()
    client = await Client.create(empty, name="Newcomer", passphrase=PASSPHRASE, relay_url=url)
    await client.close()

    async def once(home: Path, room: str | None) -> dict[str, float]:
        t0 = time.perf_counter()
        c = await Client.open(home, PASSPHRASE)
        t1 = time.perf_counter()
        try:
            await c.start()
            t2 = time.perf_counter()
            page = await c.history(room, limit=50) if room else []
            t3 = time.perf_counter()
            # Not timed. Closing while the connection is still being set up can hang on
            # Python 3.11 (asyncio.wait_for may swallow the cancel): let it connect first.
            assert c.connection is not None
            await asyncio.wait_for(c.connection.wait_connected(), 30)
        finally:
            await c.close()
        if room and len(page) != 50:
            raise BenchError(f"history returned {len(page)} messages, not 50")
        return {"open": t1 - t0, "start": t2 - t1, "history": t3 - t2, "total": t3 - t0}

    runs: dict[str, list[dict[str, float]]] = {"full": [], "empty": []}
    for _ in range(settings.open_repeats):  # alternate, so other load hits both alike
        runs["full"].append(await once(full, room))
        runs["empty"].append(await once(empty, None))
    out: dict[str, Any] = {"messages": settings.history, "insert_s": insert_s}
    for kind, rs in runs.items():
        out[kind] = {k: statistics.median(r[k] for r in rs) * 1000 for k in rs[0]}
    return out


# -- report ---------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def report(
    settings: Settings,
    blob_bytes: int,
    setup_s: float,
    phases: dict[str, PhaseFigures],
    opening: dict[str, Any] | None,
) -> dict[str, Any]:
    print(
        f"workload: 1 relay, a room of {settings.members} members, each its own process; "
        f"{settings.rate:g} msg/s in total ({settings.rate / settings.members:g}/s per member) "
        f"for {settings.duration:g} s; text ciphertext {blob_bytes} B (baseline blobs the same); "
        f"{os.cpu_count()} CPUs; setup (room of {settings.members}) took {setup_s:.1f} s"
    )
    print(
        f"relay: durable SQLite, append rate limit raised to {RELAY_RATE_LIMIT}/s; "
        "baseline: RelayConnection on one shared mailbox, plaintext, no MLS"
    )
    print()
    rows = [
        ("sent messages", lambda f: f"{f.sent:,}"),
        ("deliveries expected", lambda f: f"{f.expected_deliveries:,}"),
        ("deliveries seen", lambda f: f"{f.delivered:,}"),
        ("offered deliveries/s", lambda f: f"{f.offered_deliveries_per_s:,.1f}"),
        ("delivered msgs/s", lambda f: f"{f.msgs_per_s:,.1f}"),
        ("p50 send-to-display", lambda f: f"{f.p50_ms:.1f} ms"),
        ("p99 send-to-display", lambda f: f"{f.p99_ms:.1f} ms"),
        ("max", lambda f: f"{f.max_ms:.1f} ms"),
        ("last delivery after GO", lambda f: f"{f.last_delivery_after_s:.1f} s"),
        ("max send lateness", lambda f: f"{f.max_send_lag_ms:.0f} ms"),
        ("member startup (slowest)", lambda f: f"{f.startup_s:.1f} s"),
        ("members CPU (sum)", lambda f: f"{f.members_cpu_s:.1f} s"),
        ("relay CPU", lambda f: f"{f.relay_cpu_s:.1f} s"),
        ("CPU per delivery", lambda f: f"{f.cpu_ms_per_delivery:.2f} ms"),
    ]
    print(f"{'':28}{'client':>16}{'baseline':>16}")
    for label, fmt in rows:
        print(f"{label:28}" + "".join(f"{fmt(f):>16}" for f in phases.values()))
    client, base = phases["client"], phases["baseline"]
    ratios = {
        "throughput_ratio": _ratio(client.msgs_per_s, base.msgs_per_s),
        "p50_ratio": _ratio(client.p50_ms, base.p50_ms),
        "p99_ratio": _ratio(client.p99_ms, base.p99_ms),
        "cpu_per_delivery_ratio": _ratio(client.cpu_ms_per_delivery, base.cpu_ms_per_delivery),
    }
    print()
    print(
        f"client / baseline: throughput {ratios['throughput_ratio']}x, "
        f"p50 {ratios['p50_ratio']}x, p99 {ratios['p99_ratio']}x, "
        f"CPU per delivery {ratios['cpu_per_delivery_ratio']}x"
    )
    missing = client.expected_deliveries - client.delivered
    if missing:
        print(f"WARNING: {missing} client deliveries missing after the drain")
    summary: dict[str, Any] = {
        "settings": asdict(settings),
        "blob_bytes": blob_bytes,
        "setup_s": round(setup_s, 2),
        "client": asdict(client),
        "baseline": asdict(base),
        "ratios": ratios,
    }
    if opening is not None:
        full, empty = opening["full"], opening["empty"]
        print()
        print(
            f"profile open, median of {settings.open_repeats} "
            f"({opening['messages']:,} messages inserted in {opening['insert_s']:.1f} s):"
        )
        print(f"{'':28}{'open':>10}{'start':>10}{'history':>10}{'total':>10}")
        for label, f in (
            (f"{opening['messages']:,} messages", full),
            ("empty profile", empty),
        ):
            print(
                f"{label:28}"
                + "".join(f"{f[k]:>7.0f} ms" for k in ("open", "start", "history", "total"))
            )
        opening["total_ratio"] = _ratio(full["total"], empty["total"])
        print(
            f"full / empty: {opening['total_ratio']}x "
            "(Client.open is mostly the Argon2id unlock, the same for both)"
        )
        summary["profile_open"] = opening
    return summary


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A room of real clients vs the bare relay protocol; profile open time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short run (5 members)")
    parser.add_argument("--members", type=int, help="room size (default 20; 5 with --quick)")
    parser.add_argument("--rate", type=float, help="messages/s in total (20; 10 with --quick)")
    parser.add_argument("--duration", type=float, help="sending seconds (30; 6 with --quick)")
    parser.add_argument("--drain", type=float, default=30.0, help="max wait for late deliveries")
    parser.add_argument("--history", type=int, default=10_000, help="stored messages to open")
    parser.add_argument("--skip-open", action="store_true", help="no profile-open measurement")
    # Internal: one member process.
    parser.add_argument("--member", choices=["client", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cap", help=argparse.SUPPRESS)
    parser.add_argument("--blob-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.members is None:
        args.members = 5 if args.quick else 20
    if args.rate is None:
        args.rate = 10.0 if args.quick else 20.0
    if args.duration is None:
        args.duration = 6.0 if args.quick else 30.0
    if args.members < 2 or args.rate <= 0 or args.duration <= 0:
        parser.error("--members must be at least 2, --rate and --duration positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.member:
        return member_main(args)
    signal.signal(signal.SIGTERM, _sigterm)
    settings = Settings(
        members=args.members,
        rate=args.rate,
        duration=args.duration,
        drain=args.drain,
        history=args.history,
        quick=args.quick,
    )
    servers: list[Server] = []
    began = time.monotonic()
    opening = None
    try:
        with tempfile.TemporaryDirectory(prefix="bc-client-e2e-") as tmp:
            workdir = Path(tmp)
            relay = start_server("relay", workdir, servers, data_parent=None, profile=None)
            print(f"[setup: a room of {settings.members}] ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            homes, blob_bytes = asyncio.run(setup_room(settings, relay.url, workdir))
            setup_s = time.monotonic() - t
            phases: dict[str, PhaseFigures] = {}
            print("[client phase] ...", file=sys.stderr, flush=True)
            phases["client"] = run_phase(
                "client",
                settings,
                workdir,
                [["--home", str(h)] for h in homes],
                relay.process.pid,
            )
            print("[baseline phase] ...", file=sys.stderr, flush=True)
            cap = workdir / "mailbox.json"
            asyncio.run(make_mailbox(relay.url, cap))
            phases["baseline"] = run_phase(
                "raw",
                settings,
                workdir,
                [
                    ["--url", relay.url, "--cap", str(cap), "--blob-bytes", str(blob_bytes)]
                    for _ in homes
                ],
                relay.process.pid,
            )
            if not args.skip_open:
                print("[profile open] ...", file=sys.stderr, flush=True)
                opening = asyncio.run(profile_open(settings, relay.url, workdir))
            stop_server(relay)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            stop_server(server)
    print(f"[done in {time.monotonic() - began:.1f} s]", file=sys.stderr)
    summary = report(settings, blob_bytes, setup_s, phases, opening)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
