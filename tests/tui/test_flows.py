"""Every flow of the app, driven through its own keys and dialogs, with Ben as a real Client.

Ada (the app) facilitates: she creates a room, invites, approves Ben, they talk, she
replies, edits, deletes, sends a file, verifies Ben, removes him, and locks and
unlocks the screen. Each step is checked on Ben's side too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.widgets import Button, Input, TextArea

from backchannel.tui import BackchannelApp
from backchannel.tui.dialogs.confirm import ConfirmDialog
from backchannel.tui.dialogs.create_room import CreateRoomDialog
from backchannel.tui.dialogs.invite import InviteDialog
from backchannel.tui.dialogs.member import MemberDialog
from backchannel.tui.dialogs.message import EditMessageDialog, MessageActionsDialog
from backchannel.tui.dialogs.requests import RequestsDialog
from backchannel.tui.dialogs.send_file import SendFileDialog
from backchannel.tui.screens.lock import LockScreen
from backchannel.tui.screens.main import MainScreen
from backchannel.tui.widgets.member_list import MemberList
from tests.e2e.harness import Person

from .conftest import PASSPHRASE, wait_for, wait_for_main, wait_for_workers

Build = Callable[..., BackchannelApp]


def _texts(main: MainScreen) -> list[str]:
    conv = main.conversation
    return [conv.line_text(i) for i in range(conv.total_lines)]


async def _peer_texts(peer: Person, room: str) -> dict[str, object]:
    return {m.text: m for m in await peer.c.history(room, limit=200)}


async def _click(pilot: object, app: BackchannelApp, selector: str) -> None:
    """Press a button of the top screen by id (scrolling it into view first)."""
    button = app.screen.query_one(selector, Button)
    button.scroll_visible(animate=False)
    await pilot.pause()  # type: ignore[attr-defined]
    button.press()
    await pilot.pause()  # type: ignore[attr-defined]


async def test_a_facilitator_runs_a_room_from_the_app(
    app_home: Path, peer: Person, build_app: Build, tmp_path: Path
) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await wait_for_main(pilot)
        await wait_for(pilot, lambda: app.connection_state == "connected")

        # create a room
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, CreateRoomDialog))
        app.screen.query_one("#title", Input).value = "Water talks"
        await _click(pilot, app, "#create")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen) and main.room_id)
        room = main.room_id
        assert room is not None

        # invite, Ben asks to join, approve in the requests dialog
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, InviteDialog))
        invite = app.screen
        assert isinstance(invite, InviteDialog)
        await _click(pilot, app, "#create")
        await wait_for(pilot, lambda: bool(invite.link))
        link = invite.link
        await pilot.press("escape")
        rid = await peer.c.join(link)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, RequestsDialog))
        dialog = app.screen

        async def request_listed() -> bool:
            await _click(pilot, app, "#refresh")
            await wait_for_workers(pilot)
            return bool(dialog.query(".answer"))

        for _ in range(50):
            if await request_listed():
                break
        approve = [b for b in dialog.query(Button) if (b.id or "").startswith("approve-")]
        assert approve, "the join request never showed"
        approve[0].press()
        answer = await peer.c.wait_join(rid, 30)
        assert answer is not None and answer.approved
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))

        # chat both ways
        await peer.c.send(room, "hello from Ben")
        await wait_for(pilot, lambda: any("hello from Ben" in t for t in _texts(main)))
        main.composer.text = "hello Ben"
        main.composer.focus()
        await wait_for(pilot, lambda: main.composer.has_focus)  # focus lands on the next tick
        await pilot.press("enter")

        async def ben_has(text: str) -> bool:
            return text in await _peer_texts(peer, room)

        await wait_for_workers(pilot)
        # first on Ada's own screen (the Enter was taken), then at Ben's (it was delivered)
        await wait_for(pilot, lambda: any("hello Ben" in t for t in _texts(main)))
        await _until(pilot, lambda: ben_has("hello Ben"))

        # reply to Ben's message through the message actions
        conv = main.conversation
        ben_message = next(m for m in conv.messages if m.text == "hello from Ben")
        conv.select(ben_message.id)
        conv.focus()
        await wait_for(pilot, lambda: conv.has_focus)  # focus lands on the next tick
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageActionsDialog))
        await _click(pilot, app, "#reply")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        main.composer.text = "answering you"
        main.composer.focus()
        await wait_for(pilot, lambda: main.composer.has_focus)  # focus lands on the next tick
        await pilot.press("enter")
        await _until(pilot, lambda: ben_has("answering you"))
        replied = (await _peer_texts(peer, room))["answering you"]
        assert replied.reply_to == ben_message.id  # type: ignore[attr-defined]

        # edit, then delete, her own message
        mine = next(m for m in conv.messages if m.text == "hello Ben")
        conv.select(mine.id)
        conv.focus()
        await wait_for(pilot, lambda: conv.has_focus)  # focus lands on the next tick
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageActionsDialog))
        await _click(pilot, app, "#edit")
        await wait_for(pilot, lambda: isinstance(app.screen, EditMessageDialog))
        app.screen.query_one("#text", TextArea).text = "hello Ben (edited)"
        await _click(pilot, app, "#save")
        await _until(pilot, lambda: ben_has("hello Ben (edited)"))
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        conv.select(mine.id)
        conv.focus()
        await wait_for(pilot, lambda: conv.has_focus)  # focus lands on the next tick
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageActionsDialog))
        await _click(pilot, app, "#delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await _click(pilot, app, "#confirm")

        async def ben_sees_deleted() -> bool:
            return any(m.deleted for m in await peer.c.history(room) if m.id == mine.id)

        await _until(pilot, ben_sees_deleted)

        # send a file through the file dialog
        source = tmp_path / "minutes.txt"
        source.write_text("minutes of the first session\n" * 100)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SendFileDialog))
        app.screen.query_one("#path", Input).value = str(source)
        await _click(pilot, app, "#send")

        async def ben_has_file() -> bool:
            files = [m for m in await peer.c.history(room) if m.kind == "file"]
            return bool(files) and files[0].file is not None and files[0].file.complete

        await _until(pilot, ben_has_file)
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))

        # verify Ben, then remove him, from the member dialog
        ben_id = next(m.id for m in await peer.c.members(room) if m.me)
        members = main.query_one("#members", MemberList)
        members.focus()  # as Tab reaches it: the first member is highlighted at once
        await wait_for(pilot, lambda: members.highlighted == 0)
        await pilot.press(*["down"] * [m.id for m in members.members].index(ben_id), "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MemberDialog))
        dialog = app.screen
        assert isinstance(dialog, MemberDialog) and dialog.member_id == ben_id
        await wait_for_workers(pilot)
        await _click(pilot, app, "#verify")
        await wait_for_workers(pilot)
        assert app.client is not None
        assert [m.verified for m in await app.client.members(room) if m.id == ben_id] == [True]
        await _click(pilot, app, "#remove")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await _click(pilot, app, "#confirm")

        async def ben_gone() -> bool:
            return await peer.c.rooms() == []

        await _until(pilot, ben_gone)
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))

        # lock hides everything; the passphrase unlocks
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, LockScreen))
        field = app.screen.query_one("#lock-passphrase", Input)
        field.value = PASSPHRASE
        field.focus()
        await wait_for(pilot, lambda: field.has_focus)  # focus lands on the next tick
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))


async def _until(pilot: object, check: Callable[[], object], tries: int = 300) -> None:
    """Await an async ``check`` while the app keeps running."""
    for _ in range(tries):
        if await check():  # type: ignore[misc]
            return
        await pilot.pause(0.1)  # type: ignore[attr-defined]
    raise AssertionError("condition not reached in time")
