"""Attention CKA over all layer pairs (AWM): unbiased linear CKA of W_K, W_V (and W_Q) between every layer of A and
every layer of B, with the residual dimensions as samples and the output channels as features.

Before comparing, each matrix gets its preceding norm gain folded in, B's residual dimensions are put in A's order
by the residual alignment, and each dimension's row is scaled to unit length (gain re-absorption and per-dimension
scale then change nothing). CKA is then invariant to head permutations,
rotations inside heads and different head counts (it sees only d x d Gram matrices). After a signature alignment,
which cannot see sign flips, the Gram entries are squared: the kernel of x ⊗ x, blind to the signs of samples. The statistic is the mean
CKA along the best layer path; its null redraws the whole path after shuffling B's aligned dimensions. There is
no exchangeability argument once the alignment was fitted to the two models, so no p-value: the verdict reads the
effect against thresholds fitted on the ground-truth zoo.
"""

from __future__ import annotations

import math

import torch

from solarforensics.metrics.cka import cka_matrix, stack_grams
from solarforensics.metrics.stats import summarize
from solarforensics.provenance.battery.layer_alignment import align_layers, layer_matrix_record, path_mean
from solarforensics.provenance.battery.residual_alignment import Alignment
from solarforensics.provenance.weights import ModelWeights, not_applicable, result

NAME = "attention-cka"
ROLES_BY_TEST = {"cka": ("k", "v"), "cka-q": ("q",)}
NULL_WORK = 2e11  # multiply-adds allowed for the null draws (all roles together): 10 draws for Solar vs GLM
MIN_DRAWS, MAX_DRAWS = 5, 50
# Residual dims used as samples at most (a seeded subset of the aligned pairs beyond): the Gram matrices of every
# layer of both models are held at once, (L_A + L_B) x n^2 x 8 bytes: 3.2 GB per role for Solar vs GLM at 2048
# (roles one after another; the weights themselves are streamed a few layers at a time when not already held).
MAX_SAMPLES = 2048


def _features(w: torch.Tensor, alignment: Alignment, side: str) -> torch.Tensor:
    """[residual dims, output channels] of a gain-folded matrix, each dim's row scaled to unit length: what a dim
    reads, not how loudly."""
    x = (alignment.take_a(w) if side == "a" else alignment.take_b(w)).T
    # Per-dim scale is what gains, their re-absorption and the signature alignment all act on; left in, an alignment
    # that pairs dims of similar scale widens the spread of CKA cells and lifts the best path even for unrelated
    # models. Directions alone keep the invariances (head permutations, rotations within heads).
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-300)


def null_draws(layers_a: int, layers_b: int, dims: int, roles: int) -> int:
    per_draw = layers_a * layers_b * dims * dims * max(roles, 1)
    return int(min(MAX_DRAWS, max(MIN_DRAWS, NULL_WORK // max(per_draw, 1))))


@torch.no_grad()
def role_matrices(a: ModelWeights, b: ModelWeights, alignment: Alignment, roles: tuple[str, ...], *,
                  draws: int, seed: int, device="cpu", accumulate=torch.float64) -> dict:
    """Per role: layers, the observed L_A x L_B CKA matrix and `draws` null matrices (shared permutations)."""
    out = {}
    alignment = _subset(alignment, seed)
    for role in roles:
        layers_a, layers_b = a.layers_with(role), b.layers_with(role)
        if not layers_a or not layers_b or alignment.dims < 4:
            continue
        grams_a = _grams(a, alignment, role, layers_a, "a", device, accumulate)
        grams_b = _grams(b, alignment, role, layers_b, "b", device, accumulate)
        generator = torch.Generator().manual_seed(seed)  # the same draws for every role, so their mean is a draw
        perms = [torch.randperm(alignment.dims, generator=generator).to(grams_b.device) for _ in range(draws)]
        out[role] = {"layers_a": layers_a, "layers_b": layers_b, "matrix": cka_matrix(grams_a, grams_b),
                     "null": [cka_matrix(grams_a, grams_b, p) for p in perms]}
        del grams_a, grams_b
    return out


def _grams(model: ModelWeights, alignment: Alignment, role: str, layers: list[int], side: str, device,
           accumulate: torch.dtype) -> torch.Tensor:
    """[L, n, n] U-centered Grams; the weights stream in a few layers at a time (only those are held beside them)."""
    features = (_features(w, alignment, side) for _, w in model.folded_layers(role, layers, device=device))
    return stack_grams(features, count=len(layers), device=device, accumulate=accumulate,
                       squared=not alignment.signs_known)


def _subset(alignment: Alignment, seed: int) -> Alignment:
    if alignment.dims <= MAX_SAMPLES:
        return alignment
    keep = torch.randperm(alignment.dims, generator=torch.Generator().manual_seed(seed))[:MAX_SAMPLES].sort().values
    return alignment.subset(keep)


def mean_matrix(matrices: dict, key: str = "matrix", draw: int | None = None) -> torch.Tensor | None:
    """Mean over roles of the observed matrix (or of null draw `draw`), when all roles cover the same layers."""
    shapes = {(tuple(m["layers_a"]), tuple(m["layers_b"])) for m in matrices.values()}
    if len(shapes) != 1:
        return None
    pieces = [m[key] if draw is None else m["null"][draw] for m in matrices.values()]
    return torch.nanmean(torch.stack(pieces), dim=0)


def cka_test(matrices: dict, alignment: Alignment | None, reasons: list[str]) -> tuple[dict, dict | None, dict]:
    """(results row, layer alignment of the mean CKA matrix, layer_matrices records)."""
    if not matrices:
        return not_applicable(NAME, "; ".join(reasons) or "no attention matrices in both models"), None, {}
    observed = mean_matrix(matrices)
    if observed is None:
        role = next(iter(matrices))
        observed, matrices = matrices[role]["matrix"], {role: matrices[role]}
    first = next(iter(matrices.values()))
    layers_a, layers_b = first["layers_a"], first["layers_b"]
    layers = align_layers(observed, layers_a, layers_b, f"mean CKA of W_{'/W_'.join(r.upper() for r in matrices)}")
    draws = len(first["null"])
    null = summarize([path_mean(mean_matrix(matrices, draw=d)) for d in range(draws)])
    statistic = layers["path_mean"]
    spread = null["std"] or 0.0
    effect = (statistic - null["mean"]) / spread if spread > 0 else None
    records = {f"attn-{role} CKA": layer_matrix_record(m["matrix"], layers_a, layers_b, "cka")
               for role, m in matrices.items()}
    records["mean attention CKA"] = layer_matrix_record(observed, layers_a, layers_b, "cka", layers)
    method = alignment.method if alignment is not None else "none"
    kernel = "linear" if alignment is None or alignment.signs_known else "squared (sign-blind)"
    notes = (f"mean unbiased CKA ({kernel} kernel) along the layer path ({len(layers['pairs'])} pairs) after "
             f"{method} alignment; "
             f"null: B's aligned residual dims shuffled, path redrawn ({draws} draws); no p-value (the alignment "
             f"was fitted to both models): decided by the effect's thresholds")
    if reasons:
        notes += "; " + "; ".join(reasons)
    row = result(NAME, statistic=statistic, null={**null, "kind": "B's aligned residual dims shuffled"},
                 effect=None if effect is None or math.isnan(effect) else effect, notes=notes,
                 background=layers["background"], roles=list(matrices), alignment_method=method, kernel=kernel)
    return row, layers, records
