"""Sender authentication: a message is shown as from X only if X's MLS leaf signature
authenticates it (docs/threat-model.md, "Sender authentication").

An insider has every key a receiver needs to *decrypt* a message from any leaf: the
epoch's sender-data secret and the whole secret tree (so any member's application
ratchet). What an insider does not have is the other members' signature keys. So an
insider Ben can build a PrivateMessage whose sender data names Farida's leaf, encrypted
under Farida's ratchet key, that opens cleanly for everyone; the FramedContent signature
(RFC 9420 §6.1), made with Ben's key, is the only thing that gives it away. These tests
make exactly that forgery and check that nobody shows it, and (as a control) that the
same forgery signed with Farida's own key *is* accepted, so they reach the signature
check and do not stop on something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from backchannel.errors import BackchannelError
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.framing import FramedContent, MLSMessage, Sender, WireFormat
from backchannel.mls.protection import authenticate, protect_private_message
from backchannel.mls.secret_tree import SecretTree
from backchannel.rooms.content import Text, encode_content, new_message_id
from backchannel.rooms.errors import MessageRejected
from backchannel.rooms.events import MessageReceived
from backchannel.rooms.room import Room
from backchannel.rooms.watch import fork_check
from backchannel.views import NewMessage
from tests.e2e.harness import eventually

from .conftest import NOW, Net, Party, copy_room, room_group


def _leaf(room: Room, member_id: bytes) -> int:
    return next(m.leaf_index for m in room.members() if m.member_id == member_id)


def _signing_key(room: Room) -> SignaturePrivateKey:
    return room._group._state.signature_key


def forge(
    attacker: Room,
    *,
    as_leaf: int,
    signed_by: SignaturePrivateKey,
    text: str,
    tree: SecretTree | None = None,
    sent_at_ms: int = NOW * 1000,
) -> bytes:
    """An application message from ``as_leaf``, built from the attacker's own state.

    Everything but the signature is what the member at ``as_leaf`` would send: the right
    group, epoch and fork check, the sender data naming ``as_leaf``, and the content
    encrypted under that leaf's next application key (which every member can derive).
    ``tree``: the secret tree to take the key from (a copy of the attacker's by default;
    pass the same one twice to use consecutive generations).
    """
    state = attacker._group._state
    e = state.epoch
    framed = FramedContent(
        e.context.group_id,
        e.context.epoch,
        Sender.member(as_leaf),
        fork_check(attacker.epoch_authenticator()),
        encode_content(Text(new_message_id(), sent_at_ms, text)),
    )
    content = authenticate(e.suite, signed_by, WireFormat.PRIVATE_MESSAGE, framed, e.context)
    message = protect_private_message(
        e.suite,
        content,
        state.secret_tree.copy() if tree is None else tree,
        e.secrets.sender_data_secret,
        padding_block=state.config.padding_block,
    )
    return MLSMessage(message).to_bytes()


def _received(events: list[object]) -> list[MessageReceived]:
    return [e for e in events if isinstance(e, MessageReceived)]


def test_insider_cannot_send_on_another_members_leaf_with_his_own_key() -> None:
    ids, rooms = room_group(4)  # Farida (facilitator), Ben, Chen, Dana
    farida, ben = rooms[0], rooms[1]
    farida_id = ids[0].identity_id
    farida_leaf = _leaf(ben, farida_id)
    forged = forge(
        copy_room(ben), as_leaf=farida_leaf, signed_by=_signing_key(ben), text="Farida: we accept"
    )

    # Control: the very same forgery, signed with Farida's key, is a valid message from
    # Farida: the only thing wrong with ``forged`` is whose key signed it.
    control = forge(
        copy_room(ben), as_leaf=farida_leaf, signed_by=_signing_key(farida), text="control"
    )
    for r in rooms[2:]:
        (got,) = _received(copy_room(r).receive(control, now=NOW))
        assert got.sender == farida_id and got.content.body == "control"

    for r in (ben, *rooms[2:]):  # every receiver but Farida (see below) rejects it
        before = r.to_bytes()
        with pytest.raises(MessageRejected):
            r.receive(forged, now=NOW)
        assert r.to_bytes() == before, "a rejected message changed the room state"
    # Farida reads a message on her own leaf as her own echo: nothing shown, nothing changed.
    before = farida.to_bytes()
    assert _received(farida.receive(forged, now=NOW)) == []
    assert farida.to_bytes() == before

    # The forgery burnt no key: Farida's real next message (same generation) is read.
    real = farida.send(Text(new_message_id(), NOW * 1000, "Farida really wrote this"), now=NOW)
    for r in (ben, *rooms[2:]):
        (got,) = _received(r.receive(real, now=NOW))
        assert got.sender == farida_id and got.content.body == "Farida really wrote this"


def test_a_forgery_signed_by_any_other_members_key_is_rejected() -> None:
    """On Farida's leaf, a signature by any key but Farida's is refused: the forger's
    own (Ben's), or even the receiver's own (Chen's)."""
    ids, rooms = room_group(3)
    ben, chen = rooms[1], rooms[2]
    farida_leaf = _leaf(ben, ids[0].identity_id)
    for signed_by in (_signing_key(ben), _signing_key(chen)):
        forged = forge(copy_room(ben), as_leaf=farida_leaf, signed_by=signed_by, text="x")
        before = chen.to_bytes()
        with pytest.raises(MessageRejected):
            chen.receive(forged, now=NOW)
        assert chen.to_bytes() == before


# -- end to end: through the real relay, real clients ----------------------------------------


async def _shown(p: Party, room: str) -> list[tuple[str, str]]:
    try:
        return [(m.sender, m.text) for m in await p.c.history(room, limit=500)]
    except BackchannelError:
        return []


async def test_impersonation_through_the_relay_shows_nothing_under_the_victims_name(
    net: Net,
) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Impersonation", ben, chen)
    farida = fac.c.identity.identity_id.hex()
    base = copy_room(ben.live(room).room)  # Ben's own state, as his modified client has it
    farida_leaf = _leaf(base, fac.c.identity.identity_id)
    tree = base._group._state.secret_tree.copy()  # one tree: the two use consecutive keys
    # Control (Farida's generation g): the forgery signed with Farida's real key.
    control = forge(
        base,
        as_leaf=farida_leaf,
        signed_by=_signing_key(fac.live(room).room),
        text="control: Farida's key",
        tree=tree,
        sent_at_ms=int(time.time() * 1000),
    )
    # The attack (generation g + 1): the same, signed with Ben's key.
    forged = forge(
        base,
        as_leaf=farida_leaf,
        signed_by=_signing_key(base),
        text="Farida: we accept all terms",
        tree=tree,
        sent_at_ms=int(time.time() * 1000),
    )
    access = ben.live(room).meta.access
    for blob in (control, forged):  # Ben posts both to the room's mailbox like any message
        await ben.c.connection.append(access.mailbox, ben.seal(room, blob), timeout=10)
    await ben.c.send(room, "marker after the forgery")  # read after both, in relay order
    for p in (fac, ben, chen):
        await eventually(lambda p=p: _has(p, room, ben.c.identity.identity_id.hex(), "marker"), 30)
    for p in (fac, ben, chen):
        with contextlib.suppress(BackchannelError):
            await p.c.sync(timeout=3)
    await asyncio.sleep(0.3)
    for p in (ben, chen):  # the control went through: the path reaches the signature check
        assert (farida, "control: Farida's key") in await _shown(p, room), p.name
    for p in (fac, ben, chen):
        shown = await _shown(p, room)
        assert not [s for s in shown if s[1] == "Farida: we accept all terms"], (p.name, shown)
        news = [e for e in p.seen if isinstance(e, NewMessage)]
        assert not [e for e in news if e.message.text == "Farida: we accept all terms"]


async def _has(p: Party, room: str, sender: str, prefix: str) -> bool:
    return any(s == sender and t.startswith(prefix) for s, t in await _shown(p, room))
