"""The math under the provenance battery: unbiased linear CKA, the rank test of a matching, and layer paths."""

import math

import pytest
import torch

from solarforensics.errors import SelectionError
from solarforensics.metrics.cka import cka, cka_matrix, hsic, stack_grams, u_centered_gram
from solarforensics.metrics.matching import assign, rank_test
from solarforensics.provenance.battery.layer_alignment import align_layers, best_path


def song_unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al. (2012), eq. 5, written out term by term: the reference the U-centered form must equal."""
    n = k.shape[0]
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones = torch.ones(n, dtype=k.dtype)
    value = (torch.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (ones @ k @ l @ ones))
    return float(value) / (n * (n - 3))


def gaussian(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_unbiased_hsic_equals_song_et_al():
    x, y = gaussian(40, 7, seed=1), gaussian(40, 5, seed=2)
    y[:, 0] += x[:, 0]
    expected = song_unbiased_hsic(x @ x.T, y @ y.T)
    assert hsic(u_centered_gram(x), u_centered_gram(y)) == pytest.approx(expected, rel=1e-10)


def test_cka_ignores_orthogonal_feature_transforms_and_feature_counts():
    x = gaussian(64, 16, seed=3)
    rotation = torch.linalg.qr(gaussian(16, 16, seed=4)).Q
    wider = torch.cat([x @ rotation, torch.zeros(64, 8, dtype=torch.float64)], dim=1)  # other head count, same Gram
    assert cka(x, x) == pytest.approx(1.0)
    assert cka(x, wider) == pytest.approx(1.0)
    assert cka(x, x[torch.randperm(64, generator=torch.Generator().manual_seed(0))]) < 0.2


def test_unbiased_cka_of_independent_representations_is_near_zero():
    values = [cka(gaussian(200, 32, seed=s), gaussian(200, 32, seed=100 + s)) for s in range(20)]
    assert abs(sum(values) / len(values)) < 0.01


def test_cka_matrix_matches_pairwise_cka_and_permutes_samples_of_b():
    features = [gaussian(30, 6, seed=s) for s in range(3)]
    grams = stack_grams(features)
    matrix = cka_matrix(grams, grams)
    assert matrix.shape == (3, 3)
    assert matrix[0, 1].item() == pytest.approx(cka(features[0], features[1]))
    assert torch.allclose(matrix.diagonal(), torch.ones(3, dtype=torch.float64))
    order = torch.randperm(30, generator=torch.Generator().manual_seed(5))
    shuffled = cka_matrix(grams, stack_grams([f[order] for f in features]), permutation=torch.argsort(order))
    assert torch.allclose(shuffled, matrix)


def test_cka_needs_the_same_samples_and_four_of_them():
    with pytest.raises(SelectionError, match="same samples"):
        cka(gaussian(10, 3, seed=0), gaussian(11, 3, seed=0))
    with pytest.raises(SelectionError, match="at least 4 samples"):
        u_centered_gram(gaussian(3, 2, seed=0))


def test_rank_test_is_exact_for_small_matchings():
    identity = rank_test(range(6), range(6))
    assert (identity.rho, identity.p_value, identity.method) == (1.0, 1 / 720, "exact over all 720 orders")
    reversed_order = rank_test(range(6), range(5, -1, -1))
    assert (reversed_order.rho, reversed_order.p_value) == (-1.0, 1.0)
    assert rank_test([0, 1], [1, 0]).p_value is None


def test_rank_test_beyond_enumeration_is_floored_at_one_over_n_factorial():
    perfect = rank_test(range(128), range(128))
    assert perfect.log10_p_value == pytest.approx(-math.lgamma(129) / math.log(10))  # -215.59
    floor = -math.lgamma(4097) / math.log(10)  # -13,019.6: no order of 4,096 units can be rarer
    near = rank_test(range(4096), [*range(4094), 4095, 4094])
    assert near.log10_p_value == pytest.approx(floor) and near.p_value == 0.0  # printed from log10, never as 0
    strong = rank_test(range(4096), [*range(2048), *reversed(range(2048, 2148)), *range(2148, 4096)])
    assert floor < strong.log10_p_value < -1_000
    noise = rank_test(range(200), torch.randperm(200, generator=torch.Generator().manual_seed(1)).tolist())
    assert 0.01 < noise.p_value < 1


def test_assignment_maximises_similarity_and_accepts_rectangles():
    similarity = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1]])
    rows, cols = assign(similarity)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def diagonal_matrix(rows_of_a, columns_of_b, source_rows, strength=1.0):
    """A layer matrix where column j of B matches row source_rows[j] of A, over a weak background."""
    m = 0.05 * gaussian(rows_of_a, columns_of_b, seed=7)
    for j, i in enumerate(source_rows):
        m[i, j] += strength
    return m


def test_layer_path_follows_a_copy_and_a_depth_up_scaling():
    assert best_path(diagonal_matrix(5, 5, range(5))) == [(i, i) for i in range(5)]
    upscaled = diagonal_matrix(6, 8, [0, 1, 2, 3, 2, 3, 4, 5])  # SOLAR-style: a block repeated
    layers = align_layers(upscaled, list(range(6)), list(range(8)), "test")
    assert layers["layer_map"] == {"0": 0, "1": 1, "2": [2, 4], "3": [3, 5], "4": 6, "5": 7}
    assert layers["duplicated_a"] == [2, 3] and layers["weak_pairs"] == []
    assert layers["margin_z"] > 10
    duplicated = align_layers(diagonal_matrix(4, 6, [0, 1, 1, 2, 2, 3]), list(range(4)), list(range(6)), "test")
    assert duplicated["layer_map"] == {"0": 0, "1": [1, 2], "2": [3, 4], "3": 5}


def test_layer_path_maps_a_pruned_model_into_the_deeper_one():
    pruned = diagonal_matrix(6, 4, [0, 1, 3, 5]).T.contiguous().T  # B kept layers 0, 1, 3, 5 of A
    layers = align_layers(pruned, list(range(6)), list(range(4)), "test")
    assert [pair for pair in layers["pairs"] if pair[0] in (0, 1, 3, 5)] == [[0, 0], [1, 1], [3, 2], [5, 3]]
    assert layers["one_to_one"]["pairs"] == [[0, 0], [1, 1], [3, 2], [5, 3]]
