"""`validate --lineage`: a forest zoo fingerprinted into an index, its lineage recovered from the fingerprints alone,
and scored against the truth beside the two baselines: the model cards alone and the peer tool modeldna."""

from __future__ import annotations

import time
from pathlib import Path

from solarforensics.models import OpenOptions
from solarforensics.population.crawl import fingerprint_all
from solarforensics.population.index import Index
from solarforensics.population.lineage import lineage_of
from solarforensics.population.record import Fingerprint
from solarforensics.validation.forest import card_lineage, lineage_report, modeldna_lineage, targets_met
from solarforensics.zoo.forest import read_forest


def validate_lineage(zoo: Path, index_path: Path, seed: int = 0, peer: bool = True,
                     options: OpenOptions | None = None, workers: int = 2, hub_owner: str | None = None) -> dict:
    """The fields of a `validation` document for a forest: each model read from its folder, or with `hub_owner` as
    the Hub repo OWNER/NAME at `options.endpoint` (then the Hub's upload times are known, for the labelled
    tie-breakers)."""
    started = time.perf_counter()
    manifest = read_forest(zoo)
    names = [m["name"] for m in manifest["forest"]["models"]]
    spec = {n: f"{hub_owner}/{n}" if hub_owner else str(Path(zoo) / n) for n in names}
    with Index(index_path) as index:
        outcomes = fingerprint_all([spec[n] for n in names], index, options, workers=workers)
        failed = [o for o in outcomes if o.status == "failed"]
        entries = {n: index.get(spec[n]) for n in names}
        fps = {n: Fingerprint.from_entry(entry) for n, entry in entries.items() if entry is not None}
    fingerprinted = time.perf_counter()
    fps = {n: Fingerprint(n, fp.meta, fp.arrays) for n, fp in fps.items()}
    found = lineage_of(fps, seed)
    predicted = {"families": [f["members"] for f in found["families"]], "edges": found["edges"],
                 "roots": found["roots"]}
    report = lineage_report(manifest, predicted, [tuple(p) for p in found["related_pairs"]])
    cards = lineage_report(manifest, card_lineage(manifest))
    dna = modeldna_lineage(zoo, manifest) if peer else {"tool": "modeldna", "ran": False, "reason": "--no-peer"}
    pairs_total = report["independent_pairs"] + report["derived_pairs"]
    wrong = report["false_positives"] + (report["derived_pairs"] - report["derived_pairs_found"])
    return {
        "zoo": str(zoo), "index": str(index_path), "lineage": report, "targets": targets_met(report),
        "baselines": {"cards": cards, "modeldna": dna.get("report") if dna.get("ran") else
                      {"ran": False, "reason": dna.get("reason")}},
        "accuracy": (pairs_total - wrong) / pairs_total if pairs_total else None,
        "false_positive_rate": report["fpr"], "true_positive_rate": report["related_recall"],
        "pairs": [{"a": a, "b": b} for a, b in found["inconclusive_pairs"]],
        "edges": found["edges"], "families": found["families"], "failed": [o.row() for o in failed],
        "fingerprint_cost": {"models": len(outcomes), "new": sum(o.status == "new" for o in outcomes),
                             "bytes_read": sum(o.row()["bytes_read"] or 0 for o in outcomes)},
        "timings": {"fingerprint_s": fingerprinted - started, "lineage_s": found["timings"]["total_s"],
                    "total_s": time.perf_counter() - started},
        "summary": {"statements": _statements(report, cards, dna)},
    }


def _statements(report: dict, cards: dict, dna: dict) -> list[str]:
    lo, hi = report["fpr_ci95"] or (None, None)
    lines = [f"top-1 parent {report['top1_parent_accuracy']:.3f}, directed edges P/R/F1 "
             f"{report['edge_precision']:.3f}/{report['edge_recall']:.3f}/{report['edge_f1']:.3f}, family ARI "
             f"{report['family_ari']:.3f}",
             f"false positives {report['false_positives']} of {report['independent_pairs']} independent pairs "
             f"(95% CI {100 * (lo or 0):.2f}-{100 * (hi or 0):.2f}%)",
             f"cards alone: top-1 parent {cards['top1_parent_accuracy']:.3f}, edge F1 {cards['edge_f1']:.3f}, "
             f"ARI {cards['family_ari']:.3f}"]
    if dna.get("ran"):
        r = dna["report"]
        lines.append(f"modeldna: top-1 parent {r['top1_parent_accuracy']:.3f}, edge F1 {r['edge_f1']:.3f}, ARI "
                     f"{r['family_ari']:.3f}, false positives {r['false_positives']}")
    return lines
