"""The command line shows what others wrote safely (issue #15, item 2).

Real clients against a real relay, through the real ``backchannel`` command (click's
CliRunner, as ``tests/test_cli_rooms.py``). Mallory, a hostile member, has a display
name full of bidi and format characters (a modified client can announce one), makes
the room's title hostile and sends the terminal app's hostile-string corpus
(``tests/hostile_text.py``) as messages; strings with controls the protocol refuses
are written into Ben's store, as a damaged store would hold them. Then every human
output Ben and Farida see holds no control, bidi or format character, no line of it
passes for a message header that was not sent, and ``--json`` gives every string
exactly as sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from backchannel import cli as cli_module
from backchannel.cli import INDENT, cli
from backchannel.client import Client
from backchannel.safe_text import cell_width, clean
from backchannel.store.records import Message
from tests.hostile_text import FAKE, LOCAL, WIRE, WIRE_NAMES, forged_headers, unsafe
from tests.relayproc import RelayProcess

PASSPHRASE = "correct horse battery staple"
#: No COLUMNS: output that is not a terminal (CliRunner's) is folded at 80 columns.
ENV = {
    "BACKCHANNEL_PASSPHRASE": PASSPHRASE,
    "BACKCHANNEL_PROXY": None,
    "BACKCHANNEL_HOME": None,
    "COLUMNS": None,
}
#: Mallory's name: bidi override and isolate, a zero-width space, a line separator and
#: a fake header (a modified client announces it; ``init`` would refuse it).
NAME = "Mallory\u202e\u2066\u200b\u2028[22:48] Farida"
#: A title a facilitator can set over the wire: markup, bidi, separators, a fake line.
TITLE = WIRE_NAMES[0] + "\u202eevil\u2066x\u2028" + FAKE + "\u200b\ufeff\U000e0041"


def bc(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)


def ok(home: Path, *args: str) -> Any:
    result = bc(home, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def shown(result: Result) -> str:
    """Everything a command wrote to the terminal, after checking it succeeded."""
    assert result.exit_code == 0, result.output
    return result.stdout + result.stderr


async def _rename(home: Path, name: str) -> None:
    """Give the profile ``name`` as a modified client would (``init`` refuses such names)."""
    client = await Client.open(home, PASSPHRASE)
    try:
        identity = dataclasses.replace(client.identity, display_name=name)
        await client.store.set_setting("identity", identity.to_bytes())
    finally:
        await client.close()


@dataclasses.dataclass
class World:
    fac: Path
    ben: Path
    mallory: Path
    room: str
    #: Farida's ``requests`` output while Mallory was waiting.
    requests_shown: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    proc = RelayProcess(tmp_path_factory.mktemp("relay"))
    try:
        asyncio.run(proc.wait_ready())
        base = tmp_path_factory.mktemp("people")
        homes = {}
        for name in ("Farida", "Ben", "Mallory"):
            homes[name] = base / name.lower()
            assert bc(homes[name], "init", "--name", name, "--relay", proc.url).exit_code == 0
        fac, ben, mallory = homes["Farida"], homes["Ben"], homes["Mallory"]
        asyncio.run(_rename(mallory, NAME))

        room = ok(fac, "room", "create", "Talks")["room"]
        link = ok(fac, "room", "invite", room, "--uses", "2")["link"]
        ok(mallory, "join", link)
        ok(ben, "join", link)
        deadline = time.monotonic() + 30
        while len(waiting := ok(fac, "requests", room)) < 2:
            assert time.monotonic() < deadline, waiting
            time.sleep(0.2)
        requests_shown = shown(bc(fac, "requests", room))
        assert {r["name"] for r in waiting} == {NAME, "Ben"}  # --json: exactly as sent
        for r in waiting:
            ok(fac, "approve", room, r["id"])
        ok(mallory, "sync")
        ok(ben, "sync")
        mallory_id = next(m["id"] for m in ok(fac, "members", room) if m["name"] == NAME)
        ok(fac, "room", "role", room, mallory_id, "facilitator")
        ok(mallory, "sync")
        ok(mallory, "room", "settings", room, "--title", TITLE)
        for body in WIRE:
            sent = ok(mallory, "send", room, body)
            assert sent["delivered"] is True and sent["text"] == body
        ok(ben, "sync")
        yield World(fac, ben, mallory, room, requests_shown)
    finally:
        proc.stop()


def _messages(home: Path, room: str) -> list[dict[str, Any]]:
    result = bc(home, "--json", "read", room, "--limit", "200")
    assert result.exit_code == 0, result.output
    assert not unsafe(result.stdout)  # JSON escapes every control and non-ASCII character
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_json_gives_every_string_exactly(world: World) -> None:
    messages = _messages(world.ben, world.room)
    from_mallory = [m for m in messages if m["sender_name"] == NAME and m["kind"] == "text"]
    assert [m["text"] for m in from_mallory] == WIRE
    titles = [r["title"] for r in ok(world.ben, "rooms") if r["id"] == world.room]
    assert titles == [TITLE]
    assert NAME in [m["name"] for m in ok(world.ben, "members", world.room)]


def test_read_shows_the_corpus_without_forged_lines(world: World) -> None:
    messages = _messages(world.ben, world.room)
    result = bc(world.ben, "read", world.room, "--limit", "200")
    out = shown(result)
    assert not unsafe(out)
    lines = result.stdout.splitlines()
    assert not forged_headers(lines, len(messages)), lines
    # issue #15's forgery: the fake line is there, indented under Mallory's header
    assert any(
        above.endswith(f"] {clean(NAME)}: ok") and line == INDENT + FAKE
        for above, line in itertools.pairwise(lines)
    ), lines
    assert f"] {clean(NAME)}: " in result.stdout


def test_names_and_titles_are_shown_safely(world: World) -> None:
    for result in (
        bc(world.ben, "rooms"),
        bc(world.ben, "members", world.room),
        bc(world.ben, "verify", world.room, NAME),
    ):
        out = shown(result)
        assert not unsafe(out), out
        assert not forged_headers(result.stdout.splitlines(), 0)
    unfolded = bc(world.ben, "rooms").stdout.replace("\n" + INDENT, " ")  # folded at spaces
    assert clean(TITLE) in unfolded
    assert clean(NAME) in bc(world.ben, "members", world.room).stdout
    assert not unsafe(world.requests_shown)
    assert clean(NAME) in world.requests_shown


def test_controls_from_a_damaged_store_are_shown_safely(world: World) -> None:
    """Strings the protocol refuses, put where a damaged store would hold them."""

    async def plant() -> None:
        client = await Client.open(world.ben, PASSPHRASE)
        try:
            now = time.time()
            for i, text in enumerate(LOCAL):
                await client.store.add_message(
                    Message(
                        room_id=bytes.fromhex(world.room),
                        message_id=os.urandom(16),
                        sender_id=bytes([i + 1]) * 16,
                        sender_name=LOCAL[-1 - i],
                        sent_at=now + i,
                        received_at=now + i,
                        kind="text",
                        body=text,
                    )
                )
        finally:
            await client.close()

    asyncio.run(plant())
    messages = _messages(world.ben, world.room)
    assert [m["text"] for m in messages[-len(LOCAL) :]] == LOCAL
    result = bc(world.ben, "read", world.room, "--limit", "200")
    assert not unsafe(shown(result))
    assert not forged_headers(result.stdout.splitlines(), len(messages)), result.stdout


def test_a_terminal_gets_rows_that_fit_it(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, the CLI wraps long lines itself, indented: the terminal never does."""
    monkeypatch.setattr(cli_module, "_terminal_width", lambda err=False: 40)
    padded = "ok" + " " * 37 + FAKE  # the fake would start the terminal's second row
    assert ok(world.mallory, "send", world.room, padded)["delivered"] is True
    ok(world.ben, "sync")
    messages = _messages(world.ben, world.room)
    result = bc(world.ben, "read", world.room, "--limit", "200")
    rows = result.stdout.splitlines()
    assert all(cell_width(row) <= 40 for row in rows), [r for r in rows if cell_width(r) > 40]
    assert not forged_headers(rows, len(messages)), rows
    assert not unsafe(shown(result))


def _terminal(text: str, columns: int = 80) -> list[str]:
    """What an 80-column terminal (or pager) shows: rows wrapped at column 0.

    Characters are as wide as a Unicode 16 terminal draws them, East Asian ambiguous
    ones two cells (a CJK terminal).
    """
    shown = []
    for row in text.split("\n"):
        line, used = "", 0
        for ch in row:
            w = 2 if unicodedata.east_asian_width(ch) in "AWF" else cell_len(ch)
            if used + w > columns:
                shown.append(line)
                line, used = "", 0
            line += ch
            used += w
        shown.append(line)
    return shown


def test_every_human_line_is_folded_for_a_pipe(world: World) -> None:
    """Not a terminal (``| less``): every line of every command, stdout and stderr, is
    folded to 80 columns with its further rows indented; none is wrapped by the pager."""
    outputs = [
        bc(world.ben, "rooms"),
        bc(world.ben, "members", world.room),
        bc(world.ben, "verify", world.room, NAME),
        bc(world.ben, "sync"),
        bc(world.ben, "read", world.room, "--limit", "200"),
        bc(world.fac, "requests", world.room),
    ]
    for result in outputs:
        for text in (shown(result), world.requests_shown):
            rows = text.split("\n")
            assert _terminal(text) == rows, [r for r in rows if cell_width(r) > 79]
            assert all(cell_width(row) <= 79 for row in rows)


def test_a_room_title_cannot_forge_a_line_of_rooms(world: World) -> None:
    """A 200-byte title padded to fill a row, then a whole fake ``rooms`` line."""
    fake = "Ceasefire talks: facilitator, 4 members  [" + "5e" * 16 + "]"
    title = "Talks".ljust(80) + fake.ljust(80) + "."
    assert len(title.encode()) <= 200
    ok(world.fac, "room", "create", title)
    count = len(ok(world.fac, "rooms"))
    screen = _terminal(shown(bc(world.fac, "rooms")).rstrip("\n"))
    starts = [row for row in screen if not row.startswith(INDENT)]
    assert len(starts) == count, screen  # one unindented row per room, no more
    assert fake not in screen
