"""The TUI's modal dialogs: rooms, invites, joining, members, messages and files."""

from __future__ import annotations

from .confirm import ConfirmDialog
from .create_room import CreateRoomDialog
from .invite import InviteDialog
from .join import JoinDialog
from .leave import LeaveDialog
from .member import MemberDialog
from .message import EditMessageDialog, MessageActionsDialog
from .qr import qr_lines
from .requests import RequestsDialog
from .save_file import SaveFileDialog
from .search import SearchDialog
from .send_file import SendFileDialog
from .settings import RoomSettingsDialog

__all__ = [
    "ConfirmDialog",
    "CreateRoomDialog",
    "EditMessageDialog",
    "InviteDialog",
    "JoinDialog",
    "LeaveDialog",
    "MemberDialog",
    "MessageActionsDialog",
    "RequestsDialog",
    "RoomSettingsDialog",
    "SaveFileDialog",
    "SearchDialog",
    "SendFileDialog",
    "qr_lines",
]
