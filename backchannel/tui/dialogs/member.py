"""One member: role, verification and safety number; facilitators can change or remove them."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Label, Select, Static

from ...client import Client
from ...views import MemberView
from ._base import Dialog
from ._text import plain, safety_rows
from .confirm import ConfirmDialog

__all__ = ["ROLE_CHOICES", "MemberDialog"]

ROLE_CHOICES: list[tuple[str, str]] = [
    ("Facilitator: manages members and rules", "facilitator"),
    ("Participant: reads and writes", "participant"),
    ("Observer: reads only", "observer"),
]


class MemberDialog(Dialog[None]):
    """Details of ``member_id`` in ``room_id``, with verification and facilitator actions.

    Args:
        client: the started client.
        room_id: the room's id.
        member_id: the member's id.
    """

    DEFAULT_CSS = """
    MemberDialog #name {
        text-style: bold;
    }
    MemberDialog #state {
        margin-bottom: 1;
    }
    MemberDialog #state.verified {
        color: $success;
    }
    MemberDialog #state.unverified {
        color: $warning;
    }
    MemberDialog #state.key-changed {
        color: $text;
        background: $error;
        text-style: bold;
        padding: 0 1;
    }
    MemberDialog #safety {
        color: $accent;
        text-style: bold;
        margin: 0 0 1 2;
    }
    MemberDialog #manage {
        height: auto;
        display: none;
        border-top: solid $primary 50%;
        margin-top: 1;
    }
    MemberDialog #manage.-shown {
        display: block;
    }
    MemberDialog #manage Horizontal {
        height: auto;
    }
    MemberDialog #manage Select {
        width: 1fr;
    }
    MemberDialog #manage Button {
        margin-left: 1;
    }
    """

    def __init__(self, client: Client, room_id: str, member_id: str) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        self.member_id = member_id
        #: The member as last read (None until loaded).
        self.member: MemberView | None = None
        #: Whether this device's member facilitates the room.
        self.facilitator = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static("", id="name", markup=False)
            yield Static("", id="role", markup=False)
            yield Static("", id="state", markup=False)
            yield Static("", id="safety-intro", markup=False)
            yield Static("", id="safety", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("I compared it: mark verified", id="verify", variant="success")
            with Vertical(id="manage"):
                yield Label("Role", classes="field-label")
                with Horizontal():
                    yield Select(ROLE_CHOICES, allow_blank=False, id="role-select")
                    yield Button("Change role", id="set-role")
                with Horizontal(classes="buttons"):
                    yield Button("Remove from room", id="remove", variant="error")
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Close", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Member"
        self.query_one("#verify", Button).display = False
        self.query_one("#cancel", Button).focus(scroll_visible=False)  # keep the name in view
        self.load()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#verify")
    def _verify(self) -> None:
        if not self.busy:
            self.verify()

    @on(Button.Pressed, "#set-role")
    def _set_role(self) -> None:
        role = self.query_one("#role-select", Select).value
        if self.busy or not isinstance(role, str):
            return
        if self.member is not None and role == self.member.role:
            self.show_error(f"They are already a {role}.")
            return
        self.set_role(role)

    @on(Button.Pressed, "#remove")
    def _remove(self) -> None:
        if self.busy or self.member is None:
            return
        question = (
            f"Remove {self.member.name} from this room? They will no longer see new messages."
        )
        self.app.push_screen(ConfirmDialog(question, "Remove"), self._removal_confirmed)

    def _removal_confirmed(self, confirmed: bool | None) -> None:
        if confirmed:
            self.remove_member()

    @work(exclusive=True, group="member", exit_on_error=False)
    async def load(self) -> None:
        """Read the member, the safety number and this device's role."""
        member, number = await self.client.safety_number(self.room_id, self.member_id)
        room = await self.client.room(self.room_id)
        self.facilitator = room.role == "facilitator"
        self._show(member, number)

    @work(exclusive=True, group="member", exit_on_error=False)
    async def verify(self) -> None:
        """Record that the safety number matched."""
        await self.client.verify(self.room_id, self.member_id)
        member, number = await self.client.safety_number(self.room_id, self.member_id)
        self._show(member, number)
        self.query_one("#cancel", Button).focus()

    @work(exclusive=True, group="member", exit_on_error=False)
    async def set_role(self, role: str) -> None:
        """Give the member another role."""
        await self.client.set_role(self.room_id, self.member_id, role)
        member, number = await self.client.safety_number(self.room_id, self.member_id)
        self._show(member, number)
        self.notify(f"Role changed to {role}.")

    @work(exclusive=True, group="member", exit_on_error=False)
    async def remove_member(self) -> None:
        """Remove the member, then close."""
        await self.client.remove(self.room_id, self.member_id)
        self.notify("Removed from the room.")
        self.dismiss(None)

    def _show(self, member: MemberView, number: str) -> None:
        self.member = member
        you = " (you)" if member.me else ""
        self.query_one("#name", Static).update(plain(member.name + you))
        self.query_one("#role", Static).update(f"Role: {member.role}")
        state = self.query_one("#state", Static)
        state.remove_class("verified", "unverified", "key-changed")
        if member.me:
            state.update("This is you.")
        elif member.key_changed:
            state.update(
                "KEY CHANGED: this member's key is not the one you verified. It may be a "
                "new device, or someone impersonating them. Compare the safety number again."
            )
            state.add_class("key-changed")
        elif member.verified:
            state.update("Verified: you compared the safety number.")
            state.add_class("verified")
        else:
            state.update("Not verified.")
            state.add_class("unverified")
        if member.me:
            self.query_one("#safety-intro", Static).update("")
            self.query_one("#safety", Static).update("")
        else:
            self.query_one("#safety-intro", Static).update(
                "Compare this safety number with theirs, in person or on a call:"
            )
            self.query_one("#safety", Static).update(safety_rows(number))
        self.query_one("#verify", Button).display = not member.me and (
            not member.verified or member.key_changed
        )
        manage = self.query_one("#manage", Vertical)
        manage.set_class(self.facilitator and not member.me, "-shown")
        select = self.query_one("#role-select", Select)
        if member.role in {value for _, value in ROLE_CHOICES}:
            select.value = member.role
