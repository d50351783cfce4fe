"""The verdict engine: how test rows become derived / independent / inconclusive, how p-values combine, where the
thresholds come from, and how the verdict is rendered."""

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from solarforensics.errors import FormatError
from solarforensics.metrics.stats import fisher_combine
from solarforensics.provenance.verdict import combined_p, decide, load_thresholds
from solarforensics.provenance.weights import not_applicable, result
from solarforensics.render.terminal import render_terminal
from solarforensics.results.document import new_document

# The engine's rules are specified against fixed values (the hand-set ones from before the zoo fit); the shipped
# file changes whenever `validate --write-thresholds` refits it.
THRESHOLDS = load_thresholds(Path(__file__).parent / "fixtures" / "verdict-provisional.toml")
SHIPPED = load_thresholds()


def identity(**counts) -> dict:
    stats = {"identical_tensors": 0, "identical_rows": 0, "identical_windows": 0, "near_equal_tensors": 0, **counts}
    return result("identity", statistic=stats)


def cka(statistic: float, effect: float, method: str = "embeddings") -> dict:
    return result("attention-cka", statistic=statistic, effect=effect, alignment_method=method)


def residual(name: str, log10_p: float) -> dict:
    return result(name, p_value=10**log10_p, log10_p_value=log10_p, symmetry="residual")


def units(name: str, per_layer: list[float]) -> dict:
    p, log10_p = fisher_combine(per_layer, log10=True)
    return result(name, p_value=p, log10_p_value=log10_p, symmetry="units", per_layer_log10_p=per_layer)


def test_shipped_thresholds_are_fitted_on_the_zoo_and_recorded():
    assert SHIPPED["status"] == "fitted" and "grid fit on" in SHIPPED["source"] and "zoo size" in SHIPPED["source"]
    assert SHIPPED["path"].endswith("configs/verdict.toml")
    derived, independent = SHIPPED["derived"], SHIPPED["independent"]
    assert independent["cka_path"] <= derived["cka_path"] and independent["cka_effect"] <= derived["cka_effect"]
    assert derived["log10_p"] <= independent["log10_p"] < 0
    doc = decide([identity(), cka(0.01, 0.2)], [], SHIPPED)
    assert doc["thresholds"] == SHIPPED and doc["verdict"] == "independent"


def test_hand_set_thresholds_are_recorded_as_provisional():
    assert THRESHOLDS["status"] == "provisional"
    assert THRESHOLDS["derived"]["log10_p"] == -6.0 and THRESHOLDS["independent"]["cka_effect"] == 3.0


def test_p_values_combine_once_per_symmetry():
    """Two tests on the one residual symmetry enter once (Bonferroni); per-layer unit symmetries enter Fisher."""
    rows = [residual("norm-gains", -3.0), residual("residual-alignment", -0.5), units("router-matching", [-2.0, -2.0])]
    p, log10_p, names = combined_p(rows)
    expected = fisher_combine([-3.0 + math.log10(2), -2.0, -2.0], log10=True)[1]
    assert log10_p == pytest.approx(expected) and p == pytest.approx(10**expected)
    assert names == ["norm-gains", "residual-alignment", "router-matching"]
    assert combined_p([residual("norm-gains", -0.1)])[1] == pytest.approx(-0.1 + math.log10(1))
    assert combined_p([identity(), cka(0.5, 9)]) == (None, None, [])


def test_any_decisive_test_makes_derived():
    assert decide([identity(identical_rows=3), cka(0.0, 0.0)], [], THRESHOLDS)["decisive"] == ["identity"]
    by_cka = decide([identity(), cka(0.95, 40.0)], [], THRESHOLDS)
    assert (by_cka["verdict"], by_cka["decisive"]) == ("derived", ["attention-cka"])
    by_p = decide([identity(), cka(0.0, 0.0), units("router-matching", [-4.0, -4.0])], [], THRESHOLDS)
    assert by_p["decisive"] == ["router-matching"] and by_p["log10_p_value"] < -6
    combined = decide([identity(), cka(0.0, 0.0), units("router-matching", [-3.0]), units("mlp-unit-matching",
                                                                                           [-3.0, -3.0])], [], THRESHOLDS)
    assert combined["decisive"] == ["combined p-value (router-matching, mlp-unit-matching)"]


def test_independent_needs_the_disguise_invariant_test_near_its_null():
    doc = decide([identity(), residual("norm-gains", -0.3), cka(0.02, 0.4)], [], THRESHOLDS)
    assert doc["verdict"] == "independent" and doc["decisive"] == []
    assert doc["statements"][0].startswith("Independent, within what weight tests can see")
    assert doc["statements"][-1] == doc["limits"]


def test_everything_else_is_inconclusive_with_the_reason():
    no_cka = decide([identity(), residual("norm-gains", -0.3)], [{"name": "cka", "reason": "not selected"}],
                    THRESHOLDS)
    assert no_cka["statements"][:1] == ["Inconclusive: the disguise-invariant test (attention CKA after residual "
                                        "alignment) could not run."]
    assert "Not tested: cka (not selected)." in no_cka["statements"]
    between = decide([identity(), cka(0.2, 5.0)], [], THRESHOLDS)
    assert between["statements"][0] == "Inconclusive: attention CKA lies between the independent and derived thresholds."
    unaligned = decide([identity(), cka(0.01, 0.0, method="none")], [], THRESHOLDS)
    assert unaligned["verdict"] == "inconclusive"
    suggestive = decide([identity(), cka(0.01, 0.0), residual("norm-gains", -2.5)], [], THRESHOLDS)
    assert suggestive["statements"][0] == ("Inconclusive: the combined p-value (p = 0.0032) is small but not "
                                           "decisive.")
    assert decide([not_applicable("attention-cka", "x")], [], THRESHOLDS)["verdict"] == "inconclusive"


def test_thresholds_come_from_the_file_validate_writes(tmp_path):
    fitted = tmp_path / "verdict.toml"
    fitted.write_text(THRESHOLDS_TEXT.replace('status = "provisional"', 'status = "fitted"')
                      .replace("cka_effect = 8.0", "cka_effect = 4.0"))
    custom = load_thresholds(fitted)
    assert custom["status"] == "fitted" and custom["derived"]["cka_effect"] == 4.0
    assert decide([identity(), cka(0.5, 5.0)], [], custom)["verdict"] == "derived"
    (tmp_path / "broken.toml").write_text("[derived]\nlog10_p = -6\n")
    with pytest.raises(FormatError, match="malformed"):
        load_thresholds(tmp_path / "broken.toml")


THRESHOLDS_TEXT = Path(THRESHOLDS["path"]).read_text(encoding="utf-8")


def test_the_report_leads_with_the_verdict_and_never_prints_p_as_zero():
    rows = [identity(), residual("residual-alignment", -420.5), cka(0.99, 300.0)]
    fields = decide(rows, [{"name": "matching", "reason": "dense models"}], THRESHOLDS)
    doc = new_document("provenance", ["solarforensics", "provenance", "a", "b"], tests=rows, alignment={},
                       **{k: fields[k] for k in ("verdict", "p_value", "log10_p_value", "decisive", "limits",
                                                 "thresholds")},
                       not_tested=[{"name": "matching", "reason": "dense models"}],
                       summary={"statements": fields["statements"]})
    console = Console(file=io.StringIO(), width=300, color_system=None, record=True)
    render_terminal(doc, console)
    text = console.export_text()
    assert "Verdict: DERIVED — one model's weights were initialised from the other's" in text
    assert "combined p-value: p < 1e-300 (log10 p = -420.5)" in text
    assert "decisive: residual-alignment, attention-cka" in text
    assert "thresholds: provisional (not yet fitted on the ground-truth zoo)" in text
    fitted = decide(rows, [], SHIPPED)["thresholds"]
    console = Console(file=io.StringIO(), width=300, color_system=None, record=True)
    render_terminal({**doc, "thresholds": fitted}, console)
    assert f"thresholds: fitted ({SHIPPED['source']})" in console.export_text()
    assert "matching: dense models" in text and "Weight tests cannot see distillation" in text


def test_a_threshold_that_is_not_a_number_is_refused_in_one_line(tmp_path):
    from solarforensics.errors import FormatError

    text = load_thresholds()["path"]
    bad = tmp_path / "verdict.toml"
    bad.write_text(open(text).read().replace("cka_derived = 0.15", 'cka_derived = "x"'))
    with pytest.raises(FormatError, match=r"\[lean\] cka_derived = 'x' is not a number"):
        load_thresholds(bad)
