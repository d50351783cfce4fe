"""The whole-matrix provenance path (`provenance --full`): choose the tests that apply to a pair, plan and announce
the bytes, read each tensor once, run the battery (identity, norm gains, residual alignment, attention CKA over whole
W_K/W_V/W_Q Grams, layer alignment, matching over whole MLP matrices, corroborative) and let the verdict engine
combine them. Routed experts are never read. The default path is provenance/anytime.py.
"""

from __future__ import annotations

import threading
import time

from solarforensics.errors import BudgetError
from solarforensics.metrics.device import default_accumulation, describe_device, dtype_name, resolve_device
from solarforensics.models import OpenOptions, check_memory, open_models, same_source_warning
from solarforensics.provenance.battery import cka, corroborative, identity, matching, norm_gains, residual_alignment
from solarforensics.provenance.battery.layer_alignment import align_layers
from solarforensics.provenance.battery.residual_alignment import Alignment
from solarforensics.provenance.pair import (
    ROLES,
    TESTS,
    Announce,
    Progress,
    ProvenanceRequest,
    checkpoint_bytes,
    open_weights,
    parse_tests,
    row_bytes,
    token_rows,
)
from solarforensics.provenance.verdict import decide, load_thresholds
from solarforensics.provenance.weights import ModelWeights, not_applicable, proportional_pairs
from solarforensics.sources.interrupt import worker_pool

STREAMED = ("q",)  # roles read layer by layer while their test runs, not held for the whole battery...
STREAM_ABOVE = 1 << 30  # ...when they weigh more than this


def whole_models(request: ProvenanceRequest, options: OpenOptions | None = None,
                      progress: Progress | None = None, announce: Announce | None = None) -> dict:
    """The fields of a `provenance` results document, from the whole-matrix path."""
    started = time.perf_counter()
    chosen = parse_tests(request.tests)
    thresholds = load_thresholds(request.thresholds)
    device = resolve_device(request.device)
    source_a, source_b = open_models([request.a, request.b], options)
    same = same_source_warning(source_a, source_b, request.a, request.b)
    warnings: list[str] = [same] if same else []
    a, b = (open_weights(label, source, warnings) for label, source in (("A", source_a), ("B", source_b)))
    token_ids, token_reason = token_rows(a, b, request) if "residual-alignment" in chosen else (None, None)
    plan = _plan(a, b, chosen, token_ids)
    if announce:
        announce(plan)
    if request.budget_bytes is not None and plan["planned_bytes"] > request.budget_bytes:
        per_test = ", ".join(f"{t} {n:,}" for t, n in plan["per_test"].items())
        raise BudgetError(f"provenance needs {plan['planned_bytes']:,} bytes of tensors, over the budget of "
                          f"{request.budget_bytes:,}", f"per test: {per_test}; raise --budget-bytes or drop --tests")
    held = a.source.planned_bytes(plan["names_a"]) + b.source.planned_bytes(plan["names_b"])
    check_memory(held, "the plan above says what each test reads: drop some with --tests, or use a bigger host")
    opened = time.perf_counter()
    _read(a, b, plan, token_ids, progress)
    timings = {"open_s": opened - started, "fetch_s": time.perf_counter() - opened}
    run = _Battery(a, b, chosen, request, thresholds, device, timings)
    fields = run.everything(token_reason)
    verdict = decide(fields["tests"], fields["not_tested"], thresholds)
    nonfinite = [text for text in run.nonfinite_statements if text]
    warnings += nonfinite
    verdict["statements"] = [*([same] if same else []), *verdict["statements"], *nonfinite]
    timings["total_s"] = time.perf_counter() - started
    return {
        "models": {"a": request.a, "b": request.b}, "mode": "full",
        "verdict": verdict["verdict"], "p_value": verdict["p_value"], "log10_p_value": verdict["log10_p_value"],
        "decisive": verdict["decisive"], **fields, "limits": verdict["limits"], "thresholds": verdict["thresholds"],
        "tests_selected": chosen, "planned_bytes": plan["planned_bytes"], "planned_bytes_per_test": plan["per_test"],
        "checkpoint_bytes": plan["checkpoint_bytes"], "planned_fraction": plan["fraction"],
        "summary": {"statements": verdict["statements"], "decisive_tests": verdict["decisive"],
                    "thresholds_status": thresholds.get("status")},
        "sources": [source_a.provenance.as_dict(), source_b.provenance.as_dict()],
        "device": describe_device(device), "accumulation_dtype": dtype_name(default_accumulation(device)),
        "warnings": warnings, "timings": timings,
    }  # fmt: skip


def _plan(a: ModelWeights, b: ModelWeights, chosen: list[str], token_ids) -> dict:
    """Which tensors and rows each model will read, their bytes per test and in all, against the checkpoints' size."""
    names_a, names_b, per_test = {}, {}, {}
    for test in chosen:
        na, nb = a.names_with_gains(ROLES[test]), b.names_with_gains(ROLES[test])
        size = a.source.planned_bytes(na) + b.source.planned_bytes(nb)
        if test == "residual-alignment" and token_ids:
            size += sum(row_bytes(w, len(ids)) for w, ids in zip((a, b), token_ids))
        per_test[test] = size
        names_a.update(dict.fromkeys(na))
        names_b.update(dict.fromkeys(nb))
    rows = sum(row_bytes(w, len(ids)) for w, ids in zip((a, b), token_ids)) if token_ids else 0
    planned = a.source.planned_bytes(names_a) + b.source.planned_bytes(names_b) + rows
    checkpoint = checkpoint_bytes(a.source) + checkpoint_bytes(b.source)
    return {"names_a": _held(a, names_a, chosen), "names_b": _held(b, names_b, chosen), "per_test": per_test,
            "planned_bytes": planned, "checkpoint_bytes": checkpoint,
            "fraction": planned / checkpoint if checkpoint else None}


def _held(w: ModelWeights, names: dict, chosen: list[str]) -> list[str]:
    """The names read up front. W_Q wanted by cka-q alone, when over STREAM_ABOVE bytes (GBs at full scale), is
    streamed during CKA instead, so the identity test does not see it."""
    others = {n for test in chosen if test != "cka-q" for n in w.names_with_gains(ROLES[test])}
    streamed = set(w.names_for(STREAMED)) - others if "cka-q" in chosen else set()
    if w.source.planned_bytes(streamed) <= STREAM_ABOVE:
        return list(names)
    return [n for n in names if n not in streamed]


def _read(a: ModelWeights, b: ModelWeights, plan: dict, token_ids, progress: Progress | None) -> None:
    """Every planned tensor of both models read once, both models at the same time, in coalesced requests."""
    done, lock = [0], threading.Lock()

    def tick(nbytes: int) -> None:
        with lock:
            done[0] += nbytes
            if progress:
                progress("fetch", done[0], plan["planned_bytes"])

    def one(w: ModelWeights, names: list[str], ids) -> None:
        w.tensors = w.source.read_tensors(names, tick)
        if ids is not None:
            w.embed_rows = w.source.read_rows(w.stored_name("embed", None), ids)
            tick(w.embed_rows.numel() * w.embed_rows.element_size())

    ids_a, ids_b = token_ids if token_ids else (None, None)
    with worker_pool(2) as pool:
        futures = [pool.submit(one, a, plan["names_a"], ids_a), pool.submit(one, b, plan["names_b"], ids_b)]
        for future in futures:
            future.result()


class _Battery:
    """Runs the chosen tests in dependency order: alignment -> CKA -> layer map -> tests that use the map."""

    def __init__(self, a, b, chosen, request, thresholds, device, timings):
        self.a, self.b, self.chosen, self.request = a, b, chosen, request
        self.thresholds, self.device, self.timings = thresholds, device, timings
        self.tests: list[dict] = []
        self.matrices: dict = {}

    def _timed(self, key: str, fn, *args, **kwargs):
        started = time.perf_counter()
        value = fn(*args, **kwargs)
        self.timings[f"{key}_s"] = self.timings.get(f"{key}_s", 0.0) + time.perf_counter() - started
        return value

    def everything(self, token_reason: str | None) -> dict:
        seed, device = self.request.seed, self.device
        first = [self._timed("identity", identity.identity_test, self.a, self.b)] if "identity" in self.chosen else []
        self.nonfinite_statements = [_zero_nonfinite(w) for w in (self.a, self.b)]  # identity saw the bytes as stored
        alignment = self._timed("residual-alignment", self._align, token_reason) if "residual-alignment" in \
            self.chosen else None
        usable = alignment if alignment is not None else self._unaligned()
        layers = self._timed("cka", self._cka, usable) if {"cka", "cka-q"} & set(self.chosen) else None
        gains = norm_gains.gain_matrices(self.a, self.b, alignment, device) if "norm-gains" in self.chosen else {}
        self.matrices.update(norm_gains.records(gains, aligned=alignment is not None and alignment.per_dimension))
        if layers is None and gains:
            mean = norm_gains.mean_gain_matrix(gains)
            layers = align_layers(*mean, "mean centered correlation of norm gains") if mean else None
        invariant = layers is not None and alignment is not None and alignment.found
        pairs = [tuple(p) for p in layers["pairs"]] if invariant else proportional_pairs(self.a.layers, self.b.layers)
        pairing = f"layer map from {layers['source']}" if invariant else "layers at the same relative depth"
        if "norm-gains" in self.chosen:
            self.tests.append(self._timed("norm-gains", norm_gains.norm_gain_test, self.a, self.b, pairs, pairing,
                                          permutations=self.request.permutations, seed=seed, device=device))
        if "matching" in self.chosen and usable is None:
            why = "no residual alignment and different hidden sizes: weight rows cannot be compared"
            self.tests += [not_applicable(matching.ROUTER, why), not_applicable(matching.UNITS, why)]
        elif "matching" in self.chosen:
            for test in (matching.router_test, matching.unit_test):
                self.tests.append(self._timed("matching", test, self.a, self.b, usable, pairs, seed=seed,
                                              device=device))
        if "corroborative" in self.chosen:
            self.tests.append(self._timed("corroborative", corroborative.spectra_test, self.a, self.b, pairs,
                                          seed=seed, device=device))
            self.tests.append(self._timed("corroborative", corroborative.std_curve_test, self.a, self.b, pairs,
                                          seed=seed))
        self.tests = first + self.tests
        not_tested = [{"name": t, "reason": "not selected (--tests)"} for t in TESTS if t not in self.chosen]
        not_tested += [{"name": t["name"], "reason": t["notes"]} for t in self.tests if not t["applicable"]]
        return {"tests": self.tests, "not_tested": not_tested, "layer_matrices": self.matrices,
                "alignment": _alignment_record(alignment, layers, pairing)}

    def _unaligned(self) -> Alignment | None:
        if self.a.hidden and self.a.hidden == self.b.hidden:
            return Alignment.unaligned(self.a.hidden)
        return None

    def _align(self, token_reason: str | None) -> Alignment | None:
        seed, reasons, candidates = self.request.seed, [], []
        if self.a.embed_rows is not None and self.b.embed_rows is not None:
            for align in (residual_alignment.embedding_alignment, residual_alignment.rotation_alignment):
                candidates.append(align(self.a.embed_rows, self.b.embed_rows, seed, self.device))
        elif token_reason:
            reasons.append(f"embeddings not used: {token_reason}")
        signatures = residual_alignment.signature_alignment(self.a, self.b, seed, self.device)
        if signatures is None:
            reasons.append("no residual-reading matrices in both models for the signature fallback")
        candidates.append(signatures)
        limits = self.thresholds["alignment"]
        chosen = residual_alignment.choose(candidates, limits["min_effect"], limits.get("min_rotation_quality", 1.0),
                                           limits.get("min_embedding_quality", 0.0))
        self.tests.append(residual_alignment.alignment_test(chosen, candidates, reasons))
        return chosen

    def _cka(self, alignment: Alignment | None) -> dict | None:
        reasons = [] if alignment is None or alignment.found else ["unaligned: a permuted copy would look unrelated"]
        roles = cka.ROLES_BY_TEST["cka"] if "cka" in self.chosen else ()
        roles += cka.ROLES_BY_TEST["cka-q"] if "cka-q" in self.chosen else ()
        matrices = {}
        if alignment is not None:
            layers = max(len(self.a.layers), 1), max(len(self.b.layers), 1)
            draws = cka.null_draws(*layers, min(alignment.dims, cka.MAX_SAMPLES), len(roles))
            matrices = cka.role_matrices(self.a, self.b, alignment, roles, draws=draws, seed=self.request.seed,
                                         device=self.device, accumulate=default_accumulation(self.device))
        else:
            reasons.append("no residual alignment and different hidden sizes")
        row, layers, records = cka.cka_test(matrices, alignment, reasons)
        self.tests.append(row)
        self.matrices.update(records)
        return layers


def _zero_nonfinite(w: ModelWeights) -> str | None:
    tensors, values, names = w.zero_nonfinite()
    if not tensors:
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (f"{w.label} ({w.source.name}): {tensors} tensor(s) hold {values:,} NaN/Inf values ({shown}); the identity "
            "test compared them as stored, every other test with those values set to 0")


def _alignment_record(alignment: Alignment | None, layers: dict | None, pairing: str) -> dict:
    """The `alignment` block: how residual dims and layers were matched, and how well."""
    record: dict = {"method": alignment.method if alignment is not None else None, "layer_pairing": pairing}
    if alignment is not None:
        d = alignment.details
        record.update(quality=d.get("quality"), effect=d.get("effect"), null=d.get("null"),
                      dims_matched=alignment.dims, signs_flipped=d.get("signs_flipped"),
                      identity_fraction=d.get("identity_fraction"), spearman=d.get("spearman"),
                      residual_map={"a": alignment.index_a.tolist(), "b": alignment.index_b.tolist(),
                                    "signs": [int(s) for s in alignment.signs.tolist()]},
                      rotation=None if alignment.basis is None else {
                          "dims_b": alignment.basis.shape[0], "dims_a": alignment.basis.shape[1],
                          "largest_entry_mean": d.get("largest_entry_mean")})
    if layers is not None:
        record.update(layer_map=layers["layer_map"], layer_map_source=layers["source"],
                      path_mean=layers["path_mean"], background=layers["background"], margin_z=layers["margin_z"],
                      duplicated_layers=layers["duplicated_a"], weak_pairs=layers["weak_pairs"],
                      one_to_one=layers["one_to_one"])
    return record
