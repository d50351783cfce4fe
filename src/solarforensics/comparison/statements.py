"""Plain-English sentences that say what raw cosine, centered cosine and the nulls each say, side by side."""

from solarforensics.metrics.stats import format_p


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def compare_statements(a: str, b: str, rows: list[dict], baselines: dict, summary: dict, control: str | None) -> list[str]:
    """What raw cosine, centered cosine and each group's own nulls say, group by group, then a conclusion."""
    out = []
    by_group = baselines.get("by_group") or {}
    for group, g in summary["groups"].items():
        own = by_group.get(group, baselines)  # documents before per-group baselines had one set
        out += _group_statements(group, g, own, a, b)
        for entry in own.get("controls") or []:
            vs = a if entry["vs"] == "a" else b
            out.append(
                f"{group}: control {control} vs {vs}: raw cosine {_f(entry['cosine_mean'])}, Pearson "
                f"{_f(entry['pearson_mean'])} over {entry['n']} pairs."
            )
    out.append(_conclusion(summary, by_group or {group: baselines for group in summary["groups"]}))
    return out


def _group_statements(group: str, g: dict, own: dict, a: str, b: str) -> list[str]:
    out = []
    reference = own.get("reference_null") or {}
    shuffle = own.get("shuffle") or {}
    within = own.get("within_model") or {}
    if not g["n"]:
        out.append(f"{group}: nothing to compare: {g.get('only_in_a', 0)} tensors only in A ({a}), "
                   f"{g.get('only_in_b', 0)} only in B ({b}); they are listed, not dropped.")
        return out
    if not g["comparable"]:
        out.append(f"{group}: no comparable tensor pair ({g['n']} pairs with different shapes or no finite values).")
        return out
    text = f"{group}: raw cosine {_f(g['cosine_mean'])} on average over {g['comparable']} tensor pairs"
    if reference.get("cosine_mean") is not None:
        text += (
            f" — but unrelated vectors with the same means and spreads give {_f(reference['cosine_mean'])}"
            " (reference null), so raw cosine alone says nothing about shared origin"
        )
    out.append(text + ".")
    text = f"{group}: centered cosine (Pearson) {_f(g['pearson_mean'])}"
    if g.get("p_aggregate") is not None:
        text += (
            f"; a joint shuffle of the dimensions gives {_f(shuffle.get('null_mean'))} ± {_f(shuffle.get('null_std'))},"
            f" {format_p(g['p_aggregate'], g.get('log10_p_aggregate'))}"
        )
    out.append(text + ".")
    if g.get("nonfinite_pairs"):
        out.append(f"{group}: {g['nonfinite_pairs']} tensor pair(s) hold NaN/Inf ({g['nonfinite_a']:,} values in A, "
                   f"{g['nonfinite_b']:,} in B): their numbers cover only positions finite in both, so a cosine of 1 "
                   "there does not make the tensors equal.")
    if g["identical"]:
        out.append(f"{group}: {g['identical']} of {g['n']} tensors are byte-identical (SHA-256).")
    for side, name in (("a", a), ("b", b)):
        base = within.get(side) or {}
        if base.get("n"):
            out.append(
                f"{group}: within-model baseline for {name} (different layers, layer 0 excluded): Pearson "
                f"{_f(base['mean'])} ± {_f(base['std'])}, raw cosine {_f(base.get('cosine_mean'))} over {base['n']} "
                "layer pairs."
            )
    out += [note + "." for note in g.get("notes") or []]
    return out


def _conclusion(summary: dict, by_group: dict) -> str:
    identical = sum(g["identical"] for g in summary["groups"].values())
    if identical:
        return "Conclusion: byte-identical tensors are shared — a copy, not a coincidence."
    tested = {group: (by_group.get(group) or {}).get("shuffle") for group in summary["groups"]}
    tested = {group: shuffle for group, shuffle in tested.items() if shuffle and shuffle.get("p_value") is not None}
    if not tested:
        return "Conclusion: no shuffle null could be computed for these tensors; read the per-layer table with care."
    significant = [group for group, shuffle in tested.items() if _significant(shuffle)]
    named = f" ({', '.join(significant)})" if len(summary["groups"]) > 1 and significant else ""
    if significant:
        return (
            f"Conclusion: centered similarity is far above the shuffle null{named} — consistent with a shared "
            "initialisation (norm gains are weak evidence on their own; run `provenance` for disguise-robust tests)."
        )
    return (
        "Conclusion: centered similarity is indistinguishable from the shuffle null — no evidence of derivation from "
        "these tensors (a derived model with a permuted residual basis would look the same; run `provenance`)."
    )


def _significant(shuffle: dict) -> bool:
    # Significant at 0.001, or at the smallest p the permutations can give when they are fewer than 999
    floor = 1.0 / (1 + (shuffle.get("permutations") or 999))
    return shuffle["p_value"] <= max(0.001, floor * 1.000001)
