"""Corroborative evidence, never decisive: singular-value spectra and per-layer standard-deviation curves.

Both are invariant to residual permutations and head permutations, which is why they survive disguises, and both
are shaped by architecture and training recipe, which is why unrelated models also agree (an unrelated pair reached
0.91 on std curves in the Pangu vs Qwen case). Each is shown beside a background from the same two models.
"""

from __future__ import annotations

import torch

from solarforensics.metrics.stats import summarize
from solarforensics.provenance.weights import ModelWeights, not_applicable, result

SPECTRA = "singular-value-spectra"
STD_CURVES = "std-curves"
SPECTRUM_ROLES = ("k", "v")
CURVE_ROLES = ("q", "k", "v")
BACKGROUND_PAIRS = 200
SHUFFLES = 500


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float | None:
    x, y = x - x.mean(), y - y.mean()
    scale = torch.linalg.vector_norm(x) * torch.linalg.vector_norm(y)
    return float((x * y).sum() / scale) if scale > 0 else None


def _log_spectrum(model: ModelWeights, role: str, layer: int, device) -> torch.Tensor:
    w = model.folded(role, layer, device=device)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # eigenvalues of the smaller Gram = squared singulars
    return torch.linalg.eigvalsh(gram).clamp_min(1e-300).log().flip(0).cpu()


@torch.no_grad()
def spectra_test(a: ModelWeights, b: ModelWeights, pairs: list[tuple[int, int]], *, seed: int, device="cpu") -> dict:
    """Pearson of log singular values over paired layers vs over unpaired layer combinations."""
    paired, background = [], []
    generator = torch.Generator().manual_seed(seed)
    for role in SPECTRUM_ROLES:
        la_all, lb_all = a.layers_with(role), b.layers_with(role)
        if not la_all or not lb_all:
            continue
        spectra_a = {la: _log_spectrum(a, role, la, device) for la in la_all}
        spectra_b = {lb: _log_spectrum(b, role, lb, device) for lb in lb_all}
        chosen = set(pairs)
        for la, lb in pairs:
            if la in spectra_a and lb in spectra_b and len(spectra_a[la]) == len(spectra_b[lb]):
                paired.append(_pearson(spectra_a[la], spectra_b[lb]))
        others = [(la, lb) for la in la_all for lb in lb_all if (la, lb) not in chosen]
        order = torch.randperm(len(others), generator=generator)[:BACKGROUND_PAIRS].tolist()
        for i in order:
            la, lb = others[i]
            if len(spectra_a[la]) == len(spectra_b[lb]):
                background.append(_pearson(spectra_a[la], spectra_b[lb]))
    paired = [v for v in paired if v is not None]
    if not paired:
        return not_applicable(SPECTRA, "no paired attention matrices of equal rank")
    null = summarize([v for v in background if v is not None])
    statistic = sum(paired) / len(paired)
    effect = (statistic - null["mean"]) / null["std"] if null["std"] else None
    return result(SPECTRA, statistic=statistic, null={**null, "kind": "unpaired layer combinations"}, effect=effect,
                  notes=f"corroborative only; log singular values of gain-folded W_K/W_V over {len(paired)} paired "
                        "layers", corroborative=True)


@torch.no_grad()
def std_curve_test(a: ModelWeights, b: ModelWeights, pairs: list[tuple[int, int]], *, seed: int) -> dict:
    """Pearson of per-layer std of Q/K/V along the layer pairs vs the same with B's layer order shuffled."""
    xs, ys = [], []
    for role in CURVE_ROLES:
        for la, lb in pairs:
            if a.has(role, la) and b.has(role, lb) and a.names_for([role], [la])[0] in a.tensors \
                    and b.names_for([role], [lb])[0] in b.tensors:
                xs.append(float(a.get(role, la).std()))
                ys.append(float(b.get(role, lb).std()))
    if len(xs) < 3:
        return not_applicable(STD_CURVES, "fewer than 3 paired attention matrices")
    x, y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    observed = _pearson(x, y)
    if observed is None:
        return not_applicable(STD_CURVES, "std curves are flat")
    generator = torch.Generator().manual_seed(seed)
    null = summarize([_pearson(x, y[torch.randperm(len(y), generator=generator)]) for _ in range(SHUFFLES)])
    effect = (observed - null["mean"]) / null["std"] if null["std"] else None
    return result(STD_CURVES, statistic=observed, null={**null, "kind": "B's paired values shuffled"}, effect=effect,
                  notes=f"corroborative only; {len(xs)} paired Q/K/V matrices; unrelated models also agree "
                        "(0.91 for an unrelated pair in the Pangu vs Qwen case)", corroborative=True)
