"""RFC 6962 Merkle tree hashing, computed in one pass with memory logarithmic in the leaves.

leaf = SHA-256(0x00 || entry bytes); node = SHA-256(0x01 || left || right); the root of n > 1
leaves joins the root of the first k leaves (k the largest power of two below n) with the root
of the rest; the root of no leaves is SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry_bytes: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry_bytes).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class MerkleAccumulator:
    """Leaves go in one at a time; the root comes out at the end.

    The stack holds the roots of complete subtrees of decreasing size, one per set bit of the
    leaf count (at most 64 for any count that fits a 64-bit integer). Folding them from the
    right at the end yields exactly RFC 6962's split at the largest power of two.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (leaf count of the subtree, its root)
        self.leaf_count = 0

    def add_entry(self, entry_bytes: bytes) -> None:
        self.add_leaf_hash(leaf_hash(entry_bytes))

    def add_leaf_hash(self, digest: bytes) -> None:
        size, root = 1, digest
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, root = left_size + size, node_hash(left, root)
        self._stack.append((size, root))
        self.leaf_count += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        root = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            root = node_hash(left, root)
        return root


def merkle_root_of(entries: list[bytes]) -> bytes:
    """The recursive definition of RFC 6962 2.1, for testing the accumulator against."""
    if not entries:
        return EMPTY_ROOT
    if len(entries) == 1:
        return leaf_hash(entries[0])
    split = 1 << ((len(entries) - 1).bit_length() - 1)
    return node_hash(merkle_root_of(entries[:split]), merkle_root_of(entries[split:]))
