"""Argon2id key derivation and the plaintext header."""

from __future__ import annotations

import json
import stat
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from backchannel.store import CorruptStore, Header, KdfParams, StorageKey
from backchannel.store.keys import RFC9106_SECOND, derive_key, new_header, read_header, write_header

from . import FAST_KDF

SALT = bytes(range(16))


def test_rfc9106_second_recommended_parameters() -> None:
    # RFC 9106 §4: t=3 iterations, 2^16 KiB of memory (one lane: libsodium's only choice).
    assert KdfParams(opslimit=3, memlimit=64 * 1024 * 1024) == RFC9106_SECOND


def test_derivation_is_deterministic_and_salted() -> None:
    a = derive_key("pass", SALT, FAST_KDF, "sqlcipher4")
    b = derive_key("pass", SALT, FAST_KDF, "sqlcipher4")
    c = derive_key("pass", bytes(16), FAST_KDF, "sqlcipher4")
    d = derive_key("other", SALT, FAST_KDF, "sqlcipher4")
    assert a.database == b.database and a.check == b.check
    assert len(a.database.raw()) == 32 and len(a.check) == 16
    assert a.database != c.database and a.database != d.database
    # The database key and the check come from separate derivations.
    assert a.check not in a.database.raw()


def test_check_binds_the_parameters() -> None:
    base = derive_key("pass", SALT, FAST_KDF, "sqlcipher4")
    more_ops = derive_key("pass", SALT, KdfParams(2, FAST_KDF.memlimit), "sqlcipher4")
    other_cipher = derive_key("pass", SALT, FAST_KDF, "other")
    assert base.check != more_ops.check
    assert base.check != other_cipher.check
    assert base.database == other_cipher.database  # same Argon2id input, same key


def test_passphrase_is_nfc_normalised() -> None:
    composed = "caf\u00e9 \u00e0 Gen\u00e8ve"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert (
        derive_key(composed, SALT, FAST_KDF, "x").database
        == derive_key(decomposed, SALT, FAST_KDF, "x").database
    )
    assert (
        derive_key(composed, SALT, FAST_KDF, "x").database
        == derive_key(composed.encode(), SALT, FAST_KDF, "x").database
    )


@pytest.mark.parametrize(("passphrase", "salt"), [("", SALT), (b"", SALT), ("p", b"short")])
def test_bad_inputs_are_value_errors(passphrase: str | bytes, salt: bytes) -> None:
    with pytest.raises(ValueError):
        derive_key(passphrase, salt, FAST_KDF, "sqlcipher4")


@pytest.mark.parametrize(("ops", "mem"), [(0, 8192), (65, 8192), (1, 1024), (1, 2**33)])
def test_kdf_params_bounds(ops: int, mem: int) -> None:
    with pytest.raises(ValueError):
        KdfParams(ops, mem)


def test_secrets_stay_out_of_reprs() -> None:
    header, keys = new_header("hunter2", FAST_KDF)
    raw = keys.database.raw()
    for text in (repr(header), repr(keys), repr(keys.database), str(keys.database)):
        assert raw.hex() not in text and "hunter2" not in text
        assert header.salt.hex() not in text and header.check.hex() not in text
    assert repr(keys.database) == "StorageKey(<redacted>)"
    with pytest.raises(TypeError):
        hash(keys.database)
    with pytest.raises(ValueError):
        StorageKey(b"short")


def test_header_round_trip_and_no_secret_inside(tmp_path: Path) -> None:
    header, keys = new_header("hunter2", FAST_KDF)
    path = tmp_path / "store.header"
    write_header(path, header)
    assert read_header(path) == header
    data = path.read_bytes()
    assert b"hunter2" not in data and keys.database.raw() not in data
    assert keys.database.raw().hex().encode() not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["store.header"]  # no temp file left
    doc = json.loads(data)
    assert doc["kdf"] == {"name": "argon2id13", "opslimit": 1, "memlimit": 8192, "parallelism": 1}


def test_header_matches_only_its_own_key() -> None:
    header, keys = new_header("hunter2", FAST_KDF)
    assert header.matches(keys)
    assert not header.matches(derive_key("hunter3", header.salt, header.kdf, header.cipher))


def _doc() -> dict[str, Any]:
    header, _ = new_header("pw", FAST_KDF)
    doc: dict[str, Any] = json.loads(header.to_bytes())
    return doc


def _set(path: tuple[str, ...], value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_set(("format",), "something-else"), id="format"),
        pytest.param(_set(("version",), 2), id="version"),
        pytest.param(_set(("cipher",), "rot13"), id="cipher"),
        pytest.param(_set(("kdf", "name"), "scrypt"), id="kdf-name"),
        pytest.param(_set(("kdf", "parallelism"), 4), id="parallelism"),
        pytest.param(_set(("kdf", "opslimit"), True), id="bool-ops"),
        pytest.param(_set(("kdf", "opslimit"), "3"), id="string-ops"),
        pytest.param(_set(("kdf", "memlimit"), 2**40), id="huge-memory"),
        pytest.param(_set(("salt",), "AAAA"), id="short-salt"),
        pytest.param(_set(("salt",), "not base64!"), id="bad-base64"),
        pytest.param(_set(("check",), KeyError), id="no-check"),
        pytest.param(_set(("kdf",), KeyError), id="no-kdf"),
        pytest.param(_set(("kdf",), [1, 2]), id="kdf-list"),
    ],
)
def test_tampered_header_is_corrupt_store(edit: Any) -> None:
    doc = _doc()
    edit(doc)
    with pytest.raises(CorruptStore) as info:
        Header.from_bytes(json.dumps(doc).encode())
    assert info.value.__cause__ is None
    assert doc.get("salt", "") not in str(info.value)


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xfe", b"[]", b"null", b"{", b"x" * 5000], ids=lambda d: repr(d[:6])
)
def test_garbage_header_is_corrupt_store(data: bytes) -> None:
    with pytest.raises(CorruptStore):
        Header.from_bytes(data)
