"""No secret in any log (security-attacks.md G04; design rule 5), and no core dumps.

A whole conversation runs with every logger at DEBUG: a facilitator and a participant,
a real relay on loopback (its logs are captured too), an invite, an approval, messages
both ways, a file, a self-update and a removal. Then every captured record (message,
format args, exception and stack text) and everything written to stdout/stderr is
searched for: the passphrase, the plaintexts, the display names, the room title, the
file's contents, the invite secret from the link fragment, and the hex and base64
forms of key bytes (the store's database key, the identity signing keys, the room's
current epoch secrets). None may appear.
"""

from __future__ import annotations

import base64
import logging
import resource
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.client import Client
from backchannel.mls.key_schedule import EpochSecrets
from backchannel.rooms.invites import parse_invite
from backchannel.store.keys import derive_key, read_header
from backchannel.views import JoinRequested
from relay.app import create_app
from tests.conftest import relay_config
from tests.e2e.harness import PASSPHRASE, Person, eventually, wait_event

FAC_NAME = "Farida Zyqwelt"
BEN_NAME = "Benedikt Oxhorn"
TITLE = "Aral Basin Accord 7731"
PLAINTEXTS = [
    "the quota stays at forty-one percent, quietly",
    "ministry will not sign before the thaw",
    "after removal nobody else reads this",
]
FILE_BODY = b"CONFIDENTIAL ANNEX: pipeline easement 9f3e7c, do not forward\n" * 20


class _Everything(logging.Handler):
    """Keeps every record of every logger, whatever its level or propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def all_logs() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    # Loggers that do not propagate, or have their own level, get the handler directly.
    extra: list[tuple[logging.Logger, int]] = []
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            extra.append((logger, logger.level))
            logger.setLevel(logging.DEBUG)
            if not logger.propagate:
                logger.addHandler(handler)
    logging.disable(logging.NOTSET)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for logger, level in extra:
            logger.setLevel(level)
            if handler in logger.handlers:
                logger.removeHandler(handler)


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    config = relay_config(tmp_path)
    runner = web.AppRunner(create_app(config), shutdown_timeout=5)  # with its access log
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


def _forms(secret: bytes) -> list[str]:
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return [
        secret.hex(),
        secret.hex().upper(),
        b64,
        b64.rstrip("="),
        url,
        url.rstrip("="),
        repr(secret),
    ]


def _record_text(record: logging.LogRecord) -> str:
    parts = [str(record.msg), record.name]
    try:
        parts.append(record.getMessage())
    except Exception:
        parts.append(repr(record.args))
    parts.append(repr(record.args))
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def _epoch_secrets(client: Client) -> list[bytes]:
    out = []
    for live in client.engine._live.values():
        secrets = live.room._group._state.epoch.secrets
        for name in EpochSecrets.__dataclass_fields__:
            value = getattr(secrets, name)
            if isinstance(value, bytes) and len(value) >= 16 and any(value):
                out.append(value)
    return out


@pytest.mark.slow
async def test_a_whole_session_logs_no_secret(
    tmp_path: Path,
    relay_url: str,
    all_logs: _Everything,
    capfd: pytest.CaptureFixture[str],
) -> None:
    fac = Person(FAC_NAME, tmp_path / "fac", relay_url)
    ben = Person(BEN_NAME, tmp_path / "ben", relay_url)
    await fac.start(create=True)
    await ben.start(create=True)
    keys: list[bytes] = []
    try:
        room = (await fac.c.create_room(TITLE)).id
        link = await fac.c.invite(room)
        invite_secret = parse_invite(link, now=0).secret
        rid = await ben.c.join(link)
        request = await wait_event(fac, JoinRequested)
        await fac.c.approve(room, request.request.id)
        answer = await ben.c.wait_join(rid, 30)
        assert answer is not None and answer.approved
        await fac.c.send(room, PLAINTEXTS[0])
        await ben.c.send(room, PLAINTEXTS[1])
        annex = tmp_path / "annex.txt"
        annex.write_bytes(FILE_BODY)
        await fac.c.send_file(room, annex)
        await eventually(lambda: _kinds(ben, room, {"file"}), timeout=30)
        await eventually(lambda: _has(fac, room, PLAINTEXTS[1]), timeout=30)
        await fac.c.self_update(room)
        keys += _epoch_secrets(fac.c) + _epoch_secrets(ben.c)
        await fac.c.remove(room, BEN_NAME)
        await fac.c.send(room, PLAINTEXTS[2])
        keys += _epoch_secrets(fac.c)
        for p in (fac, ben):
            keys.append(p.c.identity.signature_key)
            header = read_header(p.home / "store.header")
            keys.append(
                derive_key(PASSPHRASE, header.salt, header.kdf, header.cipher).database.raw()
            )
    finally:
        await fac.stop()
        await ben.stop()
    keys.append(invite_secret)

    captured = capfd.readouterr()
    text = "\n".join(_record_text(r) for r in all_logs.records)
    text += "\n" + captured.out + "\n" + captured.err
    # The capture works: records from the client and from the relay's side were kept.
    names = {r.name for r in all_logs.records}
    assert any(n.startswith("backchannel.") for n in names), names
    assert any(n.startswith(("relay", "aiohttp")) for n in names), names
    needles = {
        "passphrase": [PASSPHRASE],
        "display name": [FAC_NAME, BEN_NAME],
        "room title": [TITLE],
        "plaintext": PLAINTEXTS,
        "file contents": [FILE_BODY[:40].decode()],
    }
    needles |= {f"key bytes #{i}": _forms(k) for i, k in enumerate(keys)}
    leaks = [
        f"{what}: {needle[:24]!r}"
        for what, forms in needles.items()
        for needle in forms
        if needle in text
    ]
    assert not leaks, leaks


async def _has(person: Person, room: str, text: str) -> bool:
    return text in {m.text for m in await person.c.history(room, limit=200)}


async def _kinds(person: Person, room: str, kinds: set[str]) -> bool:
    return kinds <= {m.kind for m in await person.c.history(room, limit=200)}


def _core_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_CORE)[0]


async def test_opening_a_profile_disables_core_dumps(tmp_path: Path) -> None:
    home = tmp_path / "p"
    client = await Client.create(
        home, name="A", passphrase=PASSPHRASE, relay_url="ws://127.0.0.1:9/v1/ws"
    )
    await client.close()
    client = await Client.open(home, PASSPHRASE)
    try:
        assert _core_limit() == 0
    finally:
        await client.close()
