"""Lineage metrics on examples small enough to count by hand: top-1 parent, directed edges, the adjusted Rand index,
Clopper-Pearson intervals and the false-positive rate over independent pairs; then lineage_report on a five-model
forest, the Hub-card baseline on the planned forest, and modeldna skipped when it is not installed."""

import pytest

from solarforensics.errors import FormatError
from solarforensics.validation import lineage_metrics as lm
from solarforensics.validation.forest import card_lineage, lineage_report, modeldna_lineage
from solarforensics.zoo.forest import FOREST_SIZES, forest_section, plan_forest

# R -> A, R -> B, A -> C, (A, B) -> M (a merge); X is unrelated to all of them.
FOREST = {
    "models": [{"name": n, "parents": p, "op": op, "generation": g, "family": f, "transformations": t}
               for n, p, op, g, f, t in (
        ("R", [], "train", 0, "R", ["pre-training"]), ("A", ["R"], "tune", 1, "R", ["fine-tune"]),
        ("B", ["R"], "tune", 1, "R", ["fine-tune", "residual rotation"]), ("C", ["A"], "tune", 2, "R", ["fine-tune"]),
        ("M", ["A", "B"], "merge", 2, "R", ["weight average"]), ("X", [], "train", 0, "X", ["pre-training"]))],
    "edges": [{"parent": p, "child": c, "op": op} for p, c, op in (
        ("R", "A", "tune"), ("R", "B", "tune"), ("A", "C", "tune"), ("A", "M", "merge"), ("B", "M", "merge"))],
    "roots": ["R", "X"],
}
# A: R (0.9) beats B (0.5), right; B: A, wrong; C: A, right; M: B, one of its parents; R gets a parent it lacks.
PREDICTED = {
    "kind": "lineage",
    "families": [["R", "A", "B", "C"], ["M", "X"]],
    "edges": [{"parent": p, "child": c, "confidence": k} for p, c, k in (
        ("B", "A", 0.5), ("R", "A", 0.9), ("A", "B", 0.8), ("A", "C", 0.7), ("B", "M", 0.6), ("C", "R", 0.1))],
    "roots": ["C", "X"],
}


def test_the_parent_is_the_most_confident_incoming_edge_with_ties_to_the_first_name():
    assert lm.predicted_parents(PREDICTED["edges"]) == {"A": "R", "B": "A", "C": "A", "M": "B", "R": "C"}
    tied = [{"parent": "Q", "child": "A", "confidence": 0.5}, {"parent": "P", "child": "A", "confidence": 0.5}]
    assert lm.predicted_parents(tied) == lm.predicted_parents(tied[::-1]) == {"A": "P"}


def test_top1_counts_only_models_with_a_parent_and_either_parent_of_a_merge():
    truth = {m["name"]: m["parents"] for m in FOREST["models"]}
    got = lm.top1_parent(truth, {"A": "R", "B": "A", "C": "A", "M": "B", "R": "C"})
    assert (got["models"], got["correct"], got["accuracy"]) == (4, 3, 0.75)
    assert got["per_model"] == {"A": True, "B": False, "C": True, "M": True}
    assert lm.top1_parent(truth, {})["accuracy"] == 0.0 and lm.top1_parent({"R": []}, {})["accuracy"] is None


def test_edge_scores_by_hand():
    truth = {("R", "A"), ("R", "B"), ("A", "C"), ("A", "M"), ("B", "M")}
    guess = {("B", "A"), ("R", "A"), ("A", "B"), ("A", "C"), ("B", "M"), ("C", "R")}
    assert lm.edge_scores(truth, guess) == {"true_positives": 3, "predicted": 6, "true": 5, "precision": 0.5,
                                            "recall": 0.6, "f1": 6 / 11}
    assert lm.edge_scores(truth, set()) == {"true_positives": 0, "predicted": 0, "true": 5, "precision": None,
                                            "recall": 0.0, "f1": 0.0}
    assert lm.edge_scores(set(), set())["f1"] is None


def test_adjusted_rand_index_by_hand():
    # Contingency {2, 1, 1, 2}: index 2, expected 6 x 3 / 15 = 1.2, maximum 4.5 -> 0.8 / 3.3 = 8/33.
    assert lm.adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(8 / 33)
    assert lm.adjusted_rand_index("aabbc", "xxyyz") == 1.0  # the same partition under other names
    assert lm.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)  # worse than chance
    assert lm.adjusted_rand_index([1, 2, 3], [4, 5, 6]) == 1.0 and lm.adjusted_rand_index([1, 1], [2, 2]) == 1.0
    with pytest.raises(ValueError):
        lm.adjusted_rand_index([1], [1, 2])


def test_clopper_pearson_by_hand():
    low, high = lm.clopper_pearson(0, 1000)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 1000))  # 0.00368: 0 of 1,000 bounds FPR < 1%
    low, high = lm.clopper_pearson(1000, 1000)
    assert low == pytest.approx(0.025 ** (1 / 1000)) and high == 1.0
    assert lm.clopper_pearson(1, 10) == pytest.approx((0.0025286, 0.4450161), abs=1e-7)  # the textbook interval
    assert lm.clopper_pearson(0, 0) is None


def test_false_positives_over_every_pair_across_families():
    family = {"R": "R", "A": "R", "B": "R", "C": "R", "M": "R", "X": "X"}
    got = lm.false_positives(family, [("R", "A"), ("A", "R"), ("M", "X"), ("A", "nobody"), ("C", "A")])
    assert got["independent_pairs"] == 5 and got["false_positives"] == 1 and got["fpr"] == 0.2
    assert got["fpr_ci95"] == pytest.approx(list(lm.clopper_pearson(1, 5)))
    assert (got["derived_pairs"], got["derived_pairs_found"], got["related_recall"], got["unknown_pairs"]) == (
        10, 2, 0.2, 1)


def test_lineage_report_of_the_hand_forest():
    report = lineage_report({"forest": FOREST}, PREDICTED, None)
    assert report["top1_parent_accuracy"] == 0.75 and report["top1_parent_correct"] == 3
    assert (report["edge_precision"], report["edge_recall"], report["edge_f1"]) == (0.5, 0.6, 6 / 11)
    assert report["undirected_edge_f1"] == 0.6  # A-B counted once; C-R is still wrong
    assert report["family_ari"] == pytest.approx(8 / 23)
    assert (report["independent_pairs"], report["false_positives"], report["fpr"]) == (5, 1, 0.2)
    assert report["related_pairs_source"] == "pairs inside a predicted family"
    assert (report["derived_pairs"], report["derived_pairs_found"]) == (10, 6)
    assert report["per_op"] == {"merge": {"models": 1, "correct": 1, "accuracy": 1.0},
                                "tune": {"models": 3, "correct": 2, "accuracy": 2 / 3}}
    assert report["per_generation"] == {"1": {"models": 2, "correct": 1, "accuracy": 0.5},
                                        "2": {"models": 2, "correct": 2, "accuracy": 1.0}}
    assert report["per_transformation"] == {"fine-tune": {"models": 3, "correct": 2, "accuracy": 2 / 3},
                                            "residual rotation": {"models": 1, "correct": 0, "accuracy": 0.0},
                                            "weight average": {"models": 1, "correct": 1, "accuracy": 1.0}}
    assert report["wrong_parents"] == [{"child": "B", "predicted": "A", "true": ["R"]}]
    assert (report["roots_true"], report["roots_predicted"], report["roots_correct"]) == (2, 2, 1)
    assert report["targets"] == {"top1_parent_accuracy": False, "edge_f1": False, "family_ari": False,
                                 "fpr_ci95_upper": False, "independent_pairs": False}


def test_lineage_report_takes_the_pairs_called_related_and_specs_as_indexed():
    specs = {**PREDICTED, "edges": [{**e, "parent": f"zoo/{e['parent']}", "child": f"/zoo/dir/{e['child']}@main"}
                                    for e in PREDICTED["edges"]]}
    report = lineage_report(FOREST, specs, {frozenset(("zoo/R", "A"))})
    assert report["edge_f1"] == 6 / 11 and report["unknown_models"] == []
    assert (report["false_positives"], report["derived_pairs_found"], report["related_pairs_source"]) == (
        0, 1, "given")
    assert report["fpr_ci95"] == [0.0, pytest.approx(1 - 0.025 ** (1 / 5))]
    perfect = {"families": [["R", "A", "B", "C", "M"]],
               "edges": [{**e, "confidence": 1.0} for e in FOREST["edges"]], "roots": ["R", "X"]}
    best = lineage_report(FOREST, perfect, None)
    assert (best["top1_parent_accuracy"], best["edge_f1"], best["family_ari"], best["fpr"]) == (1.0, 1.0, 1.0, 0.0)
    assert best["targets"]["independent_pairs"] is False and best["targets"]["top1_parent_accuracy"] is True


@pytest.mark.parametrize("doc, message", [
    ({"edges": [{"child": "A"}]}, "malformed"),
    ({"families": [["A", "B"], ["B"]]}, "two families"),
    ({"edges": "R->A"}, "malformed"),
])
def test_a_malformed_prediction_is_one_clear_error(doc, message):
    with pytest.raises(FormatError, match=message):
        lineage_report(FOREST, doc, None)


def test_the_hub_cards_alone_find_the_declared_parents_only():
    nodes = plan_forest(FOREST_SIZES["tiny"], 0)
    forest = forest_section(nodes, {n.recipe.name: {"family": "llama"} for n in nodes}, 0)
    report = lineage_report(forest, card_lineage(forest), None)
    cards = forest["counts"]["cards"]
    assert report["top1_parent_accuracy"] == cards["correct"] / forest["counts"]["derived_models"]
    assert report["edge_precision"] < 1.0 and report["false_positives"] > 0  # the wrong cards join two families
    assert report["targets"]["top1_parent_accuracy"] is False and report["targets"]["independent_pairs"] is True


def test_modeldna_is_skipped_cleanly_when_not_installed(monkeypatch, tmp_path):
    monkeypatch.delenv("SOLARFORENSICS_MODELDNA", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    got = modeldna_lineage(tmp_path, {"forest": FOREST})
    assert got["ran"] is False and "not installed" in got["reason"] and got["tool"] == "modeldna"


@pytest.mark.slow
def test_modeldna_asked_for_the_parents_of_a_micro_tree(tmp_path):
    from solarforensics.validation.peer import find_modeldna
    from solarforensics.zoo.forest import build_forest

    if find_modeldna() is None:
        pytest.skip("modeldna not installed (SOLARFORENSICS_MODELDNA)")
    forest = build_forest(tmp_path / "forest", "micro", seed=5)["forest"]
    keep = {m["name"] for m in forest["models"] if m["family"] in ("d64a", "solo-seed", "solo-order")}
    subset = {"models": [m for m in forest["models"] if m["name"] in keep],
              "edges": [e for e in forest["edges"] if e["child"] in keep],
              "roots": [r for r in forest["roots"] if r in keep]}
    got = modeldna_lineage(tmp_path / "forest", subset)
    assert got["ran"] is True and got["errors"] == [], got.get("errors")
    report = got["report"]
    assert report["models"] == 18 and report["independent_pairs"] == 16 * 2 + 1
    assert report["per_op"]["upscale"]["correct"] == 0  # another layer count: modeldna never compares them
    assert 0.0 <= report["top1_parent_accuracy"] < 1.0
