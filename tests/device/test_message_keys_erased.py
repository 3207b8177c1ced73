"""Forward secrecy within an epoch: a message key is erased once its message is read,
before the entry is acknowledged (docs/threat-model.md, "Forward secrecy"; RFC 9420
§9.2).

Each test records, from a copy of the reader's state taken *before* the message
arrives, everything that yields the message's key: the AEAD key and nonce of its
generation, the sender's application ratchet secret at that generation, and the
secret-tree node secrets above the sender's leaf that the reader still holds (any of
them re-derives the key). After the reader has processed the message, none of these
may be in its saved state, and the same ciphertext replayed into a room restored from
that state must be refused by MLS (not merely dropped as a duplicate by the room).

``test_past_epoch_keys_are_gone_from_disk`` (test_at_rest.py) covers old epochs; this
is the current epoch, where the ratchet must move on message by message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.labels import derive_tree_secret
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import DEFAULT_CIPHER_SUITE, get_cipher_suite
from backchannel.mls.framing import MLSMessage, PrivateMessage
from backchannel.mls.protection import open_sender_data
from backchannel.mls.secret_tree import RatchetType
from backchannel.rooms.access import open_room_blob
from backchannel.rooms.content import Text, new_message_id
from backchannel.rooms.errors import MessageRejected
from backchannel.rooms.events import MessageReceived
from backchannel.rooms.room import Room
from backchannel.views import JoinRequested
from relay.app import create_app
from tests.conftest import relay_config
from tests.e2e.harness import Person, eventually, wait_event
from tests.store import decrypted_pages

NOW = 1_900_000_000


def _key(suite: int) -> SignaturePrivateKey:
    return SignaturePrivateKey.generate(get_cipher_suite(suite).signature_scheme)


def _two_members(suite: int = DEFAULT_CIPHER_SUITE) -> tuple[Room, Room]:
    farida = Room.create(suite, BasicCredential(b"farida"), _key(suite), title="FS", now=NOW)
    bundle = Room.key_package(suite, BasicCredential(b"ben"), _key(suite), now=NOW)
    out = farida.add_members([bundle.key_package.to_bytes()], now=NOW)
    farida.confirm_pending()
    assert out.welcome is not None
    return farida, Room.join(out.welcome, bundle, now=NOW)


def _sender_data(reader: Room, wire: bytes) -> tuple[int, int, int]:
    """(epoch, sender leaf, generation) of a PrivateMessage, as ``reader`` opens it."""
    message = MLSMessage.from_bytes(wire).body
    assert isinstance(message, PrivateMessage)
    e = reader._group._state.epoch
    sd = open_sender_data(e.suite, message, e.secrets.sender_data_secret)
    return message.epoch, sd.leaf_index, sd.generation


def message_secrets(before: Room, wire: bytes) -> dict[str, bytes]:
    """What in ``before`` (a copy of the reader's state before ``wire`` arrived; it is
    used up) yields the key of ``wire``: named, for a readable failure."""
    state = before._group._state
    epoch, leaf, generation = _sender_data(before, wire)
    assert epoch == state.epoch.context.epoch, "the message must be of the current epoch"
    cs = state.epoch.suite
    tree = state.secret_tree
    found: dict[str, bytes] = {}
    ratchet_key = tree.get(leaf, RatchetType.APPLICATION, generation)
    found[f"key of generation {generation}"] = ratchet_key.key
    found[f"nonce of generation {generation}"] = ratchet_key.nonce
    for node in tree._path(leaf):
        if node in tree._nodes:
            found[f"secret-tree node {node} above leaf {leaf}"] = tree._nodes[node]
    ratchet = tree.ratchet(leaf, RatchetType.APPLICATION)  # derives it if need be
    secret, g = ratchet._secret, ratchet.next_generation
    if secret is not None and g <= generation:
        while g < generation:
            secret = derive_tree_secret(cs, secret, "secret", g, cs.n_h)
            g += 1
        found[f"application ratchet secret at generation {generation}"] = secret
    return found


def _leaks(secrets: dict[str, bytes], where: dict[str, bytes]) -> list[str]:
    return [
        f"{name} in {place}" for name, s in secrets.items() for place, b in where.items() if s in b
    ]


@pytest.mark.parametrize("order", ["in order", "out of order"])
def test_a_read_message_key_is_not_in_the_saved_room_state(order: str) -> None:
    farida, ben = _two_members()
    wires = [ben.send(Text(new_message_id(), NOW * 1000, f"m{i}"), now=NOW) for i in range(2)]
    secrets = {
        f"m{i} {name}": value
        for i, w in enumerate(wires)
        for name, value in message_secrets(Room.from_bytes(farida.to_bytes()), w).items()
    }
    assert any("node" in name for name in secrets)  # the tree still held the path: it counts
    reading = wires if order == "in order" else wires[::-1]
    for w in reading:
        events = farida.receive(w, now=NOW)
        assert [type(e) for e in events if isinstance(e, MessageReceived)] == [MessageReceived]
    saved = farida.to_bytes()
    leaks = _leaks(secrets, {"the saved room state": saved})
    assert not leaks, leaks
    for w in wires:  # MLS itself refuses the replay: the key is gone, not just the id seen
        with pytest.raises(MessageRejected):
            Room.from_bytes(saved).receive(w, now=NOW)
    # Control: the room restored from the saved state still reads Ben's next message.
    nxt = ben.send(Text(new_message_id(), NOW * 1000, "next"), now=NOW)
    got = Room.from_bytes(saved).receive(nxt, now=NOW)
    assert [e.content.body for e in got if isinstance(e, MessageReceived)] == ["next"]


# -- through the engine and the store: real clients, a real relay --------------------------


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(relay_config(tmp_path)), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


def _room_of(p: Person) -> Room:
    (live,) = p.c.engine._live.values()
    return live.room


async def _names_known(p: Person, room: str) -> bool:
    return {m.name for m in await p.c.members(room)} == {"Farida", "Ben"}


async def test_acknowledged_message_key_is_gone_from_the_store(
    tmp_path: Path, relay_url: str
) -> None:
    fac = Person("Farida", tmp_path / "farida", relay_url)
    ben = Person("Ben", tmp_path / "ben", relay_url)
    await fac.start(create=True)
    await ben.start(create=True)
    try:
        room = (await fac.c.create_room("Keys erased")).id
        room_id = bytes.fromhex(room)
        rid = await ben.c.join(await fac.c.invite(room))
        await fac.c.approve(room, (await wait_event(fac, JoinRequested)).request.id)
        assert (await ben.c.wait_join(rid, 30)) is not None
        for p in (fac, ben):
            await eventually(lambda p=p: _names_known(p, room), 30)
        await eventually(lambda: _room_of(fac).epoch == _room_of(ben).epoch, 30)
        live = fac.c.engine._live[room_id]
        access = live.meta.access
        before = live.room.to_bytes()  # Farida's state before Ben's message
        await ben.c.send(room, "read once, then its key is gone")
        found: list[tuple[int, bytes]] = []

        async def on_the_relay() -> bool:  # Ben's message: what the state before could read
            page = await fac.c.connection.fetch(access.mailbox, 0, timeout=10)
            found[:] = []
            for seq, blob in page.entries:
                data = open_room_blob(access, blob)
                try:
                    events = Room.from_bytes(before).receive(data, now=NOW)
                except MessageRejected:
                    continue
                if any(isinstance(e, MessageReceived) for e in events):
                    found.append((seq, data))
            return bool(found)

        await eventually(on_the_relay, 30)
        ((seq, data),) = found
        secrets = message_secrets(Room.from_bytes(before), data)

        async def acknowledged() -> bool:
            cursor = await fac.c.store.cursor(access.mailbox)
            return cursor is not None and cursor >= seq

        await eventually(acknowledged, 30)
        record = await fac.c.store.room(room_id)
        assert record is not None and record.state is not None
        # Once the store says the entry is acknowledged, the state saved with it (one
        # transaction) no longer holds the key, and cannot read the message again.
        leaks = _leaks(secrets, {"the stored room state": record.state})
        assert not leaks, leaks
        with pytest.raises(MessageRejected):
            Room.from_bytes(record.state).receive(data, now=NOW)
        assert _room_of(fac).epoch == MLSMessage.from_bytes(data).body.epoch  # still current
    finally:
        await fac.stop()
        await ben.stop()
    # and nothing of it is left on disk either, free pages and slack included
    where = {"decrypted pages": decrypted_pages(fac.home)}
    where["raw files"] = b"".join(f.read_bytes() for f in sorted(fac.home.iterdir()) if f.is_file())
    leaks = _leaks(secrets, where)
    assert not leaks, leaks
