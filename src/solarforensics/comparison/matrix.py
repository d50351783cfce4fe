"""`matrix`: every pair of N models on the same tensor groups; each model's tensors are read once (N reads, not N^2)."""

import time
from itertools import combinations

from solarforensics.comparison.pairing import one_sided_warnings, select_many
from solarforensics.errors import SelectionError
from solarforensics.families.selection import pair_selections
from solarforensics.metrics.device import default_accumulation, describe_device, dtype_name, resolve_device
from solarforensics.metrics.hashing import tensor_sha256
from solarforensics.metrics.similarity import pair_stats
from solarforensics.metrics.stats import summarize
from solarforensics.models import OpenOptions, open_models, same_source_warning


def parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if len(models) < 2:
        raise SelectionError("matrix needs at least two models", "write --models a,b[,c...]")
    if len(set(models)) != len(models):
        raise SelectionError("a model is listed twice in --models")
    return models


def matrix_models(models: list[str], groups: str, options: OpenOptions | None = None, device: str = "auto", progress=None) -> dict:
    """The fields of a `matrix` results document."""
    started = time.perf_counter()
    dev = resolve_device(device)
    accumulate = default_accumulation(dev)
    sources = open_models(models, options)
    chosen = select_many(sources, groups)
    warnings = [w for i, j in combinations(range(len(sources)), 2)
                if (w := same_source_warning(sources[i], sources[j], models[i], models[j]))]
    warnings += [f"{s.name}: {sel.family.warning}" for s, sel in zip(sources, chosen) if sel.family.warning]
    warnings += one_sided_warnings(models, chosen, groups)
    selections = [sel.selected for sel in chosen]
    tensors, hashes = [], []
    for index, (source, selected) in enumerate(zip(sources, selections)):
        read = source.read_tensors(sel.name for sel in selected)
        tensors.append(read)
        hashes.append({name: tensor_sha256(t) for name, t in read.items()})
        if progress:
            progress("read", index + 1, len(sources))
    fetched = time.perf_counter()
    group_names = list(dict.fromkeys(g.strip() for g in groups.split(",") if g.strip()))
    n = len(models)
    empty = lambda: [[None] * n for _ in range(n)]  # noqa: E731
    matrices = {g: {"pearson": empty(), "cosine": empty(), "identical_fraction": empty(), "n_tensors": empty()} for g in group_names}
    for i, j in combinations(range(n), 2):
        pairs, _, _ = pair_selections(selections[i], selections[j], "same")
        for group in group_names:
            members = [(a, b) for a, b in pairs if a.group == group]
            pear, cos, same = [], [], 0
            for a, b in members:
                ta, tb = tensors[i][a.name], tensors[j][b.name]
                same += hashes[i][a.name] == hashes[j][b.name] and ta.dtype == tb.dtype
                if ta.shape == tb.shape:
                    stats = pair_stats(ta, tb, device=dev, accumulate=accumulate, spearman_max=0)
                    pear.append(stats.pearson)
                    cos.append(stats.cosine)
            cells = {
                "pearson": summarize(pear)["mean"],
                "cosine": summarize(cos)["mean"],
                "identical_fraction": same / len(members) if members else None,
                "n_tensors": len(pear),
            }
            for metric, value in cells.items():
                matrices[group][metric][i][j] = matrices[group][metric][j][i] = value
    return {
        "models": models,
        "groups": group_names,
        "matrices": matrices,
        "sources": [s.provenance.as_dict() for s in sources],
        "device": describe_device(dev),
        "accumulation_dtype": dtype_name(accumulate),
        "summary": {"statements": _statements(models, matrices)},
        "warnings": warnings,
        "timings": {"fetch_s": fetched - started, "total_s": time.perf_counter() - started},
    }


def _statements(models: list[str], matrices: dict) -> list[str]:
    out = []
    for group, cells in matrices.items():
        for i, j in combinations(range(len(models)), 2):
            p, c = cells["pearson"][i][j], cells["cosine"][i][j]
            if p is None:
                out.append(f"{group}: {models[i]} vs {models[j]}: no comparable tensors.")
                continue
            out.append(f"{group}: {models[i]} vs {models[j]}: raw cosine {c:.3f}, centered {p:.3f} over {cells['n_tensors'][i][j]} tensors.")
    out.append("Each diagonal cell is a model with itself and is left empty; raw cosine is high for any pair of norm gains.")
    return out
