"""Readers of /proc (RSS, CPU time of processes, threads and the machine) and of relay metrics."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "ProcError",
    "cpu_seconds",
    "machine_cpu",
    "named_cpu_seconds",
    "rss_bytes",
    "store_latency",
    "thread_cpu",
]


class ProcError(Exception):
    """/proc does not hold what Linux puts there."""


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    """VmRSS (or VmHWM) of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise ProcError(f"/proc/{pid}/status has no {field_name}; is this Linux?")
    return int(match.group(1)) * 1024


def _stat_cpu(stat: str) -> float:
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU time of a process (all its threads) or one thread, in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        return _stat_cpu(Path(path).read_text())
    except OSError:  # the thread (or process) ended
        return 0.0


def named_cpu_seconds(comm: str) -> dict[int, float]:
    """CPU seconds per pid of every process whose command name is ``comm`` (e.g. postgres).

    Sampled twice around a window, the difference over the pids present both times is
    the CPU those processes used in the window (a process that started or ended inside
    it is left out, which for PostgreSQL's long-lived pool backends loses nothing).
    """
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] == comm:
            out[int(entry)] = _stat_cpu(stat)
    return out


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


def store_latency(*texts: str) -> dict[str, dict[str, float]]:
    """Mean and bucket-bounded p50/p99 per op from ``backchannel_relay_store_latency_seconds``.

    Several ``/metrics`` texts (one per relay node) are summed into one histogram.
    """
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    name = "backchannel_relay_store_latency_seconds"
    for line in (line for text in texts for line in text.splitlines()):
        if m := re.match(rf'{name}_bucket{{le="([^"]+)",op="([^"]+)"}} (\S+)', line):
            per_op = buckets.setdefault(m.group(2), {})
            le = float(m.group(1))
            per_op[le] = per_op.get(le, 0.0) + float(m.group(3))
        elif m := re.match(rf'{name}_sum{{op="([^"]+)"}} (\S+)', line):
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(2))
        elif m := re.match(rf'{name}_count{{op="([^"]+)"}} (\S+)', line):
            counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(2))
    out = {}
    for op, count in counts.items():
        if not count:
            continue

        def bound(q: float, op: str = op, count: float = count) -> float:
            for le, cumulative in sorted(buckets.get(op, {}).items()):
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
