"""`scan`: one model against every indexed model. A pre-filter ranks them all from small stored vectors, then the
lean battery decides the best (and every model of the same width, for a vocabulary swap the probes cannot see), and
the related ones are placed in a tree around the query: parent, child, sibling or same family."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_arrays

from solarforensics.models import OpenOptions
from solarforensics.population import tree
from solarforensics.population.fingerprint import fingerprint_model
from solarforensics.population.index import Index
from solarforensics.population.record import Fingerprint
from solarforensics.provenance import lean

SIGNATURE_CANDIDATES = 32  # models of the query's width compared by signatures beyond the top candidates


@dataclass(frozen=True)
class ScanRequest:
    model: str
    index: str | None = None
    top: int = 10
    seed: int = 0
    signature_candidates: int = SIGNATURE_CANDIDATES


def prefilter_score(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float | None:
    """Approximate invariant CKA along the best layer map, from the projected core-string Grams."""
    return rank_prefilters(a, [b])[0]


def rank_prefilters(query: dict[str, torch.Tensor], others: list[dict[str, torch.Tensor]]) -> list[float | None]:
    """prefilter_score of the query against each of many, batched: models with the same readers and depth are
    stacked and scored in one product (1,000 Solar-depth models in a fraction of a second)."""
    groups: dict[tuple, list[int]] = {}
    for i, vectors in enumerate(others):
        key = tuple(sorted((k, tuple(v.shape)) for k, v in vectors.items() if k in query))
        groups.setdefault(key, []).append(i)
    scores: list[float | None] = [None] * len(others)
    q = {k: v.to(torch.float32).nan_to_num(0) for k, v in query.items()}
    for key, members in groups.items():
        if not key:
            continue
        per_reader = []
        for reader, _ in key:
            stack = torch.stack([others[i][reader] for i in members]).to(torch.float32).nan_to_num(0)
            m = torch.einsum("ld,nkd->nlk", q[reader], stack)
            per_reader.append(torch.maximum(m.max(dim=2).values.mean(dim=1), m.max(dim=1).values.mean(dim=1)))
        mean = torch.stack(per_reader).mean(dim=0)
        for i, value in zip(members, mean.tolist()):
            scores[i] = value
    return scores


def ensure_fingerprint(spec: str, index: Index, options: OpenOptions | None, progress=None) -> tuple[Fingerprint, str]:
    """The model's fingerprint from the index when its commit is unchanged, else computed and stored."""
    def known(endpoint, repo, commit):
        entry = index.find_source(endpoint, repo, commit)
        return Fingerprint.from_entry(entry) if entry else None

    fp, status = fingerprint_model(spec, options, known, progress)
    if status == "new" or index.get(spec) is None:
        index.put([fp.to_entry()])
    return fp, status


def scan_model(request: ScanRequest, options: OpenOptions | None = None, progress=None) -> dict:
    """The fields of a `scan` results document."""
    started = time.perf_counter()
    with Index(request.index) as index:
        query, status = ensure_fingerprint(request.model, index, options, progress)
        fingerprinted = time.perf_counter()
        own = _source(query.meta)
        rows = [(spec, meta, blob) for spec, meta, blob in index.prefilters()
                if spec != request.model and _source(meta) != own]
        mine = {k: v for k, v in query.arrays.items() if k.startswith("prefilter.")}
        scores = rank_prefilters(mine, [load_arrays(blob) if blob else {} for _, _, blob in rows])
        scored = [(score if score is not None else -1.0, spec, meta) for score, (spec, meta, _) in zip(scores, rows)]
        scored.sort(key=lambda s: (-s[0], s[1]))
        ranked = time.perf_counter()
        chosen = scored[: request.top]
        top = {spec for _, spec, _ in chosen}
        width = query.meta["arch"].get("hidden_size")
        same_width = [s for s in scored[request.top:] if s[2].get("arch", {}).get("hidden_size") == width]
        chosen += same_width[: request.signature_candidates]
        fps = {spec: Fingerprint.from_entry(index.get(spec)) for _, spec, _ in chosen}
    results = {spec: lean.compare(query, fp, seed=request.seed) for spec, fp in fps.items()}
    # models compared only for their width are listed when they found something
    results = {s: r for s, r in results.items() if s in top or r["verdict"] != "independent"}
    compared = time.perf_counter()
    relations = _relations(query, {s: fps[s] for s, r in results.items() if r["verdict"] == "derived"}, results,
                           request.seed)
    declared = query.meta.get("hub", {}).get("base_model") or []
    candidates = []
    prefilter = {spec: score for score, spec, _ in scored}
    for spec, result in results.items():
        relation = relations.get(spec)
        names = _names(fps[spec].meta, spec)
        candidates.append({
            "model": spec, "verdict": result["verdict"], "p_value": result["p_value"],
            "log10_p_value": result["log10_p_value"], "decisive": result["decisive"], "relation": relation,
            "similarity": _cka(result), "prefilter_score": prefilter.get(spec),
            "declared_base_model": declared, "metadata_agrees": _agreement(declared, names, relation),
            "common_probes": result["common_probes"], "tests": [_brief(t) for t in result["tests"]],
        })
    order = {"derived": 0, "inconclusive": 1, "independent": 2}
    candidates.sort(key=lambda c: (order[c["verdict"]], -(c["similarity"] or 0), -(c["prefilter_score"] or -1)))
    return {
        "model": request.model, "fingerprint": "reused" if status == "unchanged" else "computed",
        "index": {"path": str(Path(index.path)), "fingerprints": len(rows) + 1},
        "candidates": candidates, "root": _root(request.model, candidates),
        "query": Fingerprint(request.model, query.meta).summary(),
        "prefilter": {"scored": len(scored), "compared": len(results), "top": request.top},
        "thresholds": lean.DEFAULT_THRESHOLDS,
        "sources": [query.meta["source"] | {"bytes_transferred": query.meta["cost"]["bytes_read"]
                                            if status == "new" else 0}],
        "timings": {"fingerprint_s": fingerprinted - started, "prefilter_s": ranked - fingerprinted,
                    "compare_s": compared - ranked, "total_s": time.perf_counter() - started},
        "summary": {"statements": _statements(request.model, candidates)},
    }


def _source(meta: dict) -> tuple:
    s = meta.get("source", {})
    return s.get("endpoint"), s.get("repo") or s.get("path"), s.get("resolved_commit")


def _cka(result: dict) -> float | None:
    cka = next(t for t in result["tests"] if t["name"] == "invariant-cka")
    return cka.get("statistic") if cka.get("applicable") else None


def _brief(test: dict) -> dict:
    keep = ("name", "applicable", "statistic", "effect", "p_value", "log10_p_value", "notes")
    return {k: test.get(k) for k in keep}


def _relations(query: Fingerprint, related: dict[str, Fingerprint], results: dict, seed: int) -> dict[str, str]:
    """Each related candidate's place relative to the query in the tree of the query's family."""
    if not related:
        return {}
    q = query.spec
    members = [q, *related]
    fps = {q: query, **related}
    sim = {frozenset((q, s)): tree.similarity_of(results[s]) for s in related}
    linked = {frozenset((q, s)) for s in related if tree.probes_linked(results[s])}
    specs = list(related)
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            r = lean.compare(related[a], related[b], seed=seed, signatures=False)
            if r["verdict"] == "derived":
                sim[frozenset((a, b))] = tree.similarity_of(r)
                if tree.probes_linked(r):
                    linked.add(frozenset((a, b)))
    built = tree.family_tree(members, fps, linked, sim)
    parent_of = {child: options[0][0] for child, options in built["parents"].items()}
    ancestors, node = [], q
    while node in parent_of:
        node = parent_of[node]
        ancestors.append(node)
    out = {}
    for spec in related:
        if parent_of.get(q) == spec:
            out[spec] = "parent"
        elif parent_of.get(spec) == q:
            out[spec] = "child"
        elif parent_of.get(spec) is not None and parent_of.get(spec) == parent_of.get(q):
            out[spec] = "sibling"
        elif spec in ancestors:
            out[spec] = "ancestor"
        else:
            out[spec] = "same family"
    return out


def _names(meta: dict, spec: str) -> set[str]:
    source = meta.get("source", {})
    names = {spec, source.get("repo") or "", Path(source.get("path") or "").name}
    return {n for n in names if n}


def _agreement(declared: list[str], names: set[str], relation: str | None) -> str:
    """What the query's model card says against what the weights say, for this candidate."""
    says_parent = any(d in names or d.split("/")[-1] in names for d in declared)
    weights_parent = relation in ("parent", "ancestor")
    if says_parent and weights_parent:
        return "agrees"
    if says_parent and not weights_parent:
        return "contradicted"
    if weights_parent and not declared:
        return "missing"
    if weights_parent:
        return "contradicted"  # the card names another base
    return "agrees"


def _root(spec: str, candidates: list[dict]) -> dict:
    parents = [c for c in candidates if c["relation"] == "parent"]
    ancestors = [c for c in candidates if c["relation"] == "ancestor"]
    if parents:
        nearest = parents[0]["model"]
        return {"model": nearest, "ancestors": [c["model"] for c in ancestors],
                "statement": f"{spec} derives from {nearest} (its nearest indexed ancestor)"}
    related = [c["model"] for c in candidates if c["verdict"] == "derived"]
    text = (f"{spec} is derived from no indexed model, as far as weight tests can see" +
            (f"; indexed models derived from it or sharing its origin: {', '.join(related)}" if related else ""))
    return {"model": None, "ancestors": [], "statement": text}


def _statements(spec: str, candidates: list[dict]) -> list[str]:
    derived = [c for c in candidates if c["verdict"] == "derived"]
    unclear = [c for c in candidates if c["verdict"] == "inconclusive"]
    lines = [f"{len(derived)} related, {len(unclear)} inconclusive among the {len(candidates)} indexed models "
             f"compared in full with {spec}"]
    for c in derived:
        lines.append(f"{c['model']}: {c['relation']} (decided by {', '.join(c['decisive'])}; card "
                     f"{c['metadata_agrees']})")
    lines.append("Independence is shown only against the transformations the battery is invariant to; "
                 "distillation leaves no trace in weights.")
    return lines
