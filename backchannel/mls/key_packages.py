"""KeyPackage wire structs: the signed bundle a client publishes to be added (RFC 9420 §10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from .codec import Reader, Struct, Writer
from .extensions import Extension
from .tree_structs import HPKEPublicKeyBytes, LeafNode

__all__ = ["KeyPackage", "KeyPackageTBS"]


@dataclass(frozen=True, slots=True)
class KeyPackageTBS(Struct):
    """``KeyPackageTBS`` (§10): the content of the ``"KeyPackageTBS"`` signature."""

    #: ``ProtocolVersion version`` (``1`` is mls10); kept raw so validation can
    #: reject other versions with a clear error.
    version: int
    #: ``CipherSuite cipher_suite`` code.
    cipher_suite: int
    #: ``HPKEPublicKey init_key``: where Welcome secrets are encrypted to.
    init_key: HPKEPublicKeyBytes
    #: The client's leaf (source ``KEY_PACKAGE``).
    leaf_node: LeafNode
    #: ``Extension extensions<V>``.
    extensions: tuple[Extension, ...]

    def encode(self, w: Writer) -> None:
        w.uint16(self.version).uint16(self.cipher_suite).opaque(self.init_key)
        w.struct(self.leaf_node).struct_vector(self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            r.uint16(),
            r.uint16(),
            HPKEPublicKeyBytes(r.opaque()),
            LeafNode.decode(r),
            r.vector(Extension.decode),
        )


@dataclass(frozen=True, slots=True)
class KeyPackage(Struct):
    """``KeyPackage`` (§10): :class:`KeyPackageTBS` plus its signature.

    Decoding checks syntax only; signature and §10.1 validation come later.
    """

    #: ``ProtocolVersion version``.
    version: int
    #: ``CipherSuite cipher_suite`` code.
    cipher_suite: int
    #: ``HPKEPublicKey init_key``.
    init_key: HPKEPublicKeyBytes
    #: The client's leaf (source ``KEY_PACKAGE``).
    leaf_node: LeafNode
    #: ``Extension extensions<V>``.
    extensions: tuple[Extension, ...]
    #: ``SignWithLabel(., "KeyPackageTBS", KeyPackageTBS)`` by the leaf's signature key.
    signature: bytes

    def tbs(self) -> KeyPackageTBS:
        """The signed part of this KeyPackage."""
        return KeyPackageTBS(
            self.version, self.cipher_suite, self.init_key, self.leaf_node, self.extensions
        )

    def tbs_bytes(self) -> bytes:
        """Encoded :class:`KeyPackageTBS`, the content to verify ``signature`` over (§10)."""
        return self.tbs().to_bytes()

    def encode(self, w: Writer) -> None:
        self.tbs().encode(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        tbs = KeyPackageTBS.decode(r)
        return cls(
            tbs.version, tbs.cipher_suite, tbs.init_key, tbs.leaf_node, tbs.extensions, r.opaque()
        )
