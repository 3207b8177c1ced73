"""Labeled MLS crypto: ExpandWithLabel, SignWithLabel, EncryptWithLabel, RefHash (RFC 9420 §5).

Labels may be given as ``str`` (encoded as ASCII/UTF-8) or ``bytes``; every labeled
function except :func:`ref_hash` prefixes them with ``"MLS 1.0 "`` as the RFC says.
"""

from __future__ import annotations

from ..codec import Writer, encode_varint
from .hpke import HPKEPrivateKey, HPKEPublicKey
from .signatures import SignaturePrivateKey, SignaturePublicKey
from .suites import CipherSuiteImpl

__all__ = [
    "decrypt_with_label",
    "derive_secret",
    "derive_tree_secret",
    "encrypt_with_label",
    "expand_with_label",
    "make_key_package_ref",
    "make_proposal_ref",
    "ref_hash",
    "sign_with_label",
    "verify_with_label",
]

_PREFIX = b"MLS 1.0 "

# Encoded constant parts of the labeled structs, per (label[, length]). Labels come
# from a small fixed set (plus application exporter labels), so the caches stay small;
# they stop growing at _CACHE_MAX entries all the same.
_CACHE_MAX = 1024
_OPAQUE_LABELS: dict[str | bytes, bytes] = {}
_KDF_LABEL_PREFIXES: dict[tuple[str | bytes, int], bytes] = {}


def _label(label: str | bytes) -> bytes:
    return _PREFIX + (label.encode() if isinstance(label, str) else bytes(label))


def _opaque_label(label: str | bytes) -> bytes:
    """``opaque label<V> = "MLS 1.0 " + Label``, encoded."""
    cacheable = type(label) is str or type(label) is bytes
    if cacheable:
        cached = _OPAQUE_LABELS.get(label)
        if cached is not None:
            return cached
    encoded = Writer().opaque(_label(label)).to_bytes()
    if cacheable and len(_OPAQUE_LABELS) < _CACHE_MAX:
        _OPAQUE_LABELS[label] = encoded
    return encoded


def _kdf_label_prefix(label: str | bytes, length: int) -> bytes:
    """``uint16 length; opaque label<V>`` of a KDFLabel, encoded."""
    cacheable = type(label) is str or type(label) is bytes
    if cacheable:
        cached = _KDF_LABEL_PREFIXES.get((label, length))
        if cached is not None:
            return cached
    encoded = Writer().uint16(length).raw(_opaque_label(label)).to_bytes()
    if cacheable and len(_KDF_LABEL_PREFIXES) < _CACHE_MAX:
        _KDF_LABEL_PREFIXES[(label, length)] = encoded
    return encoded


def expand_with_label(
    cs: CipherSuiteImpl, secret: bytes, label: str | bytes, context: bytes, length: int
) -> bytes:
    """ExpandWithLabel(Secret, Label, Context, Length) (RFC 9420 §5.1).

    ``KDF.Expand(Secret, KDFLabel, Length)`` where ``KDFLabel`` is
    ``{uint16 length; opaque label<V> = "MLS 1.0 " + Label; opaque context<V>}``.
    """
    kdf_label = _kdf_label_prefix(label, length) + encode_varint(len(context)) + context
    return cs.kdf_expand(secret, kdf_label, length)


def derive_secret(cs: CipherSuiteImpl, secret: bytes, label: str | bytes) -> bytes:
    """DeriveSecret(Secret, Label) = ExpandWithLabel(Secret, Label, "", KDF.Nh) (§5.1)."""
    return expand_with_label(cs, secret, label, b"", cs.n_h)


def derive_tree_secret(
    cs: CipherSuiteImpl, secret: bytes, label: str | bytes, generation: int, length: int
) -> bytes:
    """DeriveTreeSecret(Secret, Label, Generation, Length) (RFC 9420 §9.1).

    ExpandWithLabel with the ``uint32`` generation as context.
    """
    return expand_with_label(cs, secret, label, generation.to_bytes(4, "big"), length)


def _sign_content(label: str | bytes, content: bytes) -> bytes:
    return _opaque_label(label) + encode_varint(len(content)) + content


def sign_with_label(
    cs: CipherSuiteImpl, key: SignaturePrivateKey, label: str | bytes, content: bytes
) -> bytes:
    """SignWithLabel(SignatureKey, Label, Content) (RFC 9420 §5.1.2).

    Signs ``SignContent {opaque label<V> = "MLS 1.0 " + Label; opaque content<V>}``.

    Raises:
        ValueError: the key's scheme is not the suite's signature scheme.
    """
    if key.scheme != cs.signature_scheme:
        raise ValueError("signature key scheme does not match the cipher suite")
    return key.sign(_sign_content(label, content))


def verify_with_label(
    cs: CipherSuiteImpl,
    key: SignaturePublicKey | bytes,
    label: str | bytes,
    content: bytes,
    signature: bytes,
) -> None:
    """VerifyWithLabel(VerificationKey, Label, Content, SignatureValue) (RFC 9420 §5.1.2).

    Args:
        key: a loaded key, or the encoded ``SignaturePublicKey`` bytes from the wire.

    Raises:
        ValidationError: ``key`` bytes are not a valid key of the suite's scheme.
        VerificationError: the signature does not verify.
    """
    if isinstance(key, bytes | bytearray):
        key = SignaturePublicKey.from_bytes(cs.signature_scheme, bytes(key))
    elif key.scheme != cs.signature_scheme:
        raise ValueError("signature key scheme does not match the cipher suite")
    key.verify(signature, _sign_content(label, content))


def _encrypt_context(label: str | bytes, context: bytes) -> bytes:
    return _opaque_label(label) + encode_varint(len(context)) + context


def encrypt_with_label(
    cs: CipherSuiteImpl,
    public_key: HPKEPublicKey | bytes,
    label: str | bytes,
    context: bytes,
    plaintext: bytes,
) -> tuple[bytes, bytes]:
    """EncryptWithLabel(PublicKey, Label, Context, Plaintext) -> (kem_output, ciphertext).

    ``SealBase(PublicKey, EncryptContext, "", Plaintext)`` with
    ``EncryptContext {opaque label<V> = "MLS 1.0 " + Label; opaque context<V>}``
    (RFC 9420 §5.1.3).

    Raises:
        ValidationError: ``public_key`` is not a valid key of the suite's KEM.
    """
    if isinstance(public_key, bytes | bytearray):
        public_key = HPKEPublicKey.from_bytes(cs.kem_id, bytes(public_key))
    return cs.hpke.seal(public_key, _encrypt_context(label, context), b"", plaintext)


def decrypt_with_label(
    cs: CipherSuiteImpl,
    private_key: HPKEPrivateKey,
    label: str | bytes,
    context: bytes,
    kem_output: bytes,
    ciphertext: bytes,
) -> bytes:
    """DecryptWithLabel(PrivateKey, Label, Context, KEMOutput, Ciphertext) (RFC 9420 §5.1.3).

    Raises:
        VerificationError: decryption failed (the reason is not revealed).
    """
    return cs.hpke.open(private_key, kem_output, _encrypt_context(label, context), b"", ciphertext)


def ref_hash(cs: CipherSuiteImpl, label: str | bytes, value: bytes) -> bytes:
    """RefHash(label, value) = Hash(RefHashInput{opaque label<V>; opaque value<V>}) (§5.2).

    The label is used as given (no ``"MLS 1.0 "`` prefix is added).
    """
    raw = label.encode() if isinstance(label, str) else bytes(label)
    return cs.hash(Writer().opaque(raw).opaque(value).to_bytes())


def make_key_package_ref(cs: CipherSuiteImpl, key_package: bytes) -> bytes:
    """MakeKeyPackageRef(value) over the encoded KeyPackage (RFC 9420 §5.2)."""
    return ref_hash(cs, "MLS 1.0 KeyPackage Reference", key_package)


def make_proposal_ref(cs: CipherSuiteImpl, authenticated_content: bytes) -> bytes:
    """MakeProposalRef(value) over the encoded AuthenticatedContent (RFC 9420 §5.2)."""
    return ref_hash(cs, "MLS 1.0 Proposal Reference", authenticated_content)
