"""The storage key: Argon2id(passphrase) and the plaintext header that says how to derive it.

Theory of operation: a profile's database is encrypted under a 32-byte key.
The key is never stored. It is derived from the passphrase with Argon2id
(RFC 9106) over a random salt; the salt and the Argon2id parameters live in a
small plaintext JSON header next to the database, with a 16-byte *key check*
that lets a wrong passphrase be told from a damaged database without touching
the database file. The header holds nothing secret: a salt, public parameters
and a MAC under the derived key (as good an offline oracle as the database's
own first page, and as costly to use: one Argon2id per guess).

From the Argon2id output (the *master*) two values are split with keyed
BLAKE2b and distinct personalisations, so neither is ever used for two jobs:
the database key handed to SQLCipher, and the key check, which also binds the
salt and parameters, so an edited header fails the check exactly as a wrong
passphrase does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id as _argon2id

from .errors import CorruptStore, StorageUnavailable

__all__ = [
    "CIPHER_SQLCIPHER4",
    "FORMAT",
    "HEADER_VERSION",
    "RFC9106_SECOND",
    "DerivedKeys",
    "Header",
    "KdfParams",
    "StorageKey",
    "derive_key",
    "fsync_dir",
    "new_header",
    "read_header",
    "write_header",
]

FORMAT: Final = "backchannel-store"
HEADER_VERSION: Final = 1
#: The encryption the header's database uses; chosen once, when the profile is created.
CIPHER_SQLCIPHER4: Final = "sqlcipher4"
KEY_BYTES: Final = 32
SALT_BYTES: Final = _argon2id.SALTBYTES  # 16, as RFC 9106 §3.1 recommends
CHECK_BYTES: Final = 16
_HEADER_MAX_BYTES: Final = 4096
# Accepted from a header: libsodium's floor up to a ceiling that stops an edited
# header from making us allocate or compute without bound.
_OPS_RANGE: Final = (_argon2id.OPSLIMIT_MIN, 64)
_MEM_RANGE: Final = (_argon2id.MEMLIMIT_MIN, 4 * 1024**3)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters (libsodium's ``argon2id13``: version 0x13, one lane).

    Attributes:
        opslimit: passes over memory, RFC 9106's ``t``.
        memlimit: memory in bytes, RFC 9106's ``m`` times 1024.
    """

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not _OPS_RANGE[0] <= self.opslimit <= _OPS_RANGE[1]:
            raise ValueError(f"opslimit must be in {_OPS_RANGE[0]}..{_OPS_RANGE[1]}")
        if not _MEM_RANGE[0] <= self.memlimit <= _MEM_RANGE[1]:
            raise ValueError(f"memlimit must be in {_MEM_RANGE[0]}..{_MEM_RANGE[1]} bytes")


#: RFC 9106 §4, second recommended option: t=3, m=2^16 KiB (64 MiB). libsodium runs one
#: lane (p=1, not the RFC's p=4): same memory hardness, slower for us only.
RFC9106_SECOND: Final = KdfParams(opslimit=3, memlimit=64 * 1024 * 1024)


class StorageKey:
    """A derived database key. Its repr never shows the bytes."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("storage key must be 32 bytes")
        self._key = bytes(key)

    def sqlcipher_pragma_value(self) -> str:
        """The value for ``PRAGMA key``/``rekey``: a raw key, so SQLCipher runs no PBKDF2."""
        return f"\"x'{self._key.hex()}'\""

    def raw(self) -> bytes:
        """The 32 key bytes (tests decrypt pages with them; nothing else should need them)."""
        return self._key

    def __repr__(self) -> str:
        return "StorageKey(<redacted>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorageKey) and hmac.compare_digest(self._key, other._key)

    __hash__ = None  # type: ignore[assignment]  # a secret has no business in a set


@dataclass(frozen=True, slots=True)
class Header:
    """The plaintext header file: how to derive the key, and a check for it.

    Attributes:
        salt: 16 random bytes for Argon2id.
        kdf: the Argon2id cost parameters.
        check: MAC over salt and parameters under the derived key.
        cipher: how the database is encrypted (``sqlcipher4``).
        version: header format version.
    """

    salt: bytes = field(repr=False)
    kdf: KdfParams
    check: bytes = field(repr=False)
    cipher: str = CIPHER_SQLCIPHER4
    version: int = HEADER_VERSION

    def to_bytes(self) -> bytes:
        """Serialize as canonical JSON."""
        doc = {
            "format": FORMAT,
            "version": self.version,
            "cipher": self.cipher,
            "kdf": {
                "name": "argon2id13",
                "opslimit": self.kdf.opslimit,
                "memlimit": self.kdf.memlimit,
                "parallelism": 1,
            },
            "salt": base64.b64encode(self.salt).decode("ascii"),
            "check": base64.b64encode(self.check).decode("ascii"),
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """Parse and validate a header.

        Raises:
            CorruptStore: on anything but a well-formed version-1 header.
        """
        if len(data) > _HEADER_MAX_BYTES:
            raise CorruptStore("The profile's header file is too large; it is damaged.")
        try:
            doc = json.loads(data.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a store header")
            if doc.get("version") != HEADER_VERSION:
                raise CorruptStore(
                    "The profile's header has an unknown version; it may come from a newer Backchannel."
                )
            if doc.get("cipher") != CIPHER_SQLCIPHER4:
                raise CorruptStore("The profile uses an encryption this Backchannel cannot read.")
            kdf = doc["kdf"]
            if kdf.get("name") != "argon2id13" or kdf.get("parallelism") != 1:
                raise ValueError("unknown kdf")
            params = KdfParams(_int(kdf["opslimit"]), _int(kdf["memlimit"]))
            salt = base64.b64decode(_str(doc["salt"]), validate=True)
            check = base64.b64decode(_str(doc["check"]), validate=True)
            if len(salt) != SALT_BYTES or len(check) != CHECK_BYTES:
                raise ValueError("bad lengths")
        except CorruptStore:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            # The parse failure's own text may quote header bytes; it is not passed on.
            raise CorruptStore("The profile's header file is damaged.") from None
        return cls(salt=salt, kdf=params, check=check)

    def matches(self, key: DerivedKeys) -> bool:
        """Whether ``key`` was derived from this header and the right passphrase (constant time)."""
        return hmac.compare_digest(self.check, key.check)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


@dataclass(frozen=True, slots=True)
class DerivedKeys:
    """What Argon2id yields for one header: the database key and the header check."""

    database: StorageKey = field(repr=False)
    check: bytes = field(repr=False)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        # NFC, so the same passphrase typed on macOS (NFD input) and Linux unlocks the same store.
        passphrase = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be str or bytes")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return passphrase


def _params_bytes(salt: bytes, kdf: KdfParams, cipher: str) -> bytes:
    return b"|".join(
        [b"v1", cipher.encode(), str(kdf.opslimit).encode(), str(kdf.memlimit).encode(), salt]
    )


def derive_key(passphrase: str | bytes, salt: bytes, kdf: KdfParams, cipher: str) -> DerivedKeys:
    """Run Argon2id and split the result into the database key and the header check.

    Blocking (tens to hundreds of milliseconds at RFC 9106 parameters): call it
    off the event loop.

    Args:
        passphrase: the user's passphrase; ``str`` is NFC-normalised and UTF-8 encoded.
        salt: the header's 16-byte salt.
        kdf: the header's Argon2id parameters.
        cipher: the header's cipher name (bound into the check).

    Returns:
        The database key and the 16-byte key check.

    Raises:
        ValueError: empty passphrase or a salt that is not 16 bytes.
    """
    secret = _passphrase_bytes(passphrase)
    if len(salt) != SALT_BYTES:
        raise ValueError("salt must be 16 bytes")
    master = _argon2id.kdf(KEY_BYTES, secret, salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit)
    db_key = hashlib.blake2b(b"", key=master, person=b"bc.store.dbkey", digest_size=32).digest()
    check = hashlib.blake2b(
        _params_bytes(salt, kdf, cipher), key=master, person=b"bc.store.check", digest_size=16
    ).digest()
    return DerivedKeys(StorageKey(db_key), check)


def new_header(passphrase: str | bytes, kdf: KdfParams) -> tuple[Header, DerivedKeys]:
    """A fresh header with a new random salt, and the keys derived from it."""
    salt = os.urandom(SALT_BYTES)
    keys = derive_key(passphrase, salt, kdf, CIPHER_SQLCIPHER4)
    return Header(salt=salt, kdf=kdf, check=keys.check), keys


def read_header(path: Path) -> Header:
    """Read and parse a header file.

    Raises:
        FileNotFoundError: no header at ``path``.
        CorruptStore: the file is not a valid header.
        StorageUnavailable: the file could not be read.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageUnavailable(f"Cannot read the profile header ({exc.strerror}).") from None
    return Header.from_bytes(data)


def write_header(path: Path, header: Header) -> None:
    """Write a header atomically and durably: temp file, fsync, rename, fsync the folder.

    Raises:
        StorageUnavailable: the file could not be written.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, header.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageUnavailable(f"Cannot write the profile header ({exc.strerror}).") from None


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened; renames are durable there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
