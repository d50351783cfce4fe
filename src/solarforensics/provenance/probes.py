"""Probe tokens: which embedding rows a fingerprint keeps, chosen so any two fingerprints share theirs by string.

The probes are a bottom-k sketch of the vocabulary: the k token surfaces (the text a token stands for, the same
whatever the tokenizer's encoding) with the smallest keyed hash. Two vocabularies then pick the *same* strings among
those they share, so two fingerprints hold rows of about k·J common tokens (J: the vocabularies' Jaccard index), and
the sketches themselves estimate J without either vocabulary.
"""

from __future__ import annotations

import hashlib

from solarforensics.evidence.tokenizer_vocab import Vocabulary

KEY = b"solarforensics/probe-v1"
HASH_SPACE = 1 << 63


def surface_hash(surface: bytes) -> int:
    """A 63-bit keyed hash of a surface (fits SQLite and int64 tensors)."""
    return int.from_bytes(hashlib.blake2b(surface, digest_size=8, key=KEY).digest(), "big") >> 1


def probe_tokens(vocab: Vocabulary, k: int) -> list[tuple[int, bytes, int]]:
    """(hash, surface, token id) of the k surfaces with the smallest hash, in hash order. Empty surfaces and the
    tokenizer's added tokens (chat markers, padding: their rows are often untrained) are left out."""
    surfaces, _ = vocab.by_surface()
    added = {t.content.encode("utf-8", "replace") for t in vocab.added}
    ranked = sorted((surface_hash(s), s, i) for s, i in surfaces.items() if s and s not in added)
    return ranked[:k]


def jaccard_estimate(hashes_a: list[int], hashes_b: list[int], k: int) -> float | None:
    """Jaccard index of two vocabularies from their bottom-k sketches (the standard estimator: the share of the k
    smallest hashes of the union that both hold)."""
    if not hashes_a or not hashes_b:
        return None
    union = sorted(set(hashes_a) | set(hashes_b))[:k]
    both = set(hashes_a) & set(hashes_b)
    return sum(1 for h in union if h in both) / len(union)
