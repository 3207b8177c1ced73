"""Message protection: FramedContent signatures, Public- and PrivateMessage (RFC 9420 §6).

Theory of operation: a sender first *authenticates* content (signs its
FramedContentTBS, §6.1), which gives an AuthenticatedContent; commits add their
confirmation tag in between, since it depends on the signature through the transcript
hash. Then it *protects* the AuthenticatedContent either as a PublicMessage (adding a
membership tag for member senders, §6.2) or as a PrivateMessage (content encrypted under
a secret-tree key with a reuse guard and zero padding, sender data encrypted under a key
sampled from that ciphertext, §6.3). Receivers run the same steps backwards; every
failure raises, and a PrivateMessage's ratchet key is consumed only once the message has
fully verified, so a forged message cannot burn a key.

Whose signature key belongs to which leaf is the ratchet tree's business, so callers pass
the key (or, for PrivateMessage, a lookup by leaf index since the sender is only known
after decrypting the sender data).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from .crypto.labels import sign_with_label, verify_with_label
from .crypto.signatures import SignaturePrivateKey, SignaturePublicKey
from .crypto.suites import CipherSuiteImpl
from .errors import DecodeError, UsageError, ValidationError, VerificationError
from .framing import (
    AuthenticatedContent,
    AuthenticatedContentTBM,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    FramedContentTBS,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
    SenderType,
    WireFormat,
)
from .messages import GroupContext
from .secret_tree import RatchetType, SecretTree, sender_data_key_nonce

__all__ = [
    "SignatureKeyLookup",
    "authenticate",
    "membership_tag",
    "protect_private_message",
    "protect_public_message",
    "sign_framed_content",
    "unprotect_private_message",
    "unprotect_public_message",
    "verify_framed_content",
]

#: Finds the signature key of the member at a leaf index (raises if there is none).
SignatureKeyLookup = Callable[[int], SignaturePublicKey | bytes]

_TBS_LABEL = "FramedContentTBS"


def _tbs(
    wire_format: WireFormat, content: FramedContent, context: GroupContext | None
) -> FramedContentTBS:
    needs_context = content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT)
    return FramedContentTBS(wire_format, content, context if needs_context else None)


def sign_framed_content(
    cs: CipherSuiteImpl,
    signature_key: SignaturePrivateKey,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
) -> bytes:
    """SignWithLabel(., "FramedContentTBS", FramedContentTBS) (RFC 9420 §6.1).

    Args:
        context: the current GroupContext; used only for member and new-member-commit
            senders, as the RFC says.
    """
    tbs = _tbs(wire_format, content, context)
    return sign_with_label(cs, signature_key, _TBS_LABEL, tbs.to_bytes())


def verify_framed_content(
    cs: CipherSuiteImpl,
    signature_key: SignaturePublicKey | bytes,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
    signature: bytes,
) -> None:
    """VerifyWithLabel over FramedContentTBS (RFC 9420 §6.1).

    Raises:
        VerificationError: the signature does not verify.
        ValidationError: ``signature_key`` bytes are not a valid key.
    """
    tbs = _tbs(wire_format, content, context)
    verify_with_label(cs, signature_key, _TBS_LABEL, tbs.to_bytes(), signature)


def authenticate(
    cs: CipherSuiteImpl,
    signature_key: SignaturePrivateKey,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    """Sign ``content`` for ``wire_format`` and wrap it as AuthenticatedContent (§6.1).

    Args:
        confirmation_tag: required for commits, forbidden otherwise. A committer that
            needs the signature to compute its tag calls :func:`sign_framed_content`
            and builds the AuthenticatedContent itself.

    Raises:
        UsageError: the confirmation tag is missing for a commit or present otherwise.
    """
    signature = sign_framed_content(cs, signature_key, wire_format, content, context)
    auth = FramedContentAuthData(signature, confirmation_tag)
    auth.check_matches(content.content_type)
    return AuthenticatedContent(wire_format, content, auth)


def membership_tag(
    cs: CipherSuiteImpl,
    membership_key: bytes,
    content: FramedContent,
    auth: FramedContentAuthData,
    context: GroupContext,
) -> bytes:
    """MAC(membership_key, AuthenticatedContentTBM) (RFC 9420 §6.2)."""
    tbs = _tbs(WireFormat.PUBLIC_MESSAGE, content, context)
    return cs.mac(membership_key, AuthenticatedContentTBM(tbs, auth).to_bytes())


def _check_epoch(group_id: bytes, epoch: int, context: GroupContext) -> None:
    if not hmac.compare_digest(group_id, context.group_id) or epoch != context.epoch:
        raise ValidationError("message is for another group or epoch")


def protect_public_message(
    cs: CipherSuiteImpl,
    content: AuthenticatedContent,
    context: GroupContext,
    membership_key: bytes,
) -> PublicMessage:
    """Frame authenticated content as a PublicMessage (RFC 9420 §6.2).

    Raises:
        UsageError: the content is application data (which must be a PrivateMessage),
            or it was signed for another wire format.
    """
    if content.wire_format is not WireFormat.PUBLIC_MESSAGE:
        raise UsageError("content was signed for another wire format")
    if content.content.content_type is ContentType.APPLICATION:
        raise UsageError("application data must be sent as a PrivateMessage")
    tag = None
    if content.content.sender.sender_type is SenderType.MEMBER:
        tag = membership_tag(cs, membership_key, content.content, content.auth, context)
    return PublicMessage(content.content, content.auth, tag)


def unprotect_public_message(
    cs: CipherSuiteImpl,
    message: PublicMessage,
    context: GroupContext,
    membership_key: bytes,
    signature_key: SignaturePublicKey | bytes,
) -> AuthenticatedContent:
    """Check a PublicMessage and return its AuthenticatedContent (RFC 9420 §6.2, §6.1).

    Args:
        context: the GroupContext of the message's epoch.
        membership_key: that epoch's membership key (used for member senders).
        signature_key: the sender's signature key.

    Raises:
        ValidationError: wrong group or epoch, or application content.
        VerificationError: the membership tag or the signature does not verify.
    """
    content = message.content
    _check_epoch(content.group_id, content.epoch, context)
    if content.content_type is ContentType.APPLICATION:
        raise ValidationError("application data must not arrive as a PublicMessage")
    if content.sender.sender_type is SenderType.MEMBER:
        assert message.membership_tag is not None  # PublicMessage enforces it
        expected = membership_tag(cs, membership_key, content, message.auth, context)
        if not hmac.compare_digest(expected, message.membership_tag):
            raise VerificationError("membership tag verification failed")
    verify_framed_content(
        cs, signature_key, WireFormat.PUBLIC_MESSAGE, content, context, message.auth.signature
    )
    return AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, content, message.auth)


def _ratchet_type(content_type: ContentType) -> RatchetType:
    if content_type is ContentType.APPLICATION:
        return RatchetType.APPLICATION
    return RatchetType.HANDSHAKE


def _guarded_nonce(nonce: bytes, reuse_guard: bytes) -> bytes:
    if len(reuse_guard) != 4:
        raise ValueError("reuse_guard must be 4 bytes")
    head = int.from_bytes(nonce[:4], "big") ^ int.from_bytes(reuse_guard, "big")
    return head.to_bytes(4, "big") + nonce[4:]


def _padding(length: int, padding_block: int) -> int:
    if padding_block < 0:
        raise ValueError("padding_block must not be negative")
    if padding_block <= 1:
        return 0
    return -length % padding_block


def protect_private_message(
    cs: CipherSuiteImpl,
    content: AuthenticatedContent,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    *,
    padding_block: int = 0,
    reuse_guard: bytes | None = None,
) -> PrivateMessage:
    """Encrypt authenticated content as a PrivateMessage (RFC 9420 §6.3).

    Takes the next key of the sender's handshake or application ratchet (and so
    advances it), XORs a random 4-byte reuse guard into the nonce, pads the plaintext
    with zero bytes to a multiple of ``padding_block`` (0 or 1: no padding), and seals
    the sender data under a key sampled from the content ciphertext.

    Args:
        content: signed for ``WireFormat.PRIVATE_MESSAGE`` by a member.
        secret_tree: this epoch's secret tree (the sender's own ratchet advances).
        sender_data_secret: this epoch's sender data secret.
        padding_block: pad the encoded PrivateMessageContent to a multiple of this.
        reuse_guard: testing only; a fixed 4-byte reuse guard.

    Raises:
        UsageError: not signed for PrivateMessage, or the sender is not a member.
    """
    framed = content.content
    if content.wire_format is not WireFormat.PRIVATE_MESSAGE:
        raise UsageError("content was signed for another wire format")
    if framed.sender.sender_type is not SenderType.MEMBER or framed.sender.index is None:
        raise UsageError("only members can send a PrivateMessage")
    guard = secrets.token_bytes(4) if reuse_guard is None else reuse_guard
    if len(guard) != 4:
        raise ValueError("reuse_guard must be 4 bytes")
    content_type = framed.content_type
    unpadded = PrivateMessageContent(framed.content, content.auth).to_bytes()
    plaintext = unpadded + bytes(_padding(len(unpadded), padding_block))
    ratchet_key = secret_tree.next(framed.sender.index, _ratchet_type(content_type))
    aad = PrivateContentAAD(framed.group_id, framed.epoch, content_type, framed.authenticated_data)
    ciphertext = cs.aead_seal(
        ratchet_key.key, _guarded_nonce(ratchet_key.nonce, guard), aad.to_bytes(), plaintext
    )
    sender_data = SenderData(framed.sender.index, ratchet_key.generation, guard)
    key, nonce = sender_data_key_nonce(cs, sender_data_secret, ciphertext)
    sd_aad = SenderDataAAD(framed.group_id, framed.epoch, content_type).to_bytes()
    encrypted_sender_data = cs.aead_seal(key, nonce, sd_aad, sender_data.to_bytes())
    return PrivateMessage(
        framed.group_id,
        framed.epoch,
        content_type,
        framed.authenticated_data,
        encrypted_sender_data,
        ciphertext,
    )


def open_sender_data(
    cs: CipherSuiteImpl, message: PrivateMessage, sender_data_secret: bytes
) -> SenderData:
    """Decrypt a PrivateMessage's sender data (RFC 9420 §6.3.2).

    Raises:
        VerificationError: it does not decrypt. DecodeError: it is malformed.
    """
    key, nonce = sender_data_key_nonce(cs, sender_data_secret, message.ciphertext)
    aad = SenderDataAAD(message.group_id, message.epoch, message.content_type).to_bytes()
    return SenderData.from_bytes(cs.aead_open(key, nonce, aad, message.encrypted_sender_data))


def unprotect_private_message(
    cs: CipherSuiteImpl,
    message: PrivateMessage,
    context: GroupContext,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    signature_keys: SignatureKeyLookup,
    sender_data: SenderData | None = None,
) -> AuthenticatedContent:
    """Decrypt and verify a PrivateMessage (RFC 9420 §6.3, §6.1).

    The ratchet key is consumed (and deleted) only after decryption, decoding and the
    signature check have all succeeded.

    Args:
        context: the GroupContext of the message's epoch.
        secret_tree: that epoch's secret tree.
        sender_data_secret: that epoch's sender data secret.
        signature_keys: returns the signature key of the member at a leaf index; it
            should raise ValidationError for a blank or unknown leaf.
        sender_data: the message's sender data if the caller already decrypted it
            with :func:`open_sender_data` (saves doing it twice).

    Raises:
        ValidationError: wrong group or epoch, a bad leaf index or generation (reused,
            too old, too far ahead).
        VerificationError: sender data, content or signature does not verify.
        DecodeError: the decrypted sender data or content is malformed.
    """
    _check_epoch(message.group_id, message.epoch, context)
    if sender_data is None:
        sender_data = open_sender_data(cs, message, sender_data_secret)
    ratchet_type = _ratchet_type(message.content_type)
    ratchet_key = secret_tree.get(sender_data.leaf_index, ratchet_type, sender_data.generation)
    aad = PrivateContentAAD(
        message.group_id, message.epoch, message.content_type, message.authenticated_data
    ).to_bytes()
    plaintext = cs.aead_open(
        ratchet_key.key,
        _guarded_nonce(ratchet_key.nonce, sender_data.reuse_guard),
        aad,
        message.ciphertext,
    )
    try:
        inner = PrivateMessageContent.from_bytes(plaintext, message.content_type)
    except DecodeError:
        raise DecodeError("malformed PrivateMessageContent") from None
    framed = FramedContent(
        message.group_id,
        message.epoch,
        Sender.member(sender_data.leaf_index),
        message.authenticated_data,
        inner.content,
    )
    verify_framed_content(
        cs,
        signature_keys(sender_data.leaf_index),
        WireFormat.PRIVATE_MESSAGE,
        framed,
        context,
        inner.auth.signature,
    )
    secret_tree.consume(sender_data.leaf_index, ratchet_type, sender_data.generation)
    return AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, framed, inner.auth)
