"""The lean battery: two fingerprints in, a verdict out, no weight read again.

1. Invariant CKA. On the probes both fingerprints hold (by string), each model's reader Grams are whitened by its own
   probe-embedding Gram (K0^-1/2 G K0^-1/2: the Grams in the orthonormal frame closest to the probe embeddings, so
   what two models share through their token geometry alone is divided out) and compared by unbiased linear CKA for
   every layer pair; the statistic is the mean CKA along the best layer map (each layer of one model to its best
   layer of the other, in the direction that scores higher: duplicated layers of an up-scaled model, dropped layers
   of a pruned one). Its background: B's probes shuffled. Independent models sit near 0 even on the same data;
   derivatives far above. No p-value (the map is chosen from the data): thresholds fitted on the zoo decide.
2. Unit order. The leading MLP units of paired layers, in whitened token coordinates, matched by linear assignment;
   Spearman's rho of the matching against the identity has an exact null when unit orders are exchangeable
   (independent initialisations): tiny p for undisguised copies, uniform for independent models.
3. Signatures, for a vocabulary swap (few shared probes): residual dimensions matched by their log column-norm
   profiles across readers and layers; quality beside a null with each profile feature shuffled over dimensions.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from solarforensics.metrics.cka import u_center
from solarforensics.metrics.matching import assign, rank_test
from solarforensics.metrics.stats import fisher_combine, summarize
from solarforensics.provenance.sketch import inverse_sqrt, square

MIN_COMMON = 16  # shared probes below which the CKA is not attempted
NULL_DRAWS = 20
SIGNATURE_DIMS = 512  # A's residual dims matched against all of B's (a seeded subset beyond)
DEFAULT_THRESHOLDS = {
    "cka_derived": 0.15,  # mean invariant CKA at or above: derived (zoo: derived >= 0.29, independent <= 0.05)
    "cka_independent": 0.08,  # below, with no other test firing: independent
    "unit_log10_p": -8.0,  # the unit-order test at or below: derived (exact null)
    "signature_effect": 5.0,  # matched signature quality this many null spreads above its null: derived
    "signature_quiet": 4.0,  # and below this (when it ran), with nothing else firing: independent
    "min_common_independent": 32,  # fewer shared probes: independence is not claimed from the CKA
}


class Fingerprint(Protocol):
    """What the lean battery reads: a model's sketch arrays and its meta (population.record.Fingerprint, or the
    partial sketches of a provenance run in progress)."""

    meta: dict
    arrays: dict[str, torch.Tensor]


class View:
    """A fingerprint's arrays as matrices: whitened Grams on a probe subset, units, signatures, layers."""

    def __init__(self, fp: Fingerprint):
        self.fp, self.a = fp, fp.arrays
        self.layers = self.a["layers"].tolist()
        self.probes = self.a["probe_hash"].tolist()
        self.readers = sorted(k.removeprefix("gram.") for k in self.a if k.startswith("gram."))
        self.hidden = int(fp.meta.get("arch", {}).get("hidden_size") or self.a["probe_gram"].shape[0] * 2)

    def whitener(self, index: torch.Tensor) -> torch.Tensor:
        return inverse_sqrt(self.a["probe_gram"].to(torch.float64)[index][:, index])

    def whitened(self, reader: str, layer: int, index: torch.Tensor, white: torch.Tensor) -> torch.Tensor | None:
        """One layer's whitened Gram of a reader on the probes `index` (None where the layer lacks the reader)."""
        scale = float(self.a[f"scale.{reader}"][layer])
        if math.isnan(scale):
            return None
        g = square(self.a[f"gram.{reader}"][layer], scale, len(self.probes))[index][:, index]
        return white @ g @ white

    def grams(self, reader: str, index: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
        """[L, n*n] unit-norm U-centred whitened Grams on the probes `index`; a row of NaN where the layer lacks it."""
        rows = []
        for layer in range(len(self.layers)):
            g = self.whitened(reader, layer, index, white)
            if g is None:
                rows.append(torch.full((len(index) ** 2,), math.nan, dtype=torch.float64))
                continue
            u = u_center(g).reshape(-1)
            rows.append(u / u.norm().clamp_min(1e-300))
        return torch.stack(rows)


def common_probes(a: View, b: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the probes both hold, at most half the smaller hidden size (smallest hashes first): with more
    probes than dims the whitened frame stops being a frame and independent models drift apart from 0."""
    position = {h: i for i, h in enumerate(b.probes)}
    limit = max(MIN_COMMON, min(a.hidden, b.hidden) // 2)
    shared = sorted((h, i) for i, h in enumerate(a.probes) if h in position)[:limit]
    pairs = sorted((i, position[h]) for h, i in shared)
    return torch.tensor([p[0] for p in pairs], dtype=torch.long), torch.tensor([p[1] for p in pairs], dtype=torch.long)


def best_path(matrix: torch.Tensor) -> tuple[float, list[tuple[int, int]], str]:
    """(mean CKA along the map, pairs of layer positions, which side has its layers mapped)."""
    filled = matrix.nan_to_num(-1.0)
    rows, cols = filled.max(dim=1), filled.max(dim=0)
    if float(rows.values.mean()) >= float(cols.values.mean()):
        return float(rows.values.mean()), [(i, int(j)) for i, j in enumerate(rows.indices)], "a"
    return float(cols.values.mean()), [(int(i), j) for j, i in enumerate(cols.indices)], "b"


def _grams(a: View, b: View, ia: torch.Tensor, ib: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    wa, wb = a.whitener(ia), b.whitener(ib)
    return {r: (a.grams(r, ia, wa), b.grams(r, ib, wb)) for r in a.readers if r in b.readers}


def _cka(grams: dict[str, tuple[torch.Tensor, torch.Tensor]], perm: torch.Tensor | None = None) -> torch.Tensor:
    """[L_A, L_B] CKA averaged over readers; `perm` reorders B's probes (whitening and U-centring commute with it)."""
    mats = []
    for ga, gb in grams.values():
        if perm is not None:
            n = int(round(math.sqrt(gb.shape[1])))
            gb = gb.reshape(-1, n, n)[:, perm][:, :, perm].reshape(gb.shape[0], -1)
        mats.append(ga @ gb.T)
    return torch.nanmean(torch.stack(mats), dim=0)


def cka_test(a: View, b: View, ia: torch.Tensor, ib: torch.Tensor, seed: int = 0) -> dict:
    if len(ia) < MIN_COMMON:
        return {"name": "invariant-cka", "applicable": False,
                "notes": f"only {len(ia)} probe tokens shared by string (at least {MIN_COMMON} needed)"}
    grams = _grams(a, b, ia, ib)
    if not grams:
        return {"name": "invariant-cka", "applicable": False, "notes": "no residual reader in both fingerprints"}
    observed = _cka(grams)
    statistic, pairs, mapped = best_path(observed)
    generator = torch.Generator().manual_seed(seed)
    draws = [best_path(_cka(grams, torch.randperm(len(ib), generator=generator)))[0] for _ in range(NULL_DRAWS)]
    null = summarize(draws)
    effect = (statistic - null["mean"]) / null["std"] if null["std"] else None
    per = {r: best_path(ga @ gb.T)[0] for r, (ga, gb) in grams.items()}
    layer_pairs = [(a.layers[i], b.layers[j]) for i, j in pairs]
    return {"name": "invariant-cka", "applicable": True, "statistic": statistic, "effect": effect,
            "null": {**null, "kind": "B's probe tokens shuffled"}, "per_reader": per, "common_probes": len(ia),
            "layer_pairs": layer_pairs, "mapped_side": mapped, "matrix": observed,
            "notes": f"mean whitened-Gram CKA along the best layer map over {len(ia)} shared probes "
                     f"({', '.join(grams)}); no p-value: decided by the fitted thresholds"}


def unit_test(a: View, b: View, ia: torch.Tensor, ib: torch.Tensor, layer_pairs: list[tuple[int, int]]) -> dict:
    name = "unit-order"
    if "units.gate" not in a.a or "units.gate" not in b.a or len(ia) < MIN_COMMON:
        return {"name": name, "applicable": False, "notes": "no MLP units in both fingerprints or too few probes"}
    wa, wb = a.whitener(ia), b.whitener(ib)
    logs, rhos, matched, used = [], [], [], set()
    for layer_a, layer_b in layer_pairs:
        if layer_b in used:
            continue  # each layer of B once: one symmetry, one p-value
        used.add(layer_b)
        ua = _units(a, a.layers.index(layer_a), ia, wa)
        ub = _units(b, b.layers.index(layer_b), ib, wb)
        if ua is None or ub is None:
            continue
        similarity = _cosine(ua, ub)
        rows, cols = _assign_unbiased(similarity, len(used))
        test = rank_test(rows.tolist(), cols.tolist())
        if test.log10_p_value is not None:
            logs.append(test.log10_p_value)
            rhos.append(test.rho)
            matched.append(float(similarity[rows, cols].mean()))
    if not logs:
        return {"name": name, "applicable": False, "notes": "no paired layer with MLP units in both"}
    p, log10_p = fisher_combine(logs, log10=True)
    return {"name": name, "applicable": True, "statistic": sum(rhos) / len(rhos), "p_value": p,
            "matched_cosine": sum(matched) / len(matched),
            "log10_p_value": log10_p, "layers": len(logs), "per_layer_log10_p": logs,
            "notes": f"leading MLP units matched in whitened token coordinates; Spearman of the matching vs the "
                     f"identity over {len(logs)} layer(s), Fisher-combined (exact null: independent unit orders)"}


def _assign_unbiased(similarity: torch.Tensor, seed: int):
    """Linear assignment with B's columns visited in a seeded random order, mapped back: on ties (a constant
    similarity) the solver returns the identity, which the rank test would read as a perfect copy."""
    order = torch.randperm(similarity.shape[1], generator=torch.Generator().manual_seed(seed))
    rows, cols = assign(similarity[:, order])
    return rows, order[torch.as_tensor(cols)].numpy()


def _units(view: View, position: int, index: torch.Tensor, white: torch.Tensor) -> torch.Tensor | None:
    parts = [view.a[k][position].to(torch.float64)[:, index] @ white for k in ("units.gate", "units.up") if k in view.a]
    units = torch.cat(parts, dim=1)
    units = units[torch.isfinite(units).all(dim=1)]  # rows of NaN pad a layer narrower than the widest
    return units if units.shape[0] >= 3 else None


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return x @ y.T


BLOCKS = (("k", "v"), ("gate", "up", "router"))  # readers after one norm: a block shares that norm's gain
SIGNATURE_DRAWS = 20


def signature_test(a: View, b: View, seed: int = 0) -> dict:
    """Residual dims matched by their log column-norm profiles (layers paired by relative depth); the null shuffles
    B's dims within each block of readers that share a norm, keeping each block's own structure."""
    name = "signatures"
    distinct_a, distinct_b = _distinct_layers(a), _distinct_layers(b)
    la, lb = len(distinct_a), len(distinct_b)
    short = min(la, lb)  # each layer once: a duplicated feature would count its match twice
    pick_a = [distinct_a[round(i * (la - 1) / max(short - 1, 1))] for i in range(short)]
    pick_b = [distinct_b[round(i * (lb - 1) / max(short - 1, 1))] for i in range(short)]
    blocks_a, blocks_b = [], []
    for layer_a, layer_b in zip(pick_a, pick_b):
        for block in BLOCKS:
            keys = [f"signature.{r}" for r in block if f"signature.{r}" in a.a and f"signature.{r}" in b.a]
            fa = torch.stack([a.a[k][layer_a].to(torch.float64) for k in keys], 1) if keys else None
            fb = torch.stack([b.a[k][layer_b].to(torch.float64) for k in keys], 1) if keys else None
            if fa is not None and torch.isfinite(fa).all() and torch.isfinite(fb).all():
                blocks_a.append(fa)
                blocks_b.append(fb)
    if sum(f.shape[1] for f in blocks_a) < 4:
        return {"name": name, "applicable": False, "notes": "too few reader signatures in both fingerprints"}
    generator = torch.Generator().manual_seed(seed)
    sa = _standard(blocks_a)
    if sa.shape[0] > SIGNATURE_DIMS:
        sa = sa[torch.randperm(sa.shape[0], generator=generator)[:SIGNATURE_DIMS]]
    quality = _matched(sa, _standard(blocks_b))
    draws = []
    for _ in range(SIGNATURE_DRAWS):
        shuffled = [f[torch.randperm(f.shape[0], generator=generator)] for f in blocks_b]
        draws.append(_matched(sa, _standard(shuffled)))
    null = summarize(draws)
    effect = (quality - null["mean"]) / null["std"] if null["std"] else None
    features = sum(f.shape[1] for f in blocks_a)
    return {"name": name, "applicable": True, "statistic": quality, "effect": effect,
            "null": {**null, "kind": "B's dims shuffled within each norm block"}, "features": features,
            "notes": f"{sa.shape[0]} residual dims of A matched to B's by {features} log column-norm features "
                     f"(centred per norm block, so gain re-absorption cancels); reaches a vocabulary swap, which "
                     f"shares no probes; blind to a residual rotation"}


DUPLICATE_LAYER = 0.98  # signature profiles correlated above this: one layer copied from another (up-scaling)


def _distinct_layers(view: View) -> list[int]:
    """Layer positions without near-copies of an earlier layer: an up-scaled model's duplicated layers would make
    the null (which shuffles each block on its own) break a structure the observed matching keeps, in any two
    up-scaled models, related or not."""
    keys = [k for k in view.a if k.startswith("signature.")]
    if not keys:
        return list(range(len(view.layers)))
    profiles = torch.cat([view.a[k].to(torch.float64) for k in sorted(keys)], dim=1).nan_to_num(0)
    profiles = profiles - profiles.mean(dim=1, keepdim=True)
    profiles = profiles / profiles.norm(dim=1, keepdim=True).clamp_min(1e-12)
    kept: list[int] = []
    for layer in range(len(view.layers)):
        if all(float(profiles[layer] @ profiles[k]) < DUPLICATE_LAYER for k in kept):
            kept.append(layer)
    return kept


def _standard(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Each dim's features centred within each norm block, each feature standardised over the dims, each dim's
    profile centred and scaled to unit length. Centring per block discards the gains themselves and a block of one
    reader (an MoE's router) entirely, so an MoE's vocabulary swap goes unseen. Keeping them was tried: centred per
    layer, real independent models (all-MiniLM-L6-v2 against SmolLM2 and against Gemma 3) reached effects above 5 on
    their outlier dims; not centred, an independent small-zoo pair reached 5.25. Trained models share dims that
    stand out across every block, a coherence the null (each block shuffled on its own) breaks."""
    f = torch.cat([b - b.mean(dim=1, keepdim=True) for b in blocks], dim=1)
    f = (f - f.mean(dim=0, keepdim=True)) / f.std(dim=0, keepdim=True).clamp_min(1e-12)
    f = f - f.mean(dim=1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _matched(fa: torch.Tensor, fb: torch.Tensor) -> float:
    similarity = fa @ fb.T
    rows, cols = assign(similarity)
    return float(similarity[rows, cols].mean())


def compare(fa: Fingerprint, fb: Fingerprint, thresholds: dict | None = None, seed: int = 0,
            signatures: bool | None = None) -> dict:
    """Every lean test and the verdict. `signatures`: run the signature test (default: unless the probes already
    say derived; it costs an assignment of up to SIGNATURE_DIMS x d per null draw)."""
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    a, b = View(fa), View(fb)
    ia, ib = common_probes(a, b)
    cka = cka_test(a, b, ia, ib, seed)
    pairs = cka.get("layer_pairs") or list(zip(a.layers, [b.layers[round(i * (len(b.layers) - 1) /
                                                                         max(len(a.layers) - 1, 1))]
                                                          for i in range(len(a.layers))]))
    units = unit_test(a, b, ia, ib, pairs)
    cka_value = cka.get("statistic") if cka["applicable"] else None
    derived_already = (cka_value is not None and cka_value >= t["cka_derived"]) or \
        (units["applicable"] and units["log10_p_value"] <= t["unit_log10_p"])
    run_signatures = not derived_already if signatures is None else signatures
    sig = signature_test(a, b, seed) if run_signatures else {"name": "signatures", "applicable": False,
                                                            "notes": "not needed: the probes already decided"}
    tests = [cka, units, sig]
    return {"tests": tests, **decide(tests, len(ia), t), "common_probes": len(ia), "thresholds": t}


def decide(tests: list[dict], common: int, t: dict) -> dict:
    by = {x["name"]: x for x in tests}
    cka, units, sig = by["invariant-cka"], by["unit-order"], by["signatures"]
    decisive = []
    if cka["applicable"] and cka["statistic"] >= t["cka_derived"]:
        decisive.append("invariant-cka")
    if units["applicable"] and units["log10_p_value"] <= t["unit_log10_p"]:
        decisive.append("unit-order")
    if sig["applicable"] and (sig["effect"] or 0) >= t["signature_effect"]:
        decisive.append("signatures")
    p, log10_p = (units["p_value"], units["log10_p_value"]) if units["applicable"] else (None, None)
    if decisive:
        return {"verdict": "derived", "decisive": decisive, "p_value": p, "log10_p_value": log10_p}
    quiet = cka["applicable"] and cka["statistic"] < t["cka_independent"] and common >= t["min_common_independent"]
    quiet = quiet and (not units["applicable"] or units["log10_p_value"] > -2) and \
        (not sig["applicable"] or (sig["effect"] or 0) < t["signature_quiet"])
    verdict = "independent" if quiet else "inconclusive"
    return {"verdict": verdict, "decisive": [], "p_value": p, "log10_p_value": log10_p}

