"""The saved form of a :class:`~.room.Room`: msgpack with a version field around the MLS state.

``{"v": 1, "group": bin, "seen": [[bin sender, bin id], ...], "proposals": [[str kind,
bin proposer, arg], ...]}`` where ``group`` is :meth:`Group.to_bytes`, ``seen`` the
dedupe window oldest first, and ``proposals`` the changes queued in the current
epoch (``arg``: bin member id, bin policy or nil, uint proposal type, or nil).
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from .errors import RoomDecodeError
from .policy import (
    AddMember,
    ChangePolicy,
    ExternalJoin,
    OtherProposal,
    ProposedChange,
    Reinit,
    RemoveMember,
    UpdateMember,
)

__all__ = ["ROOM_STATE_VERSION", "decode_room_state", "encode_room_state"]

#: The ``v`` field of a saved room.
ROOM_STATE_VERSION: Final = 1


def _encode_change(c: ProposedChange) -> list[Any]:
    if isinstance(c, AddMember):
        return ["add", c.proposer, c.member]
    if isinstance(c, RemoveMember):
        return ["remove", c.proposer, c.member]
    if isinstance(c, ChangePolicy):
        return ["policy", c.proposer, c.policy]
    if isinstance(c, UpdateMember):
        return ["update", c.member, None]
    if isinstance(c, Reinit):
        return ["reinit", c.proposer, None]
    if isinstance(c, ExternalJoin):
        return ["external", c.member, None]
    return ["other", c.proposer, c.proposal_type]


def _decode_change(item: Any) -> ProposedChange:
    if not isinstance(item, list) or len(item) != 3:
        raise RoomDecodeError("saved room: a queued proposal is malformed")
    kind, who, arg = item
    if not isinstance(who, bytes):
        raise RoomDecodeError("saved room: a queued proposal is malformed")
    if kind in ("add", "remove") and isinstance(arg, bytes):
        return AddMember(who, arg) if kind == "add" else RemoveMember(who, arg)
    if kind == "policy" and (arg is None or isinstance(arg, bytes)):
        return ChangePolicy(who, arg)
    if kind == "update" and arg is None:
        return UpdateMember(who)
    if kind == "reinit" and arg is None:
        return Reinit(who)
    if kind == "external" and arg is None:
        return ExternalJoin(who)
    if kind == "other" and isinstance(arg, int) and not isinstance(arg, bool):
        return OtherProposal(who, arg)
    raise RoomDecodeError("saved room: a queued proposal is malformed")


def encode_room_state(
    group: bytes,
    seen: list[tuple[bytes, bytes]],
    proposals: list[ProposedChange],
    watch: dict[str, Any] | None = None,
) -> bytes:
    """The saved form of a room."""
    obj: dict[str, Any] = {
        "v": ROOM_STATE_VERSION,
        "group": group,
        "seen": [[s, m] for s, m in seen],
        "proposals": [_encode_change(c) for c in proposals],
    }
    if watch is not None:
        obj["watch"] = watch
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def decode_room_state(
    data: bytes,
) -> tuple[bytes, list[tuple[bytes, bytes]], list[ProposedChange], object]:
    """Split a saved room into the MLS state, the seen window, the queued proposals
    and the watch map (None in rooms saved before it existed).

    Raises:
        RoomDecodeError: on any input that is not a saved room (nothing else).
    """
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception:  # msgpack raises many types on bad input
        raise RoomDecodeError("saved room: not a msgpack map") from None
    if not isinstance(obj, dict) or set(obj) - {"watch"} != {"v", "group", "seen", "proposals"}:
        raise RoomDecodeError("saved room: unexpected fields")
    if obj["v"] != ROOM_STATE_VERSION:
        raise RoomDecodeError("saved room: unsupported version")
    group, seen, proposals = obj["group"], obj["seen"], obj["proposals"]
    if (
        not isinstance(group, bytes)
        or not isinstance(seen, list)
        or not isinstance(proposals, list)
    ):
        raise RoomDecodeError("saved room: malformed fields")
    pairs: list[tuple[bytes, bytes]] = []
    for entry in seen:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not all(isinstance(x, bytes) for x in entry)
        ):
            raise RoomDecodeError("saved room: malformed seen window")
        pairs.append((entry[0], entry[1]))
    return group, pairs, [_decode_change(c) for c in proposals], obj.get("watch")
