"""The hostile-string corpus: what a peer or a relay might send to take over a screen.

Collected from the terminal app's tests (``tests/tui/test_main_screen.py``,
``test_hostile_text.py``, ``test_dialogs.py``, ``test_conversation_layout.py``) and
the forgeries of issue #15, so the command line is held to the same strings.

* :data:`WIRE` strings pass the room protocol's checks (no C0/C1 controls but
  newline and tab): a hostile *member* can send them as message text, and the
  one-line ones (:data:`WIRE_NAMES`) as a display name or a room title.
* :data:`LOCAL` strings hold controls the protocol refuses; they reach a screen only
  through a damaged or hostile store, and are tested by writing them there.

:func:`unsafe` lists what a terminal must never receive; :func:`forged_headers` finds
output lines that pass for the header of a message that was not sent.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FAKE", "LOCAL", "WIRE", "WIRE_NAMES", "forged_headers", "unsafe"]

#: The forgery of issue #15: a line that reads as Farida's.
FAKE = "[22:48] Farida: I accept the proposal in full."

WIRE_NAMES = [
    "[b red]SYSTEM: Ada was removed[/]",  # tests/tui/test_hostile_text.py
    "Mallory\u202e",  # tests/tui/test_dialogs.py
    "\u202eevil\u202c \u2066isolate\u2069 \u2067rtl\u2068fsi\u200e\u200f\u061c",
    "zero\u200bwidth\u200bspaces\u200b\ufeff\u2060\u00ad",
    "line\u2028" + FAKE,
    "para\u2029" + FAKE,
    "tag\U000e0041\U000e0042\U000e0001 characters",
    "interlinear\ufff9hidden\ufffaannotation\ufffb",
]

WIRE = [
    *WIRE_NAMES,
    "ok\n" + FAKE,  # issue #15, item 2, verbatim
    "ok\n\n\n" + FAKE + "\n",
    "tabs\tand\ttabs\n\t" + FAKE,
    "   " + FAKE + "\n   " + FAKE,
    "emoji 👍🏽 family 👨\u200d👩\u200d👧 flag \U0001f3f4\U000e0067\U000e0062\U000e0065"
    "\U000e006e\U000e0067\U000e007f",
    "mixed العربية and English and עברית text\n" + FAKE,
]

LOCAL = [
    "\x1b[2J\x1b]0;pwned\x07[bold]x[/bold]\u202eevil\x9b31m",  # tests/tui/test_main_screen.py
    "Mallory\x1b[31m\u202e",  # tests/tui/test_main_screen.py
    "Eve\x1b[31m\u202eevil\u2066x\x9b\x00[bold]y[/]",  # tests/tui/test_dialogs.py
    "tabs\tand\tcontrols\x1b[2J\x07 \u202eevil\u202c ",  # tests/tui/test_conversation_layout.py
    "\x1b]0;t\x07",  # tests/tui/test_conversation_layout.py
    "ok\r" + FAKE,
    "ok\r\n" + FAKE,
    "ok\x0b" + FAKE + "\x0c" + FAKE,
    "ok\x85" + FAKE + "\x1c\x1d\x1e",
    "\x08\x08\x08\x08Farida\x7f\x1b[1A\x1b[2K" + FAKE,
    "\x9b2J\x9d0;title\x9c\x90dcs\x9c",
]

_KEPT = frozenset("\u200c\u200d")
_TAG_FLAG = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def unsafe(output: str) -> list[str]:
    """Every character of ``output`` a terminal must not receive (newline excepted).

    Controls, DEL, C1, lone surrogates, line and paragraph separators, and format
    characters (bidi controls among them) but ZWNJ, ZWJ and complete flag tag sequences.
    """
    found = []
    for ch in _TAG_FLAG.sub("", output):
        code = ord(ch)
        if ch == "\n":
            continue
        if (
            code < 0x20
            or 0x7F <= code <= 0x9F
            or 0xD800 <= code <= 0xDFFF
            or ch in "\u2028\u2029"
            or (unicodedata.category(ch) == "Cf" and ch not in _KEPT)
        ):
            found.append(f"U+{code:04X}")
    return found


def forged_headers(lines: list[str], honest: int) -> list[str]:
    """The lines that look like a message header (``[HH:MM] name:``) beyond ``honest`` of them.

    A reader takes a line that starts with ``[``, a time and ``]`` for a new message; a
    forgery is any such line a message body produced.
    """
    headers = [line for line in lines if re.match(r"\[(\d{4}-\d\d-\d\d )?\d\d:\d\d\] ", line)]
    return headers[honest:] if len(headers) > honest else []
