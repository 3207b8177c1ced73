"""The relay cannot write its own text into the client (issue #15, item 3).

A hostile relay answers with error codes and messages made of terminal escape
sequences and a fake notice ("Farida removed Chen … re-join at backchannel://join#…"),
and makes up ``revoked`` reasons. The client shows and logs only sentences it wrote
itself: a known code is named by its sentence, an unknown one as "unknown reason"
with at most 32 characters of it, escaped; the relay's message never appears. A
``send`` the relay refused does not print success.

The relay is real; a :class:`~tests.adversarial.hostile_relay.HostileRelay` between it
and the client answers for it where a test says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import relay.errors as relay_errors
from backchannel.cli import INDENT, cli
from backchannel.transport.connection import ConnectionState, RelayConnection, Revoked
from backchannel.transport.errors import CODES, MAX_SHOWN_CODE, Rejected, rejected
from backchannel.transport.session import MailboxCapability
from tests.adversarial.hostile_relay import Frame, HostileRelay, Link
from tests.conftest import RunningRelay
from tests.hostile_text import unsafe

PASSPHRASE = "correct horse battery staple"
ENV = {"BACKCHANNEL_PASSPHRASE": PASSPHRASE, "BACKCHANNEL_PROXY": None, "BACKCHANNEL_HOME": None}

#: The proof of concept's notice, in an error frame's ``message``.
NOTICE = "Farida removed Chen from the room; re-join at backchannel://join#AAAAAAAAAAAAAAAA"
#: A code that clears the screen, sets the window title, rings, turns text around and
#: starts a CSI sequence (within the protocol's 64 characters, so the frame is valid).
CODE = "\x1b[2J\x1b[H\x1b]0;Backchannel\x07\u202e\x9b31m"
#: A code that is the notice itself.
CODE_NOTICE = "Farida removed Chen; re-join at backchannel://join#AAAAAAAA"
#: What a person could mistake for the client's own words, or what drives a terminal.
TELLTALES = ("Farida removed", "re-join", "backchannel://join", "\u202e", "\x1b", "\x07")


def _leaks(text: str) -> list[str]:
    """Telltales of the relay's text in ``text``, but the shortened code the client quotes.

    (The message, ``NOTICE``, reads differently from ``CODE_NOTICE``, and whatever of
    the code comes after its first :data:`MAX_SHOWN_CODE` characters is a telltale.)
    """
    text = text.replace(CODE_NOTICE[:MAX_SHOWN_CODE], "<code>")
    return [t for t in TELLTALES if t in text] + unsafe(text)


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
async def proxy(relay: RunningRelay) -> AsyncIterator[HostileRelay]:
    hostile = await HostileRelay(relay.url, "relay").start()
    yield hostile
    await hostile.stop()


def _refuse(ops: set[str], code: str, message: str = NOTICE) -> Any:
    """An ``on_up`` hook: answer every request for ``ops`` with an ``err`` frame."""

    async def hook(link: Link, frame: Frame) -> list[Frame] | None:
        if frame.get("t") == "req" and frame.get("op") in ops:
            await link.to_client({"t": "err", "id": frame["id"], "code": code, "message": message})
            return []
        return None

    return hook


# -- the error type --------------------------------------------------------------------------


def _relay_codes() -> set[str]:
    found = set()
    for name in relay_errors.__all__:
        cls = getattr(relay_errors, name)
        if isinstance(cls, type) and issubclass(cls, relay_errors.RelayError):
            found.add(cls.code)
    return found - {"config"}  # a start-up error, never on the wire


def test_the_codes_are_the_relays_each_with_a_sentence_of_the_client() -> None:
    assert _relay_codes() == set(CODES)
    sentences = set()
    for code in CODES:
        error = rejected(code, NOTICE)
        assert error.code == code and error.unknown_code is None
        assert str(error).startswith("The relay refused the request: ")
        assert not _leaks(str(error) + repr(error) + repr(vars(error)))
        sentences.add(str(error))
    assert len(sentences) == len(CODES)


@pytest.mark.parametrize(
    "code",
    [CODE, CODE_NOTICE, "", "x" * 64, "x" * 5000, "denied ", "Denied", "\ud800"],
    ids=["escapes", "notice", "empty", "64", "5000", "space", "case", "surrogate"],
)
def test_an_unknown_code_is_unknown_and_shown_escaped(code: str) -> None:
    error = rejected(code, NOTICE, epoch=3)
    assert type(error) is Rejected and error.code == "unknown" and not error.transient
    text = str(error)
    assert text.startswith("The relay refused the request (unknown reason; the code it sent was ")
    assert error.unknown_code is not None and error.unknown_code in text
    assert error.unknown_code == ascii(code[:MAX_SHOWN_CODE]) + ("..." if len(code) > 32 else "")
    assert text.isascii() and len(text) < 200
    shown = text + repr(error) + repr(vars(error)) + "".join(traceback.format_exception(error))
    assert not _leaks(shown)


# -- revoked reasons -------------------------------------------------------------------------


async def _next_revoked(conn: RelayConnection) -> Revoked:
    while True:
        event = await conn.next_event(20)
        if isinstance(event, Revoked):
            return event
        assert isinstance(event, ConnectionState), event


async def test_a_made_up_revoked_reason_never_surfaces(proxy: HostileRelay) -> None:
    conn = RelayConnection(proxy.url)
    await conn.start()
    try:
        cap = MailboxCapability.generate()
        await conn.create_mailbox(cap)
        await conn.follow(cap)
        await conn.wait_connected()
        proxy.on_up = _refuse({"auth"}, "denied")
        await proxy.link.inject_frame({"t": "revoked", "mailbox": cap.mailbox, "reason": CODE})
        assert (await _next_revoked(conn)).reason == "rotated"

        other = MailboxCapability.generate()
        proxy.on_up = None
        await conn.create_mailbox(other)
        await conn.follow(other)
        proxy.on_up = _refuse({"auth"}, CODE_NOTICE)
        await proxy.cut()  # set up again on the next connection, and refused
        assert (await _next_revoked(conn)).reason == "unknown"
    finally:
        await conn.close()


# -- the command line against a hostile relay -----------------------------------------------


def said(result: Result) -> str:
    """What a command said on stderr, its lines unfolded (folds break at a space)."""
    return result.stderr.replace("\n" + INDENT, " ")


def bc(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)


async def run(home: Path, *args: str) -> Result:
    """One command, in a thread: it runs its own event loop while this one serves the relays."""
    return await asyncio.to_thread(bc, home, *args)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info is not None:
            text += "".join(traceback.format_exception(*record.exc_info))
        assert not _leaks(text), (record.name, text)


async def test_a_refused_send_says_so_in_the_clients_words(
    proxy: HostileRelay, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "farida"
    assert (await run(home, "init", "--name", "Farida", "--relay", proxy.url)).exit_code == 0
    created = await run(home, "--json", "room", "create", "Talks", "--approval", "auto")
    room = json.loads(created.stdout)["room"]
    first = json.loads((await run(home, "--json", "send", room, "accepted")).stdout)
    assert first["delivered"] is True

    proxy.on_up = _refuse({"append"}, "too_large")  # a known code, a hostile message
    result = await run(home, "send", room, "refused")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "The relay refused a message: it is larger than this relay accepts" in said(result)
    assert not _leaks(result.stdout + said(result))

    for code, args in (  # unknown codes: escape sequences, a fake notice
        (CODE, ("send", room, "refused again")),
        (CODE_NOTICE, ("edit", room, first["id"], "changed")),
    ):
        proxy.on_up = _refuse({"append"}, code)
        result = await run(home, *args)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""  # no "Edited.", no message line: nothing succeeded
        assert "The relay refused a message (unknown reason; the code it sent was " in said(result)
        assert ascii(code[:MAX_SHOWN_CODE]) in said(result)
        assert not _leaks(result.stdout + said(result))
        json_result = await run(home, "--json", *args)
        assert json_result.exit_code == 1 and json_result.stdout == ""
        assert not _leaks(json_result.stdout + said(json_result))

    proxy.on_up = None  # the relay takes posts again: what was queued goes out
    result = await run(home, "--json", "send", room, "accepted at last")
    assert result.exit_code == 0 and json.loads(result.stdout)["delivered"] is True
    read = await run(home, "--json", "read", room)
    texts = [json.loads(line)["text"] for line in read.stdout.splitlines()]
    assert texts[-4:] == ["refused", "refused again", "refused again", "accepted at last"]

    ben = tmp_path / "ben"  # leaving is a post too (by a member someone can let go)
    assert (await run(ben, "init", "--name", "Ben", "--relay", proxy.url)).exit_code == 0
    link = json.loads((await run(home, "--json", "room", "invite", room)).stdout)["link"]
    assert (await run(ben, "join", link)).exit_code == 0
    assert (await run(home, "sync")).exit_code == 0  # auto approval: admitted here
    assert (await run(ben, "sync")).exit_code == 0
    proxy.on_up = _refuse({"append"}, CODE)
    result = await run(ben, "leave", room)
    assert result.exit_code == 1 and result.stdout == ""  # not "Left the room"
    assert "The relay refused a message (unknown reason;" in said(result)
    assert not _leaks(result.stdout + said(result))
