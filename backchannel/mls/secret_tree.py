"""The secret tree and per-sender hash ratchets, with deletion of used secrets (RFC 9420 §9).

Theory of operation: the epoch's ``encryption_secret`` sits at the root; each parent's
secret yields its children's with ``ExpandWithLabel(secret, "tree", "left"|"right",
Nh)``, and each leaf's yields a handshake and an application ratchet (§9.1). A ratchet
step at generation ``j`` gives the key, the nonce and the next secret with
``DeriveTreeSecret(secret, "key"|"nonce"|"secret", j, ...)``.

Deletion (§9.2): a node secret is dropped once its children's are derived, a leaf
secret once its two ratchets exist, a ratchet secret once the next one is derived, and
a key/nonce once it has been consumed. (Python cannot promise the bytes are wiped from
memory; we drop every reference so nothing can hand them out again.)

Receiving is two-phase so that a forged message cannot burn a key: :meth:`SecretTree.get`
derives a key without changing any state, and only after the AEAD check succeeds does the
caller :meth:`SecretTree.consume` it. Keys skipped over when a later generation arrives
are kept for out-of-order delivery, within :class:`SenderRatchetConfiguration` bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from . import treemath
from .codec import Reader, Writer
from .crypto.labels import derive_tree_secret, expand_with_label
from .crypto.suites import CipherSuiteImpl
from .errors import DecodeError, InternalError, UsageError, ValidationError

__all__ = [
    "HashRatchet",
    "RatchetKey",
    "RatchetType",
    "SecretTree",
    "SenderRatchetConfiguration",
    "sender_data_key_nonce",
]

_MAX_GENERATION = 0xFFFF_FFFF


class RatchetType(IntEnum):
    """Which of a leaf's two ratchets (§9.1)."""

    #: Keys for proposals and commits sent as PrivateMessage.
    HANDSHAKE = 0
    #: Keys for application messages.
    APPLICATION = 1

    @property
    def label(self) -> str:
        return "handshake" if self is RatchetType.HANDSHAKE else "application"


@dataclass(frozen=True, slots=True)
class SenderRatchetConfiguration:
    """Bounds on out-of-order and skipped-ahead generations for received messages."""

    #: How many generations behind the newest one consumed a message may still arrive.
    out_of_order_tolerance: int = 32
    #: How far past the next expected generation a message may jump (§9.4 DoS bound).
    maximum_forward_distance: int = 1000

    def __post_init__(self) -> None:
        if self.out_of_order_tolerance < 0 or self.maximum_forward_distance < 0:
            raise ValueError("ratchet bounds must not be negative")


@dataclass(frozen=True, slots=True)
class RatchetKey:
    """The AEAD key and nonce of one ratchet generation (§9.1)."""

    #: The generation these belong to.
    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)


class HashRatchet:
    """One sender ratchet (§9.1): derives, hands out and forgets per-generation keys."""

    __slots__ = ("_config", "_cs", "_peeked", "_secret", "_skipped", "next_generation")

    def __init__(
        self, cs: CipherSuiteImpl, secret: bytes, config: SenderRatchetConfiguration
    ) -> None:
        self._cs = cs
        self._config = config
        self._secret: bytes | None = secret
        self._skipped: dict[int, RatchetKey] = {}
        #: The generation the current ratchet secret belongs to.
        self.next_generation = 0
        # What :meth:`get` derived for the next generation, as (ratchet secret it came
        # from, generation, key, following secret), so that the :meth:`consume` which
        # normally follows does not derive it all again. A pure cache of values the
        # ratchet secret already determines (so copies may share it); never saved.
        self._peeked: tuple[bytes, int, RatchetKey, bytes] | None = None

    def __repr__(self) -> str:
        return f"HashRatchet(next_generation={self.next_generation})"

    def _step(self, secret: bytes, generation: int) -> tuple[RatchetKey, bytes]:
        # DeriveTreeSecret(secret, label, generation, length), the context encoded once.
        cs = self._cs
        context = generation.to_bytes(4, "big")
        key = expand_with_label(cs, secret, "key", context, cs.n_k)
        nonce = expand_with_label(cs, secret, "nonce", context, cs.n_n)
        following = expand_with_label(cs, secret, "secret", context, cs.n_h)
        return RatchetKey(generation, key, nonce), following

    def _check(self, generation: int) -> None:
        if not 0 <= generation <= _MAX_GENERATION:
            raise ValidationError("generation out of range")
        if generation in self._skipped:
            return
        if generation < self.next_generation:
            raise ValidationError("generation already used or too old")
        if generation - self.next_generation > self._config.maximum_forward_distance:
            raise ValidationError("generation too far ahead")
        if self._secret is None:
            raise ValidationError("ratchet exhausted")

    def get(self, generation: int) -> RatchetKey:
        """The key and nonce of ``generation``, without changing any state.

        Raises:
            ValidationError: the generation was used, fell out of the out-of-order
                window, or is too far ahead.
        """
        self._check(generation)
        if generation in self._skipped:
            return self._skipped[generation]
        assert self._secret is not None
        secret, current = self._secret, self.next_generation
        if generation == current:
            ratchet_key, following = self._step(secret, generation)
            self._peeked = (secret, generation, ratchet_key, following)
            return ratchet_key
        while current < generation:
            secret = derive_tree_secret(self._cs, secret, "secret", current, self._cs.n_h)
            current += 1
        return self._step(secret, generation)[0]

    def consume(self, generation: int) -> RatchetKey:
        """Return the key and nonce of ``generation`` and forget them (§9.2).

        Generations skipped on the way are kept (within the out-of-order tolerance).

        Raises:
            ValidationError: as for :meth:`get`.
        """
        self._check(generation)
        if generation in self._skipped:
            return self._skipped.pop(generation)
        assert self._secret is not None
        secret = self._secret
        peeked, self._peeked = self._peeked, None
        while True:
            current = self.next_generation
            if peeked is not None and peeked[0] is secret and peeked[1] == current:
                ratchet_key, following = peeked[2], peeked[3]
            else:
                ratchet_key, following = self._step(secret, current)
            peeked = None
            secret = following
            self.next_generation = current + 1
            if current == generation:
                break
            self._skipped[current] = ratchet_key
        self._secret = secret if self.next_generation <= _MAX_GENERATION else None
        oldest = generation - self._config.out_of_order_tolerance
        for old in [g for g in self._skipped if g < oldest]:
            del self._skipped[old]
        return ratchet_key

    def copy(self) -> HashRatchet:
        """An independent copy (keys are immutable values, so this is cheap)."""
        twin = HashRatchet(self._cs, b"", self._config)
        twin._secret = self._secret
        twin._skipped = dict(self._skipped)
        twin.next_generation = self.next_generation
        twin._peeked = self._peeked
        return twin

    def encode(self, w: Writer) -> None:
        """Append the ratchet's state (secret, next generation, kept skipped keys)."""
        w.optional(self._secret, Writer.opaque).uint32(min(self.next_generation, _MAX_GENERATION))
        w.boolean(self.next_generation > _MAX_GENERATION)
        w.vector(
            sorted(self._skipped.values(), key=lambda k: k.generation),
            lambda w2, k: w2.uint32(k.generation).opaque(k.key).opaque(k.nonce),
        )

    @classmethod
    def decode(
        cls, cs: CipherSuiteImpl, r: Reader, config: SenderRatchetConfiguration
    ) -> HashRatchet:
        """Read a ratchet written by :meth:`encode`."""
        ratchet = cls(cs, b"", config)
        ratchet._secret = r.optional(Reader.opaque)
        ratchet.next_generation = r.uint32() + (1 if r.boolean() else 0)
        for key in r.vector(lambda r2: RatchetKey(r2.uint32(), r2.opaque(), r2.opaque())):
            ratchet._skipped[key.generation] = key
        return ratchet

    def next(self) -> RatchetKey:
        """The next unused generation's key, for sending; it is forgotten at once.

        Raises:
            ValidationError: the ratchet has run out of generations.
        """
        if self._secret is None:
            raise ValidationError("ratchet exhausted")
        return self.consume(self.next_generation)


class SecretTree:
    """The secret tree of one epoch (§9), with lazily derived, deleted-after-use secrets."""

    __slots__ = ("_config", "_cs", "_n_leaves", "_nodes", "_owned", "_ratchets")

    def __init__(
        self,
        cs: CipherSuiteImpl,
        encryption_secret: bytes,
        n_leaves: int,
        config: SenderRatchetConfiguration | None = None,
    ) -> None:
        """Start the tree of an epoch.

        Args:
            cs: the group's ciphersuite.
            encryption_secret: the epoch's ``encryption_secret`` (the root's secret).
            n_leaves: the number of leaves of the ratchet tree.
            config: receive-side bounds; defaults to :class:`SenderRatchetConfiguration`.
        """
        if n_leaves < 1:
            raise UsageError("a secret tree needs at least one leaf")
        self._cs = cs
        self._n_leaves = n_leaves
        self._config = config or SenderRatchetConfiguration()
        self._nodes: dict[int, bytes] = {treemath.root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, RatchetType], HashRatchet] = {}
        # Keys of the ratchets this tree owns outright. The others are shared with a
        # tree made by copy() (copy-on-write) and are copied before their first change.
        self._owned: set[tuple[int, RatchetType]] = set()

    def __repr__(self) -> str:
        return f"SecretTree(n_leaves={self._n_leaves})"

    def _path(self, leaf_index: int) -> list[int]:
        if not 0 <= leaf_index < self._n_leaves:
            raise ValidationError("leaf index outside the tree")
        target = treemath.leaf_to_node(leaf_index)
        node = treemath.root(self._n_leaves)
        path = [node]
        while node != target:
            node = treemath.left(node) if target < node else treemath.right(node)
            path.append(node)
        return path

    def _leaf_secret(self, leaf_index: int, *, store: bool) -> bytes:
        path = self._path(leaf_index)
        start = max((i for i, node in enumerate(path) if node in self._nodes), default=None)
        if start is None:
            raise InternalError("leaf secret already deleted")
        secret = self._nodes[path[start]]
        for parent, child in zip(path[start:], path[start + 1 :], strict=False):
            left_secret = expand_with_label(self._cs, secret, "tree", b"left", self._cs.n_h)
            right_secret = expand_with_label(self._cs, secret, "tree", b"right", self._cs.n_h)
            if store:
                del self._nodes[parent]
                self._nodes[treemath.left(parent)] = left_secret
                self._nodes[treemath.right(parent)] = right_secret
            secret = left_secret if child == treemath.left(parent) else right_secret
        if store:
            del self._nodes[path[-1]]
        return secret

    def _new_ratchet(self, leaf_secret: bytes, ratchet_type: RatchetType) -> HashRatchet:
        cs = self._cs
        secret = expand_with_label(cs, leaf_secret, ratchet_type.label, b"", cs.n_h)
        return HashRatchet(cs, secret, self._config)

    def ratchet(self, leaf_index: int, ratchet_type: RatchetType) -> HashRatchet:
        """The ratchet of ``leaf_index``, creating both of the leaf's ratchets if needed.

        Creating them deletes the leaf secret and the node secrets above it that are no
        longer needed (§9.2).

        Raises:
            ValidationError: ``leaf_index`` is outside the tree.
        """
        key = (leaf_index, ratchet_type)
        existing = self._ratchets.get(key)
        if existing is not None:
            if key not in self._owned:
                existing = self._ratchets[key] = existing.copy()
                self._owned.add(key)
            return existing
        leaf_secret = self._leaf_secret(leaf_index, store=True)
        for kind in RatchetType:
            self._ratchets[(leaf_index, kind)] = self._new_ratchet(leaf_secret, kind)
            self._owned.add((leaf_index, kind))
        return self._ratchets[key]

    def copy(self) -> SecretTree:
        """An independent copy, so a caller can try a message and keep the result only on success.

        Cheap whatever the number of ratchets: the two trees share the ratchets until
        either changes one, which copies it first. A ratchet fetched with
        :meth:`ratchet` before the copy must be fetched again before it is used after it.
        """
        twin = SecretTree(self._cs, b"", self._n_leaves, self._config)
        twin._nodes = dict(self._nodes)
        twin._ratchets = dict(self._ratchets)
        self._owned = set()
        return twin

    def encode(self, w: Writer) -> None:
        """Append the tree's remaining secrets and ratchets (for saving group state)."""
        w.uint32(self._n_leaves)
        w.vector(sorted(self._nodes.items()), lambda w2, kv: w2.uint32(kv[0]).opaque(kv[1]))
        w.vector(
            sorted(self._ratchets.items()),
            lambda w2, kv: kv[1].encode(w2.uint32(kv[0][0]).uint8(kv[0][1])),
        )

    @classmethod
    def decode(
        cls, cs: CipherSuiteImpl, r: Reader, config: SenderRatchetConfiguration | None = None
    ) -> SecretTree:
        """Read a tree written by :meth:`encode`.

        Raises:
            DecodeError: malformed input.
        """
        n_leaves = r.uint32()
        if n_leaves < 1:
            raise DecodeError("secret tree without leaves")
        tree = cls(cs, b"", n_leaves, config)
        tree._nodes = dict(r.vector(lambda r2: (r2.uint32(), r2.opaque())))
        ratchets = r.vector(
            lambda r2: (
                (r2.uint32(), r2.enum8(RatchetType)),
                HashRatchet.decode(cs, r2, tree._config),
            )
        )
        tree._ratchets = dict(ratchets)
        tree._owned = set(tree._ratchets)
        return tree

    def get(self, leaf_index: int, ratchet_type: RatchetType, generation: int) -> RatchetKey:
        """Key and nonce for a received message, without changing the tree.

        Raises:
            ValidationError: bad leaf index or generation (see :meth:`HashRatchet.get`).
        """
        existing = self._ratchets.get((leaf_index, ratchet_type))
        if existing is None:
            leaf_secret = self._leaf_secret(leaf_index, store=False)
            existing = self._new_ratchet(leaf_secret, ratchet_type)
        return existing.get(generation)

    def consume(self, leaf_index: int, ratchet_type: RatchetType, generation: int) -> RatchetKey:
        """Key and nonce for a received message, forgotten afterwards (§9.2).

        Raises:
            ValidationError: bad leaf index or generation (see :meth:`HashRatchet.get`).
        """
        return self.ratchet(leaf_index, ratchet_type).consume(generation)

    def next(self, leaf_index: int, ratchet_type: RatchetType) -> RatchetKey:
        """The next key and nonce for sending from ``leaf_index``."""
        return self.ratchet(leaf_index, ratchet_type).next()


def sender_data_key_nonce(
    cs: CipherSuiteImpl, sender_data_secret: bytes, ciphertext: bytes
) -> tuple[bytes, bytes]:
    """The sender-data AEAD key and nonce for a PrivateMessage (RFC 9420 §6.3.2).

    ``ciphertext_sample`` is the first KDF.Nh bytes of ``ciphertext`` (all of it if
    shorter); key = ExpandWithLabel(secret, "key", sample, AEAD.Nk), nonce likewise
    with "nonce" and AEAD.Nn.
    """
    sample = ciphertext[: cs.n_h]
    return (
        expand_with_label(cs, sender_data_secret, "key", sample, cs.n_k),
        expand_with_label(cs, sender_data_secret, "nonce", sample, cs.n_n),
    )
