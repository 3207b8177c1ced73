"""Crash safety: a writer process killed with SIGKILL at random points loses and doubles nothing.

The worker plays a client: it queues outgoing messages (message + outbox entry +
cursor in one transaction), "posts" the oldest queued entry to a fake relay log
and acknowledges it, retries its last send after every restart, and prints a line
after each commit returns. The parent kills it at random moments, then checks the
store against what the worker reported.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backchannel.store import Store, WrongPassphrase

from . import FAST_KDF, PASSPHRASE, ROOM, new_store

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")]

WORKER = r"""
import asyncio, dataclasses, sys
from pathlib import Path
from backchannel.store import Message, OutboxEntry, Store
from backchannel.store.records import message_ref

def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

async def main(folder, passphrase):
    store = await Store.open(Path(folder), passphrase)
    n = await store.message_count(b"room-1")
    seq = (await store.cursor(b"acks")) or 0
    if n:  # retry the last send, as a client does after a crash: it must not double
        assert not await store.queue_message(message(n - 1), entry(n - 1))
    out("READY")
    while True:
        async with store.transaction() as tx:
            assert await tx.queue_message(message(n), entry(n))
            await tx.set_cursor(b"mailbox-1", n + 1, room_id=b"room-1")
        out(f"C {n}")
        n += 1
        if n % 3 == 0:
            pending = await store.pending(limit=1)
            if pending:
                key = pending[0].idempotency_key
                with open(Path(folder).parent / "relay.log", "a") as log:
                    log.write(key.hex() + "\n")  # the relay stores by key, once
                seq += 1
                async with store.transaction() as tx:
                    await tx.acknowledge(key, seq)
                    await tx.set_cursor(b"acks", seq)
                out(f"A {key.hex()}")

def message(n):
    return Message(b"room-1", b"m%08d" % n, b"me", "Me", float(n), float(n), "text",
                   f"body {n}", outgoing=True)

def entry(n):
    return OutboxEntry(b"key-%012d" % n, b"mailbox-1", b"payload %d" % n, float(n),
                       room_id=b"room-1", ref=message_ref(b"me", b"m%08d" % n))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

PASSWORD_WORKER = r"""
import asyncio, sys
from pathlib import Path
from backchannel.store import KdfParams, Store

async def main(folder, first, second):
    names = [first, second]
    i = int(sys.argv[4])
    store = await Store.open(Path(folder), names[i % 2])
    print("READY", flush=True)
    while True:
        await store.change_passphrase(names[i % 2], names[(i + 1) % 2])
        i += 1
        print(f"P {i}", flush=True)

asyncio.run(main(*sys.argv[1:4]))
"""


def _run_until_killed(args: list[str], rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if first != "READY\n":
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"worker did not start: {first!r} {err}")
    time.sleep(rng.uniform(0.0, 0.12))
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    # A line cut off by the kill was not reported as done.
    return [line for line in rest.splitlines(keepends=True) if line.endswith("\n")]


async def test_sigkill_during_sends_and_acks(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("BACKCHANNEL_CRASH_SEED", "4242"))
    store = await new_store(tmp_path)
    from backchannel.store import Room

    await store.put_room(Room(ROOM, "Talks", 0.0))
    await store.close()
    folder = tmp_path / "profile"
    committed: set[int] = set()
    acked: set[str] = set()
    for _ in range(12):
        lines = _run_until_killed([WORKER, str(folder), PASSPHRASE], rng)
        committed.update(int(line.split()[1]) for line in lines if line.startswith("C "))
        acked.update(line.split()[1] for line in lines if line.startswith("A "))

        store = await Store.open(folder, PASSPHRASE)
        try:
            messages = await store.history(ROOM, limit=1_000_000)
            pending = await store.pending(limit=1_000_000)
            cursor = await store.cursor(b"mailbox-1")
            ids = [m.message_id for m in messages]
            numbers = [int(i[1:]) for i in ids]
            # Nothing reported as sent is lost, nothing is stored twice, no gaps.
            assert len(ids) == len(set(ids))
            assert committed <= set(numbers)
            assert numbers == list(range(len(numbers)))
            assert cursor == len(numbers)  # the cursor moved with its messages
            # Each message is either still queued or acknowledged, never both or neither.
            queued = {e.ref for e in pending}
            assert len(queued) == len(pending)
            for m in messages:
                assert (m.ref in queued) != (m.delivered_seq is not None), m
            keys = {e.idempotency_key.hex() for e in pending}
            assert not (keys & acked)
            for key in acked:
                assert await store.acknowledged_seq(bytes.fromhex(key)) is not None
            # The relay log may hold a post the crash kept from being acknowledged; it is
            # retried under the same key (the relay stores it once), so per key the relay
            # saw one message, and every acknowledged key was really posted.
            log_path = tmp_path / "relay.log"
            posted = log_path.read_text().split() if log_path.exists() else []
            assert acked <= set(posted)
            delivered = [m for m in messages if m.delivered_seq is not None]
            seqs = [m.delivered_seq for m in delivered]
            assert len(seqs) == len(set(seqs))  # no acknowledgement recorded twice
        finally:
            await store.close()
    assert len(committed) > 20  # the worker got real work done between kills


async def test_sigkill_during_passphrase_changes(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("BACKCHANNEL_CRASH_SEED", "4242"))
    names = ["passphrase zero", "passphrase one"]
    store = await Store.create(tmp_path / "profile", names[0], kdf=FAST_KDF)
    await store.set_setting("canary", b"still here")
    await store.close()
    folder = tmp_path / "profile"
    current = 0  # how many changes completed, as far as the parent knows
    for _ in range(10):
        lines = _run_until_killed(
            [PASSWORD_WORKER, str(folder), names[0], names[1], str(current)], rng
        )
        done = [int(line.split()[1]) for line in lines if line.startswith("P ")]
        reported = max(done, default=current)
        # The change in flight when the kill came may or may not have committed.
        opened = None
        for attempt in (reported, reported + 1):
            try:
                store = await Store.open(folder, names[attempt % 2])
            except WrongPassphrase:
                continue
            opened = attempt
            break
        assert opened is not None, "neither passphrase opens the store"
        try:
            assert await store.get_setting("canary") == b"still here"
        finally:
            await store.close()
        with pytest.raises(WrongPassphrase):
            await Store.open(folder, names[(opened + 1) % 2])
        assert not (folder / "store.header.new").exists()
        current = opened
