"""From pairwise verdicts to a derivation tree: which related model is whose parent.

The direction comes from a statistic every disguise leaves alone: training concentrates the spectrum of the whitened
reader Grams, so of two related models the less trained one (the ancestor) has the higher spectral entropy (the
tiny zoo: 17 of 20 derived pairs; the exceptions are a vocabulary swap, whose probes are new, and a quantised copy,
which was not trained). The family's root is its highest-entropy member. Each other member takes as parent its most
similar relative among those clearly nearer the root: nearer by at least a quarter of their own distance, so a
sibling fine-tuned alongside is not mistaken for a parent. Tie-breakers, labelled as such where they decide: a
quantised model is a leaf, and the earlier upload is the older.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

NEARER = 0.25  # a parent must be nearer the root than its child by this share of their distance
RELATED_SIMILARITY = 0.2  # the similarity given to a pair found related only by signatures or unit order


def similarity_of(result: dict) -> float:
    """How alike two related models are, from their lean comparison: the invariant CKA where the probes saw it."""
    by = {t["name"]: t for t in result["tests"]}
    cka = by.get("invariant-cka", {})
    value = float(cka["statistic"]) if cka.get("applicable") and "invariant-cka" in result["decisive"] else \
        RELATED_SIMILARITY
    return min(1.0, max(0.0, value))


def root_distances(members: list[str], root: str, sim: dict[frozenset, float]) -> dict[str, float]:
    """Shortest path from the root over related pairs, with 1 - similarity as the length of each."""
    best = {root: 0.0}
    queue = [(0.0, root)]
    while queue:
        d, node = heapq.heappop(queue)
        if d > best.get(node, math.inf):
            continue
        for other in members:
            key = frozenset((node, other))
            if other == node or key not in sim:
                continue
            nd = d + max(0.0, 1.0 - sim[key])  # fp16 sketches can put a copy's CKA a hair above 1
            if nd < best.get(other, math.inf):
                best[other] = nd
                heapq.heappush(queue, (nd, other))
    return best


def build_tree(members: list[str], sim: dict[frozenset, float], age: dict[str, float],
               leaves: set[str], uploaded: dict[str, str | None]) -> dict:
    """{root, parents: child -> (parent, confidence, evidence)} for one family."""
    def older_key(m: str):
        return (m in leaves, -age.get(m, 0.0), uploaded.get(m) or "9999")

    root = min(members, key=older_key)
    distance = root_distances(members, root, sim)
    order = sorted(members, key=lambda m: (distance.get(m, math.inf), older_key(m)))
    parents: dict[str, tuple[str, float, list[str]]] = {}
    placed = [root]
    for child in order[1:]:
        options = []
        for candidate in placed:
            key = frozenset((candidate, child))
            if key not in sim or candidate in leaves:
                continue
            gap = distance.get(child, math.inf) - distance.get(candidate, math.inf)
            if gap >= NEARER * (1.0 - sim[key]) - 1e-12:
                options.append((sim[key], candidate))
        if not options:  # no relative clearly nearer the root: the nearest placed relative, else the root
            options = [(sim[frozenset((c, child))], c) for c in placed if frozenset((c, child)) in sim] or \
                [(0.0, root)]
        similarity, parent = max(options)
        evidence = [f"most similar relative nearer the root (invariant similarity {similarity:.3f})",
                    f"direction: spectral entropy {age.get(parent, 0.0):.4f} (parent) vs {age.get(child, 0.0):.4f}"]
        if child in leaves:
            evidence.append("tie-breaker: a quantised model is a leaf")
        gap = age.get(parent, 0.0) - age.get(child, 0.0)
        confidence = max(0.0, min(1.0, similarity)) * (0.5 + 0.5 * math.tanh(gap / 0.005))
        parents[child] = (parent, round(confidence, 4), evidence)
        placed.append(child)
    return {"root": root, "parents": parents}


def families(nodes: list[str], related: Iterable[Iterable[str]]) -> list[list[str]]:
    """Connected components of the related pairs (each a sorted list), largest first; a pair naming a model that is
    not among `nodes` joins nothing."""
    parent = {n: n for n in nodes}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for pair in related:
        a, b = tuple(pair)
        if a in parent and b in parent:
            parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for n in nodes:
        groups.setdefault(find(n), []).append(n)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
