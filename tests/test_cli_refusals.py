"""The command line against a relay that refuses posts (issue #15, items 2 and 3).

A :class:`~tests.adversarial.hostile_relay.HostileRelay` in front of a real relay
answers appends with an error code. Every command that posts (``edit``, ``react``,
``delete``, ``leave`` as well as ``send``) reports success only once the relay
acknowledged that very post: a refusal is an error (exit 1, nothing on stdout), a
post still queued when the command ends exits 2. The refusal sentences, which quote
an unknown code, are folded like every other line, so a code cannot start a row of
its own on an 80-column screen; and the client's log records stay off the terminal
unless ``--verbose`` or ``BACKCHANNEL_LOG`` asks for them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from backchannel.cli import cli
from tests.adversarial.hostile_relay import Frame, HostileRelay, Link
from tests.conftest import RunningRelay
from tests.hostile_text import forged_headers

PASSPHRASE = "correct horse battery staple"
ENV = {
    "BACKCHANNEL_PASSPHRASE": PASSPHRASE,
    "BACKCHANNEL_PROXY": None,
    "BACKCHANNEL_HOME": None,
    "BACKCHANNEL_LOG": None,
    "COLUMNS": None,
}
#: An unknown code, 31 characters: the client quotes it (escaped) in its sentence, where
#: it would start the second row of an 80-column screen if the line were not folded.
FORGING_CODE = "xxxxxxx[22:48] Farida: I accept"
#: What the outbox logs (a warning) when the relay refuses a post.
LOGGED = "the relay refused an outbox item"


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
async def proxy(relay: RunningRelay) -> AsyncIterator[HostileRelay]:
    hostile = await HostileRelay(relay.url, "relay").start()
    yield hostile
    await hostile.stop()


def _refuse_appends(code: str) -> Any:
    async def hook(link: Link, frame: Frame) -> list[Frame] | None:
        if frame.get("t") == "req" and frame.get("op") == "append":
            await link.to_client({"t": "err", "id": frame["id"], "code": code, "message": ""})
            return []
        return None

    return hook


async def _swallow_appends(link: Link, frame: Frame) -> list[Frame] | None:
    """Appends reach no one and get no answer: the post stays queued."""
    if frame.get("t") == "req" and frame.get("op") == "append":
        return []
    return None


def bc(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)


async def run(home: Path, *args: str) -> Result:
    """One command, in a thread: it runs its own event loop while this one serves the relays."""
    return await asyncio.to_thread(bc, home, *args)


async def _profile_with_room(proxy: HostileRelay, home: Path) -> tuple[str, str]:
    """A profile on ``proxy`` with a room and one delivered message: (room, message id)."""
    assert (await run(home, "init", "--name", "Farida", "--relay", proxy.url)).exit_code == 0
    created = await run(home, "--json", "room", "create", "Talks", "--approval", "auto")
    room: str = json.loads(created.stdout)["room"]
    first = json.loads((await run(home, "--json", "send", room, "v1")).stdout)
    assert first["delivered"] is True
    return room, first["id"]


def _screen(text: str, columns: int = 80) -> list[str]:
    """What a terminal or pager ``columns`` wide shows: rows wrapped at column 0.

    Widths as a Unicode 16 terminal draws, East Asian ambiguous characters two cells.
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


async def test_refused_edit_react_delete_and_leave_are_errors(
    proxy: HostileRelay, tmp_path: Path
) -> None:
    """``denied`` on the room's mailbox (what the engine takes for a room on the move:
    no alert), and another code; with and without ``--json``."""
    fac, ben = tmp_path / "farida", tmp_path / "ben"
    room, first = await _profile_with_room(proxy, fac)
    assert (await run(ben, "init", "--name", "Ben", "--relay", proxy.url)).exit_code == 0
    link = json.loads((await run(fac, "--json", "room", "invite", room)).stdout)["link"]
    assert (await run(ben, "join", link)).exit_code == 0
    assert (await run(fac, "sync")).exit_code == 0  # auto approval: admitted here
    assert (await run(ben, "sync")).exit_code == 0

    denied = "The relay refused a message: access was denied"
    large = "The relay refused a message: it is larger than this relay accepts"
    for home, args, code, said in (
        (fac, ("edit", room, first, "v2"), "denied", denied),
        (fac, ("react", room, first, "👍"), "denied", denied),
        (fac, ("delete", room, first), "denied", denied),
        (fac, ("--json", "edit", room, first, "v3"), "too_large", large),
        (ben, ("leave", room), "too_large", large),
    ):
        proxy.on_up = _refuse_appends(code)
        result = await run(home, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == "", args  # no "Edited.", "Done.", "Deleted.", "Left"
        assert result.stderr.startswith(f"Error: {said}"), (args, result.stderr)
        if code == "denied":  # the client holds it: the room may be moving
            assert "stays queued on this device" in said_(result)


def said_(result: Result) -> str:
    """What a command said on stderr, its lines unfolded (folds break at a space)."""
    return result.stderr.replace("\n    ", " ")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BACKCHANNEL_PROXY", "COLUMNS")}
    env.pop("BACKCHANNEL_LOG", None)
    return env | {"BACKCHANNEL_PASSPHRASE": PASSPHRASE} | extra


async def _command(home: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """``python -m backchannel`` in a process of its own: nothing of pytest's logging."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backchannel",
        "--home",
        str(home),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(**env),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _no_log(err: str) -> None:
    """No log record reached stderr (nor Python's last-resort handler's traceback)."""
    for telltale in (LOGGED, "relay connection", "backchannel.", "Traceback", "WARNING"):
        assert telltale not in err, err


async def test_a_post_still_queued_exits_2_and_refusals_are_folded(
    proxy: HostileRelay, tmp_path: Path
) -> None:
    """An edit the relay never answers stays queued (exit 2); refused later with a code
    made to forge a line, it shows as folded ``Note:`` and ``Error:`` lines, through a
    pipe, and no log record reaches the terminal."""
    home = tmp_path / "ben"
    room, first = await _profile_with_room(proxy, home)
    proxy.on_up = _swallow_appends
    result = await run(home, "edit", room, first, "v2")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert said_(result).startswith("Not delivered yet")
    assert "stays queued on this device" in said_(result)

    proxy.on_up = _refuse_appends(FORGING_CODE)  # the outbox offers the edit again: refused
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backchannel",
        "--home",
        str(home),
        "read",
        room,
        "--follow",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert proc.stderr is not None
    try:
        first = await asyncio.wait_for(proc.stderr.readline(), 30)  # the outbox tries again
    finally:
        proc.send_signal(signal.SIGINT)
        out_bytes, rest = await asyncio.wait_for(proc.communicate(), 30)
    err = (first + rest).decode()
    assert err.startswith("Note: The relay refused a message (unknown reason;"), err
    assert not forged_headers(_screen(err), 0), _screen(err)
    _no_log(err)
    out = out_bytes.decode()
    assert len(forged_headers(_screen(out), 0)) == 1  # "v1" (edited) and nothing else

    code, out, err = await _command(home, "send", room, "hello")
    assert code == 1 and out == ""
    assert err.startswith("Error: The relay refused a message (unknown reason;")
    assert not forged_headers(_screen(err), 0), _screen(err)
    _no_log(err)


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--verbose",), {}), ((), {"BACKCHANNEL_LOG": "info"})],
    ids=["verbose", "env"],
)
async def test_the_log_on_request(
    proxy: HostileRelay, tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    home = tmp_path / "ben"
    room, _ = await _profile_with_room(proxy, home)
    proxy.on_up = _refuse_appends(FORGING_CODE)
    code, _out, err = await _command(home, *args, "send", room, "hello", **env)
    assert code == 1
    records = re.findall(r"^log: (\w+) (backchannel[.\w]*): ", err, re.MULTILINE)
    assert ("INFO", "backchannel.transport.connection") in records, err
    assert all(level != "DEBUG" for level, _ in records)
    assert not forged_headers(_screen(err), 0), _screen(err)
    quiet = await _command(home, "send", room, "hello", BACKCHANNEL_LOG="error")
    assert quiet[0] == 1
    _no_log(quiet[2])
