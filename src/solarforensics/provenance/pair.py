"""What both provenance paths share: the request, the tests by name, and opening the pair (weights, shared-token
rows, checkpoint sizes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from solarforensics.errors import ForensicsError, SpecError
from solarforensics.evidence.tokenizer import shared_token_map
from solarforensics.provenance.weights import NORMS, ModelWeights

TESTS = ("identity", "norm-gains", "residual-alignment", "cka", "cka-q", "matching", "corroborative")
NEEDS = {"cka": ("residual-alignment",), "cka-q": ("residual-alignment",), "matching": ("residual-alignment",)}
# Roles each test of the whole-matrix path reads (all decoder layers; MTP layers and routed experts never).
ROLES = {
    "identity": NORMS + ("k", "v"),
    "norm-gains": NORMS,
    "residual-alignment": NORMS + ("k", "v", "router"),
    "cka": ("attn_norm", "k", "v"),
    "cka-q": ("attn_norm", "q"),
    "matching": ("mlp_norm", "router", "mlp_gate", "mlp_up", "shared_gate", "shared_up"),
    "corroborative": ("attn_norm", "k", "v"),
}
Progress = Callable[[str, int, int], None]
Announce = Callable[[dict], None]


@dataclass(frozen=True)
class ProvenanceRequest:
    a: str
    b: str
    tests: str = "all"
    budget_bytes: int | None = None
    device: str = "auto"
    seed: int = 0
    permutations: int = 999
    embed_rows: int = 8192  # shared tokens whose embedding rows are read (a seeded subsample beyond this)
    thresholds: str | None = None  # a verdict.toml other than configs/verdict.toml
    full: bool = False  # the whole-matrix path (every tensor the tests read, at once) instead of the anytime lean one
    max_layers: int | None = None  # lean path: at most this many layers per model, spread along depth


def parse_tests(spec: str) -> list[str]:
    """`all` or a comma list of TESTS, with what they need (CKA and matching need the residual alignment)."""
    items = [t.strip() for t in spec.split(",") if t.strip()]
    if not items or items == ["all"]:
        return list(TESTS)
    unknown = [t for t in items if t not in TESTS]
    if unknown:
        raise SpecError(f"unknown provenance test {unknown[0]!r}", f"use all or some of: {', '.join(TESTS)}")
    chosen = set(items) | {need for t in items for need in NEEDS.get(t, ())}
    return [t for t in TESTS if t in chosen]


def open_weights(label: str, source, warnings: list[str]) -> ModelWeights:
    try:
        weights = ModelWeights.of(label, source)
    except ForensicsError as err:  # an unknown layout makes every test inapplicable, not the run impossible
        warnings.append(f"{source.name}: {err.one_line()}")
        return ModelWeights(label, source, None, {}, [], {})
    if weights.family.warning:
        warnings.append(f"{source.name}: {weights.family.warning}")
    warnings += [f"{source.name}: {line}" for line in weights.family.config_disagreements(source.config, source.tensors)]
    return weights


def token_rows(a: ModelWeights, b: ModelWeights, request: ProvenanceRequest):
    """(ids_a, ids_b) of a seeded sample of tokens shared by string, or (None, why not)."""
    if not a.has("embed", None) or not b.has("embed", None):
        return None, "no input embedding in both models"
    try:
        mapping = shared_token_map(a.source, b.source)
    except ForensicsError as err:
        return None, f"no shared-token map: {err.one_line()}"
    rows_a = a.source.ref(a.stored_name("embed", None)).shape[0]
    rows_b = b.source.ref(b.stored_name("embed", None)).shape[0]
    usable = [(ia, ib) for _, ia, ib in mapping if 0 <= ia < rows_a and 0 <= ib < rows_b]
    if len(usable) < 8:
        return None, f"only {len(usable)} token strings shared by the two vocabularies"
    generator = torch.Generator().manual_seed(request.seed)
    if len(usable) > request.embed_rows:
        keep = torch.randperm(len(usable), generator=generator)[:request.embed_rows].sort().values.tolist()
        usable = [usable[i] for i in keep]
    return ([ia for ia, _ in usable], [ib for _, ib in usable]), None


def checkpoint_bytes(source) -> int:
    """Sizes of the weight files (from the listing, else header + data extent read from the headers)."""
    total = 0
    for file in {ref.file for ref in source.tensors.values()}:
        record = source.provenance.files.get(file)
        total += record.size if record and record.size else max(r.end for r in source.tensors.values() if r.file == file)
    return total


def row_bytes(w: ModelWeights, rows: int) -> int:
    ref = w.source.ref(w.stored_name("embed", None))
    return rows * (ref.nbytes // ref.shape[0])


