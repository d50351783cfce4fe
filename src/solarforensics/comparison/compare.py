"""`compare`: metrics for every selected tensor pair of two models, beside the baselines and nulls that give them
meaning. Raw cosine is never shown alone: centered cosine, a shuffle null and a within-model baseline come with it."""

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from solarforensics.comparison.baselines import by_role, controls, group_baselines
from solarforensics.comparison.pairing import pair_models
from solarforensics.comparison.statements import compare_statements
from solarforensics.errors import BudgetError, SelectionError
from solarforensics.metrics.device import default_accumulation, describe_device, dtype_name, resolve_device
from solarforensics.metrics.hashing import row_hashes, shared_rows, tensor_sha256
from solarforensics.metrics.matrices import cosine_matrix, diagonal_dominance
from solarforensics.metrics.nulls import shuffle_nulls
from solarforensics.metrics.similarity import pair_stats
from solarforensics.metrics.stats import summarize
from solarforensics.models import OpenOptions, check_memory, open_model, open_models, same_source_warning
from solarforensics.sources.interrupt import worker_pool

SHUFFLE_WORK = 2e8  # element-operations allowed per tensor for its own shuffle null: vectors get all permutations
MIN_ROW_PERMUTATIONS = 99
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
    same = same_source_warning(source_a, source_b, request.a, request.b)
    warnings = [same, *warnings] if same else warnings
    planned = source_a.planned_bytes(a.name for a, _ in pairs) + source_b.planned_bytes(b.name for _, b in pairs)
    if request.budget_bytes is not None and planned > request.budget_bytes:
        raise BudgetError(f"the selection needs {planned:,} bytes of tensors, over the budget of {request.budget_bytes:,}")
    check_memory(planned, "compare holds every selected tensor at once: narrow --tensors (fewer groups, or a few "
                          "layers by name pattern, e.g. 'model.layers.[0-3].*')")
    opened = time.perf_counter()
    tensors_a, tensors_b, fetch_s = _read_all(source_a, source_b, pairs, planned, progress)
    ranks: dict | None = {} if request.layers == "all-pairs" else None  # each small vector ranked once, not per pair
    compared = [_row(sa, sb, tensors_a[sa.name], tensors_b[sb.name], request, device, accumulate, ranks)
                for sa, sb in pairs]
    rows = [row for row, _ in compared]
    _add_shuffle_p(compared, request, device)
    if rows and not any(r["comparable"] for r in rows) and not any(r["nonfinite_only"] for r in rows):
        raise SelectionError(
            f"no selected pair has equal shapes ({rows[0]['tensor_a']} {rows[0]['shape_a']} vs {rows[0]['shape_b']})",
            "use --truncate to compare the common leading block, or select other groups",
        )
    metrics_done = time.perf_counter()
    # With --layers all-pairs the headline numbers still pair equal layers; the rest goes to the L x L matrices.
    same_layer = [(sa, sb) for sa, sb in pairs if sa.layer == sb.layer]
    groups = list(dict.fromkeys(g.strip() for g in request.groups.split(",") if g.strip()))
    by_group = {group: group_baselines(group, tensors_a, tensors_b, [p for p in same_layer if p[0].group == group],
                                       request, device) for group in groups}
    sources = [source_a.provenance, source_b.provenance]
    if request.control:
        control = open_model(request.control, options)
        sources.append(control.provenance)
        for group, entries in controls(control, request, source_a, source_b, device, accumulate).items():
            by_group[group]["controls"] = entries
    # The top-level backgrounds are the first compared group's (what a one-group run always had); every group's
    # own are in by_group, and nothing is ever shown beside a group it was not computed from.
    first = next((g for g in groups if any(r["group"] == g for r in rows)), groups[0])
    baselines = {key: value for key, value in by_group[first].items() if key != "notes"} | {"by_group": by_group}
    layer_matrices = _layer_matrices(tensors_a, tensors_b, pairs, device) if request.layers == "all-pairs" else {}
    summary = _summary([r for r in rows if r["layer_a"] == r["layer_b"]], by_group, groups, only_a, only_b)
    summary["statements"] = compare_statements(request.a, request.b, rows, baselines, summary, request.control)
    warnings += _nonfinite_warnings(summary)
    if same:
        summary["statements"].insert(0, same)
    return {
        "models": {"a": request.a, "b": request.b, "control": request.control},
        "groups": groups,
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
    with worker_pool(2) as pool:
        future_a = pool.submit(source_a.read_tensors, [a.name for a, _ in pairs], tick)
        future_b = pool.submit(source_b.read_tensors, [b.name for _, b in pairs], tick)
        tensors_a, tensors_b = future_a.result(), future_b.result()
    return tensors_a, tensors_b, time.perf_counter() - started


def _row(sa, sb, ta: torch.Tensor, tb: torch.Tensor, request: CompareRequest, device, accumulate,
         ranks: dict | None = None) -> dict:
    row = {
        "group": sa.group, "role": sa.role, "layer_a": sa.layer, "layer_b": sb.layer,
        "tensor_a": sa.name, "tensor_b": sb.name,
        "shape_a": list(ta.shape), "shape_b": list(tb.shape),
        "dtype_a": str(ta.dtype).removeprefix("torch."), "dtype_b": str(tb.dtype).removeprefix("torch."),
        "comparable": True, "truncated": False, "reason": None, "finite_only": False, "nonfinite_only": False,
        "sha256_a": tensor_sha256(ta), "sha256_b": tensor_sha256(tb),
    }  # fmt: skip
    row["bytes_equal"] = row["sha256_a"] == row["sha256_b"] and ta.dtype == tb.dtype
    if ta.shape != tb.shape:
        if not request.truncate or ta.dim() != tb.dim():
            return {**row, **_empty_metrics(), "comparable": False, "reason": f"shapes differ: {list(ta.shape)} vs {list(tb.shape)}"}, None
        common = tuple(min(x, y) for x, y in zip(ta.shape, tb.shape))
        ta, tb = ta[tuple(slice(0, c) for c in common)], tb[tuple(slice(0, c) for c in common)]
        row.update(truncated=True, reason=f"compared the common leading block {list(common)}")
    keys = ("a:" + sa.name, "b:" + sb.name) if ranks is not None and not row["truncated"] else (None, None)
    stats = pair_stats(ta, tb, device=device, accumulate=accumulate, seed=request.seed, spearman_max=SPEARMAN_MAX,
                       rank_cache=ranks, rank_keys=keys)
    row.update(nonfinite_a=stats.nonfinite_a, nonfinite_b=stats.nonfinite_b, finite_pairs=stats.n_used)
    if stats.n and not stats.n_used:  # nothing left to compare: never "comparable", never "equal"
        return {**row, **_empty_metrics(), "nonfinite_a": stats.nonfinite_a, "nonfinite_b": stats.nonfinite_b,
                "finite_pairs": 0, "nonfinite_only": True, "comparable": False,
                "reason": f"no position is finite in both tensors (NaN/Inf: {stats.nonfinite_a:,} in A, "
                          f"{stats.nonfinite_b:,} in B, of {stats.n:,})"}, None
    row.update(
        cosine=stats.cosine, pearson=stats.pearson, cos_minus_one=stats.cos_minus_one, spearman=stats.spearman,
        spearman_sampled=stats.spearman_sampled, mad=stats.mad, rel_l2=stats.rel_l2, max_abs_diff=stats.max_abs_diff, equal_fraction=stats.equal_fraction,
        mean_a=stats.mean_a, std_a=stats.std_a, mean_b=stats.mean_b, std_b=stats.std_b,
    )  # fmt: skip
    # Metrics of a pair with NaN/Inf cover only the positions finite in both; this flag keeps them from reading
    # as "equal" (cosine 1, max |a-b| 0) when the tensors differ exactly where one of them is not finite.
    row["finite_only"] = stats.n_used < stats.n
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


def _layer_matrices(tensors_a, tensors_b, pairs, device) -> dict:
    """L_A x L_B centered-cosine matrix per role, with how strongly the diagonal stands out."""
    out = {}
    by_a = by_role(tensors_a, [a for a, _ in pairs])
    by_b = by_role(tensors_b, [b for _, b in pairs])
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


def _summary(rows: list[dict], by_group: dict, groups: list[str], only_a, only_b) -> dict:
    """Per group: its pairs, means, identical tensors, NaN/Inf counts, tensors on one side only, and its own null's p.
    Every requested group is listed, also one that selected tensors in one model only."""
    out = {}
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        comparable = [r for r in members if r["comparable"]]
        shuffle = by_group[group].get("shuffle") or {}
        out[group] = {
            "n": len(members),
            "comparable": len(comparable),
            "cosine_mean": summarize([r["cosine"] for r in comparable])["mean"],
            "pearson_mean": summarize([r["pearson"] for r in comparable])["mean"],
            "pearson_std": summarize([r["pearson"] for r in comparable])["std"],
            "mad_mean": summarize([r["mad"] for r in comparable])["mean"],
            "identical": sum(1 for r in members if r["bytes_equal"]),
            "p_aggregate": shuffle.get("p_value"),
            "log10_p_aggregate": shuffle.get("log10_p_value"),
            "nonfinite_a": sum(r.get("nonfinite_a") or 0 for r in members),
            "nonfinite_b": sum(r.get("nonfinite_b") or 0 for r in members),
            "nonfinite_pairs": sum(1 for r in members if r.get("nonfinite_a") or r.get("nonfinite_b")),
            "only_in_a": sum(1 for s in only_a if s.group == group),
            "only_in_b": sum(1 for s in only_b if s.group == group),
            "notes": by_group[group].get("notes", []),
        }
    return {"groups": out}


def _nonfinite_warnings(summary: dict) -> list[str]:
    return [f"{group}: {g['nonfinite_pairs']} tensor pair(s) hold NaN/Inf ({g['nonfinite_a']:,} values in A, "
            f"{g['nonfinite_b']:,} in B); their metrics cover only positions finite in both"
            for group, g in summary["groups"].items() if g["nonfinite_pairs"]]
