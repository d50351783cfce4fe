"""`compare`: metrics for every selected tensor pair of two models, beside the baselines and nulls that give them
meaning. Raw cosine is never shown alone: centered cosine, a shuffle null and a within-model baseline come with it."""

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from solarforensics.comparison.pairing import pair_models
from solarforensics.comparison.statements import compare_statements
from solarforensics.errors import BudgetError, SelectionError
from solarforensics.metrics.device import default_accumulation, describe_device, dtype_name, resolve_device
from solarforensics.metrics.hashing import row_hashes, shared_rows, tensor_sha256
from solarforensics.metrics.matrices import cosine_matrix, diagonal_dominance
from solarforensics.metrics.nulls import aggregate_shuffle_null, reference_null_norm_gains, shuffle_nulls
from solarforensics.metrics.similarity import pair_stats
from solarforensics.metrics.stats import summarize
from solarforensics.models import OpenOptions, check_memory, open_model, open_models

SHUFFLE_WORK = 2e8  # element-operations allowed per tensor for its own shuffle null: vectors get all permutations
MIN_ROW_PERMUTATIONS = 99
NORM_ROLES = {"attn_norm", "mlp_norm", "final_norm", "q_norm", "k_norm"}
BASELINE_PAIRS = 200  # within-model layer pairs per role, at most
SPEARMAN_MAX = 1 << 20  # Spearman on a seeded sample of 1M positions for bigger tensors (exact ranks cost seconds)


@dataclass(frozen=True)
class CompareRequest:
    a: str
    b: str
    groups: str = "layernorm"
    layers: str = "same"
    control: str | None = None
    device: str = "auto"
    truncate: bool = False
    permutations: int = 1000
    seed: int = 0
    budget_bytes: int | None = None
    batch_bytes: int = 512 << 20


Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)


def compare_models(request: CompareRequest, options: OpenOptions | None = None, progress: Progress | None = None) -> dict:
    """The fields of a `compare` results document."""
    started = time.perf_counter()
    device = resolve_device(request.device)
    accumulate = default_accumulation(device)
    source_a, source_b = open_models([request.a, request.b], options)
    pairs, only_a, only_b, warnings = pair_models(source_a, source_b, request.groups, request.layers)
    planned = source_a.planned_bytes(a.name for a, _ in pairs) + source_b.planned_bytes(b.name for _, b in pairs)
    if request.budget_bytes is not None and planned > request.budget_bytes:
        raise BudgetError(f"the selection needs {planned:,} bytes of tensors, over the budget of {request.budget_bytes:,}")
    check_memory(planned, "compare holds every selected tensor at once: narrow --tensors (fewer groups, or a few "
                          "layers by name pattern, e.g. 'model.layers.[0-3].*')")
    opened = time.perf_counter()
    tensors_a, tensors_b, fetch_s = _read_all(source_a, source_b, pairs, planned, progress)
    compared = [_row(sa, sb, tensors_a[sa.name], tensors_b[sb.name], request, device, accumulate) for sa, sb in pairs]
    rows = [row for row, _ in compared]
    _add_shuffle_p(compared, request, device)
    if not any(r["comparable"] for r in rows):
        raise SelectionError(
            f"no selected pair has equal shapes ({rows[0]['tensor_a']} {rows[0]['shape_a']} vs {rows[0]['shape_b']})",
            "use --truncate to compare the common leading block, or select other groups",
        )
    metrics_done = time.perf_counter()
    # With --layers all-pairs the headline numbers still pair equal layers; the rest goes to the L x L matrices.
    same_layer = [(sa, sb) for sa, sb in pairs if sa.layer == sb.layer]
    baselines = {
        "within_model": _within_model(tensors_a, tensors_b, same_layer, device, request.seed),
        "shuffle": _aggregate_shuffle(tensors_a, tensors_b, same_layer, request, device),
        "reference_null": _reference_null(tensors_a, tensors_b, same_layer, request.seed),
        "controls": [],
    }
    sources = [source_a.provenance, source_b.provenance]
    if request.control:
        control = open_model(request.control, options)
        sources.append(control.provenance)
        baselines["controls"] = _controls(control, request, source_a, source_b, device, accumulate)
    layer_matrices = _layer_matrices(tensors_a, tensors_b, pairs, device) if request.layers == "all-pairs" else {}
    summary = _summary([r for r in rows if r["layer_a"] == r["layer_b"]], baselines)
    summary["statements"] = compare_statements(request.a, request.b, rows, baselines, summary, request.control)
    return {
        "models": {"a": request.a, "b": request.b, "control": request.control},
        "groups": [g.strip() for g in request.groups.split(",") if g.strip()],
        "layers_mode": request.layers,
        "rows": rows,
        "only_in_a": [s.name for s in only_a],
        "only_in_b": [s.name for s in only_b],
        "baselines": baselines,
        "layer_matrices": layer_matrices,
        "summary": summary,
        "sources": [p.as_dict() for p in sources],
        "device": describe_device(device),
        "accumulation_dtype": dtype_name(accumulate),
        "warnings": warnings,
        "planned_bytes": planned,
        "timings": {
            "open_s": opened - started,
            "fetch_s": fetch_s,
            "metrics_s": metrics_done - opened - fetch_s,
            "total_s": time.perf_counter() - started,
        },
    }


def _read_all(source_a, source_b, pairs, planned: int, progress: Progress | None):
    """Each needed tensor of each model is read once; both models at the same time, in coalesced requests."""
    done, lock = [0], threading.Lock()

    def tick(nbytes: int) -> None:
        with lock:
            done[0] += nbytes
            if progress:
                progress("fetch", done[0], planned)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        future_a = pool.submit(source_a.read_tensors, [a.name for a, _ in pairs], tick)
        future_b = pool.submit(source_b.read_tensors, [b.name for _, b in pairs], tick)
        tensors_a, tensors_b = future_a.result(), future_b.result()
    return tensors_a, tensors_b, time.perf_counter() - started


def _row(sa, sb, ta: torch.Tensor, tb: torch.Tensor, request: CompareRequest, device, accumulate) -> dict:
    row = {
        "group": sa.group, "role": sa.role, "layer_a": sa.layer, "layer_b": sb.layer,
        "tensor_a": sa.name, "tensor_b": sb.name,
        "shape_a": list(ta.shape), "shape_b": list(tb.shape),
        "dtype_a": str(ta.dtype).removeprefix("torch."), "dtype_b": str(tb.dtype).removeprefix("torch."),
        "comparable": True, "truncated": False, "reason": None,
        "sha256_a": tensor_sha256(ta), "sha256_b": tensor_sha256(tb),
    }  # fmt: skip
    row["bytes_equal"] = row["sha256_a"] == row["sha256_b"] and ta.dtype == tb.dtype
    if ta.shape != tb.shape:
        if not request.truncate or ta.dim() != tb.dim():
            return {**row, **_empty_metrics(), "comparable": False, "reason": f"shapes differ: {list(ta.shape)} vs {list(tb.shape)}"}, None
        common = tuple(min(x, y) for x, y in zip(ta.shape, tb.shape))
        ta, tb = ta[tuple(slice(0, c) for c in common)], tb[tuple(slice(0, c) for c in common)]
        row.update(truncated=True, reason=f"compared the common leading block {list(common)}")
    stats = pair_stats(ta, tb, device=device, accumulate=accumulate, seed=request.seed, spearman_max=SPEARMAN_MAX)
    row.update(
        cosine=stats.cosine, pearson=stats.pearson, cos_minus_one=stats.cos_minus_one, spearman=stats.spearman,
        spearman_sampled=stats.spearman_sampled, mad=stats.mad, rel_l2=stats.rel_l2, max_abs_diff=stats.max_abs_diff, equal_fraction=stats.equal_fraction,
        nonfinite_a=stats.nonfinite_a, nonfinite_b=stats.nonfinite_b,
        mean_a=stats.mean_a, std_a=stats.std_a, mean_b=stats.mean_b, std_b=stats.std_b,
    )  # fmt: skip
    row["rows_equal"] = shared_rows(row_hashes(ta), row_hashes(tb)) if ta.dim() == 2 else None
    return row, (ta, tb)


def _add_shuffle_p(compared: list[tuple[dict, tuple | None]], request: CompareRequest, device) -> None:
    """Each comparable pair's own shuffle null (one seeded permutation set per length serves all pairs)."""
    eligible = []
    for row, tensors in compared:
        permutations = min(request.permutations, int(SHUFFLE_WORK // max(int(math.prod(row["shape_a"])), 1)))
        row.update(p_shuffle=None, log10_p_shuffle=None, permutations=0)
        if tensors and row["pearson"] is not None and request.permutations and permutations >= MIN_ROW_PERMUTATIONS:
            eligible.append((row, tensors, permutations))
    by_budget = defaultdict(list)
    for row, tensors, permutations in eligible:
        by_budget[permutations].append((row, tensors))
    for permutations, members in by_budget.items():
        nulls = shuffle_nulls([t for _, t in members], "pearson", permutations, request.seed, device)
        for (row, _), null in zip(members, nulls):
            row.update(p_shuffle=null.p_value, log10_p_shuffle=null.log10_p_value, permutations=permutations)


def _empty_metrics() -> dict:
    keys = ("cosine", "pearson", "cos_minus_one", "spearman", "mad", "rel_l2", "max_abs_diff", "equal_fraction",
            "nonfinite_a", "nonfinite_b", "mean_a", "std_a", "mean_b", "std_b", "rows_equal", "p_shuffle",
            "log10_p_shuffle")  # fmt: skip
    return {**dict.fromkeys(keys), "permutations": 0}


def _by_role(tensors: dict, selections) -> dict[str, list[tuple[int, torch.Tensor]]]:
    layers = defaultdict(dict)
    for sel in selections:
        if sel.layer is not None and sel.role is not None and sel.expert is None:
            layers[sel.role][sel.layer] = tensors[sel.name]
    return {role: sorted(found.items()) for role, found in layers.items()}


def _within_model(tensors_a, tensors_b, pairs, device, seed) -> dict:
    """Same metric between different layers of one model; layer 0 is left out (its input norm is special: the 0.38
    'baseline' of the original accusation was layer 0 against deep layers)."""
    result = {"excluded_note": "layer 0 excluded: its input norm differs from every other layer's in most models"}
    for side, tensors, selections in (("a", tensors_a, [a for a, _ in pairs]), ("b", tensors_b, [b for _, b in pairs])):
        values_p, values_c = [], []
        for role, layered in _by_role(tensors, selections).items():
            layered = [(layer, t) for layer, t in layered if layer > 0]
            if len(layered) < 2 or len({t.shape for _, t in layered}) != 1:
                continue
            stacked = torch.stack([t.flatten() for _, t in layered])
            upper = torch.triu_indices(len(layered), len(layered), offset=1)
            for centered, values in ((True, values_p), (False, values_c)):
                matrix = cosine_matrix(stacked, stacked, centered=centered, device=device)
                picked = matrix[upper[0], upper[1]]
                if picked.numel() > BASELINE_PAIRS:  # a seeded subset keeps big models' baselines cheap
                    generator = torch.Generator().manual_seed(seed)
                    picked = picked[torch.randperm(picked.numel(), generator=generator)[:BASELINE_PAIRS]]
                values += [None if math.isnan(v) else v for v in picked.tolist()]
        pearson, cosine = summarize(values_p), summarize(values_c)
        result[side] = {
            "metric": "pearson", "mean": pearson["mean"], "std": pearson["std"], "n": pearson["n"],
            "cosine_mean": cosine["mean"], "cosine_std": cosine["std"],
            "pairs_note": "different layers of the same role, layers >= 1",
        }  # fmt: skip
    return result


def _vector_pairs(tensors_a, tensors_b, pairs):
    """Comparable 1-D pairs grouped by length: the norm gains, whose symmetry is one residual permutation."""
    by_length = defaultdict(list)
    for sa, sb in pairs:
        ta, tb = tensors_a[sa.name], tensors_b[sb.name]
        if ta.dim() == 1 and ta.shape == tb.shape and ta.numel() > 1:
            by_length[ta.numel()].append((ta, tb))
    return by_length


def _aggregate_shuffle(tensors_a, tensors_b, pairs, request, device) -> dict | None:
    """One permutation of the residual dimensions applied to every layer of B at once -> one aggregate p-value."""
    by_length = _vector_pairs(tensors_a, tensors_b, pairs)
    if not by_length or not request.permutations:
        return None
    length, vectors = max(by_length.items(), key=lambda item: len(item[1]))
    null = aggregate_shuffle_null(vectors, statistic="pearson", permutations=request.permutations, seed=request.seed, joint=True)
    return {**null.as_dict(), "vectors": len(vectors), "length": length, "joint": True}


def _reference_null(tensors_a, tensors_b, pairs, seed) -> dict | None:
    """What raw and centered cosine look like for unrelated vectors with the same means and spreads."""
    norm_pairs = [
        (tensors_a[sa.name], tensors_b[sb.name]) for sa, sb in pairs
        if sa.role in NORM_ROLES and tensors_a[sa.name].shape == tensors_b[sb.name].shape
    ]  # fmt: skip
    if not norm_pairs:
        return None
    step = max(1, len(norm_pairs) // 8)
    chosen = norm_pairs[::step][:8]
    per_pair = max(125, 1000 // len(chosen))  # about 1000 draws in all, spread over up to 8 layers
    draws = [reference_null_norm_gains(a, b, draws=per_pair, seed=seed + i) for i, (a, b) in enumerate(chosen)]

    def mean(metric: str, key: str) -> float | None:
        values = [getattr(d[metric], key) for d in draws if getattr(d[metric], key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "draws": per_pair * len(draws), "pairs": len(draws),
        "cosine_mean": mean("cosine", "null_mean"), "cosine_std": mean("cosine", "null_std"),
        "pearson_mean": mean("pearson", "null_mean"), "pearson_std": mean("pearson", "null_std"),
    }  # fmt: skip


def _controls(control, request, source_a, source_b, device, accumulate) -> list[dict]:
    out = []
    for side, other in (("a", source_a), ("b", source_b)):
        try:
            pairs, _, _, _ = pair_models(control, other, request.groups, "same")
        except SelectionError as err:
            out.append({"model": request.control, "vs": side, "cosine_mean": None, "pearson_mean": None, "n": 0,
                        "note": err.one_line()})  # fmt: skip
            continue
        tc = control.read_tensors(a.name for a, _ in pairs)
        to = other.read_tensors(b.name for _, b in pairs)
        cos, pear = [], []
        for sc, so in pairs:
            if tc[sc.name].shape == to[so.name].shape:
                stats = pair_stats(tc[sc.name], to[so.name], device=device, accumulate=accumulate, spearman_max=0)
                cos.append(stats.cosine)
                pear.append(stats.pearson)
        out.append({"model": request.control, "vs": side, "cosine_mean": summarize(cos)["mean"],
                    "pearson_mean": summarize(pear)["mean"], "n": len(pear)})  # fmt: skip
    return out


def _layer_matrices(tensors_a, tensors_b, pairs, device) -> dict:
    """L_A x L_B centered-cosine matrix per role, with how strongly the diagonal stands out."""
    out = {}
    by_a = _by_role(tensors_a, [a for a, _ in pairs])
    by_b = _by_role(tensors_b, [b for _, b in pairs])
    for role in sorted(set(by_a) & set(by_b)):
        la, lb = by_a[role], by_b[role]
        if len({t.shape for _, t in la} | {t.shape for _, t in lb}) != 1:
            continue
        matrix = cosine_matrix(
            torch.stack([t.flatten() for _, t in la]), torch.stack([t.flatten() for _, t in lb]), centered=True, device=device
        )
        dominance = diagonal_dominance(matrix)
        out[role] = {
            "metric": "pearson",
            "layers_a": [layer for layer, _ in la],
            "layers_b": [layer for layer, _ in lb],
            "values": [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()],
            **dominance,
        }
    return out


def _summary(rows: list[dict], baselines: dict) -> dict:
    groups = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        comparable = [r for r in members if r["comparable"]]
        has_vectors = any(len(r["shape_a"]) == 1 for r in comparable)
        shuffle = (baselines.get("shuffle") or {}) if has_vectors else {}
        groups[group] = {
            "n": len(members),
            "comparable": len(comparable),
            "cosine_mean": summarize([r["cosine"] for r in comparable])["mean"],
            "pearson_mean": summarize([r["pearson"] for r in comparable])["mean"],
            "pearson_std": summarize([r["pearson"] for r in comparable])["std"],
            "mad_mean": summarize([r["mad"] for r in comparable])["mean"],
            "identical": sum(1 for r in members if r["bytes_equal"]),
            "p_aggregate": shuffle.get("p_value"),
            "log10_p_aggregate": shuffle.get("log10_p_value"),
        }
    return {"groups": groups}

