"""SHA-256 of tensor bytes, whole and per row, to find exact and partial copies."""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Sequence

import torch

# Bytes hashed per update when a tensor has to leave its device: bounds the host copy.
_HASH_PIECE_BYTES = 1 << 26


def sha256_bytes(buf: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of a byte buffer."""
    return hashlib.sha256(buf).hexdigest()


def _little_endian_bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as a flat uint8 tensor in little-endian order (the safetensors layout)."""
    flat = t.detach().contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat
    if sys.byteorder == "big" and flat.element_size() > 1:
        raw = raw.reshape(-1, flat.element_size()).flip(-1).reshape(-1)
    return raw


def tensor_sha256(t: torch.Tensor) -> str:
    """Hex SHA-256 of the raw little-endian bytes of `t` in its own dtype, in row-major (contiguous) order."""
    raw = _little_endian_bytes(t)
    digest = hashlib.sha256()
    for start in range(0, raw.numel(), _HASH_PIECE_BYTES):
        digest.update(raw[start:start + _HASH_PIECE_BYTES].cpu().numpy())
    return digest.hexdigest()


def row_hashes(t2d: torch.Tensor) -> list[str]:
    """Hex SHA-256 of each row's bytes (rows = first dimension, the rest flattened; 1-D: one row per element)."""
    if t2d.dim() == 0:
        return [tensor_sha256(t2d)]
    rows = t2d.shape[0]
    row_bytes = (t2d.numel() // rows if rows else 0) * t2d.element_size()
    raw = _little_endian_bytes(t2d).reshape(rows, row_bytes)
    hashes: list[str] = []
    per_piece = max(1, _HASH_PIECE_BYTES // max(row_bytes, 1))
    for r0 in range(0, rows, per_piece):
        piece = raw[r0:r0 + per_piece].cpu().numpy()
        hashes.extend(hashlib.sha256(row).hexdigest() for row in piece)
    return hashes


def shared_rows(hashes_a: Sequence[str], hashes_b: Sequence[str]) -> int:
    """Rows of a whose exact bytes occur among b's rows, each row of b matched at most once (multiset intersection).

    So two zero rows in a and one in b count 1, not 2. Trivial rows (all zeros, padding) are counted like any other;
    callers that want them out should drop their hashes first.
    """
    counts_a, counts_b = Counter(hashes_a), Counter(hashes_b)
    return sum(min(count, counts_b[h]) for h, count in counts_a.items())
