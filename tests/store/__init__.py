"""Tests of the encrypted client store, and helpers they share."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from backchannel.store import KdfParams, Message, Store
from backchannel.store.keys import derive_key, read_header
from backchannel.store.records import message_ref

#: libsodium's cheapest Argon2id: keeps the suite fast; production uses RFC9106_SECOND.
FAST_KDF = KdfParams(opslimit=1, memlimit=8192)
PASSPHRASE = "correct horse battery staple"
ROOM = b"room-1"

_PAGE = 4096  # SQLCipher 4 default page size
_RESERVE = 80  # per page: 16-byte IV + 64-byte HMAC-SHA512
_SALT = 16  # page 1 starts with the file salt


async def new_store(tmp_path: Path, passphrase: str = PASSPHRASE) -> Store:
    """A fresh store in ``tmp_path/profile`` with cheap KDF parameters."""
    return await Store.create(tmp_path / "profile", passphrase, kdf=FAST_KDF)


ALICE = b"alice"


def ref(n: int, sender: bytes = ALICE) -> bytes:
    """The store's ref of message number ``n`` (sent by Alice unless told)."""
    return message_ref(sender, b"msg-%08d" % n)


def mid(n: int) -> bytes:
    """The sender-chosen id of message number ``n``."""
    return b"msg-%08d" % n


def text_message(
    n: int, body: str | None = None, *, room: bytes = ROOM, sent_at: float | None = None
) -> Message:
    """Message number ``n`` of a room, sent and received at time ``n`` unless told."""
    t = float(n) if sent_at is None else sent_at
    return Message(
        room_id=room,
        message_id=b"msg-%08d" % n,
        sender_id=ALICE,
        sender_name="Alice",
        sent_at=t,
        received_at=t,
        kind="text",
        body=f"message {n}" if body is None else body,
    )


def disk_bytes(directory: Path) -> bytes:
    """Everything in the profile folder, concatenated (database, WAL, header, lock)."""
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def decrypted_pages(directory: Path, passphrase: str = PASSPHRASE) -> bytes:
    """Decrypt every page of ``store.db`` the way SQLCipher 4 lays them out.

    This reads the raw file, free pages and slack space included, so it shows what a
    person holding the passphrase could dig out: the test of ``secure_delete``.
    """
    header = read_header(directory / "store.header")
    key = derive_key(passphrase, header.salt, header.kdf, header.cipher).database.raw()
    data = (directory / "store.db").read_bytes()
    out = []
    for start in range(0, len(data), _PAGE):
        page = data[start : start + _PAGE]
        first = _SALT if start == 0 else 0
        iv = page[_PAGE - _RESERVE : _PAGE - _RESERVE + 16]
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        out.append(decryptor.update(page[first : _PAGE - _RESERVE]) + decryptor.finalize())
    return b"".join(out)
