"""From related fingerprints to a derivation tree: which relative is whose parent.

Topology from an additive distance (provenance/drift.py: squared Gram distance adds up along a lineage), direction
from the family as a whole:
1. Copies: members closer than COPY_DRIFT compute the same function (a disguise, a quantised copy). One of them is
   the original, the others its children: not the quantised one, not one with folded gains, the one that keeps the
   family's residual basis and unit order; else, labelled tie-breakers, the earlier upload, then the name.
2. Merges: a member at the midpoint of two others ((d(m,a) + d(m,b)) / d(a,b) near 1/2, where a node on the path
   between them scores 1) is their weight average: a child of both.
3. The other members form the minimum spanning tree of the drift: on an additive tree metric where every node is
   observed, that is the true tree.
4. One root per family: the member from which the fewest edges point against structure (the child has more layers,
   fewer MLP units, experts where the parent has none, an int8 grid) and, among those, towards which the norm gains
   are least trained (they start at 1; training moves them away). A parent and child equally far from the
   grandparent (within DRIFT_TIE) are put in upload order, labelled as the tie-breaker it is.
5. A member whose probes share no geometry with the rest (a vocabulary swap) joins, as a child, a relative by the
   norm-profile signatures: like a long branch, among those within ANCESTRAL_SLACK of the nearest, the one nearest
   the root.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

from solarforensics.provenance import drift
from solarforensics.provenance.lean import View

COPY_DRIFT = 0.0005  # rounding only: forest copies <= 0.0001; the smallest fine-tune (micro forest, 2 steps) 0.0027
MERGE_RATIO = 0.7  # forest: merges 0.51-0.52, every other member >= 0.91
ANCESTRAL_SLACK = 0.35  # a long branch joins the relative nearest the root among those this much farther than the
# nearest: where to attach it is weakly determined (correlated drift, e.g. two trainings on the same data, puts a
# continued pre-training of the root nearest the end of a fine-tune chain); forest seed 0: such misplacements 1.12-1.30
BASIS_TIE = 0.5  # basis drifts within this share of each other: no weight evidence for the original. Forest seeds
# 0-3: a disguise that moves the basis at least doubles it (x1.94-73), int8 rounding moves it by -13% to +5%
ROOT_TIE = 0.05  # candidate roots whose gain scores (summed (child - parent) / (child + parent) of the gains' drift
# from 1 over the edges) differ by less: the gains cannot say which is older. A short fine-tune moves them little
# either way: forest seeds 0-2, root to child -0.008 to +0.03 (up-scaling, ordered by structure, aside)
DRIFT_TIE = 0.05  # a parent and its child this close in drift from the grandparent (as a share of it): the drift
# cannot order them. A fine-tune on the data of the root after a continued pre-training on other data moves back
# towards the root: forest seeds 0 and 1, such pairs -3.8% to +2.6%; every other chain +2.1% (one) or >= +10.7%
RELATED_SIMILARITY = 0.2  # the similarity given to a pair found related only by signatures or unit order


def probes_linked(result: dict) -> bool:
    """Whether a lean comparison related the pair through the probes (invariant CKA): their Grams can be compared."""
    return "invariant-cka" in result["decisive"]


def similarity_of(result: dict) -> float:
    """How alike two related models are, from their lean comparison: the invariant CKA where the probes saw it."""
    by = {t["name"]: t for t in result["tests"]}
    cka = by.get("invariant-cka", {})
    value = float(cka["statistic"]) if cka.get("applicable") and probes_linked(result) else \
        RELATED_SIMILARITY
    return min(1.0, max(0.0, value))


def spanning_tree(nodes: list[str], distance: dict[frozenset, float]) -> list[tuple[str, str]]:
    """Prim's minimum spanning tree (undirected pairs); a node with no finite distance to the tree is left out."""
    if not nodes:
        return []
    inside, edges = {nodes[0]}, []
    while len(inside) < len(nodes):
        options = [(distance[frozenset((u, v))], u, v) for u in sorted(inside) for v in nodes
                   if v not in inside and frozenset((u, v)) in distance]
        if not options:
            break
        _, u, v = min(options)
        edges.append((u, v))
        inside.add(v)
    return edges


def midpoint_parents(nodes: list[str], distance: dict[frozenset, float]) -> dict[str, tuple[str, str, float]]:
    """Members that sit at the midpoint of two others (a weight average): member -> (a, b, ratio)."""
    def d(u: str, v: str) -> float | None:
        return distance.get(frozenset((u, v)))

    out = {}
    for m in nodes:
        best = None
        for a, b in itertools.combinations([n for n in nodes if n != m], 2):
            ab, ma, mb = d(a, b), d(m, a), d(m, b)
            if ab and ma is not None and mb is not None and max(ma, mb) < ab:
                ratio = (ma + mb) / ab
                best = min(best or (ratio, a, b), (ratio, a, b))
        if best and best[0] < MERGE_RATIO:
            out[m] = (best[1], best[2], best[0])
    return out


def precedes(u: dict, v: dict) -> str | None:
    """Why the structure says the model with traits u comes before v (None: it says nothing)."""
    if u["layers"] != v["layers"]:
        return "fewer layers (the child is up-scaled)" if u["layers"] < v["layers"] else None
    if bool(u["experts"]) != bool(v["experts"]):
        return "dense before its experts (the child is upcycled)" if not u["experts"] else None
    if u["units"] and v["units"] and u["units"] != v["units"]:
        return "more MLP units (the child is pruned)" if u["units"] > v["units"] else None
    if u["quantised"] != v["quantised"]:
        return "tie-breaker: a quantised model is a leaf" if v["quantised"] else None
    return None


def _original(group: list[str], traits: dict, basis: dict[str, float], uploaded: dict) -> tuple[str, str]:
    """The member of a copy group the others were made from, and why: weight evidence first (folded gains, the
    family's basis kept), then labelled tie-breakers (a quantised copy is a leaf, the earlier upload, the name)."""
    trained = [m for m in group if not traits[m]["folded"]] or group
    why = "folded norm gains are a disguise" if len(trained) < len(group) else ""
    best = min(basis.get(m, 0.0) for m in trained)
    kept = [m for m in trained if basis.get(m, 0.0) <= best * (1 + BASIS_TIE) + 1e-12]
    why = why or ("keeps the family's residual basis and unit order" if len(kept) < len(trained) else "")
    if len(kept) > 1:
        plain = [m for m in kept if not traits[m]["quantised"]] or kept
        why = "tie-breaker: a quantised copy is a leaf" if len(plain) < len(kept) else ""
        kept = sorted(plain, key=lambda m: (uploaded.get(m) or "9999", m))
        if len(plain) > 1:
            why = "tie-breaker: the earlier upload" if uploaded.get(kept[0]) else \
                "tie-breaker: no weight evidence of which copy is the original; the name that sorts first"
    return kept[0], why


def _orient(adjacent: dict[str, list[str]], root: str) -> list[tuple[str, str]]:
    out, stack, seen = [], [root], {root}
    while stack:
        u = stack.pop()
        for v in sorted(adjacent[u]):
            if v not in seen:
                seen.add(v)
                out.append((u, v))
                stack.append(v)
    return out


def _restructured(edges: list[tuple[str, str]], nodes: list[str], distance: dict[frozenset, float],
                  traits: dict[str, dict]) -> list[tuple[str, str]]:
    """Rooted edges, revised child by child from the root down: a child the structure puts before its parent (a
    dense model under an upcycled one) moves to its nearest allowed relative; then every child joins, among its
    relatives within ANCESTRAL_SLACK of its parent's distance, the one nearest the root (none of its descendants,
    none after it by structure)."""
    parent = {v: u for u, v in edges}
    root = edges[0][0] if edges else None
    for u, v in edges:
        below, grew = {v}, True
        while grew:
            grew = False
            for child, p in parent.items():
                if p in below and child not in below:
                    below.add(child)
                    grew = True
        options = [o for o in nodes if o not in below and frozenset((o, v)) in distance
                   and precedes(traits[v], traits[o]) is None]
        if precedes(traits[v], traits[parent[v]]) is not None and options:
            parent[v] = min(options, key=lambda o: distance[frozenset((o, v))])
        here = distance[frozenset((parent[v], v))]
        plausible = [o for o in options if distance[frozenset((o, v))] <= (1 + ANCESTRAL_SLACK) * here]
        if plausible:
            parent[v] = min(plausible, key=lambda o: (_to_root(o, root, distance), o))
    return [(p, v) for v, p in parent.items()]


def _to_root(node: str, root: str | None, distance: dict[frozenset, float]) -> float:
    return 0.0 if node == root else distance.get(frozenset((node, root)), math.inf)


def _upload_ties(edges: list[tuple[str, str]], distance: dict[frozenset, float], traits: dict[str, dict],
                 uploaded: dict[str, str | None]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Rooted edges with each parent and child the drift cannot order (both within DRIFT_TIE of the same distance
    from the grandparent, nothing in the structure ordering them) put in upload order: the labelled tie-breaker.
    Returns the edges and, per child placed so, why."""
    parent = {v: u for u, v in edges}
    why: dict[str, str] = {}
    for u, v in edges:
        if parent.get(v) != u or u not in parent:
            continue
        grand = parent[u]
        near, far = distance.get(frozenset((grand, u))), distance.get(frozenset((grand, v)))
        if near is None or far is None or abs(far - near) >= DRIFT_TIE * max(near, far):
            continue
        if precedes(traits[u], traits[v]) or precedes(traits[v], traits[u]):
            continue
        if not (uploaded.get(u) and uploaded.get(v) and uploaded[v] < uploaded[u]):
            continue
        parent[v], parent[u] = grand, v
        why[u] = why[v] = (f"direction: tie-breaker: the earlier upload ({grand} is as far from one as from the "
                           f"other by drift, {near:.4f} and {far:.4f})")
    return [(p, c) for c, p in parent.items()], why


def _root(nodes: list[str], score: Callable[[str], tuple[int, float]], uploaded: dict[str, str | None]
          ) -> tuple[str, str]:
    """The family's root and why: the fewest edges against structure, then the least trained norm gains; members
    whose gains say no more than ROOT_TIE apart, each with an upload time, go by the earliest upload (labelled)."""
    scores = {n: score(n) for n in nodes}
    best = max(scores.values())
    tied = [n for n in nodes if scores[n][0] == best[0] and scores[n][1] >= best[1] - ROOT_TIE]
    if len(tied) > 1 and all(uploaded.get(n) for n in tied):
        return min(tied, key=lambda n: (uploaded[n], n)), (
            f"the fewest edges against structure; the norm gains of {len(tied)} members trained alike, tie-breaker: "
            f"the earliest upload")
    return max(nodes, key=lambda n: (scores[n], n)), "the fewest edges against structure, the least trained norm gains"


def build_tree(members: list[str], gram: dict[frozenset, float], linked: set[frozenset],
               signature: Callable[[str, str], float | None], basis: Callable[[str, str], float],
               traits: dict[str, dict],
               similarity: dict[frozenset, float], uploaded: dict[str, str | None]) -> dict:
    """{root, parents: child -> [(parent, confidence, evidence)]} for one family. `gram`: additive drift of pairs;
    `linked`: pairs the probes related (invariant CKA); `signature(a, b)`, `basis(a, b)`: drift in the residual
    basis (signatures; signatures and units), asked only where needed."""
    def sim(u: str, v: str) -> float:
        return similarity.get(frozenset((u, v)), RELATED_SIMILARITY)

    parents: dict[str, list[tuple[str, float, list[str]]]] = {}
    probeless = [m for m in members if not any(frozenset((m, o)) in linked for o in members if o != m)]
    core = [m for m in members if m not in probeless] or members[:1]
    groups: list[list[str]] = []
    for m in core:
        group = next((g for g in groups if gram.get(frozenset((g[0], m)), 1.0) < COPY_DRIFT), None)
        group.append(m) if group else groups.append([m])
    reps = []
    for group in groups:
        outside = [o for o in core if o not in group and frozenset((o, group[0])) in gram]
        near = min(outside, key=lambda o: gram[frozenset((o, group[0]))], default=None)
        score = {m: basis(m, near) for m in group} if near and len(group) > 1 else {}
        original, why = _original(group, traits, score, uploaded)
        reps.append(original)
        for m in group:
            if m != original:
                d = gram.get(frozenset((m, original)), 0.0)
                parents[m] = [(original, round(sim(m, original) * (0.5 if "tie-breaker" in why else 1.0), 4),
                               [f"the same function (drift {d:.5f}): a copy", f"direction: {why}"])]
    distance = {k: v for k, v in gram.items() if k <= set(reps)}
    merges = midpoint_parents(reps, distance) if len(reps) >= 3 else {}
    nodes = [r for r in reps if r not in merges]
    adjacent: dict[str, list[str]] = {n: [] for n in nodes}
    for u, v in spanning_tree(nodes, distance):
        adjacent[u].append(v)
        adjacent[v].append(u)

    def score(root: str) -> tuple[int, float]:
        edges = _orient(adjacent, root)
        against = sum(precedes(traits[v], traits[u]) is not None for u, v in edges)
        gains = sum((traits[v]["gain_drift"] - traits[u]["gain_drift"]) /
                    max(traits[v]["gain_drift"] + traits[u]["gain_drift"], 1e-30) for u, v in edges)
        return -against, gains

    root, root_why = _root(nodes, score, uploaded) if nodes else (core[0], "")
    rooted = _restructured(_orient(adjacent, root) if nodes else [], nodes, distance, traits)
    rooted, ties = _upload_ties(rooted, distance, traits, uploaded)
    for u, v in rooted:
        why = precedes(traits[u], traits[v])
        evidence = [f"parent on the additive drift (squared Gram distance {distance[frozenset((u, v))]:.4f}): the "
                    f"family's minimum spanning tree, a long branch joined nearest the root",
                    f"direction: {why}" if why else ties.get(v) or f"direction: away from the family's root {root} "
                    f"({root_why})"]
        parents[v] = [(u, round(sim(u, v), 4), evidence)]
    for m, (a, b, ratio) in merges.items():
        evidence = [f"at the midpoint of {a} and {b} (ratio {ratio:.3f}; a node on the path scores 1): a weight "
                    f"average, child of both"]
        parents[m] = [(p, round(sim(m, p), 4), evidence) for p in (a, b)]
    for m in probeless:
        if m == root:
            continue
        drifts = {o: d for o in reps if (d := signature(m, o)) is not None}
        if drifts:
            nearest = min(drifts.values())
            plausible = [o for o in drifts if drifts[o] <= (1 + ANCESTRAL_SLACK) * nearest]
            near = min(plausible, key=lambda o: (_to_root(o, root, distance), drifts[o], o))
            evidence = [f"no shared probe geometry (a vocabulary swap): by the norm-profile signatures, among the "
                        f"relatives within {ANCESTRAL_SLACK:.0%} of the nearest ({nearest:.4f}), the one nearest the "
                        f"root (drift {drifts[near]:.4f})",
                        "direction: the model with new token embeddings is the child"]
            parents[m] = [(near, round(sim(m, near), 4), evidence)]
    return {"root": root, "parents": parents}


def family_tree(members: list[str], fps: dict, linked: set[frozenset], similarity: dict[frozenset, float]) -> dict:
    """build_tree with every drift and trait computed from the fingerprints."""
    views = {m: View(fps[m]) for m in members}
    gram = {}
    for a, b in itertools.combinations(members, 2):
        g = drift.gram_drift(views[a], views[b])
        if g is not None:
            gram[frozenset((a, b))] = g

    def signature(a: str, b: str) -> float | None:
        return drift.signature_drift(views[a], views[b])

    def basis(a: str, b: str) -> float:
        return (signature(a, b) or 0.0) + (drift.unit_drift(views[a], views[b]) or 0.0)

    traits = {m: drift.traits(fps[m]) for m in members}
    uploaded = {m: fps[m].meta.get("hub", {}).get("created_at") for m in members}
    return build_tree(members, gram, linked, signature, basis, traits, similarity, uploaded)


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
