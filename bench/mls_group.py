"""MLS group operations by group size, and per-message cost against vodozemac's Megolm.

For groups of 2, 10, 50 and 200 members, with ciphersuite 1 (X25519, AES-128-GCM,
Ed25519) and the default hybrid suite 0xF001 (X-Wing ML-KEM-768+X25519, AES-128-GCM,
Ed25519), one run measures through the public :class:`~backchannel.mls.group.Group` API:

* **add**: ``commit(add=[kp])`` of one fresh KeyPackage, with its Welcome (and path);
* **process add**: another member's ``process(commit)`` + ``merge_staged_commit``;
* **join**: ``Group.join(welcome, bundle)`` of the added client (tree in the Welcome);
* **remove** / **process remove**: ``commit(remove=[leaf])`` and its processing;
* **update** / **process update**: an empty commit (self-update with a path) and its
  processing;
* **state size**: ``to_bytes()`` of the committer and of the other member;
* **message**: ``encrypt`` of a 1 KiB application message by the committer and
  ``process`` of it by the other member, timed as one operation.

How the groups are built: the first member creates the group and adds the other N-1
KeyPackages in **one** commit (not timed, reported as ``build``); the last of them
joins from that Welcome and is "the other member" who processes. Every repetition of a
membership operation starts from the same saved state (``Group.from_bytes``, not
timed), so the medians are of N-member groups. Built this way, only the committer's
own path holds parent keys, so each of its commits encrypts the path secret to about
every other member (N-1 HPKE seals): the most a commit can cost at that size. A group
whose members have all committed needs only about log2(N) seals.

The audited peer: vodozemac's Megolm (``GroupSession.encrypt`` then
``InboundGroupSession.decrypt`` of the same 1 KiB, through ``MegolmMessage.to_bytes``
/ ``from_bytes`` so both sides cross a byte boundary), measured in the same loop as the
MLS message, one sample of each in turn; the ratio MLS/Megolm is of the two medians.
vodozemac is a bench-only extra; without it the MLS figures are printed and the ratios
are null.

Targets (from the issue): at 200 members, creating an add or a remove commit under
100 ms and processing it under 30 ms on one core (the script is single-threaded);
per-message cost within 3x of Megolm.

Usage::

    .venv/bin/python bench/mls_group.py            # about 35 s
    .venv/bin/python bench/mls_group.py --quick    # about 10 s

The last line of stdout is one JSON object holding every figure (nanoseconds, bytes).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import DEFAULT_CIPHER_SUITE, CipherSuite, get_cipher_suite
from backchannel.mls.events import ApplicationMessage, StagedCommit
from backchannel.mls.group import Group
from backchannel.mls.key_package_ops import KeyPackageBundle

try:  # a bench-only extra: the MLS figures do not need it
    import vodozemac
except ImportError:  # pragma: no cover - depends on the environment
    vodozemac = None

SUITES = [CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, DEFAULT_CIPHER_SUITE]
MESSAGE = bytes(range(256)) * 4  # 1 KiB of application data
NOW = 1_700_000_000
OPERATIONS = [
    ("add", "add: commit + Welcome"),
    ("process_add", "process add (+ merge)"),
    ("join", "join from the Welcome"),
    ("remove", "remove: commit"),
    ("process_remove", "process remove (+ merge)"),
    ("update", "self-update: commit"),
    ("process_update", "process update (+ merge)"),
]
TARGET_CREATE_NS = 100e6
TARGET_PROCESS_NS = 30e6
TARGET_MESSAGE_RATIO = 3.0
TARGET_SIZE = 200


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    sizes: tuple[int, ...]
    #: Timed repetitions of each membership operation per size (after one warm-up).
    reps: int
    #: Timed 1 KiB messages per size, and as many Megolm ones.
    messages: int


FULL = Plan(sizes=(2, 10, 50, 200), reps=15, messages=3_000)
QUICK = Plan(sizes=(2, 10, 50, 200), reps=5, messages=500)


def clock_ns(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Call ``fn(*args, **kwargs)`` once, garbage collector off; its duration (ns) and result."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        result = fn(*args, **kwargs)
        return time.perf_counter_ns() - start, result
    finally:
        if gc_was_enabled:
            gc.enable()


def summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ns": float(statistics.median(ordered)),
        "min_ns": float(ordered[0]),
        "p10_ns": float(ordered[len(ordered) // 10]),
        "p90_ns": float(ordered[len(ordered) * 9 // 10]),
        "max_ns": float(ordered[-1]),
        "n": float(len(ordered)),
    }


class Clients:
    """Fresh identities and KeyPackages of one suite."""

    def __init__(self, suite: CipherSuite) -> None:
        self.suite = suite
        self.scheme = get_cipher_suite(suite).signature_scheme
        self.count = 0

    def signature_key(self) -> SignaturePrivateKey:
        return SignaturePrivateKey.generate(self.scheme)

    def credential(self) -> BasicCredential:
        self.count += 1
        return BasicCredential(f"member-{self.count}".encode())

    def key_package(self) -> KeyPackageBundle:
        return Group.make_key_package(self.suite, self.credential(), self.signature_key(), now=NOW)


def staged_merge(group: Group, commit: bytes) -> None:
    staged = group.process(commit)
    assert isinstance(staged, StagedCommit)
    group.merge_staged_commit(staged)


def build(clients: Clients, size: int) -> tuple[Group, Group, int]:
    """A ``size``-member group by one bulk add; the committer, the last joiner, and ns taken."""
    start = time.perf_counter_ns()
    committer = Group.create(clients.suite, clients.credential(), clients.signature_key(), now=NOW)
    bundles = [clients.key_package() for _ in range(size - 1)]
    result = committer.commit(add=[b.key_package.to_bytes() for b in bundles], now=NOW)
    committer.merge_pending_commit()
    assert result.welcome is not None
    other = Group.join(result.welcome, bundles[-1], now=NOW)
    assert len(committer.members()) == size
    assert other.epoch_authenticator == committer.epoch_authenticator
    return committer, other, time.perf_counter_ns() - start


def bench_size(clients: Clients, size: int, plan: Plan) -> dict[str, Any]:
    committer, other, build_ns = build(clients, size)
    saved_committer, saved_other = committer.to_bytes(), other.to_bytes()
    # Remove a member other than the one who processes, unless there is no other (N=2):
    # then the processing member reads its own removal.
    victim = 1 if size > 2 else other.own_leaf_index
    samples: dict[str, list[int]] = {name: [] for name, _ in OPERATIONS}
    sizes: dict[str, int] = {}

    for rep in range(plan.reps + 1):  # the first repetition is a warm-up
        # add, processed by the other member, and the newcomer's join.
        bundle = clients.key_package()
        c, o = Group.from_bytes(saved_committer), Group.from_bytes(saved_other)
        t_add, added = clock_ns(c.commit, add=[bundle.key_package.to_bytes()], now=NOW)
        c.merge_pending_commit()
        t_padd, _ = clock_ns(staged_merge, o, added.commit)
        t_join, joined = clock_ns(Group.join, added.welcome, bundle, now=NOW)
        assert joined.epoch_authenticator == c.epoch_authenticator == o.epoch_authenticator
        # remove.
        c, o = Group.from_bytes(saved_committer), Group.from_bytes(saved_other)
        t_rm, removed = clock_ns(c.commit, remove=[victim])
        c.merge_pending_commit()
        t_prm, _ = clock_ns(staged_merge, o, removed.commit)
        assert len(c.members()) == size - 1
        # self-update (an empty commit with a path).
        c, o = Group.from_bytes(saved_committer), Group.from_bytes(saved_other)
        t_up, updated = clock_ns(c.commit)
        c.merge_pending_commit()
        t_pup, _ = clock_ns(staged_merge, o, updated.commit)
        assert c.epoch_authenticator == o.epoch_authenticator
        if rep > 0:
            times = [t_add, t_padd, t_join, t_rm, t_prm, t_up, t_pup]
            for (name, _), t in zip(OPERATIONS, times, strict=True):
                samples[name].append(t)
        sizes = {
            "add_commit": len(added.commit),
            "welcome": len(added.welcome or b""),
            "remove_commit": len(removed.commit),
            "update_commit": len(updated.commit),
        }

    figures: dict[str, Any] = {name: summary(s) for name, s in samples.items()}
    figures["build_ns"] = float(build_ns)
    figures["bytes"] = {
        "state_committer": len(saved_committer),
        "state_member": len(saved_other),
        **sizes,
    }
    figures["message"], figures["megolm"] = bench_messages(
        Group.from_bytes(saved_committer), Group.from_bytes(saved_other), plan.messages
    )
    return figures


def bench_messages(
    sender: Group, receiver: Group, n: int
) -> tuple[dict[str, float], dict[str, float] | None]:
    """encrypt + process of 1 KiB in MLS and in Megolm (None without vodozemac).

    The two alternate, one sample each in turn, so that other load on the machine
    falls on both alike and the ratio holds even when the absolute figures move.
    """

    def mls() -> None:
        event = receiver.process(sender.encrypt(MESSAGE))
        assert isinstance(event, ApplicationMessage)
        assert event.data == MESSAGE

    functions: list[Callable[[], None]] = [mls]
    if vodozemac is not None:
        outbound = vodozemac.GroupSession()
        inbound = vodozemac.InboundGroupSession(outbound.session_key)

        def megolm() -> None:
            wire = outbound.encrypt(MESSAGE).to_bytes()
            decrypted = inbound.decrypt(vodozemac.MegolmMessage.from_bytes(wire))
            assert decrypted.plaintext == MESSAGE

        functions.append(megolm)
    # A fixed, generous warm-up: the first group measured otherwise pays for cold caches.
    samples = timed_alternating(functions, n, 300)
    return summary(samples[0]), (summary(samples[1]) if len(samples) > 1 else None)


def timed_alternating(functions: list[Callable[[], None]], n: int, warmup: int) -> list[list[int]]:
    """Run each function ``warmup`` times, then ``n`` rounds of each in turn, timing every
    call (ns) with the garbage collector off; one list of samples per function."""
    for _ in range(warmup):
        for fn in functions:
            fn()
    samples: list[list[int]] = [[] for _ in functions]
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            for fn, out in zip(functions, samples, strict=True):
                start = clock()
                fn()
                out.append(clock() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def suite_name(suite: CipherSuite) -> str:
    return f"{suite.value:#06x}" if suite.value >= 0xF000 else str(suite.value)


def ms(ns: float) -> str:
    return f"{ns / 1e6:,.2f} ms"


def kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def megolm_unavailable_reason() -> str | None:
    if vodozemac is None:
        return (
            "vodozemac is not installed (bench-only extra: pip install vodozemac==0.10.0); "
            "no Megolm baseline, so no ratio"
        )
    return None


def verdicts(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each target per suite: the measured value, the limit and whether it is met."""
    out: dict[str, Any] = {}
    for name, by_size in figures.items():
        suite: dict[str, Any] = {}
        big = by_size.get(str(TARGET_SIZE))
        if big is not None:
            for op, limit in [
                ("add", TARGET_CREATE_NS),
                ("remove", TARGET_CREATE_NS),
                ("process_add", TARGET_PROCESS_NS),
                ("process_remove", TARGET_PROCESS_NS),
            ]:
                value = big[op]["median_ns"]
                suite[f"{op}_{TARGET_SIZE}"] = {
                    "median_ns": value,
                    "limit_ns": limit,
                    "met": value < limit,
                }
        ratios = [f["message_vs_megolm"] for f in by_size.values()]
        worst = None if None in ratios else max(ratios)
        suite["message_vs_megolm_worst"] = {
            "ratio": worst,
            "limit": TARGET_MESSAGE_RATIO,
            "met": None if worst is None else worst <= TARGET_MESSAGE_RATIO,
        }
        out[name] = suite
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, under 30 s")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    reason = megolm_unavailable_reason()
    if reason:
        print(f"note: {reason}", file=sys.stderr)

    started = time.perf_counter()
    figures: dict[str, dict[str, Any]] = {}
    for suite in SUITES:
        clients = Clients(suite)
        figures[suite_name(suite)] = {}
        for size in plan.sizes:
            print(f"suite {suite_name(suite)}, {size} members ...", file=sys.stderr)
            f = bench_size(clients, size, plan)
            mega = f["megolm"]
            f["message_vs_megolm"] = (
                None if mega is None else f["message"]["median_ns"] / mega["median_ns"]
            )
            figures[suite_name(suite)][str(size)] = f
    elapsed = time.perf_counter() - started
    targets = verdicts(figures)
    met = [t["met"] for suite in targets.values() for t in suite.values()]

    print()
    print(
        f"MLS groups, median of {plan.reps} per operation, {plan.messages:,} messages per size "
        f"({'--quick' if args.quick else 'full'} run); Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, one thread"
    )
    print("groups built by one bulk add: each commit encrypts to about every member (worst case)")
    for name, by_size in figures.items():
        print()
        header = f"suite {name:<34}" + "".join(f"{s + ' members':>14}" for s in by_size)
        print(header)
        print("-" * len(header))
        for op, label in OPERATIONS:
            print(
                f"{label:<40}" + "".join(f"{ms(f[op]['median_ns']):>14}" for f in by_size.values())
            )
        for key, label in [
            ("state_committer", "state size, committer"),
            ("state_member", "state size, other member"),
            ("welcome", "Welcome size (one add)"),
            ("add_commit", "add commit size"),
        ]:
            print(f"{label:<40}" + "".join(f"{kib(f['bytes'][key]):>14}" for f in by_size.values()))
        print(
            f"{'message: encrypt + process, 1 KiB':<40}"
            + "".join(f"{f['message']['median_ns'] / 1e3:>11,.1f} µs" for f in by_size.values())
        )
        print(
            f"{'Megolm: encrypt + decrypt, 1 KiB':<40}"
            + "".join(
                f"{'n/a':>14}"
                if f["megolm"] is None
                else f"{f['megolm']['median_ns'] / 1e3:>11,.1f} µs"
                for f in by_size.values()
            )
        )
        print(
            f"{'message / Megolm':<40}"
            + "".join(
                f"{'n/a':>14}"
                if f["message_vs_megolm"] is None
                else f"{f['message_vs_megolm']:>13.2f}x"
                for f in by_size.values()
            )
        )
    print()
    print("targets:")
    for name, suite in targets.items():
        for key, t in suite.items():
            if "ratio" in t:
                value = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}x"
                limit = f"<= {t['limit']:.0f}x"
            else:
                value, limit = ms(t["median_ns"]), f"< {ms(t['limit_ns'])}"
            verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["met"]]
            print(f"  suite {name:<7} {key:<26} {value:>12}  {limit:<12} {verdict}")
    if reason:
        print(f"  ratio not measured: {reason}")
    print()
    print(f"({elapsed:.1f} s in all)")
    print(
        json.dumps(
            {
                "benchmark": "mls_group",
                "quick": args.quick,
                "plan": asdict(plan),
                "message_bytes": len(MESSAGE),
                "python": platform.python_version(),
                "vodozemac": None if vodozemac is None else importlib.metadata.version("vodozemac"),
                "megolm_unavailable_reason": reason,
                "cpus": os.cpu_count(),
                "elapsed_s": round(elapsed, 2),
                "suites": {n: CipherSuite(int(n, 0)).name for n in figures},
                "figures": figures,
                "targets": targets,
                "targets_met": None if None in met else all(met),
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
