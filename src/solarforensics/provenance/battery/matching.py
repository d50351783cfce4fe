"""Matching tests with exact p-values (Zhu et al., "Independence Tests for Language Models", 2025).

For each paired layer: the units of A and B (router rows = experts; MLP hidden units = rows of gate and up) are
matched by linear assignment on the cosine of their gain-folded, residual-aligned weight rows; Spearman's rho of
(unit index in A, matched index in B) is then tested against its permutation null. Under H0 the order of B's
experts / hidden units is exchangeable (independent initialisation), so the matched order is uniformly random:
the p-value needs no simulation. Each layer's units are a symmetry of their own, so per-layer p-values are
combined with Fisher's method (each layer of B used once). An adversary who relabels units defeats this test;
the alignment and CKA tests do not rely on unit order.
"""

from __future__ import annotations

import torch

from solarforensics.metrics.matching import assign, rank_test
from solarforensics.metrics.stats import fisher_combine
from solarforensics.provenance.battery.residual_alignment import Alignment
from solarforensics.provenance.weights import ModelWeights, not_applicable, result

ROUTER = "router-matching"
UNITS = "mlp-unit-matching"
UNIT_KINDS = {"dense MLP": ("mlp_gate", "mlp_up"), "shared expert": ("shared_gate", "shared_up")}
MAX_UNITS = 4096  # beyond this A's units are subsampled (seeded): a random subset keeps the null exact


def _unit_rows(model: ModelWeights, roles: tuple[str, ...], layer: int, alignment: Alignment, side: str,
               device) -> torch.Tensor:
    """[units, features]: each unit's gain-folded input rows (all roles side by side) in A's residual order."""
    take = alignment.take_a if side == "a" else alignment.take_b
    rows = torch.cat([take(model.folded(role, layer, device=device)) for role in roles], dim=1)
    if alignment.signs_known:
        return rows
    magnitudes = rows.abs()  # residual signs unknown: compare what a flip cannot change
    return magnitudes - magnitudes.mean(dim=1, keepdim=True)


def _cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-300)
    y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp_min(1e-300)
    return (x @ y.T).cpu()


def match_layer(rows_a: torch.Tensor, rows_b: torch.Tensor, generator: torch.Generator) -> dict:
    """Match units of one layer pair; rho and p of the matching against the identity, and the matched cosine."""
    picked = torch.arange(rows_a.shape[0])
    if rows_a.shape[0] > MAX_UNITS:
        picked = torch.randperm(rows_a.shape[0], generator=generator)[:MAX_UNITS].sort().values
    cosines = _cosines(rows_a[picked.to(rows_a.device)], rows_b)
    rows, cols = assign(cosines)
    test = rank_test(picked[rows].tolist(), cols.tolist())
    return {"units_a": int(rows_a.shape[0]), "units_b": int(rows_b.shape[0]), "matched": len(rows),
            "rho": test.rho, "p_value": test.p_value, "log10_p_value": test.log10_p_value, "method": test.method,
            "matched_cosine": float(cosines[rows, cols].mean()) if len(rows) else None}


def distinct_b(pairs: list[tuple[int, int]], score: dict | None = None) -> list[tuple[int, int]]:
    """Keep one pair per layer of B (the first, or the best scored): each p-value then rests on its own symmetry."""
    chosen: dict[int, tuple[int, int]] = {}
    for la, lb in pairs:
        if lb not in chosen or (score and score.get((la, lb), 0) > score.get(chosen[lb], 0)):
            chosen[lb] = (la, lb)
    return sorted(chosen.values(), key=lambda p: p[1])


def _combine(name: str, layers: list[dict], what: str, notes: str) -> dict:
    tested = [layer for layer in layers if layer["log10_p_value"] is not None]
    if not tested:
        return not_applicable(name, f"no layer pair with at least 3 {what} to match")
    p, log10_p = fisher_combine([layer["log10_p_value"] for layer in tested], log10=True)
    rho = sum(layer["rho"] for layer in tested) / len(tested)
    cosine = sum(layer["matched_cosine"] for layer in tested) / len(tested)
    return result(
        name, statistic=rho, null={"kind": f"exact permutation null of rho per layer (random order of B's {what})",
                                   "mean": 0.0, "layers": len(tested)},
        p_value=p, log10_p_value=log10_p, effect=cosine, symmetry="units",
        notes=f"{notes}; statistic: mean Spearman rho over {len(tested)} layers; effect: mean matched cosine; "
              f"Fisher over independent per-layer symmetries",
        layers=tested, per_layer_log10_p=[layer["log10_p_value"] for layer in tested])


@torch.no_grad()
def router_test(a: ModelWeights, b: ModelWeights, alignment: Alignment, pairs: list[tuple[int, int]], *,
                seed: int, device="cpu") -> dict:
    """Router rows (one per expert) matched per MoE layer pair."""
    usable = [(la, lb) for la, lb in distinct_b(pairs) if a.has("router", la) and b.has("router", lb)]
    if not usable:
        return not_applicable(ROUTER, "no paired layer has a router in both models (dense models or no pairing)")
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for la, lb in usable:
        found = match_layer(_unit_rows(a, ("router",), la, alignment, "a", device),
                            _unit_rows(b, ("router",), lb, alignment, "b", device), generator)
        layers.append({"layer_a": la, "layer_b": lb, **found})
    return _combine(ROUTER, layers, "experts", "expert order is exchangeable under H0")


@torch.no_grad()
def unit_test(a: ModelWeights, b: ModelWeights, alignment: Alignment, pairs: list[tuple[int, int]], *,
              seed: int, device="cpu") -> dict:
    """MLP hidden units (dense MLPs, shared experts) matched per layer pair, whatever the two widths."""
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for kind, roles in UNIT_KINDS.items():
        for la, lb in distinct_b(pairs):
            if all(a.has(r, la) and b.has(r, lb) for r in roles):
                found = match_layer(_unit_rows(a, roles, la, alignment, "a", device),
                                    _unit_rows(b, roles, lb, alignment, "b", device), generator)
                layers.append({"kind": kind, "layer_a": la, "layer_b": lb, **found})
    if not layers:
        return not_applicable(UNITS, "no paired layer has a dense MLP or shared expert in both models")
    return _combine(UNITS, layers, "hidden units", "hidden-unit order is exchangeable under H0")
