"""Lineage recovery scored against a known forest, as pure functions: top-1 parent accuracy, directed-edge
precision/recall/F1, the adjusted Rand index of two partitions, and a false-positive rate with its exact
(Clopper-Pearson) confidence interval."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from math import comb


def predicted_parents(edges: Iterable[Mapping]) -> dict[str, str]:
    """The predicted parent of each child: its incoming edge of highest confidence (a missing confidence counts as
    0; ties go to the parent name that sorts first, so the answer does not depend on the edge order)."""
    best: dict[str, tuple[float, str]] = {}
    for edge in edges:
        child, parent = edge["child"], edge["parent"]
        confidence = float(edge.get("confidence") or 0.0)
        held = best.get(child)
        if held is None or (-confidence, parent) < (-held[0], held[1]):
            best[child] = (confidence, parent)
    return {child: parent for child, (_, parent) in best.items()}


def top1_parent(true_parents: Mapping[str, Collection[str]], predicted: Mapping[str, str]) -> dict:
    """Over the models that have a parent: how many got one of their true parents (either parent of a merge) as
    their predicted parent. A model with no predicted parent counts as wrong."""
    scored = {child: predicted.get(child) in parents for child, parents in true_parents.items() if parents}
    right = sum(scored.values())
    return {"models": len(scored), "correct": right, "accuracy": right / len(scored) if scored else None,
            "per_model": scored}


def edge_scores(true_edges: Collection[tuple[str, str]], predicted_edges: Collection[tuple[str, str]]) -> dict:
    """Precision, recall and F1 of predicted (parent, child) edges; precision is None with no predicted edge,
    recall None with no true edge, F1 = 2 TP / (|predicted| + |true|)."""
    truth, guess = set(true_edges), set(predicted_edges)
    hit = len(truth & guess)
    return {"true_positives": hit, "predicted": len(guess), "true": len(truth),
            "precision": hit / len(guess) if guess else None, "recall": hit / len(truth) if truth else None,
            "f1": 2 * hit / (len(guess) + len(truth)) if guess or truth else None}


def adjusted_rand_index(labels_true: Sequence[Hashable], labels_pred: Sequence[Hashable]) -> float:
    """Hubert and Arabie's adjusted Rand index of two labellings of the same items (1 = same partition, ~0 =
    chance). When both partitions are trivial alike (all singletons, or one cluster) it is 1."""
    if len(labels_true) != len(labels_pred):
        raise ValueError("the two labellings must cover the same items")
    n = len(labels_true)
    pairs = sum(comb(c, 2) for c in Counter(zip(labels_true, labels_pred)).values())
    rows = sum(comb(c, 2) for c in Counter(labels_true).values())
    cols = sum(comb(c, 2) for c in Counter(labels_pred).values())
    total = comb(n, 2)
    if total == 0:
        return 1.0
    expected = rows * cols / total
    best = (rows + cols) / 2
    if best == expected:  # both partitions all singletons or both one cluster: nothing to adjust against
        return 1.0
    return (pairs - expected) / (best - expected)


def labels_from_families(names: Iterable[str], families: Iterable[Iterable[str]]) -> dict[str, str]:
    """A cluster label per name: the first member of its family; a name in no family is its own singleton."""
    label = {}
    for family in families:
        members = list(family)
        for name in members:
            if name in label:
                raise ValueError(f"{name!r} is in two families")
            label[name] = members[0]
    return {name: label.get(name, name) for name in names}


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The exact two-sided binomial interval for successes/trials (None with no trial)."""
    from scipy.stats import beta

    if trials <= 0:
        return None
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def false_positives(family_of: Mapping[str, str], called_related: Iterable[Collection[str]]) -> dict:
    """The false-positive rate over every pair of models in different true families (all independent), given the
    pairs a predictor called related, with its exact 95% interval; also how many same-family pairs it found."""
    sizes = Counter(family_of.values())
    n = len(family_of)
    related_total = sum(comb(c, 2) for c in sizes.values())
    independent = comb(n, 2) - related_total
    wrong = found = unknown = 0
    for pair in {frozenset(p) for p in called_related}:
        if len(pair) != 2 or not pair <= family_of.keys():
            unknown += 1
            continue
        a, b = sorted(pair)
        if family_of[a] == family_of[b]:
            found += 1
        else:
            wrong += 1
    interval = clopper_pearson(wrong, independent)
    return {"independent_pairs": independent, "false_positives": wrong,
            "fpr": wrong / independent if independent else None, "fpr_ci95": list(interval) if interval else None,
            "derived_pairs": related_total, "derived_pairs_found": found,
            "related_recall": found / related_total if related_total else None, "unknown_pairs": unknown}
