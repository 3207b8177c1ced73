"""The client façade's profile, identity and relay lifecycle, and the CLI on top of it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from backchannel.cli import cli
from backchannel.client import Client, ConnectionChanged
from backchannel.errors import BackchannelError, ProfileError


async def test_a_profile_is_created_and_reopened_with_its_identity(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    async with await Client.create(home, name="Alice", passphrase="correct horse") as created:
        first = created.info()
    assert first.name == "Alice" and first.embedded_relay and first.cipher_suite == 0xF001
    assert len(bytes.fromhex(first.identity)) == 16
    async with await Client.open(home, "correct horse") as reopened:
        assert reopened.info() == first
        assert (
            reopened.identity.public_key()
            == reopened.identity.private_key().public_key().to_bytes()
        )
    assert "correct horse" not in repr(reopened.identity) and "sig" not in repr(reopened.identity)


async def test_wrong_passphrase_missing_profile_and_duplicates_are_clear_errors(
    tmp_path: Path,
) -> None:
    home = tmp_path / "bob"
    async with await Client.create(home, name="Bob", passphrase="one"):
        with pytest.raises(ProfileError, match="another Backchannel"):
            await Client.open(home, "one")
    with pytest.raises(ProfileError, match="Wrong passphrase"):
        await Client.open(home, "two")
    with pytest.raises(ProfileError, match="already exists"):
        await Client.create(home, name="Bob", passphrase="one")
    with pytest.raises(ProfileError, match="no profile"):
        await Client.open(tmp_path / "nobody", "one")
    with pytest.raises(ProfileError, match="display name"):
        await Client.create(tmp_path / "x", name="  ", passphrase="one")
    with pytest.raises(BackchannelError, match="HOST:PORT"):
        await Client.create(tmp_path / "y", name="Y", passphrase="one", listen="nowhere")


async def test_the_embedded_relay_serves_the_profile_and_the_client_connects(
    tmp_path: Path,
) -> None:
    home = tmp_path / "fac"
    client = await Client.create(home, name="Facilitator", passphrase="pw")
    try:
        await client.start()
        events = client.events()
        while True:
            event = await asyncio.wait_for(anext(events), 10)
            if isinstance(event, ConnectionChanged) and event.state == "connected":
                break
        http_url = client.relay_url.replace("ws://", "http://").replace("/v1/ws", "/healthz")
        async with aiohttp.ClientSession() as http, http.get(http_url) as r:
            assert r.status == 200
        assert (home / "relay" / "relay.sqlite3").exists()
    finally:
        await client.close()
    # The address is kept: invites made today must still reach this relay tomorrow.
    async with await Client.open(home, "pw") as again:
        assert again.relay_url == client.relay_url


async def test_a_loaded_client_reads_and_queues_offline_then_connects(tmp_path: Path) -> None:
    """load() reads the rooms without the network; what is sent waits for connect()."""
    home = tmp_path / "fac"
    async with await Client.create(home, name="Facilitator", passphrase="pw") as client:
        await client.start()
        room = (await client.create_room("Offline first")).id
        await client.send(room, "before")
        await client.sync()
    client = await Client.open(home, "pw")
    try:
        with pytest.raises(BackchannelError, match="Load the client"):
            await client.connect()
        await client.load()
        assert [r.title for r in await client.rooms()] == ["Offline first"]
        queued = await client.send(room, "written while not connected")
        assert not queued.delivered
        assert [m.text for m in await client.history(room)] == [
            "before",
            "written while not connected",
        ]
        with pytest.raises(BackchannelError, match="started already"):
            await client.load()
        await client.connect()
        with pytest.raises(BackchannelError, match="connected already"):
            await client.connect()
        await client.sync()
        sent = await client.message(room, queued.id)
        assert sent is not None and sent.delivered
    finally:
        await client.close()


async def test_before_load_the_rooms_read_as_stored(tmp_path: Path) -> None:
    """The views read from the store alone match the loaded ones, but for what only MLS knows."""
    home = tmp_path / "fac"
    async with await Client.create(home, name="Facilitator", passphrase="pw") as client:
        await client.start()
        room = (await client.create_room("Stored", retention_seconds=86400)).id
        first = await client.send(room, "one")
        await client.send(room, "two", reply_to=first.id)
        await client.react(room, first.id, "👍")
        await client.sync()
    client = await Client.open(home, "pw")
    try:
        stored_rooms = await client.rooms()
        stored = (await client.history(room), await client.members(room))
        stored_older = await client.history(room, limit=1, before=stored[0][1].id)
        assert await client.room("Stored") == stored_rooms[0]
        with pytest.raises(BackchannelError, match="not in a room"):
            await client.room("Elsewhere")
        await client.load()
        loaded_rooms = await client.rooms()
        assert loaded_rooms[0].approval in {"auto", "manual"}
        assert [dataclasses.replace(r, approval="", pending_requests=0) for r in loaded_rooms] == (
            stored_rooms
        )
        assert (await client.history(room), await client.members(room)) == stored
        assert await client.history(room, limit=1, before=stored[0][1].id) == stored_older
        assert stored_rooms[0].role == "facilitator" and stored_rooms[0].members == 1
    finally:
        await client.close()


def test_cli_init_and_status(tmp_path: Path) -> None:
    runner = CliRunner()
    home = str(tmp_path / "cli")
    env = {"BACKCHANNEL_PASSPHRASE": "swordfish"}
    created = runner.invoke(cli, ["--home", home, "--json", "init", "--name", "Carol"], env=env)
    assert created.exit_code == 0, created.output
    info = json.loads(created.output)
    assert info["name"] == "Carol" and info["embedded_relay"] is True
    shown = runner.invoke(cli, ["--home", home, "--json", "status"], env=env)
    assert json.loads(shown.output) == info
    human = runner.invoke(cli, ["--home", home, "status"], env=env)
    assert "Carol" in human.output and "(built in)" in human.output
    wrong = runner.invoke(cli, ["--home", home, "status"], env={"BACKCHANNEL_PASSPHRASE": "nope"})
    assert wrong.exit_code == 1
    assert "Wrong passphrase" in wrong.output and "Traceback" not in wrong.output
    no_secret = runner.invoke(cli, ["--home", home, "status"], env={"BACKCHANNEL_PASSPHRASE": ""})
    assert no_secret.exit_code == 1 and "BACKCHANNEL_PASSPHRASE" in no_secret.output


def test_cli_reads_the_passphrase_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("from a file\n")
    runner = CliRunner()
    home = str(tmp_path / "f")
    args = ["--home", home, "--passphrase-file", str(secret), "--json"]
    assert runner.invoke(cli, [*args, "init", "--name", "Dee"]).exit_code == 0
    assert json.loads(runner.invoke(cli, [*args, "status"]).output)["name"] == "Dee"


async def test_the_passphrase_can_be_checked_and_changed(tmp_path: Path) -> None:
    home = tmp_path / "p"
    async with await Client.create(home, name="P", passphrase="first one") as client:
        assert await client.check_passphrase("first one")
        assert not await client.check_passphrase("First one")
        with pytest.raises(ProfileError, match="Wrong passphrase"):
            await client.change_passphrase("nope", "second one")
        await client.change_passphrase("first one", "second one")
        assert await client.check_passphrase("second one")
    with pytest.raises(ProfileError, match="Wrong passphrase"):
        await Client.open(home, "first one")
    async with await Client.open(home, "second one") as reopened:
        assert reopened.info().name == "P"
