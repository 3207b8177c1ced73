"""The ``backchannel`` command line against a real relay: rooms, invites, joins, chat.

Each command runs in-process through click's CliRunner (its own ``asyncio.run``), so
every call opens the profile, syncs with the relay, acts and syncs again, exactly as a
person's shell would. Joins that wait for an answer run as a real subprocess, because
the facilitator's answer has to come from another invocation at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from backchannel.cli import DURATION, cli
from tests.relayproc import RelayProcess

PASSPHRASE = "correct horse battery staple"
ENV = {"BACKCHANNEL_PASSPHRASE": PASSPHRASE, "BACKCHANNEL_PROXY": None, "BACKCHANNEL_HOME": None}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("relay"))
    try:
        asyncio.run(proc.wait_ready())
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, relay: RelayProcess) -> dict[str, Path]:
    """Farida (facilitator), Ben and Chen, each a profile on the test relay."""
    base = tmp_path_factory.mktemp("people")
    found = {}
    for name in ("Farida", "Ben", "Chen"):
        home = base / name.lower()
        result = bc(home, "init", "--name", name, "--relay", relay.url)
        assert result.exit_code == 0, result.output
        found[name] = home
    return found


def bc(home: Path, *args: str, env: dict[str, Any] | None = None) -> Result:
    """One ``backchannel --home HOME ...`` call."""
    runner = CliRunner()
    return runner.invoke(cli, ["--home", str(home), *args], env=env or ENV, catch_exceptions=False)


def ok(home: Path, *args: str) -> Any:
    """A ``--json`` call that must succeed; its parsed output."""
    result = bc(home, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def new_room(fac: Path, title: str, *extra: str) -> str:
    created = ok(fac, "room", "create", title, *extra)
    assert created["title"] == title
    room: str = created["room"]
    return room


def invite(fac: Path, room: str, *extra: str) -> str:
    link: str = ok(fac, "room", "invite", room, *extra)["link"]
    assert link.startswith("backchannel://")
    return link


def waiting(fac: Path, room: str, name: str, timeout: float = 20.0) -> dict[str, Any]:
    """The pending request from ``name`` in ``room`` (polls: the joiner may still be asking)."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = [r for r in ok(fac, "requests", room) if r["name"] == name]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no request from {name}"
        time.sleep(0.2)


def spawn(home: Path, *args: str) -> subprocess.Popen[str]:
    exe = shutil.which("backchannel", path=str(Path(sys.executable).parent))
    assert exe is not None
    return subprocess.Popen(
        [exe, "--home", str(home), "--json", *args],
        env=os.environ | {"BACKCHANNEL_PASSPHRASE": PASSPHRASE},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_create_invite_join_approve_chat_and_verify(homes: dict[str, Path]) -> None:
    fac, ben = homes["Farida"], homes["Ben"]
    room = new_room(fac, "Water talks", "--retention", "7d")
    link = invite(fac, "Water talks", "--uses", "2", "--expires", "12h")

    asked = ok(ben, "join", link)
    assert asked["status"] == "pending"
    request = waiting(fac, room, "Ben")
    assert set(request) >= {"id", "name", "safety_number"}
    assert request["safety_number"].replace(" ", "").isdigit()
    assert ok(fac, "approve", room, request["id"])["status"] == "approved"

    ok(ben, "sync")
    rooms = ok(ben, "rooms")
    assert [(r["id"], r["title"], r["role"]) for r in rooms] == [
        (room, "Water talks", "participant")
    ]
    assert set(rooms[0]) >= {"id", "title", "role", "members"}
    facilitated = [r for r in ok(fac, "rooms") if r["id"] == room]
    assert facilitated[0]["role"] == "facilitator"
    assert facilitated[0]["retention_seconds"] == 7 * 86400

    sent = ok(ben, "send", "Water talks", "hello from Ben")
    assert sent["text"] == "hello from Ben"
    ok(fac, "send", room, "welcome, Ben")

    result = bc(ben, "--json", "read", room)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    texts = [m["text"] for m in lines if m["kind"] == "text"]
    assert texts[-2:] == ["hello from Ben", "welcome, Ben"]
    for m in lines:
        assert set(m) >= {"id", "sender", "sender_name", "text", "time"}
    last = lines[-1]
    assert last["sender_name"] == "Farida" and isinstance(last["time"], float)

    human = bc(fac, "read", room, "--limit", "5")
    assert human.exit_code == 0
    assert any(line.endswith("] Ben: hello from Ben") for line in human.stdout.splitlines())

    members = ok(ben, "members", room)
    assert {m["name"]: m["role"] for m in members} == {
        "Farida": "facilitator",
        "Ben": "participant",
    }
    for m in members:
        assert set(m) >= {"id", "name", "role", "verified"}
        assert m["verified"] is False

    shown = ok(ben, "verify", room, "Farida")
    assert shown["verified"] is False and shown["safety_number"]
    confirmed = ok(ben, "verify", room, "Farida", "--confirm")
    assert confirmed["verified"] is True
    assert confirmed["safety_number"] == shown["safety_number"]
    assert {m["name"]: m["verified"] for m in ok(ben, "members", room)}["Farida"] is True


def test_join_wait_is_answered_by_another_invocation(homes: dict[str, Path]) -> None:
    fac, chen = homes["Farida"], homes["Chen"]
    room = new_room(fac, "Wait room")
    joiner = spawn(chen, "join", invite(fac, room), "--wait", "40")
    try:
        request = waiting(fac, room, "Chen", timeout=30)
        ok(fac, "approve", room, request["id"])
        out, err = joiner.communicate(timeout=45)
    finally:
        joiner.kill()
    assert joiner.returncode == 0, err
    answer = json.loads(out)
    assert answer == {"request": answer["request"], "status": "approved", "room": room}
    assert room in [r["id"] for r in ok(chen, "rooms")]


def test_deny_tells_the_joiner(homes: dict[str, Path]) -> None:
    fac, chen = homes["Farida"], homes["Chen"]
    room = new_room(fac, "Closed room")
    joiner = spawn(chen, "join", invite(fac, room), "--wait", "40")
    try:
        request = waiting(fac, room, "Chen", timeout=30)
        assert ok(fac, "deny", room, request["id"])["status"] == "denied"
        out, err = joiner.communicate(timeout=45)
    finally:
        joiner.kill()
    assert joiner.returncode == 1, err
    assert json.loads(out)["status"] == "denied"
    assert ok(fac, "requests", room) == []
    assert room not in [r["id"] for r in ok(chen, "rooms")]


def test_join_wait_without_answer_exits_2(homes: dict[str, Path]) -> None:
    fac, ben = homes["Farida"], homes["Ben"]
    room = new_room(fac, "Slow room")
    result = bc(ben, "--json", "join", invite(fac, room), "--wait", "1")
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["status"] == "pending"
    # the request stays queued on the relay for the facilitator to answer later
    waiting(fac, room, "Ben")


def test_auto_approval_room_files_and_remove(homes: dict[str, Path], tmp_path: Path) -> None:
    fac, ben = homes["Farida"], homes["Ben"]
    room = new_room(fac, "Open room", "--approval", "auto")
    assert ok(ben, "join", invite(fac, room))["status"] == "pending"
    # no one decides: the facilitator's client admits the request as soon as it syncs
    ok(fac, "sync")
    assert ok(ben, "sync")["joins"][0]["room"] == room

    paper = tmp_path / "paper.txt"
    paper.write_bytes(os.urandom(5000))
    sent = ok(fac, "send-file", room, str(paper))
    assert sent["file"]["name"] == "paper.txt"
    ok(ben, "sync")
    saved = ok(ben, "save-file", room, sent["id"], str(tmp_path / "saved.txt"))
    assert Path(saved["path"]).read_bytes() == paper.read_bytes()

    assert ok(fac, "remove", room, "Ben")["removed"] == "Ben"
    ok(fac, "send", room, "after Ben left")
    ok(ben, "sync")
    assert room not in [r["id"] for r in ok(ben, "rooms") if r["joined"]]
    gone = bc(ben, "--json", "read", room)
    assert "after Ben left" not in gone.stdout


def test_bad_duration_is_a_usage_error(homes: dict[str, Path]) -> None:
    result = bc(homes["Farida"], "room", "invite", "Water talks", "--expires", "5y")
    assert result.exit_code == 2
    assert "not a duration" in result.output
    assert "Traceback" not in result.output
    assert [DURATION.convert(v, None, None) for v in ("90s", "30m", "12h", "7d", "2w", "15")] == [
        90,
        1800,
        43200,
        604800,
        1209600,
        15,
    ]
    with pytest.raises(click.BadParameter):
        DURATION.convert("soon", None, None)


def test_unknown_room_is_a_clear_error(homes: dict[str, Path]) -> None:
    result = bc(homes["Ben"], "send", "No such room", "hello")
    assert result.exit_code == 1
    assert "You are not in a room 'No such room'" in result.output
    assert "Traceback" not in result.output


def test_wrong_passphrase_is_a_clear_error(homes: dict[str, Path]) -> None:
    result = bc(homes["Ben"], "rooms", env=ENV | {"BACKCHANNEL_PASSPHRASE": "not it"})
    assert result.exit_code == 1
    assert "Wrong passphrase" in result.output
    assert "Traceback" not in result.output


def test_codes_settings_roles_edits_reactions_and_passphrase(
    homes: dict[str, Path], tmp_path: Path, relay: RelayProcess
) -> None:
    fac, chen = homes["Farida"], homes["Chen"]
    room = new_room(fac, "Side room", "--approval", "auto")
    ok(chen, "join", invite(fac, room))
    ok(fac, "sync")  # the facilitator's client approves automatically
    ok(chen, "sync")
    assert ok(fac, "room", "code", room)["code"] == ok(chen, "room", "code", room)["code"]

    summary = ok(
        fac, "room", "settings", room, "--title", "Side room, renamed", "--retention", "1d"
    )
    assert summary["title"] == "Side room, renamed" and summary["retention_seconds"] == 86400
    sent = ok(fac, "send", room, "first draft")
    ok(fac, "edit", room, sent["id"], "second draft")
    ok(chen, "sync")
    ok(chen, "react", room, sent["id"], "👍")
    ok(fac, "sync")
    mine = [json.loads(x) for x in bc(fac, "--json", "read", room).stdout.splitlines()]
    assert [m["text"] for m in mine if m["id"] == sent["id"]] == ["second draft"]
    assert bc(chen, "edit", room, sent["id"], "not mine").exit_code != 0
    ok(fac, "delete", room, sent["id"])

    assert ok(fac, "room", "role", room, "Chen", "observer")["role"] == "observer"
    ok(chen, "sync")
    denied = bc(chen, "send", room, "may I?")
    assert denied.exit_code != 0 and "bserver" in denied.output

    profile = tmp_path / "pp"
    assert bc(profile, "init", "--name", "P", "--relay", relay.url).exit_code == 0
    env = ENV | {"BACKCHANNEL_NEW_PASSPHRASE": "a brand new passphrase"}
    assert bc(profile, "passphrase", env=env).exit_code == 0
    assert bc(profile, "status").exit_code != 0  # the old passphrase no longer opens it
    new_env = ENV | {"BACKCHANNEL_PASSPHRASE": "a brand new passphrase"}
    assert bc(profile, "status", env=new_env).exit_code == 0
