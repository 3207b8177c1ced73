"""The MLS key schedule: epoch, joiner and welcome secrets, exporter, external init (RFC 9420 §8).

Theory of operation: an epoch's secrets come from the previous epoch's ``init_secret``,
the commit secret, the PSK secret and the new GroupContext::

    joiner_secret = ExpandWithLabel(Extract(init_secret, commit_secret), "joiner",
                                    GroupContext, Nh)
    member_secret = Extract(joiner_secret, psk_secret)
    welcome_secret = DeriveSecret(member_secret, "welcome")
    epoch_secret  = ExpandWithLabel(member_secret, "epoch", GroupContext, Nh)
    <name>_secret = DeriveSecret(epoch_secret, <label>)   (Table 4)

(``Extract(salt, ikm)``: the value above an Extract in the RFC's diagram is the salt.)
The GroupContext is passed in already encoded, so this module does not depend on the
wire structs. Everything here is pure; nothing is kept between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .crypto.hpke import HPKEPrivateKey, HPKEPublicKey
from .crypto.labels import derive_secret, expand_with_label
from .crypto.suites import CipherSuiteImpl

__all__ = [
    "EpochSecrets",
    "external_init_decap",
    "external_init_encap",
    "external_key_pair",
    "joiner_secret",
    "mls_exporter",
    "welcome_key_nonce",
    "welcome_secret",
    "zero_secret",
]

_EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


def zero_secret(cs: CipherSuiteImpl) -> bytes:
    """The all-zero vector of length KDF.Nh, used for an absent commit or PSK secret."""
    return bytes(cs.n_h)


def joiner_secret(
    cs: CipherSuiteImpl, init_secret: bytes, commit_secret: bytes, group_context: bytes
) -> bytes:
    """joiner_secret of the new epoch (RFC 9420 §8).

    Args:
        cs: the group's ciphersuite.
        init_secret: ``init_secret`` of the previous epoch (salt of the Extract).
        commit_secret: the commit secret, or :func:`zero_secret` without a path.
        group_context: the encoded GroupContext of the new epoch.
    """
    prk = cs.kdf_extract(init_secret, commit_secret)
    return expand_with_label(cs, prk, "joiner", group_context, cs.n_h)


def _member_secret(cs: CipherSuiteImpl, joiner: bytes, psk_secret: bytes | None) -> bytes:
    return cs.kdf_extract(joiner, zero_secret(cs) if psk_secret is None else psk_secret)


def welcome_secret(cs: CipherSuiteImpl, joiner: bytes, psk_secret: bytes | None) -> bytes:
    """welcome_secret = DeriveSecret(Extract(joiner_secret, psk_secret), "welcome") (§8)."""
    return derive_secret(cs, _member_secret(cs, joiner, psk_secret), "welcome")


def welcome_key_nonce(cs: CipherSuiteImpl, welcome: bytes) -> tuple[bytes, bytes]:
    """The AEAD key and nonce protecting a Welcome's GroupInfo (RFC 9420 §12.4.3.1)."""
    return (
        expand_with_label(cs, welcome, "key", b"", cs.n_k),
        expand_with_label(cs, welcome, "nonce", b"", cs.n_n),
    )


def mls_exporter(
    cs: CipherSuiteImpl, exporter_secret: bytes, label: str | bytes, context: bytes, length: int
) -> bytes:
    """MLS-Exporter(Label, Context, Length) (RFC 9420 §8.5).

    ``ExpandWithLabel(DeriveSecret(exporter_secret, Label), "exported", Hash(Context),
    Length)``.
    """
    secret = derive_secret(cs, exporter_secret, label)
    return expand_with_label(cs, secret, "exported", cs.hash(context), length)


def external_key_pair(cs: CipherSuiteImpl, external_secret: bytes) -> HPKEPrivateKey:
    """The external key pair: KEM.DeriveKeyPair(external_secret) (RFC 9420 §8.3)."""
    return HPKEPrivateKey.derive(cs.kem_id, external_secret)


def external_init_encap(cs: CipherSuiteImpl, external_pub: HPKEPublicKey) -> tuple[bytes, bytes]:
    """A joiner's side of ExternalInit: returns ``(kem_output, init_secret)`` (§8.3).

    ``kem_output, context = SetupBaseS(external_pub, "")`` and
    ``init_secret = context.export("MLS 1.0 external init secret", KDF.Nh)``.
    """
    kem_output, context = cs.hpke.setup_base_s(external_pub, b"")
    return kem_output, context.export(_EXTERNAL_INIT_LABEL, cs.n_h)


def external_init_decap(
    cs: CipherSuiteImpl, external_priv: HPKEPrivateKey, kem_output: bytes
) -> bytes:
    """The group's side of ExternalInit: the new epoch's ``init_secret`` (§8.3).

    Raises:
        VerificationError: ``kem_output`` does not decapsulate.
    """
    context = cs.hpke.setup_base_r(kem_output, external_priv, b"")
    return context.export(_EXTERNAL_INIT_LABEL, cs.n_h)


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """All secrets of one epoch (RFC 9420 §8, Table 4). No secret appears in the repr."""

    #: The group's ciphersuite.
    suite: CipherSuiteImpl
    #: Shared with new members in GroupSecrets.
    joiner_secret: bytes = field(repr=False)
    #: Keys the Welcome's GroupInfo encryption.
    welcome_secret: bytes = field(repr=False)
    #: The epoch secret all others derive from.
    epoch_secret: bytes = field(repr=False)
    #: "sender data": keys sender-data encryption (§6.3.2).
    sender_data_secret: bytes = field(repr=False)
    #: "encryption": root of the secret tree (§9).
    encryption_secret: bytes = field(repr=False)
    #: "exporter": for MLS-Exporter (§8.5).
    exporter_secret: bytes = field(repr=False)
    #: "external": seed of the external key pair (§8.3).
    external_secret: bytes = field(repr=False)
    #: "confirm": key of the confirmation tag (§8.1).
    confirmation_key: bytes = field(repr=False)
    #: "membership": key of the membership tag (§6.2).
    membership_key: bytes = field(repr=False)
    #: "resumption": the resumption PSK (§8.6).
    resumption_psk: bytes = field(repr=False)
    #: "authentication": the epoch authenticator (§8.7).
    epoch_authenticator: bytes = field(repr=False)
    #: "init": the next epoch's init secret.
    init_secret: bytes = field(repr=False)

    @classmethod
    def derive(
        cls,
        cs: CipherSuiteImpl,
        init_secret: bytes,
        commit_secret: bytes | None,
        psk_secret: bytes | None,
        group_context: bytes,
    ) -> EpochSecrets:
        """The secrets of the epoch a commit starts (RFC 9420 §8).

        Args:
            cs: the group's ciphersuite.
            init_secret: the previous epoch's ``init_secret`` (or the random initial one).
            commit_secret: from the UpdatePath; None means the zero vector.
            psk_secret: from §8.4; None means the zero vector (no PSKs).
            group_context: the encoded GroupContext of the new epoch.
        """
        commit = zero_secret(cs) if commit_secret is None else commit_secret
        joiner = joiner_secret(cs, init_secret, commit, group_context)
        return cls.from_joiner_secret(cs, joiner, psk_secret, group_context)

    @classmethod
    def from_joiner_secret(
        cls,
        cs: CipherSuiteImpl,
        joiner: bytes,
        psk_secret: bytes | None,
        group_context: bytes,
    ) -> EpochSecrets:
        """The epoch secrets as a new member computes them from a Welcome (§8, §12.4.3.1)."""
        member = _member_secret(cs, joiner, psk_secret)
        epoch = expand_with_label(cs, member, "epoch", group_context, cs.n_h)
        return cls(
            suite=cs,
            joiner_secret=joiner,
            welcome_secret=derive_secret(cs, member, "welcome"),
            epoch_secret=epoch,
            sender_data_secret=derive_secret(cs, epoch, "sender data"),
            encryption_secret=derive_secret(cs, epoch, "encryption"),
            exporter_secret=derive_secret(cs, epoch, "exporter"),
            external_secret=derive_secret(cs, epoch, "external"),
            confirmation_key=derive_secret(cs, epoch, "confirm"),
            membership_key=derive_secret(cs, epoch, "membership"),
            resumption_psk=derive_secret(cs, epoch, "resumption"),
            epoch_authenticator=derive_secret(cs, epoch, "authentication"),
            init_secret=derive_secret(cs, epoch, "init"),
        )

    def exporter(self, label: str | bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(Label, Context, Length) for this epoch (§8.5)."""
        return mls_exporter(self.suite, self.exporter_secret, label, context, length)

    def external_key_pair(self) -> HPKEPrivateKey:
        """This epoch's external private key; its public key goes in ``external_pub``."""
        return external_key_pair(self.suite, self.external_secret)

    def welcome_key_nonce(self) -> tuple[bytes, bytes]:
        """The key and nonce of this epoch's Welcome GroupInfo encryption."""
        return welcome_key_nonce(self.suite, self.welcome_secret)

    def confirmation_tag(self, confirmed_transcript_hash: bytes) -> bytes:
        """confirmation_tag = MAC(confirmation_key, confirmed_transcript_hash) (§8.1)."""
        return self.suite.mac(self.confirmation_key, confirmed_transcript_hash)

    def verify_confirmation_tag(self, confirmed_transcript_hash: bytes, tag: bytes) -> None:
        """Check a confirmation tag in constant time.

        Raises:
            VerificationError: the tag does not match.
        """
        self.suite.verify_mac(self.confirmation_key, confirmed_transcript_hash, tag)
