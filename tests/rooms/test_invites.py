"""Invite links and join requests: round trips, hostile input, replay and secrecy."""

from __future__ import annotations

import base64
import contextlib
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.rooms.errors import (
    InviteError,
    InviteExhausted,
    InviteExpired,
    InviteMalformed,
    InviteRevoked,
    InviteVersionUnsupported,
    JoinRequestInvalid,
    JoinRequestReplayed,
)
from backchannel.rooms.invites import (
    LINK_PREFIX,
    MAX_SEEN_REQUESTS,
    Invite,
    InviteRecord,
    JoinRequest,
    create_invite,
    derive_invite_id,
    join_request_invite_id,
    open_join_request,
    parse_invite,
    seal_join_request,
)
from backchannel.rooms.padding import BUCKETS

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = 1_900_000_000
SECRET = bytes(range(100, 132))
SEED = bytes(range(200, 232))
DROP = bytes(range(16))
INVITE = Invite("wss://relay.example.org/v1/ws", DROP, SEED, SECRET, NOW + 3600, "Lake Geneva")
REQUEST = JoinRequest(
    request_id=b"R" * 16,
    created_at_ms=NOW * 1000,
    key_package=b"\x00\x01" + b"K" * 1500,
    display_name="Amira",
    inbox=b"I" * 16,
    inbox_write_seed=b"W" * 32,
)


def payload(**overrides: Any) -> str:
    fields: dict[str, Any] = {
        "v": 1,
        "relay": "wss://relay.example.org/v1/ws",
        "drop": DROP,
        "dw": SEED,
        "s": SECRET,
        "exp": NOW + 60,
    }
    fields.update(overrides)
    data = msgpack.packb({k: v for k, v in fields.items() if v is not ...}, use_bin_type=True)
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cut_payload() -> str:
    data = base64.urlsafe_b64decode(payload() + "==")[:-5]
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- links ----------------------------------------------------------------------------------


def test_link_round_trip_and_everything_is_in_the_fragment() -> None:
    link = INVITE.to_link()
    assert link.startswith(LINK_PREFIX)
    before, _, _ = link.partition("#")
    assert before == "backchannel://join"
    assert parse_invite(link, now=NOW) == INVITE
    assert len(link) < 300


@pytest.mark.parametrize(
    "wrap",
    [
        lambda link: link,
        lambda link: "  " + link + "\n",
        lambda link: "<" + link + ">",
        lambda link: "\n".join(link[i : i + 40] for i in range(0, len(link), 40)),
        lambda link: link.replace("backchannel://join", "BACKCHANNEL://JOIN"),
        lambda link: link.replace("backchannel://join", "https://relay.example.org/join"),
        lambda link: link.replace("backchannel://join", "http://localhost:8080/"),
        lambda link: link.partition("#")[2],
    ],
)
def test_pasted_forms_are_accepted(wrap: Any) -> None:
    assert parse_invite(wrap(INVITE.to_link()), now=NOW) == INVITE


@pytest.mark.parametrize(
    ("text", "error", "reason"),
    [
        ("", InviteMalformed, "truncated"),
        ("hello there", InviteMalformed, "truncated"),
        ("x" * 5000, InviteMalformed, "too long"),
        ("ftp://x/#" + payload(), InviteMalformed, "start with"),
        ("backchannel://joinx#" + payload(), InviteMalformed, "start with"),
        (LINK_PREFIX + payload() + "!", InviteMalformed, "characters"),
        (LINK_PREFIX + cut_payload(), InviteMalformed, "not valid msgpack"),
        (LINK_PREFIX + "A", InviteMalformed, "truncated"),
        (LINK_PREFIX + payload()[:-1] + "B", InviteMalformed, "truncated"),  # stray bits
        (LINK_PREFIX + payload(v=2), InviteVersionUnsupported, "newer version"),
        (LINK_PREFIX + payload(v="1"), InviteMalformed, "integer"),
        (LINK_PREFIX + payload(s=...), InviteMalformed, "missing"),
        (LINK_PREFIX + payload(s=SECRET[:31]), InviteMalformed, "length"),
        (LINK_PREFIX + payload(drop="0" * 16), InviteMalformed, "bin"),
        (LINK_PREFIX + payload(relay="https://relay.example.org"), InviteMalformed, "ws://"),
        (
            LINK_PREFIX + payload(relay="wss://evil@relay.example.org"),
            InviteMalformed,
            "credentials",
        ),
        (LINK_PREFIX + payload(relay="wss://relay.example.org/?a=1"), InviteMalformed, "query"),
        (LINK_PREFIX + payload(relay="wss://relay.example.org:99999"), InviteMalformed, "port"),
        (LINK_PREFIX + payload(relay="wss://[::1"), InviteMalformed, "host or port"),
        (LINK_PREFIX + payload(relay="wss://r.org/\x1b[2J"), InviteMalformed, "control"),
        (LINK_PREFIX + payload(hint="x" * 65), InviteMalformed, "bytes"),
        (LINK_PREFIX + payload(exp=NOW), InviteExpired, "expired"),
        (LINK_PREFIX + payload(exp=-1), InviteMalformed, "range"),
        (
            LINK_PREFIX + base64.urlsafe_b64encode(b"\x93\x01\x02\x03").decode(),
            InviteMalformed,
            "map",
        ),
    ],
)
def test_hostile_links_are_refused(text: str, error: type[InviteError], reason: str) -> None:
    with pytest.raises(error, match=reason) as info:
        parse_invite(text, now=NOW)
    # Messages never echo the link (it holds the secrets).
    assert payload() not in str(info.value)


def test_parse_refuses_non_text() -> None:
    with pytest.raises(InviteMalformed):
        parse_invite(b"backchannel://join#x", now=NOW)  # type: ignore[arg-type]


def test_unknown_link_fields_are_ignored() -> None:
    invite = parse_invite(LINK_PREFIX + payload(future=[1, 2]), now=NOW)
    assert invite.secret == SECRET and invite.hint == ""


@given(st.text(max_size=300))
@FUZZ
def test_random_text_raises_only_invite_errors(text: str) -> None:
    for candidate in (text, LINK_PREFIX + text):
        with contextlib.suppress(InviteError):
            parse_invite(candidate, now=NOW)


@given(st.data())
@FUZZ
def test_mutated_links_raise_only_invite_errors(data: st.DataObject) -> None:
    link = list(INVITE.to_link())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(link) - 1))
        link[i] = data.draw(st.characters(codec="ascii"))
    cut = data.draw(st.integers(0, len(link)))
    for candidate in ("".join(link), "".join(link[:cut])):
        try:
            invite = parse_invite(candidate, now=NOW)
        except InviteError:
            continue
        assert isinstance(invite, Invite)


@given(st.binary(max_size=200))
@FUZZ
def test_random_payloads_raise_only_invite_errors(data: bytes) -> None:
    text = LINK_PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    with contextlib.suppress(InviteError):
        parse_invite(text, now=NOW)


def test_secrets_stay_out_of_reprs() -> None:
    invite, record = create_invite(
        relay_url="ws://127.0.0.1:1/v1/ws",
        drop_mailbox=DROP,
        drop_write_seed=SEED,
        expires_at=NOW,
        rng=lambda n: SECRET[:n],
    )
    for obj in (invite, record, REQUEST, INVITE):
        text = repr(obj) + str(obj)
        for secret in (SECRET, SEED, b"W" * 32):
            assert secret.hex() not in text
            assert repr(secret)[2:-1] not in text
    assert "Amira" not in repr(REQUEST)
    assert "K" * 20 not in repr(REQUEST)


def test_invite_id_is_derived_and_not_the_secret() -> None:
    assert INVITE.invite_id == derive_invite_id(SECRET)
    assert len(INVITE.invite_id) == 16
    assert INVITE.invite_id not in SECRET
    assert derive_invite_id(SEED) != INVITE.invite_id
    with pytest.raises(ValueError):
        derive_invite_id(b"short")


# --- join requests --------------------------------------------------------------------------


def test_join_request_round_trip() -> None:
    blob = seal_join_request(INVITE, REQUEST)
    assert join_request_invite_id(blob) == INVITE.invite_id
    assert open_join_request(SECRET, blob) == REQUEST


def test_the_relay_learns_no_names_or_keys() -> None:
    blob = seal_join_request(INVITE, REQUEST)
    for plain in (b"Amira", b"K" * 16, b"W" * 16, b"I" * 16, b"R" * 16, SECRET, SEED):
        assert plain not in blob


def test_join_request_sizes_reveal_only_the_bucket() -> None:
    sizes = {
        len(seal_join_request(INVITE, replace(REQUEST, display_name="x" * n, key_package=b"k" * k)))
        for n in (1, 30, 64)
        for k in (1200, 1300, 1500)
    }
    assert len(sizes) == 1
    (size,) = sizes
    # One bucket of ciphertext plus the AEAD tag and a small fixed envelope.
    assert 2048 + 16 < size < 2048 + 100
    assert 2048 in BUCKETS


def test_wrong_invite_tamper_and_swap_all_fail_alike() -> None:
    blob = seal_join_request(INVITE, REQUEST)
    fields = msgpack.unpackb(blob)
    other_secret = bytes(32)
    other = seal_join_request(replace(INVITE, secret=other_secret), REQUEST)
    attempts = [
        (other_secret, blob),  # another invite's secret
        (SECRET, other),  # another invite's request
        (SECRET, msgpack.packb(fields | {"invite": derive_invite_id(other_secret)})),
        (SECRET, msgpack.packb(fields | {"v": 2})),
        (SECRET, msgpack.packb(fields | {"nonce": bytes(12)})),
        (SECRET, msgpack.packb(fields | {"ct": fields["ct"][:-1]})),
        (SECRET, msgpack.packb(fields | {"ct": b""})),
        (SECRET, blob[:-1]),
        (SECRET, b""),
        (SECRET, "text"),
    ]
    messages = set()
    for secret, candidate in attempts:
        with pytest.raises(JoinRequestInvalid) as info:
            open_join_request(secret, candidate)
        messages.add(str(info.value))
    assert len(messages) == 1


def test_sealed_plaintext_must_be_valid() -> None:
    # A request sealed correctly but carrying bad fields still fails the same way.
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from backchannel.rooms.invites import JOIN_AAD_LABEL, _join_key
    from backchannel.rooms.padding import pad

    def seal(inner: bytes, *, padded: bool = True) -> bytes:
        ct = ChaCha20Poly1305(_join_key(SECRET)).encrypt(
            bytes(12), pad(inner) if padded else inner, JOIN_AAD_LABEL + INVITE.invite_id
        )
        blob: bytes = msgpack.packb(
            {"v": 1, "invite": INVITE.invite_id, "nonce": bytes(12), "ct": ct}
        )
        return blob

    good = {
        "v": 1,
        "rid": b"r" * 16,
        "ts": 1,
        "kp": b"k",
        "name": "n",
        "inbox": b"i" * 16,
        "iw": b"w" * 32,
    }
    assert open_join_request(SECRET, seal(msgpack.packb(good))).display_name == "n"
    for bad in (
        good | {"v": 2},
        good | {"name": ""},
        good | {"name": "\x1b[31m"},
        good | {"rid": b"r"},
        {k: v for k, v in good.items() if k != "kp"},
    ):
        with pytest.raises(JoinRequestInvalid):
            open_join_request(SECRET, seal(msgpack.packb(bad)))
    with pytest.raises(JoinRequestInvalid):
        open_join_request(SECRET, seal(msgpack.packb(good), padded=False))
    with pytest.raises(JoinRequestInvalid):
        open_join_request(SECRET, seal(b"\xc1"))


@given(st.binary(max_size=400))
@FUZZ
def test_random_blobs_raise_only_join_request_invalid(blob: bytes) -> None:
    for call in (lambda: open_join_request(SECRET, blob), lambda: join_request_invite_id(blob)):
        with contextlib.suppress(JoinRequestInvalid):
            call()


@given(st.data())
@FUZZ
def test_any_bit_flip_is_detected(data: st.DataObject) -> None:
    blob = bytearray(seal_join_request(INVITE, REQUEST, rng=lambda n: bytes(n)))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(JoinRequestInvalid):
        open_join_request(SECRET, bytes(blob))


def test_join_request_constructor_checks() -> None:
    with pytest.raises(ValueError):
        replace(REQUEST, display_name="")
    with pytest.raises(ValueError):
        replace(REQUEST, display_name="a\nb")
    with pytest.raises(ValueError):
        replace(REQUEST, key_package=b"")
    with pytest.raises(ValueError):
        replace(REQUEST, inbox_write_seed=b"short")


# --- the facilitator's record ---------------------------------------------------------------


def record(**kw: Any) -> InviteRecord:
    return InviteRecord(SECRET, NOW + 3600, **kw)


def test_single_use_invite() -> None:
    r = record().screen(REQUEST, now=NOW)
    r = r.approve()
    assert r.uses == 1
    second = replace(REQUEST, request_id=b"S" * 16, key_package=b"other")
    with pytest.raises(InviteExhausted):
        r.screen(second, now=NOW)
    with pytest.raises(InviteExhausted):
        r.approve()


def test_replays_are_detected_by_request_id_and_key_package() -> None:
    r = record(max_uses=5).screen(REQUEST, now=NOW)
    with pytest.raises(JoinRequestReplayed):
        r.screen(REQUEST, now=NOW)
    with pytest.raises(JoinRequestReplayed):
        r.screen(replace(REQUEST, request_id=b"S" * 16), now=NOW)
    with pytest.raises(JoinRequestReplayed):
        r.screen(replace(REQUEST, key_package=b"new"), now=NOW)
    r.screen(replace(REQUEST, request_id=b"S" * 16, key_package=b"new"), now=NOW)


def test_expiry_and_revocation() -> None:
    with pytest.raises(InviteExpired):
        record().screen(REQUEST, now=NOW + 3600)
    revoked = record().revoke()
    with pytest.raises(InviteRevoked):
        revoked.screen(REQUEST, now=NOW)
    pending = record().screen(REQUEST, now=NOW)
    with pytest.raises(InviteRevoked):
        pending.revoke().approve()


def test_request_flood_exhausts_the_invite() -> None:
    full = record(
        max_uses=10,
        seen_requests=frozenset(i.to_bytes(16, "big") for i in range(MAX_SEEN_REQUESTS)),
    )
    with pytest.raises(InviteExhausted):
        full.screen(REQUEST, now=NOW)


def test_record_round_trip() -> None:
    r = record(max_uses=3).screen(REQUEST, now=NOW).approve()
    assert InviteRecord.from_bytes(r.to_bytes()) == r
    assert r.invite_id == INVITE.invite_id


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f | {"v": 9},
        lambda f: f | {"uses": 4},
        lambda f: f | {"rids": [b"x"]},
        lambda f: f | {"rids": "nope"},
        lambda f: f | {"revoked": 1},
        lambda f: {k: v for k, v in f.items() if k != "s"},
    ],
)
def test_bad_records_are_refused(mutate: Any) -> None:
    fields = msgpack.unpackb(record(max_uses=3).to_bytes())
    with pytest.raises(InviteMalformed):
        InviteRecord.from_bytes(msgpack.packb(mutate(fields)))


@given(st.binary(max_size=300))
@FUZZ
def test_record_decoder_raises_only_invite_malformed(data: bytes) -> None:
    with contextlib.suppress(InviteMalformed):
        InviteRecord.from_bytes(data)


def test_documented_key_derivation_vector() -> None:
    from backchannel.rooms.invites import _join_key

    secret = bytes(range(32))
    assert derive_invite_id(secret).hex() == "4654d6591f17367370d90e1fc80b2247"
    assert _join_key(secret).hex() == (
        "ecbf0eb8b9901ac1166d0a5d140b079307f63edc25d3a2f12382ecb22fe51a7b"
    )
