"""The footer of keys: Textual's own, rebuilt only when the keys it shows change."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer

__all__ = ["KeyFooter"]


class KeyFooter(Footer):
    """Textual's :class:`~textual.widgets.Footer`, minus the rebuilds that change nothing.

    Textual's footer rebuilds all its keys whenever the screen's bindings *might* have
    changed: every focus move and every ``refresh_bindings()``. On the main screen one
    rebuild is about 15 ms of widget mounting and styling, and opening the app alone
    asked for seven. This one compares what would be shown (each key, its label,
    whether it is enabled) with what is shown, and rebuilds only when they differ.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[object, ...] | None = None

    def _keys(self, screen: Screen[Any]) -> tuple[object, ...]:
        return tuple(
            (binding.key, binding.action, binding.description, enabled, tooltip)
            for _node, binding, enabled, tooltip in screen.active_bindings.values()
        )

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            keys = self._keys(screen)
            if keys == self._shown:
                return
            self._shown = keys
        super().bindings_changed(screen)
