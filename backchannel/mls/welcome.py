"""GroupInfo signing, Welcome creation and joining, and the external-join base (RFC 9420 §12.4.3).

Theory of operation. A committer signs a GroupInfo for the new epoch, encrypts it
under the ``welcome_secret``, and seals a GroupSecrets (``joiner_secret``, the path
secret of the common ancestor, the PSK ids) to each new member's init key. A joiner
(:func:`open_welcome`) reverses this: find its entry by KeyPackageRef, open the
GroupSecrets, resolve PSKs, open and verify the GroupInfo, import and validate the
tree (from the ``ratchet_tree`` extension or given out of band), check the
confirmation tag and derive its private keys. :func:`external_join_base` verifies a
published GroupInfo and turns it into a :class:`~.commit.CommitBase` from which a
non-member builds an external commit (§12.4.3.2).
"""

from __future__ import annotations

import secrets as secrets_module
from collections.abc import Sequence
from dataclasses import dataclass, field

from .commit import CommitBase, PskResolver, create_commit
from .credentials import Credential
from .crypto.hpke import HPKEPrivateKey, HPKEPublicKey
from .crypto.labels import (
    decrypt_with_label,
    encrypt_with_label,
    sign_with_label,
    verify_with_label,
)
from .crypto.signatures import SignaturePrivateKey
from .crypto.suites import CipherSuiteImpl, get_cipher_suite
from .errors import DecodeError, ValidationError, VerificationError
from .extensions import Extension, ExtensionType, ExternalPub, find_extension
from .framing import MLSMessage, Sender, WireFormat
from .group_state import GroupConfig, GroupState, initial_state
from .key_package_ops import KeyPackageBundle, default_capabilities
from .key_packages import KeyPackage
from .key_schedule import (
    EpochSecrets,
    external_init_encap,
    external_key_pair,
    welcome_key_nonce,
    welcome_secret,
)
from .messages import (
    EncryptedGroupSecrets,
    ExternalInit,
    GroupContext,
    GroupInfo,
    GroupInfoTBS,
    GroupSecrets,
    PathSecret,
    PreSharedKey,
    PreSharedKeyID,
    Remove,
    Welcome,
)
from .protection import protect_public_message
from .psk import psk_secret
from .transcript import interim_transcript_hash
from .tree import RatchetTree
from .tree_structs import (
    Capabilities,
    HPKECiphertext,
    HPKEPublicKeyBytes,
    LeafNode,
    LeafNodeSource,
    SignaturePublicKeyBytes,
)
from .tree_validation import PROTOCOL_VERSION_MLS10, validate_ratchet_tree
from .treekem import TreePrivateKeys
from .validation import ProposalEntry

__all__ = [
    "JoinedEpoch",
    "OpenedWelcome",
    "build_welcome",
    "decrypt_welcome",
    "external_join_base",
    "group_info_extensions",
    "join_by_external_commit",
    "open_welcome",
    "sign_group_info",
    "verify_group_info",
    "verify_group_info_signature",
]

_GROUP_INFO_LABEL = "GroupInfoTBS"
_WELCOME_LABEL = "Welcome"


def sign_group_info(
    cs: CipherSuiteImpl,
    context: GroupContext,
    extensions: tuple[Extension, ...],
    confirmation_tag: bytes,
    signer: int,
    signature_key: SignaturePrivateKey,
) -> GroupInfo:
    """A GroupInfo signed with ``SignWithLabel(., "GroupInfoTBS", .)`` (§12.4.3)."""
    tbs = GroupInfoTBS(context, extensions, confirmation_tag, signer)
    signature = sign_with_label(cs, signature_key, _GROUP_INFO_LABEL, tbs.to_bytes())
    return GroupInfo(context, extensions, confirmation_tag, signer, signature)


def verify_group_info_signature(
    cs: CipherSuiteImpl, group_info: GroupInfo, signature_key: bytes
) -> None:
    """Verify a GroupInfo's signature with a given signer key (§12.4.3).

    Raises:
        VerificationError: the signature does not verify or the key is invalid.
    """
    try:
        verify_with_label(
            cs, signature_key, _GROUP_INFO_LABEL, group_info.tbs_bytes(), group_info.signature
        )
    except ValidationError:
        raise VerificationError("GroupInfo signer key is invalid") from None


def verify_group_info(cs: CipherSuiteImpl, group_info: GroupInfo, tree: RatchetTree) -> None:
    """Verify a GroupInfo's signature with the signer's leaf key in ``tree`` (§12.4.3.1).

    Raises:
        ValidationError: the signer's leaf is blank or outside the tree.
        VerificationError: the signature does not verify.
    """
    if group_info.signer >= tree.n_leaves:
        raise ValidationError("GroupInfo signer is outside the tree")
    leaf = tree.leaf_node(group_info.signer)
    if leaf is None:
        raise ValidationError("GroupInfo signer is a blank leaf")
    verify_group_info_signature(cs, group_info, leaf.signature_key)


def group_info_extensions(
    cs: CipherSuiteImpl, tree: RatchetTree | None, external_secret: bytes | None
) -> tuple[Extension, ...]:
    """GroupInfo extensions: ``ratchet_tree`` (§12.4.3.3) and ``external_pub`` (§12.4.3.2)."""
    out: list[Extension] = []
    if tree is not None:
        out.append(tree.to_extension().to_extension())
    if external_secret is not None:
        key = external_key_pair(cs, external_secret).public_key().to_bytes()
        out.append(ExternalPub(key).to_extension())
    return tuple(out)


def build_welcome(
    cs: CipherSuiteImpl,
    group_info: GroupInfo,
    joiner_secret: bytes,
    psk_secret_value: bytes | None,
    psks: Sequence[PreSharedKeyID],
    new_members: Sequence[tuple[KeyPackage, bytes, bytes | None]],
) -> Welcome:
    """Seal a GroupInfo and one GroupSecrets per new member (§12.4.3.1).

    Args:
        new_members: ``(KeyPackage, KeyPackageRef, path_secret or None)`` each.
    """
    key, nonce = welcome_key_nonce(cs, welcome_secret(cs, joiner_secret, psk_secret_value))
    encrypted_group_info = cs.aead_seal(key, nonce, b"", group_info.to_bytes())
    sealed: list[EncryptedGroupSecrets] = []
    for kp, ref, path_secret in new_members:
        secrets = GroupSecrets(
            joiner_secret,
            PathSecret(path_secret) if path_secret is not None else None,
            tuple(psks),
        )
        kem_output, ciphertext = encrypt_with_label(
            cs, kp.init_key, _WELCOME_LABEL, encrypted_group_info, secrets.to_bytes()
        )
        sealed.append(EncryptedGroupSecrets(ref, HPKECiphertext(kem_output, ciphertext)))
    return Welcome(cs.suite, tuple(sealed), encrypted_group_info)


@dataclass(frozen=True, slots=True, eq=False)
class JoinedEpoch:
    """What a Welcome yields: the first epoch of a new member."""

    context: GroupContext
    tree: RatchetTree
    private_keys: TreePrivateKeys
    secrets: EpochSecrets = field(repr=False)
    interim_transcript_hash: bytes
    confirmation_tag: bytes
    #: PSK ids the Welcome named (e.g. a reinit or branch resumption PSK).
    psks: tuple[PreSharedKeyID, ...]
    #: Leaf index of the member who signed the GroupInfo (the inviting committer).
    signer: int = 0


def _tree_for(group_info: GroupInfo, ratchet_tree: RatchetTree | None) -> RatchetTree:
    ext = find_extension(group_info.extensions, ExtensionType.RATCHET_TREE)
    if ext is not None:
        try:
            return RatchetTree.from_extension(ext)
        except DecodeError:
            raise ValidationError("ratchet_tree extension is malformed") from None
    if ratchet_tree is None:
        raise ValidationError("no ratchet tree in the GroupInfo and none given")
    return ratchet_tree


def _checked_tree(
    cs: CipherSuiteImpl, group_info: GroupInfo, ratchet_tree: RatchetTree | None, now: int | None
) -> RatchetTree:
    context = group_info.group_context
    if context.version != PROTOCOL_VERSION_MLS10 or context.cipher_suite != cs.suite:
        raise ValidationError("GroupInfo version or cipher suite is wrong")
    tree = _tree_for(group_info, ratchet_tree)
    verify_group_info(cs, group_info, tree)
    validate_ratchet_tree(tree, context, now=now)
    return tree


@dataclass(frozen=True, slots=True, eq=False)
class OpenedWelcome:
    """A Welcome's decrypted contents, not yet checked against a tree (§12.4.3.1)."""

    #: The GroupSecrets sealed to us.
    group_secrets: GroupSecrets = field(repr=False)
    #: The GroupInfo (signature not yet verified).
    group_info: GroupInfo
    #: The PSK secret of the Welcome's PSKs (None without PSKs).
    psk_secret: bytes | None = field(repr=False)

    def epoch_secrets(self, cs: CipherSuiteImpl) -> EpochSecrets:
        """The epoch's secrets, after checking the GroupInfo's confirmation tag.

        Raises:
            VerificationError: the confirmation tag does not match.
        """
        context = self.group_info.group_context
        secrets = EpochSecrets.from_joiner_secret(
            cs, self.group_secrets.joiner_secret, self.psk_secret, context.to_bytes()
        )
        secrets.verify_confirmation_tag(
            context.confirmed_transcript_hash, self.group_info.confirmation_tag
        )
        return secrets


def decrypt_welcome(
    welcome: Welcome,
    key_package_ref: bytes,
    init_private_key: HPKEPrivateKey,
    resolve_psk: PskResolver,
) -> OpenedWelcome:
    """Find our entry, open the GroupSecrets and the GroupInfo of a Welcome (§12.4.3.1).

    Raises:
        ValidationError: no entry for ``key_package_ref``, or a PSK is missing.
        VerificationError: a decryption fails.
        DecodeError: decrypted content is malformed.
    """
    cs = get_cipher_suite(welcome.cipher_suite)
    mine = [s for s in welcome.secrets if s.new_member == key_package_ref]
    if not mine:
        raise ValidationError("Welcome holds no secrets for this KeyPackage")
    sealed = mine[0].encrypted_group_secrets
    group_secrets = GroupSecrets.from_bytes(
        decrypt_with_label(
            cs,
            init_private_key,
            _WELCOME_LABEL,
            welcome.encrypted_group_info,
            sealed.kem_output,
            sealed.ciphertext,
        )
    )
    for psk_id in group_secrets.psks:
        if len(psk_id.psk_nonce) != cs.n_h:
            raise ValidationError("psk_nonce must be KDF.Nh bytes")
    psk = (
        psk_secret(cs, [(p, resolve_psk(p)) for p in group_secrets.psks])
        if group_secrets.psks
        else None
    )
    key, nonce = welcome_key_nonce(cs, welcome_secret(cs, group_secrets.joiner_secret, psk))
    group_info = GroupInfo.from_bytes(cs.aead_open(key, nonce, b"", welcome.encrypted_group_info))
    return OpenedWelcome(group_secrets, group_info, psk)


def open_welcome(
    welcome: Welcome,
    bundle: KeyPackageBundle,
    resolve_psk: PskResolver,
    *,
    ratchet_tree: RatchetTree | None = None,
    now: int | None = None,
) -> JoinedEpoch:
    """Join from a Welcome with the KeyPackage it was made for (§12.4.3.1).

    Args:
        welcome: the decoded Welcome.
        bundle: the KeyPackage and its private keys.
        resolve_psk: returns the secret of each PSK the Welcome names.
        ratchet_tree: the tree, when the GroupInfo does not carry it.
        now: seconds since the Unix epoch, for leaf lifetimes (None skips them).

    Raises:
        ValidationError: not for this KeyPackage, wrong suite, missing tree or PSK,
            or an invalid tree.
        VerificationError: a decryption, signature, hash or confirmation tag fails.
        DecodeError: decrypted content is malformed.
    """
    kp = bundle.key_package
    if welcome.cipher_suite != kp.cipher_suite:
        raise ValidationError("Welcome is for another cipher suite")
    cs = get_cipher_suite(welcome.cipher_suite)
    opened = decrypt_welcome(welcome, kp.reference, bundle.init_private_key, resolve_psk)
    group_info = opened.group_info
    tree = _checked_tree(cs, group_info, ratchet_tree, now)
    context = group_info.group_context
    my_leaf = tree.find_leaf(kp.leaf_node)
    if my_leaf is None:
        raise ValidationError("the Welcome's tree does not contain our leaf")
    secrets = opened.epoch_secrets(cs)
    path = opened.group_secrets.path_secret
    keys = TreePrivateKeys.for_joiner(
        cs,
        tree,
        my_leaf,
        bundle.encryption_private_key,
        group_info.signer,
        path.path_secret if path is not None else None,
    )
    interim = interim_transcript_hash(
        cs, context.confirmed_transcript_hash, group_info.confirmation_tag
    )
    return JoinedEpoch(
        context,
        tree,
        keys,
        secrets,
        interim,
        group_info.confirmation_tag,
        opened.group_secrets.psks,
        group_info.signer,
    )


def external_join_base(
    group_info: GroupInfo,
    leaf_template: LeafNode,
    *,
    ratchet_tree: RatchetTree | None = None,
    now: int | None = None,
) -> tuple[CommitBase, bytes]:
    """Verify a GroupInfo and prepare an external commit on it (§12.4.3.2).

    Returns:
        ``(CommitBase, kem_output)``: the base for :func:`.commit.create_commit` with
        the external init secret, and the ExternalInit's KEM output.

    Raises:
        ValidationError: no ``external_pub``, or an invalid tree.
        VerificationError: signature or tree hash fails.
    """
    cs = get_cipher_suite(group_info.group_context.cipher_suite)
    tree = _checked_tree(cs, group_info, ratchet_tree, now)
    ext = find_extension(group_info.extensions, ExtensionType.EXTERNAL_PUB)
    if ext is None:
        raise ValidationError("GroupInfo has no external_pub extension")
    try:
        external_pub = HPKEPublicKey.from_bytes(
            cs.kem_id, ExternalPub.from_extension(ext).external_pub
        )
    except DecodeError:
        raise ValidationError("external_pub extension is malformed") from None
    kem_output, init_secret = external_init_encap(cs, external_pub)
    context = group_info.group_context
    interim = interim_transcript_hash(
        cs, context.confirmed_transcript_hash, group_info.confirmation_tag
    )
    base = CommitBase(
        context,
        tree,
        interim,
        init_secret,
        Sender.new_member_commit(),
        None,
        leaf_template,
    )
    return base, kem_output


def join_by_external_commit(
    group_info: GroupInfo,
    credential: Credential,
    signature_key: SignaturePrivateKey,
    config: GroupConfig,
    *,
    now: int | None,
    ratchet_tree: RatchetTree | None,
    capabilities: Capabilities | None,
    resync_leaf: int | None,
    psks: dict[bytes, bytes],
    authenticated_data: bytes,
) -> tuple[GroupState, bytes]:
    """Build an external commit from a GroupInfo and the joiner's state after it (§12.4.3.2).

    The commit carries ExternalInit, an optional Remove of ``resync_leaf``, one
    PreSharedKey per entry of ``psks``, and a path; it is a PublicMessage.

    Returns:
        The joiner's state in the new epoch, and the encoded commit MLSMessage.
    """
    cs = get_cipher_suite(group_info.group_context.cipher_suite)
    caps = capabilities or default_capabilities(cs.suite, (credential.credential_type,))
    template = LeafNode(
        encryption_key=HPKEPublicKeyBytes(b""),
        signature_key=SignaturePublicKeyBytes(signature_key.public_key().to_bytes()),
        credential=credential,
        capabilities=caps,
        leaf_node_source=LeafNodeSource.COMMIT,
        lifetime=None,
        parent_hash=b"",
        extensions=(),
        signature=b"",
    )
    base, kem_output = external_join_base(group_info, template, ratchet_tree=ratchet_tree, now=now)
    entries = [ProposalEntry(ExternalInit(kem_output), base.sender)]
    if resync_leaf is not None:
        entries.append(ProposalEntry(Remove(resync_leaf), base.sender))
    for psk_id in psks:
        pid = PreSharedKeyID.external(psk_id, secrets_module.token_bytes(cs.n_h))
        entries.append(ProposalEntry(PreSharedKey(pid), base.sender))

    def resolve(psk_id: PreSharedKeyID) -> bytes:
        value = psks.get(psk_id.psk_id or b"")
        if value is None:
            raise ValidationError("a pre-shared key the commit needs is not available")
        return value

    created = create_commit(
        cs,
        base,
        entries,
        signature_key,
        resolve,
        wire_format=WireFormat.PUBLIC_MESSAGE,
        with_path=True,
        now=now,
        authenticated_data=authenticated_data,
    )
    nxt = created.next
    epoch = nxt.established()
    assert nxt.secrets is not None  # established() has checked it
    state = initial_state(config, signature_key, epoch, nxt.secrets)
    state.external_psks = tuple(sorted(psks.items()))
    message = protect_public_message(cs, created.content, base.context, b"")
    return state, MLSMessage(message).to_bytes()
