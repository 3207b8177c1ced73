"""The base of every dialog: Escape to cancel, one place that turns failures into a sentence."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from ...errors import BackchannelError
from ._text import clean

__all__ = ["Dialog", "describe_error"]

R = TypeVar("R")


def describe_error(error: BaseException | None) -> str:
    """A sentence for a person about ``error`` (never a traceback).

    The client's own errors already say what happened and what to do; anything else
    gets a generic sentence with the error's short text, controls removed.
    """
    if isinstance(error, BackchannelError):
        return error.user_message()
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        return clean(f"The system refused that: {reason}. Check the path and try again.")
    detail = clean(str(error))[:160] if error is not None else ""
    kind = type(error).__name__ if error is not None else "unknown error"
    suffix = f": {detail}" if detail else ""
    return (
        f"That did not work ({kind}{suffix}). Try again; if it keeps failing, restart Backchannel."
    )


class Dialog(ModalScreen[R], Generic[R]):
    """A modal dialog whose client calls run in workers and whose failures show inside it.

    Subclasses compose a ``#dialog`` container holding an ``#error`` line (see
    :meth:`feedback`), start client calls with ``@work(exclusive=True, group=…,
    exit_on_error=False)`` and let :meth:`on_worker_state_changed` report failures.
    """

    DEFAULT_CSS = """
    Dialog {
        align: center middle;
    }
    Dialog > #dialog {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary 80%;
        border-title-color: $text;
        border-title-style: bold;
        background: $surface;
        padding: 0 1;
    }
    Dialog .hint {
        color: $text-muted;
    }
    Dialog .field-label {
        margin-top: 1;
        color: $text;
        text-style: bold;
    }
    Dialog .error {
        color: $error;
        text-style: bold;
        width: 100%;
        height: auto;
    }
    Dialog .status {
        color: $text-muted;
        width: 100%;
        height: auto;
    }
    Dialog #error, Dialog #status {
        display: none;
    }
    Dialog #error.-shown, Dialog #status.-shown {
        display: block;
    }
    Dialog .buttons {
        height: auto;
        width: 100%;
        align-horizontal: right;
        margin-top: 1;
    }
    Dialog .buttons Button {
        margin-left: 1;
    }
    Dialog Input, Dialog Select {
        width: 100%;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "cancel",
            "Close",
            id="dialog.cancel",
            tooltip="Close this dialog without changing anything",
        ),
    ]

    #: What Escape (and a Cancel button) dismisses with.
    cancel_result: R | None = None

    def __init__(self) -> None:
        super().__init__()
        self._active_workers: set[int] = set()

    @property
    def busy(self) -> bool:
        """True while one of this dialog's client calls is running."""
        return bool(self._active_workers)

    @staticmethod
    def feedback() -> tuple[Static, Static]:
        """The status line (``#status``) and the error line (``#error``), empty at first."""
        return (
            Static("", id="status", classes="status", markup=False),
            Static("", id="error", classes="error", markup=False),
        )

    def _line(self, selector: str, message: str) -> None:
        line = self.query_one(selector, Static)
        line.update(clean(message))
        line.set_class(bool(message), "-shown")

    def show_error(self, message: str) -> None:
        """Show ``message`` in the error line (plain text)."""
        self._line("#error", message)

    def clear_error(self) -> None:
        """Empty (and hide) the error line."""
        self._line("#error", "")

    def show_status(self, message: str) -> None:
        """Show ``message`` in the status line (reserved for "Working…")."""
        self._line("#status", message)

    def cancel_value(self) -> R | None:
        """What closing the dialog without finishing it dismisses with."""
        return self.cancel_result

    def action_cancel(self) -> None:
        """Close the dialog with its cancel result."""
        self.dismiss(self.cancel_value())

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place that turns a failed client call into a sentence in the dialog."""
        worker = event.worker
        if worker.node is not self:
            return
        key = id(worker)
        if event.state is WorkerState.RUNNING:
            self._active_workers.add(key)
            self.clear_error()
            self.show_status("Working…")
            return
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self._active_workers.discard(key)
            if not self._active_workers:
                self.show_status("")
        if event.state is WorkerState.ERROR:
            self.show_error(describe_error(worker.error))
