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

import functools
import unicodedata
from collections.abc import Mapping, Sequence

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
    "name_key",
    "shown_name",
    "shown_names",
    "stored_summaries",
]

#: Setting key prefix (then the room id in hex) for when the room was last read.
READ_KEY = "read/"


def name_key(name: str) -> str:
    """What two display names are compared by: the letters and digits a reader sees.

    Compatibility forms, case, accents, spaces, punctuation, invisible characters and
    look-alikes from other scripts (Cyrillic U+0430 for Latin a, 0 for O: Unicode's
    confusables, UTS #39) do not tell two names apart on a screen, so they do not
    count here.
    """
    seen = "".join(
        _prototype(ch) for ch in unicodedata.normalize("NFKD", name) if not _invisible(ch)
    ).casefold()
    key = "".join(ch for ch in seen if unicodedata.category(ch)[0] in "LN")
    return key or "".join(ch for ch in seen if not ch.isspace())


def _invisible(ch: str) -> bool:
    # Letters that draw nothing (Hangul fillers such as U+3164) are category Lo.
    return ch in _BLANK_LETTERS or unicodedata.category(ch) in ("Cf", "Mn", "Me", "Cc")


_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5")


@functools.cache
def _prototype(ch: str) -> str:
    """One character for all that look like ``ch``: the lowest-numbered character
    within two steps of it in Unicode's homoglyph table (which lists I and l as like
    1, but not 1 as like both), in either case."""
    table = _confusables()
    near = {ch, ch.upper(), ch.lower()}
    for _ in range(2):
        near |= {g["c"] for c in near for g in table.get(c, ()) if len(g["c"]) == 1}
    return min(near)


@functools.cache
def _confusables() -> dict[str, list[dict[str, str]]]:
    # Loaded on first use: the table takes 80 ms to read, not to be paid at start-up.
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[str, list[dict[str, str]]] = confusables_data
    return table


def shown_name(name: str, member: bytes, names: Mapping[bytes, str]) -> str:
    """``name`` of ``member`` as screens show it among the room's members ``names``.

    A member may announce any name, including one another member already goes by.
    Whenever another member's name reads the same (:func:`name_key`), the name is
    followed by the start of the member's id, which no one else can take, so two
    people are never shown under one name.
    """
    key = name_key(name)
    if any(other != member and name_key(n) == key for other, n in names.items()):
        return f"{name} ({member.hex()[:6]})"
    return name


def shown_names(names: Mapping[bytes, str]) -> dict[bytes, str]:
    """Every member's :func:`shown_name`."""
    return {member: shown_name(name, member, names) for member, name in names.items()}


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
    names: Mapping[bytes, str] | None = None,
) -> MessageView:
    """One stored message as a UI shows it (``me``: this device's member id; ``names``:
    the room's members' names, to tell apart a sender whose name another has taken).

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
        m.sender_name if names is None else shown_name(m.sender_name, m.sender_id, names),
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
        refused=m.refused_at is not None,
    )


async def message_views(store: Store, me: bytes, messages: Sequence[Message]) -> list[MessageView]:
    """Stored messages as views, with their reactions and whether their files are whole."""
    by_room: dict[bytes, list[bytes]] = {}
    for m in messages:
        by_room.setdefault(m.room_id, []).append(m.ref)
    reactions: dict[tuple[bytes, bytes], list[tuple[str, bytes]]] = {}
    names: dict[bytes, dict[bytes, str]] = {}
    for room_id, refs in by_room.items():
        for ref, pairs in (await store.reactions(room_id, refs)).items():
            reactions[(room_id, ref)] = pairs
        names[room_id] = {m.member_id: m.display_name for m in await store.members(room_id)}
    out = []
    for m in messages:
        complete = None
        if m.kind == "file" and m.attachments is not None:
            n = int(msgpack.unpackb(m.attachments, raw=False)["n"])
            complete = await store.attachment_chunks(m.room_id, m.ref) >= n
        pairs = reactions.get((m.room_id, m.ref), ())
        view = message_view(m, me, complete=complete, reactions=pairs, names=names[m.room_id])
        out.append(view)
    return out


async def member_views(store: Store, me: bytes, room_id: bytes) -> list[MemberView]:
    """A room's members with their roles and what this device verified about them."""
    members = await store.members(room_id)
    names = shown_names({m.member_id: m.display_name for m in members})
    return [
        MemberView(
            m.member_id.hex(),
            names[m.member_id],
            m.role,
            m.verified,
            m.key_changed,
            m.member_id == me,
        )
        for m in members
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
