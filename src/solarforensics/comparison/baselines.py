"""The backgrounds a compare's scores are read against, computed per group: a within-model baseline, a joint shuffle
null, a reference null (norm gains only) and an optional control model. A group's numbers come from its own tensors
only; a group for which a null means nothing gets a note saying so instead of another group's figure."""

import math
from collections import defaultdict

import torch

from solarforensics.comparison.pairing import pair_models
from solarforensics.errors import SelectionError
from solarforensics.metrics.matrices import cosine_matrix
from solarforensics.metrics.nulls import aggregate_shuffle_null, reference_null_norm_gains
from solarforensics.metrics.similarity import pair_stats
from solarforensics.metrics.stats import summarize

NORM_ROLES = {"attn_norm", "mlp_norm", "final_norm", "q_norm", "k_norm"}
BASELINE_PAIRS = 200  # within-model layer pairs per role, at most
WITHIN_NOTE = "layer 0 excluded: its input norm differs from every other layer's in most models"


def group_baselines(group: str, tensors_a, tensors_b, pairs, request, device) -> dict:
    """Within-model baseline, joint shuffle null and reference null of one group, from that group's pairs only,
    with a `notes` list naming each background that does not apply to the group and why."""
    within = within_model(tensors_a, tensors_b, pairs, device, request.seed)
    shuffle = aggregate_shuffle(tensors_a, tensors_b, pairs, request)
    reference = reference_null(tensors_a, tensors_b, pairs, request.seed)
    # A group with nothing paired needs no notes: the summary says what is on each side.
    notes = _missing(group, within, shuffle, reference, request.permutations) if pairs else []
    return {"within_model": within, "shuffle": shuffle, "reference_null": reference, "controls": [], "notes": notes}


def _missing(group: str, within: dict, shuffle, reference, permutations: int) -> list[str]:
    """A sentence for each background that does not exist for this group, and why."""
    notes = []
    if shuffle is None:
        notes.append(f"{group}: no joint shuffle null: " + (
            "--permutations 0" if not permutations else
            "it permutes the dimensions of 1-D vectors (norm gains), and this group has no comparable pair of them; "
            "read each pair's own shuffle p in the table"))
    if reference is None:
        notes.append(f"{group}: no reference null: it models norm gains (all-positive vectors), and this group has "
                     "no comparable norm gain")
    if not any((within.get(side) or {}).get("n") for side in ("a", "b")):
        notes.append(f"{group}: no within-model baseline: it needs two layers >= 1 of one shape in a model")
    return notes


def by_role(tensors: dict, selections) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """role -> [(layer, tensor)] in layer order, for layered, non-expert selections."""
    layers = defaultdict(dict)
    for sel in selections:
        if sel.layer is not None and sel.role is not None and sel.expert is None:
            layers[sel.role][sel.layer] = tensors[sel.name]
    return {role: sorted(found.items()) for role, found in layers.items()}


def within_model(tensors_a, tensors_b, pairs, device, seed) -> dict:
    """Same metric between different layers of one model; layer 0 is left out (its input norm is special: the 0.38
    'baseline' of the original accusation was layer 0 against deep layers)."""
    result = {"excluded_note": WITHIN_NOTE}
    for side, tensors, selections in (("a", tensors_a, [a for a, _ in pairs]), ("b", tensors_b, [b for _, b in pairs])):
        values_p, values_c = [], []
        for role, layered in by_role(tensors, selections).items():
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


def aggregate_shuffle(tensors_a, tensors_b, pairs, request) -> dict | None:
    """One permutation of the residual dimensions applied to every layer of B at once -> one aggregate p-value."""
    by_length = _vector_pairs(tensors_a, tensors_b, pairs)
    if not by_length or not request.permutations:
        return None
    length, vectors = max(by_length.items(), key=lambda item: len(item[1]))
    null = aggregate_shuffle_null(vectors, statistic="pearson", permutations=request.permutations, seed=request.seed, joint=True)
    return {**null.as_dict(), "vectors": len(vectors), "length": length, "joint": True}


def reference_null(tensors_a, tensors_b, pairs, seed) -> dict | None:
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


def controls(control, request, source_a, source_b, device, accumulate) -> dict[str, list[dict]]:
    """group -> the control model against A and against B, over that group's tensors only."""
    out: dict[str, list[dict]] = defaultdict(list)
    groups = list(dict.fromkeys(g.strip() for g in request.groups.split(",") if g.strip()))
    for side, other in (("a", source_a), ("b", source_b)):
        try:
            pairs, _, _, _ = pair_models(control, other, request.groups, "same")
        except SelectionError as err:
            for group in groups:
                out[group].append({"model": request.control, "vs": side, "group": group, "cosine_mean": None,
                                   "pearson_mean": None, "n": 0, "note": err.one_line()})
            continue
        tc = control.read_tensors(a.name for a, _ in pairs)
        to = other.read_tensors(b.name for _, b in pairs)
        for group in groups:
            cos, pear = [], []
            for sc, so in pairs:
                if sc.group == group and tc[sc.name].shape == to[so.name].shape:
                    stats = pair_stats(tc[sc.name], to[so.name], device=device, accumulate=accumulate, spearman_max=0)
                    cos.append(stats.cosine)
                    pear.append(stats.pearson)
            entry = {"model": request.control, "vs": side, "group": group, "cosine_mean": summarize(cos)["mean"],
                     "pearson_mean": summarize(pear)["mean"], "n": len(pear)}
            if not pear:
                entry["note"] = f"no comparable {group} tensor pair between the control and {side.upper()}"
            out[group].append(entry)
    return dict(out)
