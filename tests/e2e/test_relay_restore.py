"""A relay restored from a backup, under real clients (issue #15, item 6).

The operator backs the store up with ``backchannel-relay backup`` while the relay
runs, the relay dies later, and the backup is put in its place. The clients are told
(the store is in a new generation), nothing they hold is shown twice, everything
written after the restore arrives, and the room's changes still go through: the
relay numbers on, and its epochs continue, above everything it handed out before.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from backchannel.engine import commits as engine_commits
from backchannel.engine.core import GENERATION_TEXT
from backchannel.errors import BackchannelError
from backchannel.views import Alert
from tests.relayproc import RelayProcess

from .harness import Person, eventually, false_alarms, start_room_of_two


async def _texts(p: Person, room: str) -> list[str]:
    try:
        return [m.text for m in await p.c.history(room, limit=500) if m.kind == "text"]
    except BackchannelError:
        return []


async def _has(p: Person, room: str, *texts: str) -> bool:
    return set(texts) <= set(await _texts(p, room))


def _told(p: Person) -> int:
    return sum(1 for e in p.seen if isinstance(e, Alert) and e.text == GENERATION_TEXT)


@pytest.mark.slow
async def test_a_restored_relay_is_said_and_loses_or_repeats_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_commits, "CATCH_UP_SECONDS", 1.0)
    data = tmp_path / "relay"
    relay = RelayProcess(data)
    await relay.wait_ready()
    fac = Person("Farida", tmp_path / "fac", relay.url)
    ben = Person("Ben", tmp_path / "ben", relay.url)
    try:
        room = await start_room_of_two(fac, ben, "Restored")
        await fac.c.send(room, "before the backup")
        await eventually(lambda: _has(ben, room, "before the backup"), 30)

        copy = tmp_path / "backup.sqlite3"
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "relay", "backup", str(copy), "--data-dir", str(data)],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        await fac.c.send(room, "after the backup")  # acknowledged, then lost by the relay
        await eventually(lambda: _has(ben, room, "after the backup"), 30)
        await ben.stop()  # Ben is offline while the relay is restored

        relay.kill()
        for leftover in data.glob("relay.sqlite3*"):
            leftover.unlink()
        (data / "relay.sqlite3").write_bytes(copy.read_bytes())
        relay = RelayProcess(data, port=relay.port)
        await relay.wait_ready()

        await eventually(lambda: _told(fac) == 1, 30)  # Farida's client ran through it
        await ben.start()  # Ben's kept the generation it saw: he is told too
        await eventually(lambda: _told(ben) == 1, 30)

        await fac.c.send(room, "after the restore")
        await ben.c.send(room, "Ben after the restore")
        for p in (fac, ben):
            await eventually(
                lambda p=p: _has(p, room, "after the restore", "Ben after the restore"), 30
            )
        # A change of the room (a commit) goes through: the relay's epoch continues
        # above the one the room had reached, and the members catch up with it.
        await fac.c.self_update(room)
        await fac.c.send(room, "after a commit")
        await eventually(lambda: _has(ben, room, "after a commit"), 30)
        for p in (fac, ben):
            await p.c.sync(30)
            texts = await _texts(p, room)
            expected = [
                "before the backup",
                "after the backup",
                "after the restore",
                "Ben after the restore",
                "after a commit",
            ]
            assert sorted(texts) == sorted(expected), (p.name, texts)
            assert false_alarms(p) == [], (p.name, false_alarms(p))

        await ben.stop()  # a restart with nothing restored says nothing
        await ben.start()
        await ben.c.sync(30)
        assert _told(ben) == 1
    finally:
        for p in (fac, ben):
            await p.stop()
        relay.kill()


@pytest.mark.slow
async def test_a_relay_rolled_back_without_the_mark_loses_nothing_after_a_restart(
    tmp_path: Path,
) -> None:
    """The store files are put back by hand (no ``backup``, no ``mark-restored``): the
    generation is the same and the relay numbers on from its old head, below Ben's
    cursor. Ben is told (Reset), and what the relay numbers from there reaches him,
    also after a restart of his client: his saved cursor went down with it."""
    data = tmp_path / "relay"
    relay = RelayProcess(data)
    await relay.wait_ready()
    fac = Person("Farida", tmp_path / "fac", relay.url)
    ben = Person("Ben", tmp_path / "ben", relay.url)
    try:
        room = await start_room_of_two(fac, ben, "Rolled back")
        await fac.c.send(room, "kept")
        await eventually(lambda: _has(ben, room, "kept"), 30)

        relay.kill()  # a copy of the files as they are (SQLite recovers its WAL)
        saved = {f.name: f.read_bytes() for f in data.glob("relay.sqlite3*")}
        relay = RelayProcess(data, port=relay.port)
        await relay.wait_ready()
        for n in range(3):
            await fac.c.send(room, f"lost {n}")
        await eventually(lambda: _has(ben, room, "lost 2"), 30)

        relay.kill()
        for leftover in data.glob("relay.sqlite3*"):
            leftover.unlink()
        for name, content in saved.items():
            (data / name).write_bytes(content)
        relay = RelayProcess(data, port=relay.port)
        await relay.wait_ready()
        await fac.c.send(room, "after the rollback")
        await eventually(lambda: _has(ben, room, "after the rollback"), 30)
        assert any(isinstance(e, Alert) and "relay lost messages" in e.text for e in ben.seen)

        await ben.stop()
        await fac.c.send(room, "while Ben was away")
        await ben.start()
        await eventually(lambda: _has(ben, room, "while Ben was away"), 30)
        texts = await _texts(ben, room)
        assert sorted(texts) == sorted(
            ["kept", "lost 0", "lost 1", "lost 2", "after the rollback", "while Ben was away"]
        ), texts
    finally:
        for p in (fac, ben):
            await p.stop()
        relay.kill()
