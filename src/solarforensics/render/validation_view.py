"""What a `validation` document shows: error rates, confusion matrix, per-test AUC with ROC curves, the independent
pairs' p-values against uniform, the thresholds (provisional and fitted), and every pair beside the peer tool."""

import math
from typing import Any

from solarforensics.render import plots
from solarforensics.render.blocks import Block, Bullets, Facts, Figure, Table
from solarforensics.render.formatting import MISSING, fmt_bytes, fmt_num, fmt_p, fmt_seconds, fmt_value

VERDICT_COLUMNS = ("derived", "independent", "inconclusive")


def validation_blocks(doc: dict) -> list[Block]:
    """Rates first, then the confusion matrices, AUCs and plots, thresholds, and the pair table."""
    if isinstance(doc.get("lineage"), dict):
        return lineage_validation_blocks(doc)
    blocks: list[Block] = []
    statements = (doc.get("summary") or {}).get("statements") or []
    if statements:
        blocks.append(Bullets("What the zoo says", [str(s) for s in statements]))
    peer = doc.get("peer") if isinstance(doc.get("peer"), dict) else {}
    blocks.append(Table("Side by side", ["tool", "accuracy", "false-positive rate", "true-positive rate", "pairs"],
                        [["solarforensics", _pct(doc.get("accuracy")), _pct(doc.get("false_positive_rate")),
                          _pct(doc.get("true_positive_rate")), fmt_value(doc.get("n"))],
                         ["modeldna", *([_pct(peer.get("accuracy")), _pct(peer.get("false_positive_rate")),
                                         _pct(peer.get("true_positive_rate")), fmt_value(peer.get("n"))]
                                        if peer.get("ran") else [f"not run: {peer.get('reason', MISSING)}", "", "", ""])]],
                        [False, True, True, True, True]))
    blocks.append(_confusion("Confusion matrix (solarforensics)", doc.get("confusion")))
    if peer.get("ran"):
        blocks.append(_confusion("Confusion matrix (modeldna)", peer.get("confusion")))
    aucs = doc.get("per_test_auc") if isinstance(doc.get("per_test_auc"), dict) else {}
    if aucs:
        rows = [[name, fmt_num(v.get("auc")), _pct(v.get("tpr_at_zero_fpr")), fmt_value(v.get("n_derived")),
                 fmt_value(v.get("n_independent"))] for name, v in aucs.items() if isinstance(v, dict)]
        blocks.append(Table("ROC AUC per test (score: -log10 p, else effect)", ["test", "AUC", "TPR at 0 FPR",
                                                                               "derived", "independent"],
                            rows, [False, True, True, True, True]))
        blocks.append(Figure("ROC curves per test", "validation-roc", lambda: roc_png(doc)))
    ks = doc.get("ks") if isinstance(doc.get("ks"), dict) else {}
    blocks.append(Facts("Independent pairs' p-values vs U(0, 1)", [
        ("pairs", fmt_value(ks.get("n"))), ("KS statistic D", fmt_num(ks.get("statistic"))),
        ("KS p-value", fmt_num(ks.get("p_value")))]))
    if ks.get("p_values"):
        blocks.append(Figure("p-values of independent pairs", "validation-pvalues", lambda: pvalue_png(doc)))
    blocks += _threshold_blocks(doc)
    blocks.append(_pairs_table(doc))
    return blocks


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and math.isfinite(value) else MISSING


def _confusion(title: str, confusion: Any) -> Table:
    confusion = confusion if isinstance(confusion, dict) else {}
    rows = [[f"label {label}"] + [fmt_value((confusion.get(label) or {}).get(v, 0)) for v in VERDICT_COLUMNS]
            for label in ("derived", "independent")]
    return Table(title, ["", *(f"called {v}" for v in VERDICT_COLUMNS)], rows, [False, True, True, True])


def _threshold_blocks(doc: dict) -> list[Block]:
    thresholds = doc.get("thresholds") if isinstance(doc.get("thresholds"), dict) else {}
    rows = []
    for name in ("provisional", "fitted"):
        t = thresholds.get(name)
        if not isinstance(t, dict):
            rows.append([name, "not fitted", "", "", ""])
            continue
        derived, test = t.get("derived") or {}, t.get("test_split") or {}
        label = f"as run ({t.get('status')})" if name == "provisional" and t.get("status") else name
        rows.append([label, f"log10 p <= {fmt_num(derived.get('log10_p'))}, CKA path >= "
                           f"{fmt_num(derived.get('cka_path'))}, effect >= {fmt_num(derived.get('cka_effect'))}",
                     _pct(test.get("accuracy")), _pct(test.get("false_positive_rate")), fmt_value(test.get("n"))])
    zoo = doc.get("zoo") if isinstance(doc.get("zoo"), dict) else {}
    facts = [("zoo", f"{zoo.get('path', MISSING)} (size {zoo.get('size', MISSING)}, seed {zoo.get('seed', MISSING)}, "
                     f"{zoo.get('models', MISSING)} models)"),
             ("models read from", str(zoo.get("read_through", MISSING))),
             ("thresholds file", str(thresholds.get("file", MISSING))),
             ("rewritten with the fitted values", "yes" if thresholds.get("written") else "no")]
    return [Facts("Zoo and thresholds", facts),
            Table("Verdict thresholds on the held-out split", ["thresholds", "derived when", "accuracy", "FPR",
                                                               "pairs"], rows, [False, False, True, True, True])]


def _pairs_table(doc: dict) -> Table:
    rows = []
    for pair in doc.get("pairs") or []:
        if not isinstance(pair, dict):
            continue
        peer = pair.get("peer") if isinstance(pair.get("peer"), dict) else {}
        peer_text = (f"{peer.get('verdict_raw')} ({fmt_num(peer.get('probability'))})" if "verdict" in peer
                     else peer.get("error", MISSING)[:60] if peer else MISSING)
        mark = "✓" if pair.get("verdict") == pair.get("label") else "✗"
        rows.append([f"{pair.get('a')} vs {pair.get('b')}", str(pair.get("label")),
                     ", ".join(str(t) for t in pair.get("transformations") or []), f"{mark} {pair.get('verdict')}",
                     fmt_p(None, pair.get("log10_p")), fmt_seconds(pair.get("seconds")), fmt_bytes(pair.get("bytes")),
                     str(pair.get("split", MISSING)), peer_text])
    return Table("Pairs", ["pair", "label", "transformations", "verdict", "combined p", "time", "bytes", "split",
                           "modeldna"], rows, [False, False, False, False, True, True, True, False, False])


def roc_png(doc: dict) -> bytes:
    """One ROC curve per test, with the chance diagonal."""
    figure, axes = plots._figure(6.5, 5.5)
    axes.plot([0, 1], [0, 1], color=plots.NULL_COLOR, lw=1, ls="--", label="chance")
    for index, (name, v) in enumerate(sorted((doc.get("per_test_auc") or {}).items())):
        points = v.get("points") if isinstance(v, dict) else None
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker=plots.MARKERS[index % len(plots.MARKERS)],
                      ms=4, lw=1.6, label=f"{name} (AUC {fmt_num(v.get('auc'), 3)})", drawstyle="steps-post")
    axes.set_xlabel("false-positive rate (independent pairs called derived)")
    axes.set_ylabel("true-positive rate")
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.legend(fontsize=7, loc="lower right")
    return plots._png(figure)


def pvalue_png(doc: dict) -> bytes:
    """Histogram of the independent pairs' combined p-values against the uniform density."""
    figure, axes = plots._figure(6.5, 4.0)
    values = [v for v in (doc.get("ks") or {}).get("p_values") or [] if isinstance(v, (int, float))]
    axes.hist(values, bins=10, range=(0, 1), color=plots.CENTERED_COLOR, alpha=0.8, label="independent pairs")
    axes.axhline(len(values) / 10, color=plots.RAW_COLOR, ls="--", lw=1.2, label="uniform expectation")
    axes.set_xlabel("combined p-value")
    axes.set_ylabel("pairs")
    axes.legend(fontsize=8)
    return plots._png(figure)


LINEAGE_FIGURES = (("top-1 parent", "top1_parent_accuracy"), ("edge precision", "edge_precision"),
                   ("edge recall", "edge_recall"), ("edge F1", "edge_f1"), ("family ARI", "family_ari"),
                   ("false positives", "false_positives"), ("independent pairs", "independent_pairs"))


def lineage_validation_blocks(doc: dict) -> list[Block]:
    """A forest: lineage figures beside the card-only and modeldna baselines, the targets, and the edges found."""
    blocks: list[Block] = []
    statements = (doc.get("summary") or {}).get("statements") or []
    if statements:
        blocks.append(Bullets("What the forest says", [str(s) for s in statements]))
    columns = {"solarforensics": doc["lineage"]}
    for name, report in (doc.get("baselines") or {}).items():
        if isinstance(report, dict) and "edge_f1" in report:
            columns[f"{name} (baseline)"] = report
    rows = [[label, *[fmt_value(r.get(key)) if not isinstance(r.get(key), float) else fmt_num(r.get(key))
                      for r in columns.values()]] for label, key in LINEAGE_FIGURES]
    rows.append(["FPR 95% CI", *[_ci(r.get("fpr_ci95")) for r in columns.values()]])
    blocks.append(Table("Lineage recovery", ["figure", *columns], rows, [False, *[True] * len(columns)]))
    targets = doc.get("targets") or {}
    blocks.append(Facts("Issue 17 targets met", [(str(k), fmt_value(v)) for k, v in targets.items()]))
    per_op = (doc["lineage"].get("per_op") or {})
    blocks.append(Table("Parent recovered, by operation", ["op", "models", "correct"],
                        [[op, fmt_value(v.get("models")), fmt_value(v.get("correct"))] for op, v in per_op.items()
                         if isinstance(v, dict)], [False, True, True]))
    return blocks


def _ci(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{100 * value[0]:.2f}-{100 * value[1]:.2f}%"
    return MISSING
