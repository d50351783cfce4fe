"""How far apart two related fingerprints are, in a unit that adds up along a lineage, and the traits that orient an
edge (more layers, fewer MLP units, experts, int8 grid, more trained norm gains).

Fine-tuning adds roughly independent increments to the weights; a probe Gram moves linearly with a small increment,
so the SQUARED distance between matched Grams adds up along a path in expectation (parent to grandchild = parent to
child + child to grandchild), while a similarity such as CKA does not. On such an additive distance where every
model is observed, the minimum spanning tree is the derivation tree (population/tree.py builds it). Grams are compared
raw (not whitened) on every probe both hold: inside a family the token geometry is shared, and more probes mean less
noise. A pair whose probes share nothing (a vocabulary swap) is placed by its norm-profile signatures instead, read
dimension by dimension: related models keep the residual basis unless a disguise changed it.
"""

from __future__ import annotations

import math

import torch

from solarforensics.provenance.lean import View
from solarforensics.provenance.sketch import square

MIN_SHARED = 16  # shared probes below which Grams are not compared
FOLDED_GAIN = 1e-6  # every norm gain this close to 1: gains folded into the weights (a disguise, never a trained root)


def shared_probes(a: View, b: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of every probe both fingerprints hold, matched by string."""
    position = {h: i for i, h in enumerate(b.probes)}
    pairs = sorted((i, position[h]) for i, h in enumerate(a.probes) if h in position)
    return torch.tensor([p[0] for p in pairs], dtype=torch.long), torch.tensor([p[1] for p in pairs], dtype=torch.long)


def layer_map(a: View, b: View) -> list[tuple[int, int]]:
    """Paired layer positions: the identity at equal depth, else each layer of the deeper model to the nearest layer
    of the other by Gram drift (an up-scaled model's duplicated layers to their source); by relative depth when the
    probes share too little."""
    if len(a.layers) == len(b.layers):
        return [(i, i) for i in range(len(a.layers))]
    ia, ib = shared_probes(a, b)
    deep_is_a = len(a.layers) > len(b.layers)
    long_, short = (len(a.layers), len(b.layers)) if deep_is_a else (len(b.layers), len(a.layers))
    pairs = []
    for i in range(long_):
        if len(ia) < MIN_SHARED:
            j = round(i * (short - 1) / max(long_ - 1, 1))
        else:
            def drift_to(j: int) -> float:
                d = _layer_drift(a, b, ia, ib, i, j) if deep_is_a else _layer_drift(a, b, ia, ib, j, i)
                return math.inf if d is None else d
            j = min(range(short), key=drift_to)
        pairs.append((i, j) if deep_is_a else (j, i))
    return pairs


def _raw_gram(view: View, reader: str, layer: int, index: torch.Tensor) -> torch.Tensor | None:
    """One layer's unit-norm probe Gram on the probes `index`, kept on the view: a family compares every pair."""
    cache = view.__dict__.setdefault("_raw_grams", {})
    key = (reader, layer, index.numpy().tobytes())
    if key not in cache:
        scale = float(view.a[f"scale.{reader}"][layer])
        if math.isnan(scale):
            cache[key] = None
        else:
            g = square(view.a[f"gram.{reader}"][layer], scale, len(view.probes))[index][:, index]
            cache[key] = g / g.norm().clamp_min(1e-300)
    return cache[key]


def _layer_drift(a: View, b: View, ia: torch.Tensor, ib: torch.Tensor, i: int, j: int) -> float | None:
    """Squared distance of layer i of A and layer j of B, averaged over the readers both have there."""
    values = []
    for reader in (r for r in a.readers if r in b.readers):
        ga, gb = _raw_gram(a, reader, i, ia), _raw_gram(b, reader, j, ib)
        if ga is not None and gb is not None:
            values.append(float((ga - gb).pow(2).sum()))
    return sum(values) / len(values) if values else None


def gram_drift(a: View, b: View, pairs: list[tuple[int, int]] | None = None) -> float | None:
    """Mean squared distance of the unit-norm probe Grams of paired layers (`pairs`, default layer_map) over the
    readers both have (None with fewer than MIN_SHARED shared probes): additive along a lineage."""
    ia, ib = shared_probes(a, b)
    if len(ia) < MIN_SHARED:
        return None
    drifts = [_layer_drift(a, b, ia, ib, i, j) for i, j in (pairs if pairs is not None else layer_map(a, b))]
    drifts = [d for d in drifts if d is not None]
    return sum(drifts) / len(drifts) if drifts else None


def signature_drift(a: View, b: View) -> float | None:
    """Mean squared difference of the log column-norm profiles, dimension by dimension, over the leading layers both
    have (each profile centred, so a rescaled matrix or gain cancels): small only in the same residual basis."""
    depth = min(len(a.layers), len(b.layers))
    total, count = 0.0, 0
    for key in sorted(k for k in a.a if k.startswith("signature.") and k in b.a):
        x, y = a.a[key].to(torch.float64)[:depth], b.a[key].to(torch.float64)[:depth]
        if x.shape != y.shape or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            continue
        x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
        total += float((x - y).pow(2).mean())
        count += 1
    return total / count if count else None


def unit_drift(a: View, b: View, pairs: list[tuple[int, int]] | None = None) -> float | None:
    """Mean squared difference of the leading MLP units in token coordinates, unit by unit (each row at unit
    length): small only when unit order is kept. None without units in both or with too few shared probes."""
    ia, ib = shared_probes(a, b)
    if len(ia) < MIN_SHARED:
        return None
    total, count = 0.0, 0
    pairs = pairs if pairs is not None else layer_map(a, b)
    for key in ("units.gate", "units.up"):
        if key not in a.a or key not in b.a:
            continue
        for i, j in pairs:
            x, y = a.a[key][i].to(torch.float64)[:, ia], b.a[key][j].to(torch.float64)[:, ib]
            if x.shape != y.shape or torch.isnan(x).any() or torch.isnan(y).any():
                continue
            x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
            y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-300)
            total += float((x - y).pow(2).sum(dim=1).mean())
            count += 1
    return total / count if count else None


def traits(fp) -> dict:
    """What orients an edge without any comparison: depth, experts, MLP units read, the int8 grid or card, and how
    far the norm gains have moved from 1 (their initial value: training moves them further)."""
    view = View(fp)
    arch = fp.meta.get("arch", {})
    gains = [fp.arrays[k].to(torch.float64).flatten() for k in sorted(fp.arrays) if k.startswith("gains.")]
    deviation = torch.cat(gains).sub(1).pow(2) if gains else torch.zeros(1, dtype=torch.float64)
    units = None
    if "gram.gate" in view.a and not math.isnan(float(view.a["scale.gate"][0])):
        units = round(float(square(view.a["gram.gate"][0], float(view.a["scale.gate"][0]), len(view.probes)).trace()))
    return {"layers": len(view.layers), "experts": int(arch.get("num_experts") or 0), "units": units,
            "quantised": bool(arch.get("quantised")), "gain_drift": float(deviation.mean()),
            "folded": bool(gains) and float(deviation.max()) < FOLDED_GAIN ** 2}
