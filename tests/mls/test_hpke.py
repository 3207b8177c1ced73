"""HPKE base mode for every KEM: known answers, round trips, interop of both paths, negatives.

Known answers are the RFC 9180 Appendix A base-mode vectors for DHKEM(X25519),
DHKEM(P-256) and DHKEM(P-521) (setup values, first encryption, first export).
DHKEM(X448) and the ML-KEM KEMs have no RFC 9180 vectors; X448 is covered by the MLS
crypto-basics/key-schedule vectors (suites 4 and 6), and every KEM that
``cryptography``'s HPKE also implements (incl. X-Wing) is checked against it in both
directions.
"""

from __future__ import annotations

import pytest

from backchannel.mls.crypto.hpke import (
    AeadId,
    HPKEPrivateKey,
    HPKEPublicKey,
    HPKESuite,
    KdfId,
    KemId,
)
from backchannel.mls.crypto.kem import get_kem
from backchannel.mls.errors import ValidationError, VerificationError

INFO = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
PT = bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479")
AAD0 = bytes.fromhex("436f756e742d30")

RFC9180 = {
    "A.1-X25519": dict(
        suite=(KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM),
        ikmE="7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
        skEm="52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
        pkEm="37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
        ikmR="6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
        skRm="4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        pkRm="3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
        key="4531685d41d65f03dc48f6b8302c05b0",
        base_nonce="56d890e5accaaf011cff4b7d",
        exporter_secret="45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8",
        ct="f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
        "6d8770ac83d07bea87e13c512a",
        export="3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee",
    ),
    "A.3-P256": dict(
        suite=(KemId.DHKEM_P256_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM),
        ikmE="4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e",
        skEm="4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb",
        pkEm="04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b32"
        "5ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
        ikmR="668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550",
        skRm="f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
        pkRm="04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f70"
        "6a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0",
        key="868c066ef58aae6dc589b6cfdd18f97e",
        base_nonce="4e0bc5018beba4bf004cca59",
        exporter_secret="14ad94af484a7ad3ef40e9f3be99ecc6fa9036df9d4920548424df127ee0d99f",
        ct="5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f"
        "9076ac232e3ab2523f39513434",
        export=None,
    ),
    "A.6-P521": dict(
        suite=(KemId.DHKEM_P521_HKDF_SHA512, KdfId.HKDF_SHA512, AeadId.AES_256_GCM),
        ikmE="7f06ab8215105fc46aceeb2e3dc5028b44364f960426eb0d8e4026c2f8b5d7"
        "e7a986688f1591abf5ab753c357a5d6f0440414b4ed4ede71317772ac98d9239f70904",
        skEm="014784c692da35df6ecde98ee43ac425dbdd0969c0c72b42f2e708ab9d5354"
        "15a8569bdacfcc0a114c85b8e3f26acf4d68115f8c91a66178cdbd03b7bcc5291e374b",
        pkEm="040138b385ca16bb0d5fa0c0665fbbd7e69e3ee29f63991d3e9b5fa740aab8"
        "900aaeed46ed73a49055758425a0ce36507c54b29cc5b85a5cee6bae0cf1c21f2731"
        "ece2013dc3fb7c8d21654bb161b463962ca19e8c654ff24c94dd2898de12051f1ed0"
        "692237fb02b2f8d1dc1c73e9b366b529eb436e98a996ee522aef863dd5739d2f29b0",
        ikmR="2ad954bbe39b7122529f7dde780bff626cd97f850d0784a432784e69d86ecc"
        "aade43b6c10a8ffdb94bf943c6da479db137914ec835a7e715e36e45e29b587bab3bf1",
        skRm="01462680369ae375e4b3791070a7458ed527842f6a98a79ff5e0d4cbde83c2"
        "7196a3916956655523a6a2556a7af62c5cadabe2ef9da3760bb21e005202f7b2462847",
        pkRm="0401b45498c1714e2dce167d3caf162e45e0642afc7ed435df7902ccae0e84"
        "ba0f7d373f646b7738bbbdca11ed91bdeae3cdcba3301f2457be452f271fa6837580"
        "e661012af49583a62e48d44bed350c7118c0d8dc861c238c72a2bda17f64704f464b"
        "57338e7f40b60959480c0e58e6559b190d81663ed816e523b6b6a418f66d2451ec64",
        key="751e346ce8f0ddb2305c8a2a85c70d5cf559c53093656be636b9406d4d7d1b70",
        base_nonce="55ff7a7d739c69f44b25447b",
        exporter_secret="e4ff9dfbc732a2b9c75823763c5ccc954a2c0648fc6de80a585"
        "81252d0ee3215388a4455e69086b50b87eb28c169a52f42e71de4ca61c920e7bd24c95cc3f992",
        ct="170f8beddfe949b75ef9c387e201baf4132fa7374593dfafa90768788b7b2b20"
        "0aafcc6d80ea4c795a7c5b841a",
        export=None,
    ),
}

ALL_KEMS = [pytest.param(k, id=f"kem={k.name}") for k in KemId]


def suite_for(kem: KemId) -> HPKESuite:
    return HPKESuite(kem, KdfId.HKDF_SHA256, AeadId.AES_128_GCM)


@pytest.mark.parametrize("name", list(RFC9180))
def test_rfc9180_base_vectors(name: str) -> None:
    v = RFC9180[name]
    kem, kdf, aead = v["suite"]  # type: ignore[misc]
    suite = HPKESuite(kem, kdf, aead)

    def x(key: str) -> bytes:
        return bytes.fromhex(v[key])  # type: ignore[arg-type]

    sk_r = HPKEPrivateKey.derive(kem, x("ikmR"))
    assert sk_r.to_bytes() == x("skRm")
    assert sk_r.public_key().to_bytes() == x("pkRm")
    sk_e = HPKEPrivateKey.derive(kem, x("ikmE"))
    assert (sk_e.to_bytes(), sk_e.public_key().to_bytes()) == (x("skEm"), x("pkEm"))
    pk_r = HPKEPublicKey.from_bytes(kem, x("pkRm"))
    enc, ctx = suite.setup_base_s(pk_r, INFO, ikm_e=x("ikmE"))
    assert enc == x("pkEm")
    assert (ctx.key, ctx.base_nonce, ctx.exporter_secret) == (
        x("key"),
        x("base_nonce"),
        x("exporter_secret"),
    )
    assert ctx.seal(AAD0, PT) == x("ct")
    enc2, ct = suite.seal(pk_r, INFO, AAD0, PT, ikm_e=x("ikmE"))
    assert (enc2, ct) == (enc, x("ct"))
    assert suite.open(sk_r, enc, INFO, AAD0, ct) == PT
    receiver = suite.setup_base_r(enc, HPKEPrivateKey.from_bytes(kem, x("skRm")), INFO)
    assert receiver.key == ctx.key
    if v["export"] is not None:
        assert receiver.export(b"", 32) == x("export")


@pytest.mark.parametrize("kem", ALL_KEMS)
def test_round_trip_and_interop(kem: KemId) -> None:
    """The ``cryptography`` path (empty AAD) and the hand-written path agree both ways."""
    suite = suite_for(kem)
    sk = HPKEPrivateKey.generate(kem)
    pk = HPKEPublicKey.from_bytes(kem, sk.public_key().to_bytes())
    for plaintext in (b"", b"x", b"m" * 100_000):
        enc, ct = suite.seal(pk, b"info", b"", plaintext)
        assert len(enc) == suite.n_enc == get_kem(kem).n_enc
        assert suite.setup_base_r(enc, sk, b"info").open(b"", ct) == plaintext
        enc, ctx = suite.setup_base_s(pk, b"info")
        assert suite.open(sk, enc, b"info", b"", ctx.seal(b"", plaintext)) == plaintext
    enc, ct = suite.seal(pk, b"info", b"aad", b"with aad")
    assert suite.open(sk, enc, b"info", b"aad", ct) == b"with aad"


NEGATIVE_CASES = [
    "wrong key",
    "wrong info",
    "wrong aad",
    "corrupted ct",
    "truncated ct",
    "empty ct",
    "truncated enc",
    "empty enc",
    "long enc",
    "corrupted enc",
]


@pytest.mark.parametrize("case", NEGATIVE_CASES)
@pytest.mark.parametrize("kem", ALL_KEMS)
@pytest.mark.parametrize("aad", [b"", b"aad"], ids=["aad=empty", "aad=set"])
def test_negative(kem: KemId, aad: bytes, case: str) -> None:
    suite = suite_for(kem)
    sk = HPKEPrivateKey.generate(kem)
    enc, ct = suite.seal(sk.public_key(), b"info", aad, b"secret")
    cases = {
        "wrong key": (HPKEPrivateKey.generate(kem), enc, b"info", aad, ct),
        "wrong info": (sk, enc, b"inf0", aad, ct),
        "wrong aad": (sk, enc, b"info", aad + b"!", ct),
        "corrupted ct": (sk, enc, b"info", aad, ct[:-1] + bytes([ct[-1] ^ 1])),
        "truncated ct": (sk, enc, b"info", aad, ct[:10]),
        "empty ct": (sk, enc, b"info", aad, b""),
        "truncated enc": (sk, enc[:-1], b"info", aad, ct),
        "empty enc": (sk, b"", b"info", aad, ct),
        "long enc": (sk, enc + b"\x00", b"info", aad, ct),
        "corrupted enc": (sk, bytes([enc[0] ^ 0x80]) + enc[1:], b"info", aad, ct),
    }
    key, bad_enc, info, bad_aad, bad_ct = cases[case]
    with pytest.raises(VerificationError, match=r"^HPKE decryption failed$"):
        suite.open(key, bad_enc, info, bad_aad, bad_ct)


@pytest.mark.parametrize("kem", ALL_KEMS)
def test_derive_key_pair_is_deterministic(kem: KemId) -> None:
    a = HPKEPrivateKey.derive(kem, b"\x01" * 32)
    b = HPKEPrivateKey.derive(kem, b"\x01" * 32)
    c = HPKEPrivateKey.derive(kem, b"\x02" * 32)
    assert a.to_bytes() == b.to_bytes() and a.public_key() == b.public_key()
    assert a.to_bytes() != c.to_bytes() and a.public_key() != c.public_key()
    assert len(a.to_bytes()) == get_kem(kem).n_sk
    assert len(a.public_key().to_bytes()) == get_kem(kem).n_pk
    again = HPKEPrivateKey.from_bytes(kem, a.to_bytes())
    assert again.public_key() == a.public_key()
    assert a.to_bytes().hex() not in repr(a)


@pytest.mark.parametrize("kem", ALL_KEMS)
def test_bad_keys(kem: KemId) -> None:
    n_pk, n_sk = get_kem(kem).n_pk, get_kem(kem).n_sk
    for bad in (b"", b"\x04" * (n_pk - 1), b"\x04" * (n_pk + 1)):
        with pytest.raises(ValidationError):
            HPKEPublicKey.from_bytes(kem, bad)
    for bad in (b"", b"\x01" * (n_sk + 1)):
        with pytest.raises(ValidationError):
            HPKEPrivateKey.from_bytes(kem, bad)
    other = KemId.DHKEM_X448_HKDF_SHA512 if kem != KemId.DHKEM_X448_HKDF_SHA512 else KemId.MLKEM768
    foreign = HPKEPrivateKey.generate(other)
    with pytest.raises(ValidationError):
        suite_for(kem).seal(foreign.public_key(), b"", b"", b"x")
    with pytest.raises(ValidationError):
        suite_for(kem).open(foreign, b"\x00" * get_kem(kem).n_enc, b"", b"", b"x" * 32)


@pytest.mark.parametrize(
    "kem",
    [KemId.DHKEM_P256_HKDF_SHA256, KemId.DHKEM_P384_HKDF_SHA384, KemId.DHKEM_P521_HKDF_SHA512],
)
def test_points_off_the_curve_are_rejected(kem: KemId) -> None:
    pk = bytearray(HPKEPrivateKey.generate(kem).public_key().to_bytes())
    pk[-1] ^= 1
    with pytest.raises(ValidationError):
        HPKEPublicKey.from_bytes(kem, bytes(pk))
    with pytest.raises(ValidationError):
        HPKEPrivateKey.from_bytes(kem, b"\xff" * get_kem(kem).n_sk)  # >= group order


@pytest.mark.parametrize("kem", [KemId.DHKEM_X25519_HKDF_SHA256, KemId.DHKEM_X448_HKDF_SHA512])
def test_all_zero_shared_secret_is_rejected(kem: KemId) -> None:
    """RFC 9180 §7.1.4: a low-order point giving an all-zero DH output must fail."""
    zero = HPKEPublicKey.from_bytes(kem, bytes(get_kem(kem).n_pk))
    for aad in (b"", b"aad"):  # both the cryptography path and the hand-written one
        with pytest.raises(VerificationError):
            suite_for(kem).seal(zero, b"", aad, b"x")
    sk = HPKEPrivateKey.generate(kem)
    with pytest.raises(VerificationError):
        suite_for(kem).open(sk, bytes(get_kem(kem).n_enc), b"", b"", b"x" * 32)


def test_x448_uses_hkdf_sha512_and_its_own_suite_id() -> None:
    kem = get_kem(KemId.DHKEM_X448_HKDF_SHA512)
    assert (kem.n_secret, kem.n_enc, kem.n_pk, kem.n_sk) == (64, 56, 56, 56)
    assert kem.suite_id == b"KEM\x00\x21"


def test_xwing_parameters() -> None:
    """MLKEM768-X25519 (X-Wing) sizes and id per draft-ietf-hpke-pq-03."""
    kem = get_kem(KemId.MLKEM768_X25519)
    assert KemId.MLKEM768_X25519 == 0x647A
    assert (kem.n_secret, kem.n_enc, kem.n_pk, kem.n_sk) == (32, 1120, 1216, 32)
    sk = HPKEPrivateKey.derive(KemId.MLKEM768_X25519, b"ikm")
    pk = sk.public_key().to_bytes()
    # The trailing 32 bytes are the X25519 public key of the expanded seed.
    assert len(pk) == 1184 + 32


def test_derandomised_encap_is_dhkem_only() -> None:
    suite = suite_for(KemId.MLKEM768_X25519)
    pk = HPKEPrivateKey.generate(KemId.MLKEM768_X25519).public_key()
    with pytest.raises(ValueError, match="derandomised"):
        suite.setup_base_s(pk, b"", ikm_e=b"x" * 32)
