"""Pre-shared keys: the psk_secret that folds PSKs into the key schedule (RFC 9420 §8.4).

Resolving a :class:`~backchannel.mls.messages.PreSharedKeyID` to its secret value
(external PSK store, or the resumption PSK of an earlier epoch) is the caller's job;
this module only combines resolved ``(id, psk)`` pairs, in proposal order::

    psk_extracted_[i] = KDF.Extract(0, psk_[i])
    psk_input_[i]     = ExpandWithLabel(psk_extracted_[i], "derived psk",
                                        PSKLabel(id_[i], i, n), KDF.Nh)
    psk_secret_[i+1]  = KDF.Extract(psk_input_[i], psk_secret_[i])
"""

from __future__ import annotations

from collections.abc import Sequence

from .crypto.labels import expand_with_label
from .crypto.suites import CipherSuiteImpl
from .errors import ValidationError
from .messages import PreSharedKeyID, PSKLabel, PSKType

__all__ = ["check_psk_nonce", "psk_secret"]

#: At most this many PSKs can be combined: PSKLabel's ``index``/``count`` are uint16.
_MAX_PSKS = 0xFFFF


def check_psk_nonce(cs: CipherSuiteImpl, psk_id: PreSharedKeyID) -> None:
    """Check the nonce length rule: ``psk_nonce`` is KDF.Nh bytes (RFC 9420 §8.4).

    Raises:
        ValidationError: the nonce has the wrong length.
    """
    if len(psk_id.psk_nonce) != cs.n_h:
        raise ValidationError("psk_nonce must be KDF.Nh bytes")


def psk_secret(cs: CipherSuiteImpl, psks: Sequence[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """The psk_secret of a commit's PSKs (RFC 9420 §8.4).

    Args:
        cs: the group's ciphersuite.
        psks: ``(PreSharedKeyID, psk)`` pairs in the order of the commit's PreSharedKey
            proposals. An empty sequence gives the all-zero secret.

    Raises:
        ValidationError: more than 65535 PSKs, or an id whose type is unknown.
    """
    count = len(psks)
    if count > _MAX_PSKS:
        raise ValidationError("too many pre-shared keys")
    zero = bytes(cs.n_h)
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        if psk_id.psktype not in (PSKType.EXTERNAL, PSKType.RESUMPTION):
            raise ValidationError("unknown PSK type")
        extracted = cs.kdf_extract(zero, psk)
        label = PSKLabel(psk_id, index, count).to_bytes()
        psk_input = expand_with_label(cs, extracted, "derived psk", label, cs.n_h)
        secret = cs.kdf_extract(psk_input, secret)
    return secret
