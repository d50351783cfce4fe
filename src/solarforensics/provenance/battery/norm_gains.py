"""Norm gains done right: centered correlation (never raw cosine alone) per layer pair, the L_A x L_B matrix, and a
permutation test whose symmetry is ONE residual-dimension permutation applied to every layer of B at once.

All-positive gains give raw cosine ~0.95-0.99 for any pair (the trap of the Solar/GLM dispute); Pearson removes
the shared mean. Layers share the residual basis, so they are not independent: one aggregate statistic (mean
Pearson over the paired layers), one Monte-Carlo p-value. Weak evidence: a permuted or re-scaled copy passes it.
"""

from __future__ import annotations

import torch

from solarforensics.metrics.matrices import cosine_matrix
from solarforensics.metrics.nulls import aggregate_shuffle_null
from solarforensics.metrics.similarity import pair_stats
from solarforensics.provenance.battery.layer_alignment import layer_matrix_record
from solarforensics.provenance.battery.residual_alignment import Alignment
from solarforensics.provenance.weights import NORMS, ModelWeights, not_applicable, result

NAME = "norm-gains"


def gain_matrices(a: ModelWeights, b: ModelWeights, alignment: Alignment | None, device="cpu") -> dict:
    """Per norm role: layers and the L_A x L_B centered-correlation matrix, after residual alignment when found."""
    out = {}
    for norm in NORMS:
        layers_a, layers_b = a.layers_with(norm), b.layers_with(norm)
        if not layers_a or not layers_b:
            continue
        ga = torch.stack([a.gain(norm, layer) for layer in layers_a])
        gb = torch.stack([b.gain(norm, layer) for layer in layers_b])
        if alignment is not None and alignment.per_dimension:
            ga, gb = alignment.take_a(ga), alignment.take_b(gb, signed=False)
        elif ga.shape[1] != gb.shape[1]:
            continue
        out[norm] = {"layers_a": layers_a, "layers_b": layers_b,
                     "matrix": cosine_matrix(ga, gb, centered=True, device=device)}
    return out


def mean_gain_matrix(matrices: dict) -> tuple[torch.Tensor, list[int], list[int]] | None:
    """The mean over norm roles (for layer alignment when no CKA could be computed)."""
    if not matrices:
        return None
    first = next(iter(matrices.values()))
    same = [m["matrix"] for m in matrices.values()
            if m["layers_a"] == first["layers_a"] and m["layers_b"] == first["layers_b"]]
    return torch.nanmean(torch.stack(same), dim=0), first["layers_a"], first["layers_b"]


def records(matrices: dict, aligned: bool) -> dict:
    suffix = " (aligned)" if aligned else ""
    return {f"{norm} gains{suffix}": layer_matrix_record(m["matrix"], m["layers_a"], m["layers_b"], "pearson")
            for norm, m in matrices.items()}


def norm_gain_test(a: ModelWeights, b: ModelWeights, pairs: list[tuple[int, int]], pairing: str, *,
                   permutations: int, seed: int, device="cpu") -> dict:
    """Mean Pearson of the unaligned gains over the layer pairs vs a joint residual-permutation null."""
    vectors, raw = [], []
    for la, lb in pairs:
        for norm in NORMS:
            if a.has(norm, la) and b.has(norm, lb):
                ga, gb = a.gain(norm, la), b.gain(norm, lb)
                if ga.shape == gb.shape and ga.numel() > 2:
                    vectors.append((ga, gb))
    if not vectors:
        return not_applicable(NAME, "no pair of norm gains of equal length")
    for ga, gb in vectors:
        raw.append(pair_stats(ga, gb, device=device, spearman_max=0).cosine)
    null = aggregate_shuffle_null(vectors, statistic="pearson", permutations=permutations, seed=seed, joint=True,
                                  device=device)
    if null.observed is None or null.null_std in (None, 0):
        return not_applicable(NAME, "norm gains are constant: the correlation is undefined")
    raw_mean = sum(v for v in raw if v is not None) / max(1, sum(v is not None for v in raw))
    effect = (null.observed - null.null_mean) / null.null_std
    return result(
        NAME, statistic=null.observed,
        null={"mean": null.null_mean, "std": null.null_std, "q95": null.null_q95, "permutations": permutations,
              "kind": "one residual permutation applied to every layer of B"},
        p_value=null.p_value, log10_p_value=null.log10_p_value, effect=effect, symmetry="residual",
        notes=(f"weak evidence; mean Pearson over {len(vectors)} gain vectors of {len(pairs)} layer pairs "
               f"({pairing}); raw cosine {raw_mean:.4f} shown only to expose the trap: it is high for any pair"),
        raw_cosine_mean=raw_mean, pairs=[list(p) for p in pairs],
    )
