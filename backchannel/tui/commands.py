"""The command palette's list of every action, and the key table the help screen shows.

Both read the bindings of the app and of the screen below the palette, so an action
added with a :class:`~textual.binding.Binding` (with a description and tooltip)
appears in the palette and on the help screen without another list to keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode
from textual.screen import Screen

__all__ = ["ActionEntry", "BackchannelCommands", "catalogue"]


@dataclass(frozen=True, slots=True)
class ActionEntry:
    """One action a person can take: its key, title, explanation and owner."""

    key: str
    title: str
    help: str
    action: str
    target: DOMNode


def _entries(node: DOMNode, seen: set[str], *, documented_only: bool = False) -> list[ActionEntry]:
    out = []
    for b in type(node).BINDINGS:
        if not isinstance(b, Binding) or not b.description or b.action in seen:
            continue
        if documented_only and not b.tooltip:
            continue  # Textual's own widget keys (cursor movement) are not listed
        seen.add(b.action)
        key = b.key_display or b.key.split(",")[0]
        out.append(ActionEntry(key, b.description, b.tooltip, b.action, node))
    return out


def catalogue(app: App[object], screen: Screen[object] | None) -> list[ActionEntry]:
    """Every described action of ``screen`` (and its widgets' classes) and of the app."""
    seen: set[str] = set()
    entries: list[ActionEntry] = []
    if screen is not None:
        entries += _entries(screen, seen)
        for widget in screen.query("*"):
            entries += _entries(widget, seen, documented_only=True)
    entries += _entries(app, seen)
    return entries


class BackchannelCommands(Provider):
    """Every Backchannel action, by its title, in Textual's command palette."""

    def _commands(self) -> list[ActionEntry]:
        return [
            e
            for e in catalogue(self.app, self.screen)
            if e.target is self.app or e.target is self.screen
        ]

    def _run(self, entry: ActionEntry) -> None:
        self.app.call_later(partial(self.app.run_action, entry.action, entry.target))

    async def discover(self) -> Hits:
        for entry in self._commands():
            yield DiscoveryHit(
                entry.title, partial(self._run, entry), help=f"{entry.help} ({entry.key})"
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in self._commands():
            score = matcher.match(entry.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(entry.title),
                    partial(self._run, entry),
                    help=f"{entry.help} ({entry.key})",
                )
