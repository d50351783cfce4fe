"""Nulls give honest p-values (+1 corrected, uniform under independence, joint over layers); stats stay in log space."""

import math
from decimal import Decimal, getcontext

import pytest
import scipy.stats
import torch

from solarforensics.bench.metrics import bench_memory, bench_metrics
from solarforensics.errors import SelectionError, SpecError
from solarforensics.metrics.nulls import aggregate_shuffle_null, reference_null_norm_gains, shuffle_null
from solarforensics.metrics.similarity import pair_stats
from solarforensics.metrics.stats import empirical_p, fisher_combine, format_p, log10_p, summarize


def gains(seed: int, n: int = 256, spread: float = 0.01) -> torch.Tensor:
    """A norm-gain-like vector: all positive, mean near 1, small spread."""
    return 1 + spread * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_identical_vectors_reach_the_resolution_and_no_further():
    a = gains(0)
    result = shuffle_null(a, a.clone(), permutations=99)
    assert result.p_value == 1 / 100 and result.log10_p_value == -2.0
    assert abs(result.observed - 1.0) < 1e-12
    assert (result.permutations, result.seed, result.statistic, result.pairs) == (99, 0, "pearson", 1)
    assert result.null_q05 < result.null_q50 < result.null_q95 < 0.5


def test_observed_statistics_agree_with_pair_stats():
    a, b = gains(1), gains(2) + 0.5 * (gains(1) - 1)
    stats = pair_stats(a, b)
    for name in ("pearson", "cosine", "cos_minus_one"):
        assert abs(shuffle_null(a, b, name, permutations=9).observed - getattr(stats, name)) < 1e-12


def test_p_value_is_one_plus_count_over_b_plus_one():
    a, b = gains(3), gains(4)
    result = shuffle_null(a, b, permutations=199, seed=7)
    hits = result.p_value * 200
    assert hits == round(hits) and hits >= 1


def test_p_values_of_independent_vectors_are_uniform():
    pvalues = [shuffle_null(gains(2 * s, 40), gains(2 * s + 1, 40), permutations=99, seed=s).p_value
               for s in range(200)]
    assert scipy.stats.kstest(pvalues, "uniform").pvalue > 0.001


def test_same_seed_same_null_other_seed_other_null():
    a, b = gains(5), gains(6)
    first, again, other = (shuffle_null(a, b, permutations=50, seed=s) for s in (1, 1, 2))
    assert first == again and first.null_mean != other.null_mean


def test_constant_vector_has_no_pearson_null():
    result = shuffle_null(torch.ones(50), gains(7, 50), permutations=9)
    assert (result.observed, result.p_value, result.null_mean) == (None, None, None)
    assert shuffle_null(torch.ones(50), gains(7, 50), "cosine", permutations=9).p_value is not None


def test_nonfinite_pairs_are_dropped_before_shuffling():
    a, b = gains(8, 100), gains(8, 100)
    a[5] = math.nan
    assert shuffle_null(a, b, permutations=19).p_value == 1 / 20


def test_joint_permutation_moves_all_layers_together():
    a, b = gains(9), gains(10)
    single = shuffle_null(a, b, permutations=200, seed=3)
    joint = aggregate_shuffle_null([(a, b), (a, b)], permutations=200, seed=3, joint=True)
    independent = aggregate_shuffle_null([(a, b), (a, b)], permutations=200, seed=3, joint=False)
    # one permutation for both identical layers: the mean equals the single statistic, draw by draw
    assert joint.pairs == 2 and abs(joint.null_std - single.null_std) < 1e-12
    assert abs(joint.observed - single.observed) < 1e-12
    # independent permutations average out: the spread shrinks by about sqrt(2)
    assert 0.55 < independent.null_std / single.null_std < 0.9


def test_aggregate_of_layers_copied_from_a_is_significant():
    layers_a = [gains(20 + i) for i in range(6)]
    layers_b = [x + 0.002 * torch.randn(256, dtype=torch.float64) for x in layers_a]
    layers_b.append(gains(99, 64))  # a layer of another length gets its own permutation
    result = aggregate_shuffle_null(list(zip(layers_a + [gains(98, 64)], layers_b)), permutations=99)
    assert result.pairs == 7 and result.p_value == 1 / 100


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(SpecError, match="unknown null statistic 'mad'"):
        shuffle_null(gains(0), gains(1), "mad")
    with pytest.raises(SelectionError):
        shuffle_null(gains(0, 10), gains(1, 11))
    with pytest.raises(SpecError, match="permutations must be at least 1"):
        shuffle_null(gains(0), gains(1), permutations=0)


def test_reference_null_shows_raw_cosine_of_unrelated_gains_is_near_one():
    a, b = gains(11, 512), gains(12, 512)
    result = reference_null_norm_gains(a, b, draws=300, seed=4)
    cosine, pearson = result["cosine"], result["pearson"]
    assert abs(cosine.null_mean - 1 / (1 + 0.01**2)) < 2e-5  # E cos = mu^2 / (mu^2 + sigma^2) for mean 1, std 0.01
    assert cosine.observed > 0.9999 and cosine.p_value > 0.01
    assert abs(pearson.null_mean) < 0.01 and 0.8 < pearson.null_std * math.sqrt(512) < 1.2
    assert result == reference_null_norm_gains(a, b, draws=300, seed=4)
    assert cosine.permutations == 300 and cosine.statistic == "cosine"


def test_empirical_p_counts_ties_and_drops_missing_values():
    assert empirical_p(0.5, [0.1, 0.5, 0.9]) == 3 / 4
    assert empirical_p(0.5, [0.1, 0.5, 0.9], greater=False) == 3 / 4
    assert empirical_p(0.5, [0.1, None, math.nan, 0.9]) == 2 / 3
    assert empirical_p(0.5, torch.tensor([0.5 - 1e-15, 0.2])) == 2 / 3  # rounding noise is a tie
    assert empirical_p(2.0, []) == 1.0


def test_log10_p_is_never_minus_infinity():
    assert log10_p(0.001) == pytest.approx(-3.0)
    assert log10_p(0.0) == math.log10(math.ulp(0.0))
    assert log10_p(0.0, resolution=1 / 1001) == pytest.approx(-math.log10(1001))


def test_fisher_matches_scipy_where_scipy_can_and_stays_finite_where_it_cannot():
    pvalues = [0.01, 0.2, 0.5, 1e-5]
    p, lp = fisher_combine(pvalues)
    assert p == pytest.approx(scipy.stats.combine_pvalues(pvalues, method="fisher").pvalue, rel=1e-12)
    assert lp == pytest.approx(math.log10(p), rel=1e-12)
    assert fisher_combine([1.0, 1.0]) == (1.0, 0.0)
    p, lp = fisher_combine([1e-300] * 50)
    getcontext().prec = 60
    half = 50 * 300 * Decimal(10).ln()  # X / 2 for 50 p-values of 1e-300
    exact = (-half).exp() * sum(half**j / math.factorial(j) for j in range(50))
    assert p == 0.0 and lp == pytest.approx(float(exact.log10()), rel=1e-12)
    assert fisher_combine([-300.0] * 50, log10=True)[1] == pytest.approx(lp, rel=1e-12)


def test_fisher_refuses_what_is_not_a_p_value():
    with pytest.raises(ValueError):
        fisher_combine([])
    with pytest.raises(ValueError):
        fisher_combine([0.5, 1.5])


def test_format_p_never_prints_zero():
    assert format_p(1 / 1001, permutations=1000) == "p = 0.0010 (1/1001)"
    assert format_p(0.5) == "p = 0.5000"
    assert format_p(3.2e-7) == "p = 3.2e-07"
    assert format_p(0.0, -412.3) == "p < 1e-300 (log10 p = -412.3)"
    assert format_p(0.0, -250.0) == "p = 1e-250"
    assert format_p(None) == "p = n/a"


def test_summarize_ignores_missing_values():
    assert summarize([1.0, None, 3.0, math.nan]) == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 2}
    assert summarize([None]) == {"mean": None, "std": None, "min": None, "max": None, "n": 0}


def test_bench_metrics_reports_its_figures():
    result = bench_metrics(size_bytes=1 << 16, repeat=1)
    assert result["bytes_processed"] == 2 << 16 and result["size_bytes"] == 1 << 16
    assert result["pair_stats_gb_per_s"] > 0 and result["numpy_gb_per_s"] > 0 and result["ratio_vs_numpy"] > 0
    assert result["device"].startswith("cpu")


def test_bench_memory_stays_within_its_stated_bound():
    result = bench_memory(total_elements=1 << 20, chunk_elements=1 << 12)
    assert result["chunks"] == (1 << 20) >> 12
    assert result["within_bound"], result


def test_joint_draws_through_the_cross_product_equal_the_direct_sums(monkeypatch):
    import torch

    from solarforensics.metrics import nulls

    g = torch.Generator().manual_seed(1)
    pairs = [(torch.rand(300, generator=g) + 1, torch.rand(300, generator=g) + 1) for _ in range(12)]
    fast = nulls.aggregate_shuffle_null(pairs, "pearson", 199, 3, joint=True)
    monkeypatch.setattr(nulls, "CROSS_MAX", 0)
    direct = nulls.aggregate_shuffle_null(pairs, "pearson", 199, 3, joint=True)
    assert fast.p_value == direct.p_value and abs(fast.null_mean - direct.null_mean) < 1e-12
    assert abs(fast.null_std - direct.null_std) < 1e-12
