"""Opening, unlocking, locking, re-keying and transactions of the profile database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from backchannel.store import (
    CorruptStore,
    NoProfile,
    ProfileExists,
    ProfileLocked,
    Room,
    Store,
    StoreClosed,
    StoreUsageError,
    WrongPassphrase,
)

from . import FAST_KDF, PASSPHRASE, ROOM, disk_bytes, new_store, text_message

SECRETS = ["Ambassador Quillfeather", "the ceasefire line at Zanzibarwombat", "s3cr3t-identity-key"]


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


async def _filled(tmp_path: Path) -> Store:
    store = await new_store(tmp_path)
    await store.set_setting("display_name", SECRETS[0].encode())
    await store.set_setting("identity_key", SECRETS[2].encode())
    await store.put_room(Room(ROOM, "Talks", 1.0, state=b"group-state"))
    await store.add_message(text_message(1, SECRETS[1]))
    return store


async def test_create_then_open_round_trip(tmp_path: Path) -> None:
    store = await _filled(tmp_path)
    await store.close()
    store = await Store.open(tmp_path / "profile", PASSPHRASE)
    assert await store.get_setting("display_name") == SECRETS[0].encode()
    assert [m.body for m in await store.history(ROOM)] == [SECRETS[1]]
    await store.close()


async def test_database_settings(tmp_path: Path) -> None:
    store = await new_store(tmp_path)

    def pragmas(c: object) -> dict[str, object]:
        names = ["cipher_version", "journal_mode", "secure_delete", "synchronous", "foreign_keys"]
        names += ["user_version", "locking_mode"]
        return {n: c.execute(f"PRAGMA {n}").fetchone()[0] for n in names}  # type: ignore[attr-defined]

    got = await store.database.run(pragmas)
    await store.close()
    assert str(got["cipher_version"]).startswith("4.")
    assert got["journal_mode"] == "wal"
    assert got["secure_delete"] == 1
    assert got["synchronous"] == 2  # FULL
    assert got["foreign_keys"] == 1
    assert got["user_version"] == 5  # the latest migration
    assert got["locking_mode"] == "exclusive"


async def test_no_plaintext_on_disk_open_or_closed(tmp_path: Path) -> None:
    store = await _filled(tmp_path)
    folder = tmp_path / "profile"
    assert (folder / "store.db-wal").exists()  # the test covers the WAL too
    assert not (folder / "store.db-shm").exists()  # exclusive locking: no shared-memory file
    for phase in ("open", "closed"):
        data = disk_bytes(folder)
        assert len(data) > 4096, phase
        for secret in [*SECRETS, "Talks", "group-state", "msg-00000001", "CREATE TABLE"]:
            assert secret.encode() not in data, (phase, secret)
            assert secret.lower().encode() not in data.lower(), (phase, secret)
        assert PASSPHRASE.encode() not in data
        if phase == "open":
            await store.close()


async def test_wrong_passphrase_is_clear_and_changes_nothing(tmp_path: Path) -> None:
    await (await _filled(tmp_path)).close()
    folder = tmp_path / "profile"
    before = _digest(folder)
    with pytest.raises(WrongPassphrase) as info:
        await Store.open(folder, "not the passphrase")
    assert "not the passphrase" not in str(info.value)
    assert _digest(folder) == before
    store = await Store.open(folder, PASSPHRASE)  # and the lock was released
    await store.close()


async def test_altered_salt_reads_as_wrong_passphrase(tmp_path: Path) -> None:
    await (await new_store(tmp_path)).close()
    header = tmp_path / "profile" / "store.header"
    doc = json.loads(header.read_bytes())
    doc["salt"] = "A" * 22 + "=="
    header.write_text(json.dumps(doc))
    with pytest.raises(WrongPassphrase):
        await Store.open(tmp_path / "profile", PASSPHRASE)


async def test_damaged_header_is_corrupt_store(tmp_path: Path) -> None:
    await (await new_store(tmp_path)).close()
    (tmp_path / "profile" / "store.header").write_bytes(b"{not json")
    with pytest.raises(CorruptStore, match="header"):
        await Store.open(tmp_path / "profile", PASSPHRASE)


async def test_missing_header_is_corrupt_store(tmp_path: Path) -> None:
    await (await new_store(tmp_path)).close()
    (tmp_path / "profile" / "store.header").unlink()
    with pytest.raises((CorruptStore, NoProfile)):
        await Store.open(tmp_path / "profile", PASSPHRASE)


async def test_damaged_database_with_right_passphrase_is_corrupt_store(tmp_path: Path) -> None:
    await (await _filled(tmp_path)).close()
    db = tmp_path / "profile" / "store.db"
    data = bytearray(db.read_bytes())
    data[100:140] = bytes(40)  # inside page 1: its HMAC no longer verifies
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptStore, match="does not decrypt"):
        await Store.open(tmp_path / "profile", PASSPHRASE)


async def test_replaced_database_is_corrupt_store(tmp_path: Path) -> None:
    await (await new_store(tmp_path / "a")).close()
    await (await new_store(tmp_path / "b")).close()
    shutil.copy(tmp_path / "b" / "profile" / "store.db", tmp_path / "a" / "profile" / "store.db")
    with pytest.raises(CorruptStore):
        await Store.open(tmp_path / "a" / "profile", PASSPHRASE)


async def test_no_profile_and_profile_exists(tmp_path: Path) -> None:
    with pytest.raises(NoProfile):
        await Store.open(tmp_path / "nothing", PASSPHRASE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoProfile):
        await Store.open(tmp_path / "empty", PASSPHRASE)
    await (await new_store(tmp_path)).close()
    with pytest.raises(ProfileExists):
        await Store.create(tmp_path / "profile", "other", kdf=FAST_KDF)
    await (await Store.open(tmp_path / "profile", PASSPHRASE)).close()  # still the original


async def test_interrupted_create_can_be_redone(tmp_path: Path) -> None:
    folder = tmp_path / "profile"
    await (await new_store(tmp_path)).close()
    (folder / "store.db").unlink()  # as if killed after the header was written
    with pytest.raises(NoProfile):
        await Store.open(folder, PASSPHRASE)
    store = await Store.create(folder, "fresh", kdf=FAST_KDF)
    await store.close()
    await (await Store.open(folder, "fresh")).close()


async def test_second_open_in_process_is_refused(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    with pytest.raises(ProfileLocked):
        await Store.open(tmp_path / "profile", PASSPHRASE)
    await store.close()
    await (await Store.open(tmp_path / "profile", PASSPHRASE)).close()


async def test_open_from_another_process_is_refused(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    code = (
        "import asyncio, sys\n"
        "from backchannel.store import Store, ProfileLocked\n"
        "try:\n"
        f"    asyncio.run(Store.open(sys.argv[1], {PASSPHRASE!r}))\n"
        "except ProfileLocked:\n"
        "    sys.exit(42)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(tmp_path / "profile")
    )
    returncode = await asyncio.wait_for(proc.wait(), 60)
    await store.close()
    assert returncode == 42


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosed):
        await store.get_setting("x")
    with pytest.raises(StoreClosed):
        async with store.transaction():
            pass


async def test_change_passphrase(tmp_path: Path) -> None:
    store = await _filled(tmp_path)
    folder = tmp_path / "profile"
    old_header = (folder / "store.header").read_bytes()
    with pytest.raises(WrongPassphrase):
        await store.change_passphrase("wrong", "new passphrase")
    assert (folder / "store.header").read_bytes() == old_header
    await store.change_passphrase(PASSPHRASE, "new passphrase")
    assert (folder / "store.header").read_bytes() != old_header
    assert await store.get_setting("display_name") == SECRETS[0].encode()  # still usable
    await store.close()
    assert sorted(p.name for p in folder.iterdir()) == ["store.db", "store.header", "store.lock"]
    with pytest.raises(WrongPassphrase):
        await Store.open(folder, PASSPHRASE)
    store = await Store.open(folder, "new passphrase")
    assert [m.body for m in await store.history(ROOM)] == [SECRETS[1]]
    await store.close()


async def test_old_header_and_old_passphrase_cannot_read_rekeyed_database(tmp_path: Path) -> None:
    store = await _filled(tmp_path)
    folder = tmp_path / "profile"
    saved = (folder / "store.header").read_bytes()
    await store.change_passphrase(PASSPHRASE, "new passphrase")
    await store.close()
    (folder / "store.header").write_bytes(saved)  # an attacker restores the old header
    with pytest.raises(CorruptStore):  # the old key fits the header but not the database
        await Store.open(folder, PASSPHRASE)


async def test_interrupted_change_settles_on_the_key_the_database_uses(tmp_path: Path) -> None:
    store = await _filled(tmp_path)
    folder = tmp_path / "profile"
    saved = (folder / "store.header").read_bytes()
    await store.change_passphrase(PASSPHRASE, "new passphrase")
    await store.close()
    # Killed after the rekey committed, before the rename: header.new is the live one.
    (folder / "store.header").rename(folder / "store.header.new")
    (folder / "store.header").write_bytes(saved)
    with pytest.raises(WrongPassphrase):
        await Store.open(folder, PASSPHRASE)
    await (await Store.open(folder, "new passphrase")).close()
    assert not (folder / "store.header.new").exists()  # promoted

    store = await Store.open(folder, "new passphrase")
    new_saved = (folder / "store.header").read_bytes()
    await store.close()
    # Killed after header.new was written, before the rekey committed.
    (folder / "store.header.new").write_bytes(saved)
    with pytest.raises(WrongPassphrase):
        await Store.open(folder, PASSPHRASE)  # fits header.new, but the rekey never happened
    assert (folder / "store.header.new").exists()
    store = await Store.open(folder, "new passphrase")
    assert not (folder / "store.header.new").exists()  # the stale change was discarded
    assert (folder / "store.header").read_bytes() == new_saved
    await store.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.database.run(lambda c: c.execute("PRAGMA user_version = 99"))
    await store.close()
    with pytest.raises(CorruptStore, match="newer"):
        await Store.open(tmp_path / "profile", PASSPHRASE)


async def test_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.put_room(Room(ROOM, "Talks", 1.0))
    async with store.transaction() as tx:
        await tx.add_message(text_message(1))
        await tx.set_cursor(b"mailbox", 10, room_id=ROOM)

    async def failing() -> None:
        async with store.transaction() as tx2:
            await tx2.add_message(text_message(2))
            await tx2.set_cursor(b"mailbox", 11)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await failing()
    assert await store.cursor(b"mailbox") == 10
    assert [m.message_id for m in await store.history(ROOM)] == [b"msg-00000001"]
    with pytest.raises(StoreUsageError):
        await tx.get_setting("x")  # the transaction is over
    await store.close()


async def test_misuse_inside_a_transaction_is_an_error_not_a_deadlock(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    async with store.transaction():
        with pytest.raises(StoreUsageError):
            await asyncio.wait_for(store.get_setting("x"), 5)
        with pytest.raises(StoreUsageError):
            async with store.transaction():
                pass
    await store.close()


async def test_cancelled_transaction_rolls_back_and_frees_the_store(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.put_room(Room(ROOM, "Talks", 1.0))
    started = asyncio.Event()

    async def writer() -> None:
        async with store.transaction() as tx:
            await tx.add_message(text_message(1))
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(writer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(store.message_count(ROOM), 5) == 0
    await store.close()


async def test_concurrent_transactions_serialise(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.put_room(Room(ROOM, "Talks", 1.0))

    async def send(n: int) -> None:
        async with store.transaction() as tx:
            await tx.add_message(text_message(n))
            await asyncio.sleep(0)
            await tx.set_cursor(b"mailbox", n)

    await asyncio.gather(*(send(n) for n in range(1, 41)))
    assert await store.message_count(ROOM) == 40
    assert await store.cursor(b"mailbox") == 40
    await store.close()
