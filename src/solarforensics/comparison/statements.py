"""Plain-English sentences that say what raw cosine, centered cosine and the nulls each say, side by side."""

from solarforensics.metrics.stats import format_p


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def compare_statements(a: str, b: str, rows: list[dict], baselines: dict, summary: dict, control: str | None) -> list[str]:
    out = []
    reference = baselines.get("reference_null") or {}
    shuffle = baselines.get("shuffle") or {}
    within = baselines.get("within_model") or {}
    for group, g in summary["groups"].items():
        if not g["comparable"]:
            out.append(f"{group}: no comparable tensor pair ({g['n']} pairs with different shapes).")
            continue
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
        if g["identical"]:
            out.append(f"{group}: {g['identical']} of {g['n']} tensors are byte-identical (SHA-256).")
    for side, name in (("a", a), ("b", b)):
        base = within.get(side) or {}
        if base.get("n"):
            out.append(
                f"Within-model baseline for {name} (different layers, layer 0 excluded): Pearson {_f(base['mean'])}"
                f" ± {_f(base['std'])}, raw cosine {_f(base.get('cosine_mean'))} over {base['n']} layer pairs."
            )
    for entry in baselines.get("controls") or []:
        vs = a if entry["vs"] == "a" else b
        out.append(
            f"Control {control} vs {vs}: raw cosine {_f(entry['cosine_mean'])}, Pearson {_f(entry['pearson_mean'])}"
            f" over {entry['n']} pairs."
        )
    out.append(_conclusion(summary, shuffle))
    return out


def _conclusion(summary: dict, shuffle: dict) -> str:
    p = shuffle.get("p_value")
    identical = sum(g["identical"] for g in summary["groups"].values())
    if identical:
        return "Conclusion: byte-identical tensors are shared — a copy, not a coincidence."
    if p is None:
        return "Conclusion: no shuffle null could be computed for these tensors; read the per-layer table with care."
    # Significant at 0.001, or at the smallest p the permutations can give when they are fewer than 999
    floor = 1.0 / (1 + (shuffle.get("permutations") or 999))
    if p <= max(0.001, floor * 1.000001):
        return (
            "Conclusion: centered similarity is far above the shuffle null — consistent with a shared initialisation "
            "(norm gains are weak evidence on their own; run `provenance` for disguise-robust tests)."
        )
    return (
        "Conclusion: centered similarity is indistinguishable from the shuffle null — no evidence of derivation from "
        "these tensors (a derived model with a permuted residual basis would look the same; run `provenance`)."
    )
