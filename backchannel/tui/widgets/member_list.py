"""The members panel: names, roles, and verified marks or key-changed warnings."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ...safe_text import clean
from ...views import MemberView

__all__ = ["MemberList", "member_label"]


def member_label(member: MemberView) -> Text:
    """One member as the panel shows it (peer-chosen name as plain text)."""
    label = Text(clean(member.name), end="")
    if member.me:
        label.append(" (you)", "dim")
    elif member.key_changed:
        label.append(" ⚠ key changed", "bold")
    elif member.verified:
        label.append(" ✓ verified")
    else:
        label.append(" not verified", "dim")
    label.append(f"\n{member.role}", "dim")
    return label


class MemberList(OptionList):
    """Members of the shown room; choosing one opens the member dialog."""

    class Selected(Message):
        """A member was chosen."""

        def __init__(self, member_list: MemberList, member_id: str) -> None:
            super().__init__()
            self.member_list = member_list
            self.member_id = member_id

        @property
        def control(self) -> MemberList:
            return self.member_list

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.members: list[MemberView] = []

    def set_members(self, members: list[MemberView]) -> None:
        """Replace the list."""
        self.members = list(members)
        self.clear_options()
        self.add_options(Option(member_label(m), id=m.id) for m in members)

    def on_focus(self) -> None:
        # Reached by Tab, the list highlighted no one, so Enter did nothing until an
        # arrow key was pressed first.
        if self.highlighted is None and self.option_count:
            self.highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Selected(self, event.option.id))
