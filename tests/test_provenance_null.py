"""Under independence the battery's p-values must be uniform (METHODS §5): many independently initialised pairs,
a Kolmogorov-Smirnov test per p-value, and never a "derived" verdict. Slow: run with `-m slow`."""

import pytest
from scipy.stats import kstest

from solarforensics.checkpoints import build_checkpoint
from solarforensics.provenance.run import ProvenanceRequest, provenance_models

PAIRS = 24
FAMILIES = {"llama": {"hidden_size": 128, "num_layers": 6}, "glm4_moe": {"hidden_size": 128}}


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True], ids=["lean", "whole"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_p_values_of_independent_pairs_are_uniform(family, full, tmp_path):
    combined, per_test, verdicts = [], {}, []
    for pair in range(PAIRS):
        a = build_checkpoint(tmp_path / f"{pair}a", family, seed=10_000 + 2 * pair, overrides=FAMILIES[family])
        b = build_checkpoint(tmp_path / f"{pair}b", family, seed=10_001 + 2 * pair, overrides=FAMILIES[family])
        doc = provenance_models(ProvenanceRequest(str(a), str(b), device="cpu", seed=pair, full=full))
        verdicts.append(doc["verdict"])
        combined.append(doc["p_value"])
        for test in doc["tests"]:
            if test["p_value"] is not None:
                per_test.setdefault(test["name"], []).append(test["p_value"])
    assert "derived" not in verdicts
    assert verdicts.count("independent") >= PAIRS - 3
    alpha = 0.01 / (1 + len(per_test))  # one KS test per p-value: Bonferroni, or a correct battery fails ~5% of runs
    assert kstest(combined, "uniform").pvalue > alpha
    for name, values in per_test.items():
        assert len(values) == PAIRS, name
        assert kstest(values, "uniform").pvalue > alpha, name
