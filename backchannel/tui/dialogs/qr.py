"""QR codes drawn with text: two module rows per terminal line, in half blocks."""

from __future__ import annotations

import segno

__all__ = ["QUIET_ZONE", "qr_lines"]

#: Modules of light border around the code; scanners want four.
QUIET_ZONE = 4

#: (top dark, bottom dark) -> the character that draws both.
_CELLS = {
    (True, True): "█",
    (True, False): "▀",
    (False, True): "▄",
    (False, False): " ",
}


def qr_lines(text: str, *, border: int = QUIET_ZONE) -> list[str]:
    """The QR code of ``text`` as lines of ``█ ▀ ▄`` and spaces, quiet zone included.

    The blocks are the dark modules, so show the lines dark on light (black on white).

    Args:
        text: what the code holds (an invite link).
        border: modules of quiet zone on every side.

    Returns:
        Lines of equal width (the module count plus two borders); each line draws two
        module rows, the last one padded with a light row when the count is odd.
    """
    code = segno.make(text, error="m")
    rows = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    return [
        "".join(_CELLS[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(rows[0::2], rows[1::2], strict=True)
    ]
