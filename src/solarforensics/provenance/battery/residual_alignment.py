"""Residual-basis alignment (AWM step 1): which residual dimension of B plays the role of each dimension of A.

Primary: embedding rows of tokens shared *by string*; the cosine of every column of A with every column of B;
linear assignment on |cos| gives a permutation and the signs. Fallback when the embeddings were re-initialised:
per-dimension signatures that move with the residual basis but not with gain re-absorption, head or unit
permutations: the column norms of every gain-folded matrix that reads the residual stream (Q, K, V, router, MLP
inputs); they cannot see sign flips, so the tests after a signature alignment use sign-blind statistics. Quality is the mean matched similarity beside a null where correspondence is destroyed (tokens shuffled,
or each signature feature shuffled over dimensions). The matching's Spearman rho against the identity has an exact
null when B's residual dimensions are exchangeable (independent initialisations): it detects undisguised copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from solarforensics.metrics.matching import assign, rank_test
from solarforensics.metrics.stats import summarize
from solarforensics.provenance.weights import PRECEDING_NORM, ModelWeights, proportional_pairs, result

NAME = "residual-alignment"
ROTATION_MARGIN = 0.9  # the matching's quality as a fraction of the rotation's, at least, to be preferred
SIGNATURE_ROLES = ("q", "k", "v", "router", "mlp_gate", "mlp_up", "shared_gate", "shared_up")


@dataclass
class Alignment:
    """Matched residual dims (index_a[i] of A <-> index_b[i] of B, B's flipped by signs[i]) and how they were found.
    With a `basis` [d_B, d_A] (a fitted rotation), B's matrices are first mapped into A's basis (W_B @ basis) and
    the indices then count A's dims."""

    method: str
    index_a: torch.Tensor
    index_b: torch.Tensor
    signs: torch.Tensor
    details: dict = field(default_factory=dict)
    signs_known: bool = True  # False: the method cannot see sign flips (signatures); later tests go sign-blind
    basis: torch.Tensor | None = None

    @classmethod
    def unaligned(cls, dims: int) -> Alignment:
        index = torch.arange(dims)
        return cls("none", index, index.clone(), torch.ones(dims, dtype=torch.float64))

    @property
    def dims(self) -> int:
        return len(self.index_a)

    @property
    def found(self) -> bool:
        return self.method != "none"

    @property
    def per_dimension(self) -> bool:
        """Found, and a dim-to-dim matching: per-dimension vectors (norm gains) can then be aligned; a rotation
        mixes dims, so they cannot."""
        return self.found and self.basis is None

    def take_a(self, w: torch.Tensor) -> torch.Tensor:
        """A's matched residual dims along the last axis."""
        return w.index_select(-1, self.index_a.to(w.device))

    def take_b(self, w: torch.Tensor, signed: bool = True) -> torch.Tensor:
        """B's partners along the last axis, sign-flipped (matrices) or not (gains, which a flip leaves alone)."""
        if self.basis is not None:
            w = w @ self.basis.to(w.device, w.dtype)
        out = w.index_select(-1, self.index_b.to(w.device))
        return out * self.signs.to(w.device, w.dtype) if signed else out

    def subset(self, keep: torch.Tensor) -> Alignment:
        """Only the matched pairs at positions `keep`."""
        return replace(self, index_a=self.index_a[keep], index_b=self.index_b[keep], signs=self.signs[keep])


def _unit_columns(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=0, keepdim=True)
    norms = torch.linalg.vector_norm(x, dim=0, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def _assignment_quality(similarity: torch.Tensor, absolute: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    rows, cols = assign(similarity.abs() if absolute else similarity)
    index_a, index_b = torch.as_tensor(rows), torch.as_tensor(cols)
    matched = similarity[index_a, index_b]
    return index_a, index_b, float((matched.abs() if absolute else matched).mean())


def null_draws_for(dims: int) -> int:
    """Null draws, fewer for wide models: one linear assignment costs ~dims^3."""
    return max(3, min(20, int(2e9 / max(dims, 1) ** 3)))


def _candidate(method: str, index_a, index_b, signs, quality: float, null: list[float], extra: dict,
               basis: torch.Tensor | None = None) -> Alignment:
    background = summarize(null)
    spread = background["std"] or 0.0
    effect = (quality - background["mean"]) / spread if spread > 0 else None
    # A fitted rotation pairs every dim with itself: its order says nothing, so no Spearman test.
    rank = rank_test(index_a.tolist(), index_b.tolist()).as_dict() if basis is None else None
    details = {"quality": quality, "null": {**background, "draws": len(null)}, "effect": effect,
               "spearman": rank, "dims_matched": len(index_a),
               "identity_fraction": float((index_a == index_b).double().mean()) if len(index_a) and basis is None
               else None, "signs_flipped": int((signs < 0).sum()), **extra}
    return Alignment(method, index_a, index_b, signs, details, basis=basis)


def _shuffled_token_null(ea: torch.Tensor, eb: torch.Tensor, quality: Callable[[torch.Tensor, torch.Tensor], float],
                         seed: int) -> list[float]:
    """`quality` of the two embeddings with B's token rows shuffled (correspondence destroyed), a few draws."""
    generator = torch.Generator().manual_seed(seed)
    return [quality(ea, eb[torch.randperm(eb.shape[0], generator=generator).to(eb.device)])
            for _ in range(null_draws_for(ea.shape[1]))]


@torch.no_grad()
def embedding_alignment(rows_a: torch.Tensor, rows_b: torch.Tensor, seed: int = 0, device="cpu",
                        max_dims: int | None = None) -> Alignment:
    """Align by the embedding rows of shared tokens ([k, d_A] and [k, d_B], row i = the same token string).
    `max_dims`: match only a seeded random subset of A's dims (against all of B's): the Spearman null stays exact
    (B's partners of a random subset are as exchangeable as of all), at a fraction of the work."""
    ea = _unit_columns(rows_a.to(device, torch.float64))
    eb = _unit_columns(rows_b.to(device, torch.float64))
    picked = None
    if max_dims and ea.shape[1] > max_dims:
        generator = torch.Generator().manual_seed(seed)
        picked = torch.randperm(ea.shape[1], generator=generator)[:max_dims].sort().values
        ea = ea[:, picked.to(ea.device)]
    cosines = (ea.T @ eb).cpu()
    index_a, index_b, quality = _assignment_quality(cosines, absolute=True)
    signs = torch.sign(cosines[index_a, index_b])
    signs[signs == 0] = 1.0
    if picked is not None:
        index_a = picked[index_a]
    null = _shuffled_token_null(ea, eb, lambda x, y: _assignment_quality((x.T @ y).cpu(), absolute=True)[2], seed)
    return _candidate("embeddings", index_a, index_b, signs, quality, null,
                      {"tokens": rows_a.shape[0], "dims_sampled": None if picked is None else len(picked),
                       "null_kind": "shared tokens shuffled between the models"})


def _rotation(ea: torch.Tensor, eb: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Orthogonal Procrustes: the basis M [d_B, d_A] (orthonormal columns) that best maps B's columns onto A's, and
    the mean cosine of every A column with its mapped partner."""
    u, _, vh = torch.linalg.svd(ea.T @ eb, full_matrices=False)
    basis = (u @ vh).T
    mapped = _unit_columns(eb @ basis)
    return basis, float((ea * mapped).sum(dim=0).mean())


@torch.no_grad()
def rotation_alignment(rows_a: torch.Tensor, rows_b: torch.Tensor, seed: int = 0, device="cpu") -> Alignment:
    """Align by the best rotation of B's residual stream onto A's (shared-token embedding rows as for
    embedding_alignment): sees through a rotated residual basis, which defeats any dimension matching."""
    ea = _unit_columns(rows_a.to(device, torch.float64))
    eb = _unit_columns(rows_b.to(device, torch.float64))
    basis, quality = _rotation(ea, eb)
    null = _shuffled_token_null(ea, eb, lambda x, y: _rotation(x, y)[1], seed)
    index = torch.arange(ea.shape[1])
    peak = basis.abs().amax(dim=0).mean()  # 1 for a signed permutation, ~sqrt(2 log d / d) for a random rotation
    return _candidate("embeddings-rotation", index, index.clone(), torch.ones(len(index), dtype=torch.float64),
                      quality, null, {"tokens": rows_a.shape[0], "largest_entry_mean": float(peak),
                                      "null_kind": "shared tokens shuffled between the models"},
                      basis=basis.cpu())


def _signatures(model: ModelWeights, pairs: list[tuple[str, int]]) -> torch.Tensor:
    """[d, features]: per residual dim, the log norm of its column in each gain-folded residual-reading matrix."""
    columns = [torch.linalg.vector_norm(model.folded(role, layer), dim=0) for role, layer in pairs]
    return torch.stack(columns, dim=1).clamp_min(1e-300).log()


def _blocks(pairs: list[tuple[str, int]]) -> list[list[int]]:
    """Feature indices of matrices behind the same norm of the same layer (they share that gain: one block)."""
    blocks: dict[tuple[int, str], list[int]] = {}
    for i, (role, layer) in enumerate(pairs):
        blocks.setdefault((layer, PRECEDING_NORM.get(role, role)), []).append(i)
    return [block for block in blocks.values() if len(block) > 1]


def _standardise(f: torch.Tensor, blocks: list[list[int]]) -> torch.Tensor:
    """Per block, each dim's level removed (a gain or a per-layer scale shared by the block says nothing about the
    dim's identity); then features z-scored over dims, and each dim's profile centered and normalised."""
    f = torch.cat([f[:, b] - f[:, b].mean(dim=1, keepdim=True) for b in blocks], dim=1)
    f = (f - f.mean(dim=0, keepdim=True)) / f.std(dim=0, keepdim=True).clamp_min(1e-300)
    f = f - f.mean(dim=1, keepdim=True)
    return f / torch.linalg.vector_norm(f, dim=1, keepdim=True).clamp_min(1e-300)


@torch.no_grad()
def signature_alignment(a: ModelWeights, b: ModelWeights, seed: int = 0, device="cpu") -> Alignment | None:
    """Align by per-dimension signatures; None when the two models share too few residual-reading matrices."""
    pairs_a, pairs_b = [], []
    for role in SIGNATURE_ROLES:
        for la, lb in proportional_pairs(a.layers_with(role), b.layers_with(role)):
            if a.names_for([role], [la])[0] in a.tensors and b.names_for([role], [lb])[0] in b.tensors:
                pairs_a.append((role, la))
                pairs_b.append((role, lb))
    blocks = _blocks(pairs_a)
    if not blocks:
        return None
    fa, fb = _signatures(a, pairs_a), _signatures(b, pairs_b)
    sa = _standardise(fa, blocks)
    similarity = sa @ _standardise(fb, blocks).T
    index_a, index_b, quality = _assignment_quality(similarity, absolute=False)
    generator = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(null_draws_for(similarity.shape[0])):
        scrambled = fb.clone()
        for block in blocks:  # one permutation per block: within-block structure kept, correspondence lost
            scrambled[:, block] = fb[torch.randperm(fb.shape[0], generator=generator)][:, block]
        null.append(_assignment_quality(sa @ _standardise(scrambled, blocks).T, absolute=False)[2])
    # Column norms cannot see a sign flip. Fitting signs to the weights later compared would manufacture
    # similarity between unrelated models, so signs stay unknown and the tests that follow use sign-blind forms.
    signs = torch.ones(len(index_a), dtype=torch.float64)
    found = _candidate("signatures", index_a, index_b, signs, quality, null,
                       {"features": sum(len(b) - 1 for b in blocks),
                        "null_kind": "B's dims shuffled independently per layer block"})
    found.signs_known = False
    return found


def choose(candidates: list[Alignment], min_effect: float, min_rotation_quality: float = 1.0,
           min_embedding_quality: float = 0.0) -> Alignment | None:
    """Which alignment the tests after it use.

    Embeddings are trusted only when they match well (quality >= min_embedding_quality): re-initialised or unrelated
    embeddings still match each other loosely, far above a shuffled-token null. A trusted matching is used when it
    explains nearly as much as the rotation (a permuted copy is also a rotation, and only a matching gives an exact
    test); else a rotation that maps B's embeddings onto A's almost exactly; else the signatures when they stand out;
    else the candidate that stands out most."""
    usable = [c for c in candidates if c is not None and c.details.get("effect") is not None]
    by_method = {c.method: c for c in usable}
    matching, rotation = by_method.get("embeddings"), by_method.pop("embeddings-rotation", None)
    signatures = by_method.get("signatures")

    def clear(c: Alignment | None, quality: float = -math.inf) -> bool:
        return c is not None and c.details["quality"] >= quality and c.details["effect"] >= min_effect

    rotation = rotation if clear(rotation, max(min_rotation_quality, min_embedding_quality)) else None
    if clear(matching, min_embedding_quality) and (
            rotation is None or matching.details["quality"] >= ROTATION_MARGIN * rotation.details["quality"]):
        return matching
    if rotation is not None:
        return rotation
    if clear(signatures):
        return signatures
    return max(by_method.values(), key=lambda c: c.details["effect"], default=None)


def alignment_test(chosen: Alignment | None, candidates: list[Alignment], reasons: list[str]) -> dict:
    """The results row: quality and effect of the chosen alignment, and its Spearman p-value against the identity."""
    if chosen is None:
        return result(NAME, False, notes="; ".join(reasons) or "no way to align the residual dimensions",
                      reason="; ".join(reasons))
    d = chosen.details
    rank = d["spearman"] or {"p_value": None, "log10_p_value": None}
    effect = d["effect"]
    if chosen.basis is not None:
        notes = (f"{chosen.method}: B's residual stream rotated onto A's (orthogonal Procrustes on {d['tokens']} "
                 f"shared tokens; mean largest |entry| per column {d['largest_entry_mean']:.2f}, 1 = a signed "
                 "permutation); no p-value: a fitted rotation has no exchangeability null")
    else:
        flips = f"{d['signs_flipped']} signs flipped" if chosen.signs_known else \
            "signs unknown (sign-blind tests follow)"
        notes = (f"{chosen.method}: {d['dims_matched']} dims matched, {flips}, "
                 f"{100 * (d['identity_fraction'] or 0):.0f}% at the same index; p: Spearman of the matching vs the "
                 f"identity ({rank['method']}), exact under exchangeable residual dims")
    if reasons:
        notes += "; " + "; ".join(reasons)
    return result(NAME, statistic=d["quality"], null=d["null"], p_value=rank["p_value"],
                  log10_p_value=rank["log10_p_value"], effect=None if effect is None or math.isnan(effect) else effect,
                  notes=notes, symmetry="residual", method=chosen.method,
                  candidates={c.method: {k: v for k, v in c.details.items()} for c in candidates if c is not None})
