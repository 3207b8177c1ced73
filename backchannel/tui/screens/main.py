"""The main screen: rooms, the conversation, the composer and the members panel.

Dialogs come from ``backchannel.tui.dialogs`` and are imported when first opened,
so a missing one is reported instead of stopping the app.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Static

from ...client import Client
from ...safe_text import clean, clean_lines
from ...views import MemberView, MessageView, RoomSummary
from .. import messages as msg
from ..widgets.composer import Composer
from ..widgets.conversation import Conversation, first_page_size
from ..widgets.key_footer import KeyFooter
from ..widgets.member_list import MemberList
from ..widgets.room_list import RoomList
from ..widgets.status_bar import ConnectionStatus

__all__ = ["MainScreen"]

#: What an open room with no messages shows: new members never see what came before
#: they joined (each epoch's keys are new), so an empty room may not be a new one.
EMPTY_ROOM = (
    " No messages here yet.",
    " Members see only what is sent after they join.",
)


@dataclass(frozen=True, slots=True)
class _Opening:
    """What showing a room needs, read in one go."""

    summary: RoomSummary
    page: list[MessageView]
    has_older: bool
    members: list[MemberView]


class MainScreen(Screen[None]):
    """Rooms on the left, the conversation in the middle, members on the right."""

    AUTO_FOCUS = "#composer"

    BINDINGS = [
        Binding("ctrl+n", "create_room", "New room", tooltip="Open a new room", id="main.new"),
        Binding(
            "ctrl+o",
            "join",
            "Join",
            tooltip="Ask to join a room with an invite link",
            id="main.join",
        ),
        Binding(
            "ctrl+t",
            "invite",
            "Invite",
            tooltip="Make an invite link for this room",
            id="main.invite",
        ),
        Binding(
            "ctrl+r",
            "requests",
            "Requests",
            tooltip="Approve or turn away people asking to join",
            id="main.requests",
        ),
        Binding("ctrl+f", "search", "Search", tooltip="Search this room", id="main.search"),
        Binding("ctrl+s", "send_file", "Send file", tooltip="Send a file", id="main.send_file"),
        Binding(
            "ctrl+g",
            "room_settings",
            "Room settings",
            tooltip="Title, join approval, retention",
            id="main.settings",
            show=False,
        ),
        Binding(
            "ctrl+b",
            "toggle_members",
            "Members",
            tooltip="Show or hide the members panel",
            id="main.members",
            show=False,
        ),
        Binding(
            "alt+up",
            "previous_room",
            "Previous room",
            tooltip="Show the room above",
            id="main.prev",
            show=False,
        ),
        Binding(
            "alt+down",
            "next_room",
            "Next room",
            tooltip="Show the room below",
            id="main.next",
            show=False,
        ),
        Binding(
            "f8", "leave_room", "Leave room", tooltip="Leave this room", id="main.leave", show=False
        ),
        Binding(
            "escape",
            "cancel_reply",
            "Cancel reply",
            tooltip="Write a new message instead of a reply",
            id="main.cancel_reply",
        ),
    ]

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.room_id: str | None = None
        """The room shown."""
        self.reply_to: MessageView | None = None
        """The message the next send answers."""
        self._members: list[MemberView] = []
        self._preloaded: tuple[list[RoomSummary], _Opening | None] | None = None
        self._loaded = asyncio.Event()

    async def preload(self) -> None:
        """Read the rooms and the first room's newest page before the screen shows.

        The app awaits this before switching here, so the screen is laid out and painted
        once with everything in it. Read once mounted, each answer would wait behind the
        screen's own start-up (mounting, styling, several repaints). The client reads
        them from the store: its rooms load after this screen is painted (see
        :meth:`loaded`).
        """
        rooms = await self.client.rooms()
        opening = await self._read_room(rooms[0].id, self.app.size.height) if rooms else None
        self._preloaded = (rooms, opening)

    # -- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Static(Text(clean(self.client.info().name), end=""), id="me")
                yield RoomList(id="rooms")
                yield ConnectionStatus(id="connection")
            with Vertical(id="center"):
                yield Static("", id="room-header")
                yield Conversation(id="conversation")
                yield Static("", id="reply-bar")
                yield Static("offline: messages are queued", id="offline-note")
                yield Composer(id="composer")
            with Vertical(id="members-panel"):
                yield Static("Members", classes="panel-title")
                yield MemberList(id="members")
        yield KeyFooter()

    @property
    def conversation(self) -> Conversation:
        return self.query_one(Conversation)

    @property
    def composer(self) -> Composer:
        return self.query_one(Composer)

    def on_mount(self) -> None:
        self.conversation.loader = self._load_page
        self.query_one("#reply-bar").display = False
        self._set_connection(getattr(self.app, "connection_state", "reconnecting"))
        if self._preloaded is None:
            self.refresh_rooms(select_first=True)
            return
        rooms, opening = self._preloaded
        self._preloaded = None
        self.query_one(RoomList).set_rooms(rooms, None)
        if opening is None:
            self._set_empty_header()
        else:
            self._show_opening(opening)

    def loaded(self) -> None:
        """The client's rooms are loaded: dialogs open and messages send from now on."""
        self._loaded.set()
        self._settle_after_load()

    @work(exclusive=True, group="opening", exit_on_error=False, name="Loading rooms")
    async def _settle_after_load(self) -> None:
        rooms = await self.client.rooms()
        if self.room_id is not None and self.room_id not in {r.id for r in rooms}:
            # A room that was stored but could not be loaded (its state is damaged;
            # an alert says so): show another.
            self.room_id = None
            self.conversation.reset([], has_older=False)
        if self.room_id is not None:
            await self.client.mark_read(self.room_id)
        self.refresh_rooms(select_first=True)  # approval, requests and unread are known now

    async def _load_page(self, before: str | None, limit: int) -> list[MessageView]:
        assert self.room_id is not None
        return await self.client.history(self.room_id, limit=limit, before=before)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        needs_room = {"invite", "requests", "search", "send_file", "room_settings", "leave_room"}
        if action in needs_room and self.room_id is None:
            return None  # shown dimmed: there is no room yet
        if action == "cancel_reply":
            return self.reply_to is not None
        return True

    # -- rooms --------------------------------------------------------------------------------------

    @work(exclusive=True, group="rooms", exit_on_error=False, name="Loading rooms")
    async def refresh_rooms(self, select_first: bool = False) -> None:
        """Reload the room list (unread counts, requests, titles)."""
        rooms = await self.client.rooms()
        room_list = self.query_one(RoomList)
        room_list.set_rooms(rooms, self.room_id)
        if self.room_id is not None:
            current = next((r for r in rooms if r.id == self.room_id), None)
            if current is not None:
                self._set_header(current)
        elif select_first and rooms:
            self.show_room(rooms[0].id)
        elif not rooms:
            self._set_empty_header()

    def _set_empty_header(self) -> None:
        self.query_one("#room-header", Static).update(
            "No rooms yet: ctrl+n opens one, ctrl+o joins one"
        )

    def _set_header(self, room: RoomSummary) -> None:
        header = Text(clean(room.title), style="bold", end="")
        people = "member" if room.members == 1 else "members"
        header.append(f"  {room.members} {people}, you are {room.role}", "dim")
        if not room.joined:
            header.append("  (you left this room)", "dim")
        self.query_one("#room-header", Static).update(header)

    @work(exclusive=True, group="room", exit_on_error=False, name="Opening the room")
    async def show_room(self, room_id: str) -> None:
        """Show a room: its newest page, its members, and count it as read."""
        opening = await self._read_room(room_id, self.conversation.scrollable_content_region.height)
        self._show_opening(opening)
        if self._loaded.is_set():  # else marked once the rooms are loaded
            await self.client.mark_read(room_id)
            self.refresh_rooms()

    async def _read_room(self, room_id: str, rows: int) -> _Opening:
        summary = await self.client.room(room_id)
        limit = first_page_size(rows, summary.unread)
        page = await self.client.history(room_id, limit=limit)
        members = await self.client.members(room_id)
        return _Opening(summary, page, len(page) >= limit, members)

    def _show_opening(self, opening: _Opening) -> None:
        summary, page = opening.summary, opening.page
        self.room_id = summary.id
        self.cancel_reply()
        self._set_header(summary)
        marker = page[-summary.unread].id if 0 < summary.unread <= len(page) else None
        self._members = opening.members
        self.conversation.reset(
            page,
            has_older=opening.has_older,
            new_marker=marker,
            members={m.id: m for m in opening.members},
            empty=EMPTY_ROOM,
        )
        self.query_one(MemberList).set_members(opening.members)
        self.refresh_bindings()

    @on(RoomList.Selected)
    def _room_chosen(self, event: RoomList.Selected) -> None:
        self.show_room(event.room_id)

    def _step_room(self, delta: int) -> None:
        rooms = self.query_one(RoomList).rooms
        if not rooms:
            return
        ids = [r.id for r in rooms]
        i = ids.index(self.room_id) if self.room_id in ids else -delta
        self.show_room(ids[(i + delta) % len(ids)])

    def action_previous_room(self) -> None:
        self._step_room(-1)

    def action_next_room(self) -> None:
        self._step_room(1)

    #: Narrower than this, the members panel starts hidden (the conversation needs the room).
    MEMBERS_MIN_WIDTH = 100

    def action_toggle_members(self) -> None:
        panel = self.query_one("#members-panel")
        panel.display = not panel.display
        self._members_chosen = True

    def on_resize(self, event: events.Resize) -> None:
        if not getattr(self, "_members_chosen", False):
            self.query_one("#members-panel").display = event.size.width >= self.MEMBERS_MIN_WIDTH

    @work(exclusive=True, group="members", exit_on_error=False, name="Loading members")
    async def refresh_members(self) -> None:
        if self.room_id is None:
            return
        members = await self.client.members(self.room_id)
        self._members = members
        self.query_one(MemberList).set_members(members)
        self.conversation.set_members({m.id: m for m in members})

    # -- sending -----------------------------------------------------------------------------------

    @on(Composer.Submitted)
    def _submitted(self, event: Composer.Submitted) -> None:
        if self.room_id is None:
            self.app.notify("Open or join a room first.", title="No room", severity="warning")
            return
        self.send(self.room_id, event.text, self.reply_to.id if self.reply_to else None)

    @work(group="send", exit_on_error=False, name="Sending the message")
    async def send(self, room_id: str, text: str, reply_to: str | None) -> None:
        """Send ``text`` (queued while offline); the composer keeps it if sending fails."""
        await self._loaded.wait()  # sent as soon as the rooms are loaded
        composer = self.composer
        composer.clear()
        self.cancel_reply()
        try:
            sent = await self.client.send(room_id, text, reply_to=reply_to)
        except BaseException:
            if not composer.text:
                composer.text = text
            raise
        if room_id == self.room_id:
            self.conversation.add(sent)

    def cancel_reply(self) -> None:
        self.reply_to = None
        self.query_one("#reply-bar").display = False
        self.refresh_bindings()

    def action_cancel_reply(self) -> None:
        self.cancel_reply()

    def start_reply(self, message: MessageView) -> None:
        """The next send answers ``message``; a quote bar shows above the composer."""
        self.reply_to = message
        first = clean_lines(message.text)[0] if message.text else "(file)"
        quote = Text(f"↳ replying to {clean(message.sender_name)}: {first}", end="")
        bar = self.query_one("#reply-bar", Static)
        width = bar.content_size.width or self.conversation.size.width or self.size.width
        quote.truncate(max(width - 1, 20), overflow="ellipsis")
        bar.update(quote)
        bar.display = True
        self.refresh_bindings()
        self.composer.focus()

    # -- client events -----------------------------------------------------------------------------

    def _set_connection(self, state: str) -> None:
        self.query_one(ConnectionStatus).state = state
        self.query_one("#offline-note").display = state != "connected"
        self.query_one("#offline-note", Static).update(
            "offline: messages are queued"
            if state in {"offline", "closed"}
            else "reconnecting: messages are queued"
        )

    def on_connection_state_changed(self, event: msg.ConnectionStateChanged) -> None:
        self._set_connection(event.state)

    def on_message_arrived(self, event: msg.MessageArrived) -> None:
        message = event.message
        if message.room == self.room_id:
            self.conversation.add(message)
            known = {m.id: m.name for m in self._members}
            if known.get(message.sender, message.sender_name) != message.sender_name:
                self.refresh_members()  # the name arrives with a member's first message
            if not message.outgoing:
                self._mark_read(message.room)
            return
        if not message.outgoing:
            self._notify_elsewhere(message)
        self.refresh_rooms()

    def _notify_elsewhere(self, message: MessageView) -> None:
        if getattr(self.app, "locked", False):
            return  # nothing readable while locked
        rooms = {r.id: r for r in self.query_one(RoomList).rooms}
        room = rooms.get(message.room)
        title = f"{clean(message.sender_name)} in {clean(room.title) if room else 'another room'}"
        body = "sent a file" if message.file else clean_lines(message.text)[0][:120]
        self.app.notify(body, title=title, markup=False)

    @work(group="read", exit_on_error=False, name="Marking as read")
    async def _mark_read(self, room_id: str) -> None:
        await self.client.mark_read(room_id)

    def on_message_updated(self, event: msg.MessageUpdated) -> None:
        if event.room == self.room_id and self.conversation.find(event.message_id) is not None:
            self._reload_message(event.room, event.message_id)

    @work(group="reload", exit_on_error=False, name="Reloading a message")
    async def _reload_message(self, room_id: str, message_id: str) -> None:
        fresh = await self.client.message(room_id, message_id)
        if fresh is not None:
            self.conversation.replace(fresh)

    def on_room_updated(self, event: msg.RoomUpdated) -> None:
        if event.room == self.room_id:
            self.refresh_members()  # roles and names are shown there
        self.refresh_rooms(select_first=self.room_id is None)

    def on_members_updated(self, event: msg.MembersUpdated) -> None:
        if event.room == self.room_id:
            self.refresh_members()
        self.refresh_rooms()

    def on_join_request_arrived(self, event: msg.JoinRequestArrived) -> None:
        self.app.notify(
            f"{clean(event.request.name)} asks to join; ctrl+r to answer.",
            title="Join request",
            markup=False,
        )
        self.refresh_rooms()

    def on_join_answer_arrived(self, event: msg.JoinAnswerArrived) -> None:
        if event.approved:
            self.app.notify("You are in the room.", title="Join request approved")
            self.refresh_rooms()
            if event.room is not None:
                self.show_room(event.room)
        else:
            self.app.notify(
                "A facilitator turned your join request away.",
                title="Join request denied",
                severity="error",
                timeout=10,
            )

    def on_removed_from_room_notice(self, event: msg.RemovedFromRoomNotice) -> None:
        self.app.notify(
            "You are no longer in this room; its history stays on this device.",
            title="Removed from a room",
            severity="error",
            timeout=10,
        )
        self.refresh_rooms()

    def on_alert_raised(self, event: msg.AlertRaised) -> None:
        self.app.notify(clean(event.text), title="Backchannel", severity="warning", markup=False)

    # -- conversation actions -------------------------------------------------------------------------

    @on(MemberList.Selected)
    def _member_chosen(self, event: MemberList.Selected) -> None:
        if self.room_id is not None:
            self._open("member", "MemberDialog", self.client, self.room_id, event.member_id)

    @on(Conversation.ActionsRequested)
    def _message_actions(self, event: Conversation.ActionsRequested) -> None:
        message = event.message
        self._open(
            "message",
            "MessageActionsDialog",
            message,
            message.outgoing,
            callback=lambda choice: self._message_action(message, choice),
        )

    def _message_action(self, message: MessageView, choice: str | None) -> None:
        if choice is None or self.room_id is None:
            return
        room = self.room_id
        if choice == "reply":
            self.start_reply(message)
        elif choice == "edit":
            self._open("message", "EditMessageDialog", self.client, room, message)
        elif choice == "delete":
            self._open(
                "confirm",
                "ConfirmDialog",
                "Delete this message for everyone?",
                "Delete",
                callback=lambda yes: self._delete(room, message.id) if yes else None,
            )
        elif choice.startswith("react:"):
            self._react(room, message.id, choice.removeprefix("react:"))
        elif choice == "save":
            self._open("save_file", "SaveFileDialog", self.client, room, message)

    @work(group="act", exit_on_error=False, name="Deleting the message")
    async def _delete(self, room: str, message_id: str) -> None:
        await self.client.delete(room, message_id)

    @work(group="act", exit_on_error=False, name="Reacting")
    async def _react(self, room: str, message_id: str, emoji: str) -> None:
        await self.client.react(room, message_id, emoji)

    # -- dialogs ----------------------------------------------------------------------------------------

    def _open(self, module: str, name: str, *args: Any, callback: Any = None) -> None:
        """Push ``dialogs.<module>.<name>(*args)`` (imported on first use, like every dialog)."""
        if not self._loaded.is_set():
            # The first fraction of a second after unlocking: dialogs act on loaded
            # rooms, so this one opens as soon as they are (one waits; a newer replaces it).
            self.run_worker(
                self._open_when_loaded(module, name, *args, callback=callback),
                group="open-when-loaded",
                exclusive=True,
                exit_on_error=False,
            )
            return
        dialog = getattr(importlib.import_module(f"backchannel.tui.dialogs.{module}"), name)
        self.app.push_screen(dialog(*args), callback)

    async def _open_when_loaded(
        self, module: str, name: str, *args: Any, callback: Any = None
    ) -> None:
        await self._loaded.wait()
        self._open(module, name, *args, callback=callback)

    def action_create_room(self) -> None:
        self._open("create_room", "CreateRoomDialog", self.client, callback=self._room_created)

    def _room_created(self, room: RoomSummary | None) -> None:
        if room is not None:
            self.refresh_rooms()
            self.show_room(room.id)

    def action_join(self) -> None:
        self._open("join", "JoinDialog", self.client, "", callback=self._join_sent)

    def _join_sent(self, request_id: str | None) -> None:
        if request_id is not None:
            self.app.notify("Asked to join; a facilitator will answer.", title="Join request sent")

    def action_invite(self) -> None:
        if self.room_id is not None:
            self._open("invite", "InviteDialog", self.client, self.room_id)

    def action_requests(self) -> None:
        if self.room_id is not None:
            self._open(
                "requests",
                "RequestsDialog",
                self.client,
                self.room_id,
                callback=lambda _: self.refresh_rooms(),
            )

    def action_search(self) -> None:
        if self.room_id is not None:
            self._open("search", "SearchDialog", self.client, self.room_id, callback=self._jump)

    def _jump(self, message_id: str | None) -> None:
        if message_id is not None:
            self.jump_to(message_id)

    @work(
        exclusive=True, group="conversation-page", exit_on_error=False, name="Finding the message"
    )
    async def jump_to(self, message_id: str) -> None:
        """Select a message, loading older pages until it is in the window."""
        found = await self.conversation.reveal(message_id)
        if not found:
            self.app.notify("That message is no longer on this device.", title="Search")

    def action_send_file(self) -> None:
        if self.room_id is not None:
            self._open(
                "send_file", "SendFileDialog", self.client, self.room_id, callback=self._file_sent
            )

    def _file_sent(self, message: MessageView | None) -> None:
        if message is not None and message.room == self.room_id:
            self.conversation.add(message)

    def action_room_settings(self) -> None:
        if self.room_id is not None:
            self._open(
                "settings",
                "RoomSettingsDialog",
                self.client,
                self.room_id,
                callback=lambda _: self.refresh_rooms(),
            )

    def action_leave_room(self) -> None:
        if self.room_id is not None:
            self._open("leave", "LeaveDialog", self.client, self.room_id, callback=self._left)

    def _left(self, left: bool | None) -> None:
        if left:
            self.room_id = None
            self.conversation.reset([], has_older=False)
            self.query_one(MemberList).set_members([])
            self.refresh_rooms(select_first=True)
