"""`lineage`: the derivation forest of a set of fingerprints: families, directed edges, roots, and where model cards
disagree with the weights.

Every pair is ranked by the pre-filter; pairs above PREFILTER_RELATED are decided by the lean battery with the
probes, and pairs of models of the same width by the signatures as well (a vocabulary swap shares no probes). Pairs
called derived join families; each family becomes a tree (tree.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from solarforensics.population import tree
from solarforensics.population.record import Fingerprint
from solarforensics.population.scan import prefilter_score
from solarforensics.provenance import lean

PREFILTER_RELATED = 0.15  # pre-filter score above which a pair gets the whole lean battery


def pair_plan(fps: dict[str, Fingerprint]) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    """(pairs for the full battery, same-width pairs for signatures only, pre-filter scores)."""
    names = sorted(fps)
    vectors = {n: {k: v for k, v in fps[n].arrays.items() if k.startswith("prefilter.")} for n in names}
    widths = {n: fps[n].meta.get("arch", {}).get("hidden_size") for n in names}
    full, signature_only, scores = [], [], {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            score = prefilter_score(vectors[a], vectors[b])
            scores[(a, b)] = score
            if score is None or score >= PREFILTER_RELATED:
                full.append((a, b))
            elif widths[a] == widths[b]:
                signature_only.append((a, b))
    return full, signature_only, scores


def decide_pairs(fps: dict[str, Fingerprint], seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> dict[tuple[str, str], dict]:
    """The lean verdict of every pair the plan compares (other pairs: unrelated by the pre-filter)."""
    full, signature_only, _ = pair_plan(fps)
    out: dict[tuple[str, str], dict] = {}
    total = len(full) + len(signature_only)
    for done, (a, b) in enumerate(full, 1):
        out[(a, b)] = lean.compare(fps[a], fps[b], seed=seed)
        if progress:
            progress(done, total)
    for done, (a, b) in enumerate(signature_only, len(full) + 1):
        views = lean.View(fps[a]), lean.View(fps[b])
        sig = lean.signature_test(*views, seed=seed)
        if sig["applicable"] and (sig["effect"] or 0) >= lean.DEFAULT_THRESHOLDS["signature_effect"]:
            out[(a, b)] = lean.compare(fps[a], fps[b], seed=seed, signatures=True)
        if progress:
            progress(done, total)
    return out


def lineage_of(fps: dict[str, Fingerprint], seed: int = 0, progress=None) -> dict:
    """The fields of a `lineage` results document."""
    started = time.perf_counter()
    verdicts = decide_pairs(fps, seed, progress)
    decided = time.perf_counter()
    related = {frozenset(p) for p, r in verdicts.items() if r["verdict"] == "derived"}
    sim = {frozenset(p): tree.similarity_of(r) for p, r in verdicts.items() if r["verdict"] == "derived"}
    linked = {frozenset(p) for p, r in verdicts.items() if tree.probes_linked(r)}
    names = sorted(fps)
    families, edges, roots = [], [], []
    for members in tree.families(names, related):
        built = tree.family_tree(members, fps, linked, sim)
        roots.append(built["root"])
        families.append({"members": members, "root": built["root"], "size": len(members)})
        for child, options in sorted(built["parents"].items()):
            for parent, confidence, evidence in options:
                result = verdicts.get((parent, child)) or verdicts.get((child, parent))
                decisive = result["decisive"] if result else []
                edges.append({"parent": parent, "child": child, "confidence": confidence,
                              "evidence": [f"decided by {', '.join(decisive)}" if decisive else
                                           "joined through relatives (no direct test fired)", *evidence],
                              "similarity": sim.get(frozenset((parent, child)))})
    cards = card_check(fps, {e["child"]: e["parent"] for e in edges})
    inconclusive = sorted([list(p) for p, r in verdicts.items() if r["verdict"] == "inconclusive"])
    return {
        "models": names, "families": families, "edges": edges, "roots": sorted(roots), "cards": cards,
        "related_pairs": sorted([sorted(p) for p in related]), "inconclusive_pairs": inconclusive,
        "pairs": {"total": len(names) * (len(names) - 1) // 2, "compared": len(verdicts),
                  "derived": len(related), "inconclusive": len(inconclusive)},
        "direction": "topology: minimum spanning tree of the squared Gram drift (additive along a lineage), copies "
                     "and merges first; one root per family: fewest edges against structure (layers, units, "
                     "experts, int8), then the least trained norm gains; labelled tie-breakers where the weights "
                     "cannot order (roots whose gains trained alike, a parent and child equally far from the "
                     "grandparent, copies): the earlier upload; between copies also a quantised copy is a leaf, "
                     "then the name",
        "thresholds": lean.DEFAULT_THRESHOLDS,
        "timings": {"pairs_s": decided - started, "total_s": time.perf_counter() - started},
        "summary": {"statements": [
            f"{len(names)} models in {len(families)} families ({sum(1 for f in families if f['size'] > 1)} with "
            f"relatives), {len(edges)} directed edges, {len(related)} related pairs among {len(verdicts)} compared",
            f"model cards: {sum(1 for c in cards if c['status'] == 'agrees')} agree, "
            f"{sum(1 for c in cards if c['status'] == 'missing')} declare no base, "
            f"{sum(1 for c in cards if c['status'] == 'contradicted')} contradict the weights"]},
    }


def card_check(fps: dict[str, Fingerprint], parent_of: dict[str, str]) -> list[dict]:
    """Each model's declared base model(s) against the parent the weights give it."""
    out = []
    for name in sorted(fps):
        declared = fps[name].meta.get("hub", {}).get("base_model") or []
        predicted = parent_of.get(name)
        names = _aliases(fps[predicted], predicted) if predicted else set()
        if declared and predicted and any(d in names or d.split("/")[-1] in names for d in declared):
            status = "agrees"
        elif declared:
            status = "contradicted"
        elif predicted:
            status = "missing"
        else:
            continue
        out.append({"model": name, "declared_base_model": declared, "weights_parent": predicted, "status": status})
    return out


def _aliases(fp: Fingerprint, spec: str) -> set[str]:
    source = fp.meta.get("source", {})
    from pathlib import Path

    return {n for n in (spec, source.get("repo"), Path(source.get("path") or "").name, Path(spec).name) if n}
