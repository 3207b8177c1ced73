"""What this device has stored, as views: messages, members and rooms, from the store alone.

The engine answers through these once it runs. Before it is loaded (its MLS modules
take a quarter of a second to import, and every room's state must be decoded) the
client answers from them directly, so a UI can paint a profile's rooms as soon as
the profile is unlocked. The store keeps each room's title, retention, membership and
roles as the engine last saved them, in the same transaction as the MLS state; only
two things need the engine itself, and a room summary read before it loads says so:
``approval`` is empty and ``pending_requests`` is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

from .store import Store
from .store.records import Message
from .views import FileInfo, MemberView, MessageView, ReactionCount, RoomSummary

__all__ = [
    "READ_KEY",
    "last_read",
    "member_views",
    "message_view",
    "message_views",
    "stored_summaries",
]

#: Setting key prefix (then the room id in hex) for when the room was last read.
READ_KEY = "read/"


def _counts(pairs: Sequence[tuple[str, bytes]], me: bytes) -> tuple[ReactionCount, ...]:
    """Reactions grouped by emoji, in order of first use."""
    counts: dict[str, list[int]] = {}
    for emoji, sender in pairs:
        slot = counts.setdefault(emoji, [0, 0])
        slot[0] += 1
        slot[1] |= sender == me
    return tuple(ReactionCount(e, n, bool(mine)) for e, (n, mine) in counts.items())


def message_view(
    m: Message,
    me: bytes,
    *,
    complete: bool | None = None,
    reactions: Sequence[tuple[str, bytes]] = (),
) -> MessageView:
    """One stored message as a UI shows it (``me``: this device's member id).

    Its ``id`` and ``reply_to`` are message refs (:func:`~.store.records.message_ref`),
    which bind each message to its author: two members' messages never share one.
    """
    file = None
    if m.kind == "file" and m.attachments is not None:
        meta = msgpack.unpackb(m.attachments, raw=False)
        file = FileInfo(str(meta["name"]), int(meta["size"]), bool(complete))
    return MessageView(
        m.ref.hex(),
        m.room_id.hex(),
        m.sender_id.hex(),
        m.sender_name,
        m.body,
        m.sent_at,
        m.kind,
        reply.hex() if (reply := m.reply_ref) is not None else None,
        m.edited_at is not None,
        m.deleted,
        m.outgoing,
        (not m.outgoing) or m.delivered_seq is not None,
        file,
        _counts(reactions, me),
    )


async def message_views(store: Store, me: bytes, messages: Sequence[Message]) -> list[MessageView]:
    """Stored messages as views, with their reactions and whether their files are whole."""
    by_room: dict[bytes, list[bytes]] = {}
    for m in messages:
        by_room.setdefault(m.room_id, []).append(m.ref)
    reactions: dict[tuple[bytes, bytes], list[tuple[str, bytes]]] = {}
    for room_id, refs in by_room.items():
        for ref, pairs in (await store.reactions(room_id, refs)).items():
            reactions[(room_id, ref)] = pairs
    out = []
    for m in messages:
        complete = None
        if m.kind == "file" and m.attachments is not None:
            n = int(msgpack.unpackb(m.attachments, raw=False)["n"])
            complete = await store.attachment_chunks(m.room_id, m.ref) >= n
        pairs = reactions.get((m.room_id, m.ref), ())
        out.append(message_view(m, me, complete=complete, reactions=pairs))
    return out


async def member_views(store: Store, me: bytes, room_id: bytes) -> list[MemberView]:
    """A room's members with their roles and what this device verified about them."""
    return [
        MemberView(
            m.member_id.hex(),
            m.display_name,
            m.role,
            m.verified,
            m.key_changed,
            m.member_id == me,
        )
        for m in await store.members(room_id)
    ]


async def last_read(store: Store, room_id: bytes) -> float:
    """When this device last read the room (0: never)."""
    raw = await store.get_setting(READ_KEY + room_id.hex())
    return float(raw.decode()) if raw else 0.0


async def stored_summaries(store: Store, me: bytes) -> list[RoomSummary]:
    """The rooms as last saved, oldest first, for before the engine is loaded.

    ``approval`` is empty and ``pending_requests`` 0: only the engine knows those.
    """
    out = []
    for record in await store.rooms():
        if record.state is None or record.mailbox is None:
            continue  # the engine skips these too
        members = await store.members(record.room_id)
        role = next((m.role for m in members if m.member_id == me), "participant")
        out.append(
            RoomSummary(
                record.room_id.hex(),
                record.title,
                role,
                len(members),
                "",
                record.retention_seconds or 0,
                record.joined,
                0,
                await store.unread_count(record.room_id, await last_read(store, record.room_id)),
            )
        )
    return out
