"""Snapshot tests: how the main screen, every dialog and every screen look at 80x24 and 120x40.

Every frame is deterministic: the app runs on :mod:`tests.tui.snapshot_apps`'s scripted
client (fixed names, ids, times and safety numbers), the clock is stopped and in UTC,
cursors do not blink (``conftest.no_cursor_blink``), the theme is Textual's default, and
directory trees list a fixed tree through a relative path, so no temporary path shows.

Update the SVGs under ``__snapshots__/`` after a deliberate change with::

    pytest tests/tui/test_snapshots.py --snapshot-update

and look at every changed file before committing it. In CI (``CI`` or
``BACKCHANNEL_REQUIRE_VECTORS`` set) ``--snapshot-update`` fails instead of rewriting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

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
)
from backchannel.tui.screens.first_run import FirstRunScreen
from backchannel.tui.screens.help import HelpScreen
from backchannel.tui.screens.lock import LockScreen
from backchannel.tui.screens.main import MainScreen
from backchannel.tui.screens.unlock import UnlockScreen
from backchannel.tui.widgets.member_list import MemberList

from .snapshot_apps import (
    MESSAGES,
    WATER,
    build_app,
    file_tree,
    frozen_clock,
    open_requests,
    select_message,
    settle,
    type_into,
    wait_for_main,
)

SnapCompare = Callable[..., bool]
Drive = Callable[[Pilot[Any]], Any]

#: Environment variables that mark a CI run, where snapshots are checked, never rewritten.
_CI_FLAGS = ("CI", "BACKCHANNEL_REQUIRE_VECTORS")


@pytest.fixture(autouse=True, scope="module")
def no_snapshot_update_in_ci(request: pytest.FixtureRequest) -> None:
    """``--snapshot-update`` would make every snapshot pass: refuse it where CI runs."""
    updating = bool(getattr(request.config.option, "update_snapshots", False))
    flagged = [name for name in _CI_FLAGS if os.environ.get(name)]
    if updating and flagged:
        pytest.fail(
            f"--snapshot-update is not allowed when {', '.join(flagged)} is set: "
            "update snapshots locally, review the SVGs, and commit them.",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def no_button_flash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pressed button's "active" look lasts 0.2 s: a frame taken then would depend on
    the machine's speed. Buttons of these tests never flash."""
    monkeypatch.setattr(Button, "_start_active_affect", lambda self: None)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    """UTC, and time.time() stopped at Thursday 14 March 2024, 09:30."""
    with frozen_clock():
        yield


@pytest.fixture(params=[(80, 24), (120, 40)], ids=["80x24", "120x40"])
def size(request: pytest.FixtureRequest) -> tuple[int, int]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "ada"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fixed tree in the working directory: trees show ``outbox``/``inbox``, not tmp paths."""
    file_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _expect(screen_type: type) -> Callable[[Pilot[Any]], None]:
    def check(pilot: Pilot[Any]) -> None:
        assert isinstance(pilot.app.screen, screen_type), type(pilot.app.screen).__name__

    return check


def _then(drive: Drive, expected: type) -> Drive:
    """``drive``, then check the screen on top is ``expected`` (a wrong frame fails clearly)."""

    async def run(pilot: Pilot[Any]) -> None:
        await drive(pilot)
        await settle(pilot)
        _expect(expected)(pilot)

    return run


async def _main(pilot: Pilot[Any]) -> MainScreen:
    return await wait_for_main(pilot)


async def _press_in_dialog(pilot: Pilot[Any], button_id: str) -> None:
    """Press a button of the dialog on top (as a click would, without pointer timing)."""
    pilot.app.screen.query_one(f"#{button_id}", Button).press()
    await settle(pilot)


class TestMainScreen:
    """The rooms, the conversation (day separators, reply, edit, file, reactions), members."""

    def test_conversation(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(_main, MainScreen)
        )

    def test_selected_message(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await select_message(pilot, 3)

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, MainScreen)
        )

    def test_reply_bar(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            main = await select_message(pilot, 5)
            await pilot.press("enter")
            await settle(pilot)
            await _press_in_dialog(pilot, "reply")
            await pilot.press(*"on my way")
            assert main.reply_to is not None

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, MainScreen)
        )


class TestStartScreens:
    """First run, unlock and lock."""

    def test_first_run(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await settle(pilot)

        assert snap_compare(
            build_app(home, profile=False),
            terminal_size=size,
            run_before=_then(drive, FirstRunScreen),
        )

    def test_unlock(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await settle(pilot)

        assert snap_compare(
            build_app(home, unlock=False),
            terminal_size=size,
            run_before=_then(drive, UnlockScreen),
        )

    def test_lock(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await _main(pilot)
            await pilot.press("ctrl+l")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, LockScreen)
        )

    def test_help(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await _main(pilot)
            await pilot.press("f1")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, HelpScreen)
        )


class TestRoomDialogs:
    """New room, invite, join, join requests, room settings and leave."""

    def test_create_room(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            (await _main(pilot)).action_create_room()

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, CreateRoomDialog)
        )

    def test_invite_with_link_and_qr(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            (await _main(pilot)).action_invite()
            await settle(pilot)
            await type_into(pilot, "#uses", "3")
            await _press_in_dialog(pilot, "create")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, InviteDialog)
        )

    def test_join(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            (await _main(pilot)).action_join()
            await settle(pilot)
            await _press_in_dialog(pilot, "join")  # nothing pasted: the error line shows

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, JoinDialog)
        )

    def test_requests(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(open_requests, RequestsDialog)
        )

    def test_settings(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            (await _main(pilot)).action_room_settings()

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, RoomSettingsDialog)
        )

    def test_leave(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            (await _main(pilot)).action_leave_room()

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, LeaveDialog)
        )


class TestMemberDialog:
    """A member chosen in the members panel: safety number, verify, role, remove."""

    def test_unverified_member(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            main = await _main(pilot)
            members = main.query_one(MemberList)
            members.focus()
            members.highlighted = 3  # Dana
            await pilot.press("enter")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, MemberDialog)
        )


class TestMessageDialogs:
    """Message actions, editing, deleting (confirm) and searching."""

    def test_actions_on_a_reply(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await select_message(pilot, 3)
            await pilot.press("enter")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, MessageActionsDialog)
        )

    def test_actions_on_a_file(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await select_message(pilot, 4)
            await pilot.press("enter")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, MessageActionsDialog)
        )

    def test_edit(self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await select_message(pilot, 6)
            await pilot.press("enter")
            await settle(pilot)
            await _press_in_dialog(pilot, "edit")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, EditMessageDialog)
        )

    def test_confirm_delete(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            await select_message(pilot, 6)
            await pilot.press("enter")
            await settle(pilot)
            await _press_in_dialog(pilot, "delete")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, ConfirmDialog)
        )

    def test_search_results(
        self, snap_compare: SnapCompare, home: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            (await _main(pilot)).action_search()
            await settle(pilot)
            await type_into(pilot, "#query", "gate")

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, SearchDialog)
        )


class TestFileDialogs:
    """Sending and saving files, with trees over a fixed directory."""

    def test_send_file(
        self, snap_compare: SnapCompare, home: Path, files: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            main = await _main(pilot)
            pilot.app.push_screen(SendFileDialog(main.client, WATER, start_dir=Path("outbox")))

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, SendFileDialog)
        )

    def test_save_file(
        self, snap_compare: SnapCompare, home: Path, files: Path, size: tuple[int, int]
    ) -> None:
        async def drive(pilot: Pilot[Any]) -> None:
            main = await _main(pilot)
            dialog = SaveFileDialog(main.client, WATER, MESSAGES[4], start_dir=Path("inbox"))
            pilot.app.push_screen(dialog)

        assert snap_compare(
            build_app(home), terminal_size=size, run_before=_then(drive, SaveFileDialog)
        )
