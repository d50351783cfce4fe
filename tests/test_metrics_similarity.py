"""pair_stats and friends match float64 numpy references to 1e-12, whatever the chunking, however nasty the input."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solarforensics.errors import SelectionError, SpecError
from solarforensics.metrics.device import default_accumulation, resolve_accumulation, resolve_device
from solarforensics.metrics.matrices import cosine_matrix, diagonal_dominance, pair_stats_rows
from solarforensics.metrics.similarity import PairStats, pair_stats

TOL = 1e-12
CORRELATIONS = ("cosine", "pearson", "cos_minus_one", "spearman")


def reference(a: np.ndarray, b: np.ndarray) -> dict:
    """The textbook definitions in float64 numpy, on the pairs where both values are finite."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]

    def cos(x, y):
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    d = a - b
    return {
        "cosine": cos(a, b),
        "pearson": cos(a - a.mean(), b - b.mean()),
        "cos_minus_one": cos(a - 1, b - 1),
        "spearman": float(scipy.stats.spearmanr(a, b).statistic),
        "mad": float(np.abs(d).mean()),
        "max_abs_diff": float(np.abs(d).max()),
        "rel_l2": float(np.linalg.norm(d) / np.linalg.norm(a)),
        "mean_a": float(a.mean()),
        "std_a": float(a.std()),
        "mean_b": float(b.mean()),
        "std_b": float(b.std()),
    }


def assert_matches(stats: PairStats, ref: dict, tol: float = TOL) -> None:
    """Correlations (bounded by 1) to `tol` absolute, means to `tol` of their scale, the rest to `tol` relative."""
    for key, want in ref.items():
        got = getattr(stats, key)
        assert got is not None, key
        if key in CORRELATIONS:
            scale = 1.0
        elif key.startswith("mean_"):
            scale = abs(want) + ref["std_" + key[-1]]
        else:
            scale = abs(want)
        assert abs(got - want) <= tol * scale, (key, got, want)


def assert_same_stats(x: PairStats, y: PairStats, tol: float = TOL) -> None:
    for key, value in x.as_dict().items():
        other = getattr(y, key)
        if key == "chunks":
            continue
        if isinstance(value, float):
            assert abs(value - other) <= tol * max(1.0, abs(value)), (key, value, other)
        else:
            assert value == other, (key, value, other)


def t(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


rng = np.random.default_rng(20240601)
CASES = {
    "gaussian": (rng.standard_normal(10_007), rng.standard_normal(10_007)),
    "norm gains near 1": (1 + 1e-4 * rng.standard_normal(4096), 1 + 1e-4 * rng.standard_normal(4096)),
    "huge": (1e150 * (1 + rng.standard_normal(3000)), 1e150 * (2 + rng.standard_normal(3000))),
    "tiny near 1e-150": (1e-150 * (1 + 1e-4 * rng.standard_normal(3000)), 1e-150 * (1 + rng.standard_normal(3000))),
    "huge vs tiny": (1e150 * rng.standard_normal(3000), 1e-150 * rng.standard_normal(3000)),
    "offset 1e8": (1e8 + rng.standard_normal(2000), 1e8 + rng.standard_normal(2000)),
}
_z = rng.standard_normal(4096)
CASES["correlated gains near 1"] = (1 + 1e-4 * (_z + 0.3 * rng.standard_normal(4096)),
                                    1 + 1e-4 * (_z + 0.3 * rng.standard_normal(4096)))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("chunk", [1 << 24, 1000, 7])
def test_float64_inputs_match_numpy_to_1e_12(name, chunk):
    a, b = CASES[name]
    stats = pair_stats(t(a), t(b), chunk_elements=chunk)
    assert_matches(stats, reference(a, b))
    assert (stats.n, stats.n_used, stats.nonfinite_a, stats.nonfinite_b) == (a.size, a.size, 0, 0)
    assert stats.chunks == math.ceil(a.size / chunk)
    assert stats.accumulation_dtype == "float64"


def test_raw_cosine_of_unrelated_gains_is_high_while_pearson_is_near_zero():
    a, b = CASES["norm gains near 1"]
    stats = pair_stats(t(a), t(b))
    assert stats.cosine > 0.999_999
    assert abs(stats.pearson) < 0.1


def test_constant_vectors_have_no_pearson_but_a_cosine():
    a = torch.full((1000,), 0.3, dtype=torch.float64)
    b = torch.linspace(1, 2, 1000, dtype=torch.float64)
    for chunk in (1 << 24, 7, 1):
        stats = pair_stats(a, b, chunk_elements=chunk)
        assert stats.pearson is None
        assert stats.std_a == 0.0 and stats.mean_a == 0.3
        assert abs(stats.cosine - float(b.sum() / (b.norm() * math.sqrt(1000)))) < TOL
        b1 = b - 1  # a - 1 is -0.7 everywhere: the cosine is minus b - 1's mean over its root mean square
        assert abs(stats.cos_minus_one - -float(b1.sum() / (b1.norm() * math.sqrt(1000)))) < TOL
        assert stats.spearman is None


def test_zero_vector_leaves_cosine_and_rel_l2_undefined():
    stats = pair_stats(torch.zeros(10), torch.ones(10))
    assert (stats.cosine, stats.pearson, stats.rel_l2, stats.spearman) == (None, None, None, None)
    assert (stats.mad, stats.max_abs_diff, stats.equal_fraction) == (1.0, 1.0, 0.0)


def test_bfloat16_inputs_match_numpy_on_the_same_upcast_values():
    a = (1 + 0.01 * torch.randn(5000, generator=torch.Generator().manual_seed(1))).to(torch.bfloat16)
    b = (1 + 0.01 * torch.randn(5000, generator=torch.Generator().manual_seed(2))).to(torch.bfloat16)
    for chunk in (1 << 24, 333):
        stats = pair_stats(a, b, chunk_elements=chunk)
        assert_matches(stats, reference(a.double().numpy(), b.double().numpy()))


def test_equal_fraction_counts_exactly_equal_bfloat16_elements():
    a = torch.randn(1000, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    b = a.clone()
    b[::4] = b[::4] + 1  # 250 changed elements (bf16 steps are large enough that none round back)
    stats = pair_stats(a, b, chunk_elements=97)
    assert stats.equal_count == int((a == b).sum()) == 750
    assert stats.equal_fraction == 0.75


def test_signed_zeros_are_equal_values():
    stats = pair_stats(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([-0.0, 1.0, 3.0]))
    assert (stats.equal_count, stats.equal_fraction) == (2, 2 / 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float8_e4m3fn, torch.int8, torch.int64])
def test_other_dtypes_are_upcast_exactly(dtype):
    source = torch.randn(2000, generator=torch.Generator().manual_seed(4)) * (20 if not dtype.is_floating_point else 1)
    a = source.to(dtype)
    b = a.clone()
    b[::3] = (source[::3] * 0.5).to(dtype)
    stats = pair_stats(a, b, chunk_elements=300)
    assert_matches(stats, reference(a.double().numpy(), b.double().numpy()))
    assert stats.equal_count == int((a.double() == b.double()).sum())


def test_nan_and_inf_are_counted_and_excluded_pairwise():
    a = np.linspace(-1, 1, 1000)
    b = np.cos(np.arange(1000.0))
    a[[3, 10, 500]] = np.nan
    b[[10, 20]] = [np.inf, -np.inf]
    a[999], b[999] = np.inf, np.inf  # equal infinities: counted as equal, excluded from the statistics
    for chunk in (1 << 24, 64, 1):
        stats = pair_stats(t(a), t(b), chunk_elements=chunk)
        assert (stats.nonfinite_a, stats.nonfinite_b, stats.n_used) == (4, 3, 1000 - 5)
        assert stats.equal_count == 1
        assert_matches(stats, reference(a, b))


def test_all_nonfinite_gives_no_statistics():
    stats = pair_stats(torch.full((5,), math.nan), torch.ones(5))
    assert (stats.n, stats.n_used, stats.nonfinite_a, stats.cosine, stats.mad) == (5, 0, 5, None, None)


def test_empty_tensors_give_no_statistics():
    stats = pair_stats(torch.empty(0), torch.empty(0))
    assert (stats.n, stats.cosine, stats.equal_fraction, stats.chunks) == (0, None, None, 0)


def test_shapes_may_differ_when_sizes_match_but_sizes_may_not():
    stats = pair_stats(torch.ones(2, 3), torch.ones(6))
    assert stats.n == 6 and stats.equal_fraction == 1.0
    with pytest.raises(SelectionError, match=r"shapes \(2, 3\) and \(5,\)"):
        pair_stats(torch.ones(2, 3), torch.ones(5))


def test_spearman_matches_scipy_with_ties():
    a = torch.randint(0, 20, (3000,), generator=torch.Generator().manual_seed(5)).double()
    b = a + torch.randint(0, 30, (3000,), generator=torch.Generator().manual_seed(6)).double()
    want = scipy.stats.spearmanr(a.numpy(), b.numpy()).statistic
    stats = pair_stats(a, b)
    assert abs(stats.spearman - want) < TOL and stats.spearman_sampled is False


def test_spearman_on_a_seeded_subsample_beyond_the_limit():
    a, b = (t(x) for x in CASES["correlated gains near 1"])
    exact = pair_stats(a, b).spearman
    first, again = pair_stats(a, b, spearman_max=1000), pair_stats(a, b, spearman_max=1000)
    other_seed = pair_stats(a, b, spearman_max=1000, seed=1)
    assert first.spearman_sampled and first.spearman == again.spearman != other_seed.spearman
    assert abs(first.spearman - exact) < 0.05
    assert pair_stats(a, b, spearman_max=0).spearman is None


def test_float32_accumulation_is_close_to_float64():
    a = torch.randn(20_000, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    b = (a.float() + 0.1 * torch.randn(20_000)).to(torch.bfloat16)
    fp32, fp64 = pair_stats(a, b, accumulate=torch.float32), pair_stats(a, b)
    assert fp32.accumulation_dtype == "float32"
    for key in ("cosine", "pearson", "mad", "rel_l2", "max_abs_diff", "std_a"):
        assert abs(getattr(fp32, key) - getattr(fp64, key)) <= 1e-5 * abs(getattr(fp64, key)), key
    assert fp32.equal_count == fp64.equal_count


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=2, max_size=60),
    chunk=st.integers(1, 70),
    shift=st.sampled_from([0.0, 1.0, 1e5]),
)
def test_chunking_never_changes_the_result(values, chunk, shift):
    a = torch.tensor(values, dtype=torch.float64) + shift
    b = torch.flip(a, [0]) * 0.5 + torch.arange(len(values), dtype=torch.float64)
    assert_same_stats(pair_stats(a, b), pair_stats(a, b, chunk_elements=chunk), tol=1e-11)


@pytest.mark.parametrize("chunk", [1, 2, 3, 13, 101, 4096])
def test_chunk_sizes_including_one_and_primes_agree(chunk):
    a, b = (t(x) for x in CASES["correlated gains near 1"])
    assert_same_stats(pair_stats(a, b), pair_stats(a, b, chunk_elements=chunk))


def test_rows_match_numpy_per_row():
    a = 1 + 0.01 * torch.randn(50, 64, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    b = a + 0.01 * torch.randn(50, 64, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    a[3] = 2.0  # a constant row: no Pearson
    rows = pair_stats_rows(a, b, chunk_elements=640)
    for i in range(50):
        x, y = a[i].numpy(), b[i].numpy()
        assert abs(rows.cosine[i] - x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) < TOL
        if i == 3:
            assert math.isnan(rows.pearson[i]) and rows.as_dict()["pearson"][3] is None
        else:
            assert abs(rows.pearson[i] - reference(x, y)["pearson"]) < TOL
    with pytest.raises(SelectionError):
        pair_stats_rows(a, b[:, :10])


@pytest.mark.parametrize("centered", [False, True])
def test_cosine_matrix_matches_numpy_when_streamed_by_columns(centered):
    generator = torch.Generator().manual_seed(10)
    a = 1 + 0.05 * torch.randn(5, 300, generator=generator, dtype=torch.float64)
    b = torch.cat([a[:3] + 0.02 * torch.randn(3, 300, generator=generator, dtype=torch.float64),
                   torch.zeros(1, 300, dtype=torch.float64)])
    matrix = cosine_matrix(a, b.to(torch.bfloat16), centered, chunk_elements=50)
    bf = b.to(torch.bfloat16).double()
    for i in range(5):
        for j in range(3):
            want = reference(a[i].numpy(), bf[j].numpy())["pearson" if centered else "cosine"]
            assert abs(matrix[i, j] - want) < TOL
        assert math.isnan(matrix[i, 3])  # zero row of b
    assert matrix.shape == (5, 4) and matrix.dtype == torch.float64


def test_diagonal_dominance_of_a_small_matrix():
    m = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.5, 0.6], [0.0, 0.4, 0.8]], dtype=torch.float64)
    result = diagonal_dominance(m)
    assert (result["shape"], result["n_diagonal"]) == ([3, 3], 3)
    assert result["margins"] == pytest.approx([0.9 - 0.3, 0.5 - 0.6, 0.8 - 0.6])
    assert {k: v for k, v in result.items() if k not in ("shape", "margins")} == pytest.approx({
        "n_diagonal": 3,
        "diagonal_mean": (0.9 + 0.5 + 0.8) / 3,
        "off_diagonal_mean": (0.1 + 0.2 + 0.3 + 0.6 + 0.0 + 0.4) / 6,
        "diagonal_row_max_fraction": 2 / 3,
        "margin_mean": (0.6 - 0.1 + 0.2) / 3,
        "margin_min": 0.5 - 0.6,
    })


def test_diagonal_dominance_of_a_rectangular_matrix_with_nan():
    m = torch.tensor([[1.0, 0.0, 0.5], [math.nan, math.nan, 0.2]], dtype=torch.float64)
    result = diagonal_dominance(m)
    assert result["n_diagonal"] == 2
    assert result["margins"] == [0.5, None]
    assert result["diagonal_mean"] == 1.0 and result["diagonal_row_max_fraction"] == 1.0
    assert result["off_diagonal_mean"] == pytest.approx((0.0 + 0.5 + 0.2) / 3)


def test_devices_and_accumulation_policy():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert default_accumulation(torch.device("cpu")) == torch.float64
    assert resolve_accumulation(None, torch.device("cpu")) == torch.float64
    with pytest.raises(SpecError, match="only allowed on CUDA"):
        resolve_accumulation("fp32", torch.device("cpu"))
    with pytest.raises(SpecError, match="cannot understand device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="no CUDA GPU is available"):
            resolve_device("cuda")


def test_a_rank_cache_gives_the_same_spearman_and_ranks_each_vector_once():
    import torch

    from solarforensics.metrics.similarity import pair_stats

    g = torch.Generator().manual_seed(0)
    vectors = [torch.randn(4096, generator=g) for _ in range(4)]
    cache: dict = {}
    for i, x in enumerate(vectors):
        for j, y in enumerate(vectors):
            plain = pair_stats(x, y).spearman
            cached = pair_stats(x, y, rank_cache=cache, rank_keys=(f"a{i}", f"b{j}")).spearman
            assert cached == pytest.approx(plain, abs=1e-12)
    assert len(cache) == 8
    with_nan = vectors[0].clone()
    with_nan[5] = float("nan")  # a filtered vector's ranks depend on the pair: never cached
    assert pair_stats(with_nan, vectors[1], rank_cache=cache, rank_keys=("n", "m")).spearman is not None
    assert "n" not in {k[0] for k in cache}
