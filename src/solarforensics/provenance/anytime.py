"""The default `provenance` path: lean statistics, read in order of information, re-decided after every look.

Looks, planned (with their bytes) before anything is read:

1. `gains`: every norm gain of both models (a few MB): identity of the gains, the norm-gain permutation test.
2. `embeddings`: embedding rows of tokens shared by string (residual alignment, with its exact Spearman test) and
   each model's probe rows (the lean sketches' coordinates).
3. `layers-1`, `layers-2`, ...: batches of decoder layers in spread order along depth (middle, quarters, eighths,
   ...; the batches double: 2, 2, 4, 8, ... layers of the deeper model at the same relative depths in both): each
   layer's probe sketch (provenance/sketch.py: a bounded block of rows of every residual reader), its routers, and
   identity of the rows read. After each look the lean battery (provenance/lean.py: invariant CKA, unit order,
   signatures) and router matching run on every layer read so far.

The run stops at the first look whose verdict is "derived"; "independent" is said only at the last planned look.
Early stopping is paid for: with S planned looks, a p-value decides only at derived.log10_p - log10(S) (Bonferroni
over the looks, valid whatever their dependence); the invariant statistics, which have no p-value, need at least
`lean.min_layers` layers of each model and are held to thresholds set above the running maximum of the zoo's
independent pairs over every look. `bytes_at_verdict` and every look's figures are recorded.

Memory: a look holds its rows (at most BATCH_BYTES of raw rows per model, one reader at a time in float64), the
shared-token embedding rows and the sketches; never a whole matrix of a big model (see `memory_bound`).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field, replace

import torch

from solarforensics.errors import BudgetError, ForensicsError, SpecError
from solarforensics.evidence.tokenizer import read_vocabulary
from solarforensics.metrics.device import describe_device, resolve_device
from solarforensics.metrics.stats import format_p
from solarforensics.models import OpenOptions, check_memory, open_models, same_source_warning
from solarforensics.provenance import lean, sketch
from solarforensics.provenance.battery import identity, matching, norm_gains, residual_alignment
from solarforensics.provenance.battery.layer_alignment import layer_matrix_record
from solarforensics.provenance.battery.residual_alignment import Alignment
from solarforensics.provenance.pair import (
    ProvenanceRequest,
    checkpoint_bytes,
    open_weights,
    parse_tests,
    row_bytes,
    token_rows,
)
from solarforensics.provenance.verdict import LIMITS, combined_p, identity_fires, load_thresholds, statements
from solarforensics.provenance.weights import NORMS, ModelWeights, not_applicable, proportional_pairs, result
from solarforensics.sources.interrupt import worker_pool

LEAN_TESTS = ("identity", "norm-gains", "residual-alignment", "cka", "matching")
WHOLE_MATRIX = {"cka-q": "W_Q's whole Gram", "corroborative": "whole-matrix spectra"}
ALIGN_TOKENS = 1024  # shared tokens whose embedding rows align the residual dims (a seeded sample beyond)
ALIGN_DIMS = 1024  # A's residual dims matched (a seeded sample beyond): an exact Spearman test needs no more
BATCH_BYTES = 256 << 20  # raw rows read per model and look, at most (a look of more layers is split in reads)


@dataclass
class Look:
    name: str
    layers_a: list[int]
    layers_b: list[int]
    planned_bytes: int
    verdict: str | None = None
    decisive: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    statistics: dict = field(default_factory=dict)  # what the verdict after this look read: CKA, signatures, p

    def row(self) -> dict:
        return {"look": self.name, "layers_a": self.layers_a, "layers_b": self.layers_b,
                "planned_bytes": self.planned_bytes, "read": self.verdict is not None, "bytes_read": self.bytes_read,
                "verdict": self.verdict,
                "decisive": self.decisive, "statistics": self.statistics, "seconds": round(self.seconds, 3)}


class Sketches:
    """One model's lean statistics so far, shaped like a fingerprint (meta + arrays) for the lean battery."""

    def __init__(self, w: ModelWeights, probes: list[tuple[int, bytes, int]], x: torch.Tensor):
        self.w, self.probes, self.x = w, probes, x
        self.per_layer: dict[int, dict[str, torch.Tensor]] = {}
        self.meta = {"arch": {"hidden_size": w.hidden}}

    @property
    def arrays(self) -> dict[str, torch.Tensor]:
        layers = sorted(self.per_layer)
        out = sketch.stack_layers([self.per_layer[layer] for layer in layers], layers, len(self.probes))
        out.pop("int8_grid", None)
        out["probe_hash"] = torch.tensor([p[0] for p in self.probes], dtype=torch.int64)
        out["probe_gram"] = (self.x @ self.x.T).to(torch.float32)
        return out


def spread_order(count: int) -> list[int]:
    """Positions 0..count-1 in the order that covers depth evenly soonest: middle, quarters, eighths, ..."""
    if count <= 0:
        return []
    order, seen, step = [], set(), 1
    while len(order) < count:
        for k in range(1, 2 * step, 2):
            position = round(k / (2 * step) * (count - 1))
            if position not in seen:
                seen.add(position)
                order.append(position)
        step *= 2
        if step > 4 * count:
            order += [p for p in range(count) if p not in seen]
            break
    return order


def layer_batches(a: ModelWeights, b: ModelWeights, max_layers: int | None) -> list[tuple[list[int], list[int]]]:
    """(layers of A, layers of B) per look: relative depths in spread order, batches 2, 2, 4, 8, ... of the deeper
    model's count, each model's layers at the same relative depths (each layer once)."""
    deeper = max(len(a.layers), len(b.layers))
    count = deeper if not max_layers else min(deeper, max_layers)
    positions = [p / max(count - 1, 1) for p in spread_order(count)]
    batches, start, size = [], 0, 2
    taken_a, taken_b = set(), set()
    while start < len(positions):
        chunk = positions[start:start + size]
        la = [a.layers[round(f * (len(a.layers) - 1))] for f in chunk] if a.layers else []
        lb = [b.layers[round(f * (len(b.layers) - 1))] for f in chunk] if b.layers else []
        la = sorted(set(la) - taken_a)
        lb = sorted(set(lb) - taken_b)
        taken_a.update(la)
        taken_b.update(lb)
        if la or lb:
            batches.append((la, lb))
        start += size
        size = size if len(batches) < 2 else size * 2
    return batches


def _layer_rows(w: ModelWeights, layers: list[int]) -> dict[str, list[int]]:
    """The rows these layers' sketches read (sketch.layer_plan), less what is already held (the gains)."""
    plan: dict[str, list[int]] = {}
    for layer in layers:
        plan.update(sketch.layer_plan(w, layer))
    return {name: rows for name, rows in plan.items() if name not in w.tensors}


def _rows_bytes(w: ModelWeights, rows: dict[str, list[int]]) -> int:
    return sum(len(r) * (w.source.ref(n).nbytes // max(w.source.ref(n).shape[0], 1)) for n, r in rows.items())


def _norm_names(w: ModelWeights) -> list[str]:
    return w.names_for(NORMS)


def memory_bound(a: ModelWeights, b: ModelWeights, shared_tokens: int, probes: int) -> dict:
    """Peak bytes held beyond the interpreter and the read buffers, by formula in the models' shapes (never their
    sizes): the shared-token rows in float64 and the alignment's m x d cosines, one look's raw rows per model and one
    reader of it in float64, and the sketches (per layer: readers x probes^2 Grams)."""
    d = max(a.hidden or 0, b.hidden or 0)
    m = min(ALIGN_DIMS, d)
    alignment = 2 * shared_tokens * d * 8 + 2 * m * d * 8
    look = 2 * BATCH_BYTES + 4 * sketch.MAX_ROWS * d * 8
    sketches = (len(a.layers) + len(b.layers)) * len(sketch.READERS) * probes * probes * 8
    return {"bytes": alignment + look + sketches, "alignment": alignment, "look": look, "sketches": sketches,
            "formula": "2·k·d·8 + 2·m·d·8 (alignment) + 2·BATCH + 4·MAX_ROWS·d·8 (one look) + (L_A+L_B)·R·t²·8 "
                       f"(sketches): k={shared_tokens} shared tokens, m={m} matched dims, d={d}, "
                       f"BATCH={BATCH_BYTES}, MAX_ROWS={sketch.MAX_ROWS}, R={len(sketch.READERS)}, t={probes}"}


def _probes(w: ModelWeights, warnings: list[str]) -> list[tuple[int, bytes, int]]:
    if not w.has("embed", None):
        return []
    try:
        vocab = read_vocabulary(w.source)
    except ForensicsError as err:
        warnings.append(f"{w.source.name}: no probe tokens ({err.one_line()}); only the signature test can link it")
        return []
    rows = w.source.ref(w.stored_name("embed", None)).shape[0]
    return [p for p in sketch.select_probes(vocab) if p[2] < rows]


def plan_looks(a: ModelWeights, b: ModelWeights, chosen: list[str], token_ids, probes_a, probes_b,
               max_layers: int | None) -> list[Look]:
    """Every look with the tensor bytes it reads, before anything is read."""
    looks = [Look("gains", [], [], a.source.planned_bytes(_norm_names(a)) + b.source.planned_bytes(_norm_names(b)))]
    embed = sum(row_bytes(w, len(ids)) for w, ids in zip((a, b), token_ids)) if token_ids else 0
    embed += sum(row_bytes(w, len(p)) for w, p in ((a, probes_a), (b, probes_b)) if p)
    looks.append(Look("embeddings", [], [], embed))
    if {"cka", "matching", "identity"} & set(chosen) and a.layers and b.layers:
        for i, (la, lb) in enumerate(layer_batches(a, b, max_layers), start=1):
            size = _rows_bytes(a, _layer_rows(a, la)) + _rows_bytes(b, _layer_rows(b, lb))
            looks.append(Look(f"layers-{i}", la, lb, size))
    return looks


def sequential_models(request: ProvenanceRequest, options: OpenOptions | None = None, progress=None,
                      announce=None) -> dict:
    """The fields of a `provenance` results document, from the anytime lean path."""
    started = time.perf_counter()
    chosen = parse_tests(request.tests)
    check_max_layers(request.max_layers)
    thresholds = load_thresholds(request.thresholds)
    lean_t = {**lean.DEFAULT_THRESHOLDS, **thresholds.get("lean", {})}
    device = resolve_device(request.device)
    source_a, source_b = open_models([request.a, request.b], options)
    same = same_source_warning(source_a, source_b, request.a, request.b)
    warnings: list[str] = [same] if same else []
    a, b = (open_weights(label, source, warnings) for label, source in (("A", source_a), ("B", source_b)))
    token_ids, token_reason = token_rows(a, b, replace(request, embed_rows=min(request.embed_rows, ALIGN_TOKENS))) \
        if "residual-alignment" in chosen else (None, None)
    wants_layers = bool({"cka", "matching"} & set(chosen))
    probes_a, probes_b = (_probes(w, warnings) if wants_layers else [] for w in (a, b))
    looks = plan_looks(a, b, chosen, token_ids, probes_a, probes_b, request.max_layers)
    planned = sum(look.planned_bytes for look in looks)
    checkpoint = checkpoint_bytes(a.source) + checkpoint_bytes(b.source)
    looks = _within_budget(looks, request.budget_bytes)
    shared = len(token_ids[0]) if token_ids else 0
    memory = memory_bound(a, b, shared, max(len(probes_a), len(probes_b)))
    if announce:
        announce({"planned_bytes": sum(look.planned_bytes for look in looks), "checkpoint_bytes": checkpoint,
                  "fraction": sum(look.planned_bytes for look in looks) / checkpoint if checkpoint else None,
                  "per_test": {look.name: look.planned_bytes for look in looks}, "looks": len(looks)})
    check_memory(memory["bytes"], f"the lean path's peak is bounded by {memory['formula']}; use a bigger host")
    run = _Run(a, b, chosen, request, thresholds, lean_t, device, looks, progress)
    run.go(token_ids, token_reason, probes_a, probes_b)
    fields = run.fields()
    warnings += [text for text in run.nonfinite if text]
    verdict = fields.pop("verdict_fields")
    verdict["statements"] = [*([same] if same else []), *verdict["statements"]]
    read = sum(look.bytes_read for look in looks)
    at_verdict = sum(look.bytes_read for look in looks[:run.decided_at + 1]) if run.decided_at is not None else None
    timings = {**run.timings, "total_s": time.perf_counter() - started}
    return {
        "models": {"a": request.a, "b": request.b}, "mode": "sequential",
        "verdict": verdict["verdict"], "p_value": verdict["p_value"], "log10_p_value": verdict["log10_p_value"],
        "decisive": verdict["decisive"], **fields, "limits": LIMITS, "thresholds": {**thresholds, "lean": lean_t},
        "tests_selected": chosen, "planned_bytes": planned, "planned_bytes_per_test": {lk.name: lk.planned_bytes
                                                                                          for lk in looks},
        "checkpoint_bytes": checkpoint, "planned_fraction": planned / checkpoint if checkpoint else None,
        "bytes_read": read, "fraction_read": read / checkpoint if checkpoint else None,
        "bytes_at_verdict": at_verdict,
        "fraction_at_verdict": at_verdict / checkpoint if checkpoint and at_verdict is not None else None,
        "stages": [look.row() for look in looks], "looks_planned": len(looks),
        "memory_bound": memory,
        "summary": {"statements": verdict["statements"], "decisive_tests": verdict["decisive"],
                    "thresholds_status": thresholds.get("status")},
        "sources": [source_a.provenance.as_dict(), source_b.provenance.as_dict()],
        "device": describe_device(device), "accumulation_dtype": "float64",
        "warnings": warnings, "timings": timings,
    }  # fmt: skip


def _within_budget(looks: list[Look], budget: int | None) -> list[Look]:
    """The looks that fit a byte budget (an anytime run stops where the budget does); the first two must fit."""
    if budget is None:
        return looks
    kept, total = [], 0
    for look in looks:
        if total + look.planned_bytes > budget:
            break
        kept.append(look)
        total += look.planned_bytes
    if len(kept) < min(2, len(looks)):
        first = sum(look.planned_bytes for look in looks[:2])
        raise BudgetError(f"provenance needs {first:,} bytes for its first looks (norm gains and embedding rows), "
                          f"over the budget of {budget:,}", "raise --budget-bytes")
    return kept


class _Run:
    """The looks, one after another, each followed by the tests and a verdict."""

    def __init__(self, a, b, chosen, request, thresholds, lean_t, device, looks, progress):
        self.a, self.b, self.chosen, self.request = a, b, chosen, request
        self.thresholds, self.lean_t, self.device, self.looks = thresholds, lean_t, device, looks
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.tests: dict[str, dict] = {}
        self.alignment: Alignment | None = None
        self.identity_rows: list[dict] = []
        self.sketches: tuple[Sketches, Sketches] | None = None
        self.lean_fields: dict = {}
        self.verdict: dict | None = None
        self.decided_at: int | None = None
        self.nonfinite: list[str | None] = []
        self.done_bytes = 0
        self.lock = threading.Lock()
        self.total = sum(look.planned_bytes for look in looks)

    def _tick(self, nbytes: int) -> None:
        with self.lock:
            self.done_bytes += nbytes
            if self.progress:
                self.progress("fetch", self.done_bytes, self.total)

    def _both(self, read_a, read_b) -> tuple:
        """Both models' reads at the same time (each is latency-bound: requests of one model overlap the other's)."""
        with worker_pool(2) as pool:
            futures = [pool.submit(read_a), pool.submit(read_b)]
            return tuple(f.result() for f in futures)

    def go(self, token_ids, token_reason, probes_a, probes_b) -> None:
        for index, look in enumerate(self.looks):
            started, before = time.perf_counter(), self.done_bytes
            if look.name == "gains":
                self._gains()
            elif look.name == "embeddings":
                self._embeddings(token_ids, token_reason, probes_a, probes_b)
            else:
                self._layers(look)
            look.bytes_read = self.done_bytes - before
            self.verdict = self._decide(last=index + 1 == len(self.looks))
            look.verdict, look.decisive = self.verdict["verdict"], self.verdict["decisive"]
            look.statistics = self._statistics()
            look.seconds = time.perf_counter() - started
            if self.verdict["verdict"] == "derived":
                self.decided_at = index
                return
        self.decided_at = len(self.looks) - 1 if self.verdict and self.verdict["verdict"] != "inconclusive" else None

    # -- looks ---------------------------------------------------------------------------------------------------

    def _read(self, w: ModelWeights, names: list[str]) -> dict[str, torch.Tensor]:
        return w.source.read_tensors(names, self._tick) if names else {}

    def _gains(self) -> None:
        a, b = self.a, self.b
        held_a, held_b = self._both(lambda: self._read(a, _norm_names(a)), lambda: self._read(b, _norm_names(b)))
        a.tensors.update(held_a)
        b.tensors.update(held_b)
        self.nonfinite += [_zero(w) for w in (a, b)]
        if "identity" in self.chosen:
            self.identity_rows.append(identity.identity_test(a, b))
        if "norm-gains" in self.chosen:
            pairs = proportional_pairs(a.layers_with("attn_norm") or a.layers, b.layers_with("attn_norm") or b.layers)
            self.tests["norm-gains"] = norm_gains.norm_gain_test(
                a, b, pairs, "layers at the same relative depth", permutations=self.request.permutations,
                seed=self.request.seed, device=self.device)

    def _embeddings(self, token_ids, token_reason, probes_a, probes_b) -> None:
        a, b = self.a, self.b
        ids_a, ids_b = token_ids if token_ids is not None else ([], [])

        def rows(w: ModelWeights, ids: list[int], probes) -> tuple:
            """The shared-token rows and the probe rows of one model, in one batch of requests."""
            wanted = list(ids) + [p[2] for p in probes]
            got = w.source.read_rows(w.stored_name("embed", None), wanted) if wanted else None
            if got is not None:
                self._tick(got.numel() * got.element_size())
            return (got[:len(ids)] if ids else None), (got[len(ids):] if probes else None)

        (embed_a, probe_a), (embed_b, probe_b) = self._both(lambda: rows(a, ids_a, probes_a),
                                                            lambda: rows(b, ids_b, probes_b))
        a.embed_rows, b.embed_rows = embed_a, embed_b
        xs = [sketch.rms_rows(x.to(torch.float64).nan_to_num(0)) if x is not None else
              torch.zeros(0, w.hidden or 1, dtype=torch.float64) for w, x in ((a, probe_a), (b, probe_b))]
        self.sketches = (Sketches(a, probes_a, xs[0]), Sketches(b, probes_b, xs[1]))
        if "residual-alignment" in self.chosen:
            started = time.perf_counter()
            self._align(token_reason)
            self.timings["residual-alignment_s"] = time.perf_counter() - started
        if "identity" in self.chosen and a.embed_rows is not None and b.embed_rows is not None:
            held = (a.tensors, b.tensors)
            a.tensors, b.tensors = {"embedding rows": a.embed_rows}, {"embedding rows": b.embed_rows}
            saved = a.embed_rows, b.embed_rows
            a.embed_rows = b.embed_rows = None
            self.identity_rows.append(identity.identity_test(a, b))
            (a.embed_rows, b.embed_rows), (a.tensors, b.tensors) = saved, held

    def _align(self, token_reason: str | None) -> None:
        a, b, seed = self.a, self.b, self.request.seed
        candidates, reasons = [], []
        if a.embed_rows is not None and b.embed_rows is not None:
            candidates.append(residual_alignment.embedding_alignment(
                a.embed_rows.nan_to_num(0), b.embed_rows.nan_to_num(0), seed, self.device, max_dims=ALIGN_DIMS))
        elif token_reason:
            reasons.append(f"embeddings not used: {token_reason}")
        reasons.append("lean path: residual dims matched by embeddings only (a rotated residual stream is seen by the "
                       "invariant CKA, a vocabulary swap by the signature test)")
        limits = self.thresholds["alignment"]
        chosen = residual_alignment.choose(candidates, limits["min_effect"], limits.get("min_rotation_quality", 1.0),
                                           limits.get("min_embedding_quality", 0.0))
        self.alignment = chosen
        self.tests["residual-alignment"] = residual_alignment.alignment_test(chosen, candidates, reasons)

    def _layers(self, look: Look) -> None:
        """Read the look's layers a batch of each model at a time (batches at the same depths side by side), sketch
        them, check identity of the rows read, and let the rows go: routers (small) stay for router matching."""
        a, b = self.a, self.b
        started = time.perf_counter()
        batches = itertools.zip_longest(_batches(a, look.layers_a), _batches(b, look.layers_b), fillvalue=[])
        for batch_a, batch_b in batches:
            held_a, held_b = self._both(lambda: a.source.read_row_blocks(_layer_rows(a, batch_a), self._tick),
                                        lambda: b.source.read_row_blocks(_layer_rows(b, batch_b), self._tick))
            for w, batch, sketches, held in ((a, batch_a, self.sketches[0], held_a),
                                             (b, batch_b, self.sketches[1], held_b)):
                if not batch:
                    continue
                w.tensors.update(held)
                self.nonfinite.append(_zero(w, held))
                for layer in batch:
                    sketches.per_layer[layer] = sketch.layer_sketch(w, layer, sketches.x, self.device) \
                        if sketches.x.shape[0] else sketch.layer_signatures(w, layer)
            if "identity" in self.chosen:
                self.identity_rows.append(identity.identity_test(_only(a, batch_a), _only(b, batch_b)))
            for w, batch in ((a, batch_a), (b, batch_b)):
                for (role, layer), name in w.names.items():
                    if layer in batch and role != "router" and role not in NORMS:
                        w.tensors.pop(name, None)
            del held_a, held_b, held  # the batch's rows go now, before the next batch is read
        self.timings["sketch_s"] = self.timings.get("sketch_s", 0.0) + time.perf_counter() - started
        started = time.perf_counter()
        self._lean()
        self.timings["lean_s"] = self.timings.get("lean_s", 0.0) + time.perf_counter() - started

    def _lean(self) -> None:
        sa, sb = self.sketches
        if not sa.per_layer or not sb.per_layer:
            return
        view_a, view_b = lean.View(sa), lean.View(sb)  # each stacks its sketches once
        ia, ib = lean.common_probes(view_a, view_b)
        seed = self.request.seed
        cka = lean.cka_test(view_a, view_b, ia, ib, seed)
        pairs = cka.get("layer_pairs") or proportional_pairs(view_a.layers, view_b.layers)
        if "cka" in self.chosen:
            self.lean_fields = {"matrix": cka.pop("matrix", None), "layers_a": view_a.layers,
                                "layers_b": view_b.layers, "pairs": pairs}
            cka.pop("layer_pairs", None)
            self.tests["invariant-cka"] = {**_row(cka), "common_probes": len(ia), "layers_a": len(view_a.layers),
                                           "layers_b": len(view_b.layers), "layer_pairs": [list(p) for p in pairs]}
            self.tests["signatures"] = _row(lean.signature_test(view_a, view_b, seed))
        if "matching" in self.chosen:
            self.tests["unit-order"] = {**_row(lean.unit_test(view_a, view_b, ia, ib, pairs)), "symmetry": "units"}
            alignment = self.alignment if self.alignment is not None else (
                Alignment.unaligned(self.a.hidden) if self.a.hidden == self.b.hidden else None)
            if alignment is not None:
                self.tests["router-matching"] = matching.router_test(self.a, self.b, alignment, pairs, seed=seed,
                                                                     device=self.device)
            else:
                self.tests["router-matching"] = not_applicable(
                    matching.ROUTER, "no residual alignment and different hidden sizes: router rows cannot be compared")

    # -- verdict -------------------------------------------------------------------------------------------------

    def _rows(self) -> list[dict]:
        rows = [_merged_identity(self.identity_rows)] if self.identity_rows else []
        return rows + list(self.tests.values())

    def _decide(self, last: bool) -> dict:
        return decide_look(self._rows(), self.thresholds, self.lean_t, len(self.looks), last,
                           min(len(self.sketches[0].per_layer), len(self.sketches[1].per_layer))
                           if self.sketches else 0)

    def _statistics(self) -> dict:
        """The running values the calibration of early stopping needs (invariant CKA, signature effect, log10 p)."""
        cka, sig = self.tests.get("invariant-cka"), self.tests.get("signatures")
        return {"invariant_cka": cka.get("statistic") if cka and cka.get("applicable") else None,
                "signature_effect": sig.get("effect") if sig and sig.get("applicable") else None,
                "log10_p": self.verdict["log10_p_value"] if self.verdict else None}

    def fields(self) -> dict:
        tests = self._rows()
        not_tested = [{"name": t, "reason": "not selected (--tests)"} for t in LEAN_TESTS if t not in self.chosen]
        not_tested += [{"name": t, "reason": f"{why} is not read by the lean path: run with --full"}
                       for t, why in WHOLE_MATRIX.items() if t in self.chosen]
        not_tested += [{"name": t["name"], "reason": t["notes"]} for t in tests if not t["applicable"]]
        if self.decided_at is not None and self.decided_at + 1 < len(self.looks):
            not_tested.append({"name": "later looks", "reason": "not needed: the verdict was decisive"})
        verdict = dict(self.verdict or decide_look([], self.thresholds, self.lean_t, 1, True, 0))
        verdict["statements"] = statements(verdict["verdict"], verdict["decisive"], verdict.pop("reasons"),
                                           verdict["p_value"], verdict["log10_p_value"], verdict.pop("contributing"),
                                           not_tested, "the invariant CKA on shared probe tokens (blind to residual "
                                                       "permutations and rotations)")
        verdict["statements"].insert(1, _look_statement(self.looks, self.decided_at))
        return {"tests": tests, "not_tested": not_tested, "layer_matrices": self._matrices(),
                "alignment": self._alignment_record(), "verdict_fields": verdict}

    def _matrices(self) -> dict:
        m = self.lean_fields.get("matrix")
        if m is None:
            return {}
        return {"invariant CKA": layer_matrix_record(m, self.lean_fields["layers_a"], self.lean_fields["layers_b"],
                                                     "invariant cka")}

    def _alignment_record(self) -> dict:
        record: dict = {"method": self.alignment.method if self.alignment is not None else None,
                        "layer_pairing": "layer map from the invariant CKA" if self.lean_fields.get("pairs")
                        else "layers at the same relative depth"}
        if self.alignment is not None:
            d = self.alignment.details
            record.update(quality=d.get("quality"), effect=d.get("effect"), null=d.get("null"),
                          dims_matched=self.alignment.dims, identity_fraction=d.get("identity_fraction"))
        if self.lean_fields.get("pairs"):
            record["layer_map"] = [list(p) for p in self.lean_fields["pairs"]]
        return record


def _batches(w: ModelWeights, layers: list[int]) -> list[list[int]]:
    """Layers grouped so that one read holds at most BATCH_BYTES of rows."""
    out, pending = [], []
    for layer in layers:
        pending.append(layer)
        if _rows_bytes(w, _layer_rows(w, pending)) >= BATCH_BYTES:
            out.append(pending)
            pending = []
    return out + ([pending] if pending else [])


def _only(w: ModelWeights, layers: list[int]) -> ModelWeights:
    """A view of `w` holding only the tensors of these layers (what one look read), for the identity test."""
    names = {n for (_, layer), n in w.names.items() if layer in layers}
    return ModelWeights(w.label, w.source, w.family, w.dims, w.layers, w.names, w.fused_from,
                        {n: t for n, t in w.tensors.items() if n in names})


def _zero(w: ModelWeights, held: dict | None = None) -> str | None:
    tensors, values, _ = w.zero_nonfinite(held)
    if not tensors:
        return None
    return (f"{w.label} ({w.source.name}): {tensors} tensor(s) held {values:,} NaN/Inf values, set to 0 for the "
            "tests")


def _row(test: dict) -> dict:
    """A lean test's dict as a results row (the keys every row has; tensors left out)."""
    return result(**{k: v for k, v in test.items() if not isinstance(v, torch.Tensor)})


def _merged_identity(rows: list[dict]) -> dict:
    """One identity row over every look: counts added, examples joined."""
    applicable = [r for r in rows if r["applicable"]]
    if not applicable:
        return rows[0]
    keys = ("identical_tensors", "identical_rows", "identical_windows", "near_equal_tensors", "tensors_a",
            "tensors_b")
    statistic = {k: sum(r["statistic"].get(k, 0) for r in applicable) for k in keys}
    examples = {"identical": [e for r in applicable for e in r["examples"]["identical"]][:identity.EXAMPLES],
                "near_equal": [e for r in applicable for e in r["examples"]["near_equal"]][:identity.EXAMPLES]}
    effect = (f"{statistic['identical_tensors']} identical tensors, {statistic['identical_rows']} identical rows, "
              f"{statistic['identical_windows']} identical windows, {statistic['near_equal_tensors']} near-equal "
              "matrices")
    return {**applicable[0], "statistic": statistic, "effect": effect, "examples": examples,
            "notes": f"SHA-256 over what each look read (gains, shared-token rows, the layers' row blocks), "
                     f"{len(applicable)} look(s); constant data left out"}


def decide_look(tests: list[dict], thresholds: dict, lean_t: dict, looks: int, last: bool, layers_read: int) -> dict:
    """The verdict after one look. Derived: identity; a p-value at or below derived.log10_p - log10(looks) (one
    test's or the combination's); invariant CKA or signatures over their thresholds once `min_layers` layers of
    each model were read. Independent: only at the last look, every test quiet. Else inconclusive."""
    derived = thresholds["derived"]
    alpha = derived["log10_p"] - math.log10(max(looks, 1))
    by = {t["name"]: t for t in tests}
    p, log10_p, contributing = combined_p(tests)
    decisive = [t["name"] for t in tests if t["name"] == "identity" and identity_fires(t, derived)]
    decisive += [t["name"] for t in tests if t.get("applicable") and t.get("log10_p_value") is not None
                 and t.get("symmetry") in ("residual", "units") and t["log10_p_value"] <= alpha]
    if not decisive and log10_p is not None and log10_p <= alpha:
        decisive.append(f"combined p-value ({', '.join(contributing)})")
    enough = layers_read >= lean_t.get("min_layers", 2)
    cka, sig = by.get("invariant-cka"), by.get("signatures")
    if enough and cka and cka["applicable"] and cka["statistic"] >= lean_t["cka_derived"]:
        decisive.append("invariant-cka")
    if enough and sig and sig["applicable"] and (sig.get("effect") or 0) >= lean_t["signature_effect"]:
        decisive.append("signatures")
    reasons = []
    if decisive:
        verdict = "derived"
    else:
        if not last:
            reasons.append("not every planned look was read")
        if cka is None or not cka.get("applicable"):
            reasons.append("the disguise-invariant test (invariant CKA on shared probe tokens) could not run")
        elif cka["statistic"] >= lean_t["cka_independent"]:
            reasons.append("invariant CKA lies between the independent and derived thresholds")
        elif (cka.get("common_probes") or 0) < lean_t["min_common_independent"]:
            reasons.append(f"only {cka.get('common_probes')} shared probe tokens: too few to claim independence")
        if sig and sig.get("applicable") and (sig.get("effect") or 0) >= lean_t["signature_quiet"]:
            reasons.append("the signature test stands above its quiet level")
        if log10_p is not None and log10_p <= thresholds["independent"]["log10_p"]:
            reasons.append(f"the combined p-value ({format_p(p, log10_p)}) is small but not decisive")
        verdict = "inconclusive" if reasons else "independent"
    return {"verdict": verdict, "p_value": p, "log10_p_value": log10_p, "decisive": decisive, "reasons": reasons,
            "contributing": contributing, "alpha_log10": alpha}


def _look_statement(looks: list[Look], decided_at: int | None) -> str:
    read = sum(look.bytes_read for look in looks)
    names = ", ".join(look.name for look in looks)
    if decided_at is not None and looks[decided_at].verdict == "derived":
        return (f"Decided at look {decided_at + 1} of {len(looks)} ({looks[decided_at].name}) after {read:,} bytes "
                f"of tensors; p-values were held to the derived threshold minus log10({len(looks)}) for the planned "
                "looks.")
    return f"Read every planned look ({names}): {read:,} bytes of tensors."


def check_max_layers(value: int | None) -> None:
    """A layer budget of one cannot decide: the invariant statistics need two layers of each model."""
    if value is not None and (not isinstance(value, int) or value < 2):
        raise SpecError(f"--max-layers {value} is too few", "at least 2 layers per model")
