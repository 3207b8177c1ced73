"""Choose a directory and save a received file there."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DirectoryTree, Input, Label, Static

from ...client import Client
from ...views import MessageView, human_size
from ._base import Dialog
from ._text import clean, plain

__all__ = ["DirectoriesTree", "SaveFileDialog", "default_download_dir"]


class DirectoriesTree(DirectoryTree):
    """A directory tree that lists directories only."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [path for path in paths if path.is_dir()]


def default_download_dir() -> Path:
    """``~/Downloads`` if it exists, else the home directory."""
    downloads = Path.home() / "Downloads"
    return downloads if downloads.is_dir() else Path.home()


class SaveFileDialog(Dialog[Path | None]):
    """Save the file of ``message`` into a chosen directory; dismisses with its path, or None.

    A file already there is replaced only once the user presses Save a second time for
    the same place, after the dialog said so.

    Args:
        client: the started client.
        room_id: the room's id.
        message: a message of kind ``file`` whose file is complete.
        start_dir: the directory chosen at first (``~/Downloads`` or home by default).
    """

    DEFAULT_CSS = """
    SaveFileDialog > #dialog {
        height: 22;
    }
    SaveFileDialog #tree {
        height: 1fr;
        min-height: 4;
        border: round $primary 50%;
    }
    """

    def __init__(
        self,
        client: Client,
        room_id: str,
        message: MessageView,
        *,
        start_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        self.message = message
        self.start_dir = start_dir or default_download_dir()
        #: The existing file the user was told about: Save again replaces it.
        self._replace: Path | None = None

    def compose(self) -> ComposeResult:
        info = self.message.file
        name = info.name if info is not None else "file"
        size = f" ({human_size(info.size)})" if info is not None else ""
        with Vertical(id="dialog"):
            yield Static(Text.assemble("Save ", plain(name, style="bold"), size), id="what")
            yield DirectoriesTree(self.start_dir, id="tree")
            yield Label("Save into", classes="field-label")
            yield Input(str(self.start_dir), id="dest")
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Save a file"
        self.query_one("#tree", DirectoryTree).focus()

    @on(DirectoryTree.DirectorySelected)
    def _picked(self, event: DirectoryTree.DirectorySelected) -> None:
        event.stop()
        self.query_one("#dest", Input).value = str(event.path)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#dest")
    def _submit(self) -> None:
        if self.busy:
            return
        text = self.query_one("#dest", Input).value.strip()
        if not text:
            self.show_error("Choose a directory to save into.")
            return
        destination = Path(text).expanduser()
        target = self.client.save_target(self.message, destination)
        replace = self._replace == target
        if not replace and target.exists():
            self._replace = target
            self.show_error(
                f"{target.name} exists already in {target.parent}. "
                "Press Save again to replace it, or choose another place."
            )
            return
        self.save(destination, overwrite=replace)

    @work(exclusive=True, group="save-file", exit_on_error=False)
    async def save(self, destination: Path, *, overwrite: bool = False) -> None:
        """Write the file (over an existing one only if ``overwrite``), then close with its path."""
        saved = await self.client.save_file(
            self.room_id, self.message.id, destination, overwrite=overwrite
        )
        self.notify(clean(f"Saved to {saved}."), markup=False)
        self.dismiss(saved)
