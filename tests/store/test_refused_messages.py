"""A message the relay refused for good says so, in the views and on screen.

The engine drops such a post from the outbox (``Store.drop_outbox``) and marks its
message refused; until this, every UI kept showing it as "sending…" for ever.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.style import Style

from backchannel.store import OutboxEntry, Room
from backchannel.stored_views import message_view
from backchannel.tui.widgets.message_blocks import pieces

from . import ROOM, new_store, text_message


async def test_a_message_refused_for_good_is_shown_refused(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    try:
        await store.put_room(Room(ROOM, "Talks", 1.0))
        mine = dataclasses.replace(text_message(1, "too big to post"), outgoing=True)
        sent = dataclasses.replace(text_message(2, "went out"), outgoing=True)
        for n, m in enumerate((mine, sent), 1):
            entry = OutboxEntry(b"key-%012d" % n, b"mailbox-1", b"x", float(n), ROOM, m.ref)
            assert await store.queue_message(m, entry)
        assert await store.acknowledge(b"key-%012d" % 2, 7)
        assert await store.drop_outbox(b"key-%012d" % 1, refused_at=5.0) is not None
        refused = await store.message(ROOM, mine.ref)
        delivered = await store.message(ROOM, sent.ref)
        assert refused is not None and refused.refused_at == 5.0
        assert delivered is not None and delivered.refused_at is None
        views = {m.body: message_view(m, b"alice") for m in (refused, delivered)}
        assert views["too big to post"].refused and not views["too big to post"].delivered
        assert not views["went out"].refused and views["went out"].delivered
        # A post already acknowledged is never marked refused afterwards.
        assert await store.drop_outbox(b"key-%012d" % 2) is None

        def header(view: object) -> str:
            block = pieces(
                view,  # type: ignore[arg-type]
                None,
                80,
                style=lambda _: Style(),
                member=None,
                quoted=None,
                new_marker=None,
            )
            return " ".join(text.plain for text, _ in block)

        assert "not delivered: the relay refused it" in header(views["too big to post"])
        assert "sending" not in header(views["too big to post"])
        assert "not delivered" not in header(views["went out"])
    finally:
        await store.close()
