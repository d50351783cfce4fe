"""What a `compare` document shows: the raw-vs-centered-vs-null lesson first, then the evidence per layer."""

from statistics import fmean
from typing import Any

from solarforensics.render import plots
from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Figure, Table
from solarforensics.render.formatting import MISSING, fmt_int, fmt_num, fmt_p

LESSON_NOTE = (
    "Raw cosine of all-positive vectors (norm gains) is near 1 for any pair: it measures the shared mean direction. "
    "Centered cosine (Pearson) removes it; read it against the nulls."
)
LIST_LIMIT = 20


def compare_blocks(doc: dict) -> list[Block]:
    """All blocks of a compare report, most important first."""
    names = model_names(doc)
    groups = group_names(doc)
    blocks: list[Block] = [lesson_banner(doc, groups, names)]
    statements = (doc.get("summary") or {}).get("statements") or []
    if statements:
        blocks.append(Bullets("What the numbers say", [str(s) for s in statements]))
    blocks.append(nulls_table(doc, groups, names))
    blocks += baseline_facts(doc, names)
    blocks.append(group_summary_table(doc, groups))
    for group in groups:
        if plots.has_layer_profile(doc, group):
            blocks.append(Figure(
                f"{group}: raw vs centered cosine per layer", f"profile-{group}",
                lambda group=group: plots.layer_profile_png(doc, group),
                "Raw cosine, centered cosine (Pearson) and the shuffle-null band, per layer.",
            ))
    blocks.append(layer_table(doc, groups))
    blocks += layer_matrix_blocks(doc)
    for side in ("a", "b"):
        only = doc.get(f"only_in_{side}") or []
        if only:
            shown = [str(name) for name in only[:LIST_LIMIT]]
            if len(only) > LIST_LIMIT:
                shown.append(f"… and {len(only) - LIST_LIMIT} more")
            blocks.append(Bullets(f"Tensors only in {side.upper()} ({names[side]}): {len(only)}", shown))
    return blocks


def model_names(doc: dict) -> dict[str, str]:
    """Display names of A, B and the control."""
    models = doc.get("models") if isinstance(doc.get("models"), dict) else {}
    return {"a": str(models.get("a") or "A"), "b": str(models.get("b") or "B"), "control": models.get("control")}


def group_names(doc: dict) -> list[str]:
    """Groups in the document's order, plus any that only appear in rows."""
    groups = [str(g) for g in doc.get("groups") or []]
    for row in rows_of(doc):
        if row.get("group") not in groups and row.get("group") is not None:
            groups.append(str(row["group"]))
    return groups


def rows_of(doc: dict) -> list[dict]:
    return [row for row in doc.get("rows") or [] if isinstance(row, dict)]


def group_stats(doc: dict, group: str) -> dict:
    """The summary's numbers for a group, or means over its rows when the summary lacks them (partial runs)."""
    stats = ((doc.get("summary") or {}).get("groups") or {}).get(group)
    if isinstance(stats, dict):
        return stats
    rows = [row for row in rows_of(doc) if row.get("group") == group]
    comparable = [row for row in rows if row.get("comparable")]

    def mean_of(key: str) -> float | None:
        values = [row[key] for row in comparable if isinstance(row.get(key), (int, float))]
        return fmean(values) if values else None

    return {
        "n": len(rows), "comparable": len(comparable), "cosine_mean": mean_of("cosine"),
        "pearson_mean": mean_of("pearson"), "mad_mean": mean_of("mad"),
        "identical": sum(1 for row in rows if row.get("bytes_equal")), "p_aggregate": None, "log10_p_aggregate": None,
    }


def lesson_banner(doc: dict, groups: list[str], names: dict) -> Banner:
    """One line per group: raw cosine — centered — its own shuffle null — within-model baseline, side by side."""
    lines = []
    for group in groups:
        baselines = plots.group_baselines(doc, group)
        shuffle = baselines.get("shuffle") or {}
        within = baselines.get("within_model") or {}
        reference = baselines.get("reference_null") or {}
        stats = group_stats(doc, group)
        if not stats.get("n"):
            lines.append(f"{group}: nothing to compare — {fmt_int(stats.get('only_in_a') or 0)} tensors only in A, "
                         f"{fmt_int(stats.get('only_in_b') or 0)} only in B (listed below)")
            continue
        parts = [f"raw cosine {fmt_num(stats.get('cosine_mean'))}", f"centered {fmt_num(stats.get('pearson_mean'))}"]
        if shuffle:
            parts.append(
                f"shuffle null mean {fmt_num(shuffle.get('null_mean'))} "
                f"(q05 {fmt_num(shuffle.get('null_q05'))}, q95 {fmt_num(shuffle.get('null_q95'))})"
            )
        else:
            parts.append("no joint shuffle null (see the per-pair p)")
        if within.get("a") or within.get("b"):
            a_base, b_base = within.get("a") or {}, within.get("b") or {}
            metric = a_base.get("metric") or b_base.get("metric")
            parts.append(f"within-model baseline{f' ({metric})' if metric else ''} "
                         f"{fmt_num(a_base.get('mean'))} (A) / {fmt_num(b_base.get('mean'))} (B)")
        if reference:
            parts.append(f"reference null raw {fmt_num(reference.get('cosine_mean'))}")
        p_text = fmt_p(stats.get("p_aggregate"), stats.get("log10_p_aggregate"))
        if p_text != MISSING:
            parts.append(f"p {p_text}")
        lines.append(f"{group}: " + " — ".join(parts))
    lines.append(LESSON_NOTE)
    return Banner("lesson", f"Raw vs centered vs nulls — {names['a']} vs {names['b']}", lines)


def nulls_table(doc: dict, groups: list[str], names: dict) -> Table:
    """Every score in the raw and centered columns beside the backgrounds of its own group."""
    rows = []
    note = None
    for group in groups:
        label = f" ({group})" if len(groups) > 1 else ""
        stats = group_stats(doc, group)
        rows.append([f"A vs B ({group})", fmt_num(stats.get("cosine_mean")), fmt_num(stats.get("pearson_mean")),
                     fmt_p(stats.get("p_aggregate"), stats.get("log10_p_aggregate"))])
        baselines = plots.group_baselines(doc, group)
        rows += _background_rows(baselines, label, names)
        within = baselines.get("within_model")
        note = note or ((within.get("excluded_note") or None) if isinstance(within, dict) else None)
    return Table("Scores beside their nulls", ["comparison", "raw cosine", "centered (Pearson)", "p / note"],
                 rows, [False, True, True, False], note)


def _background_rows(baselines: dict, label: str, names: dict) -> list[list[str]]:
    rows = []
    reference = baselines.get("reference_null") or {}
    if reference:
        rows.append([
            f"reference null{label}: independent vectors, same mean/std ({fmt_int(reference.get('draws'))} draws)",
            _mean_std(reference.get("cosine_mean"), reference.get("cosine_std")),
            _mean_std(reference.get("pearson_mean"), reference.get("pearson_std")), "",
        ])
    shuffle = baselines.get("shuffle") or {}
    if shuffle:
        band = (f"{fmt_num(shuffle.get('null_mean'))} "
                f"[{fmt_num(shuffle.get('null_q05'))}, {fmt_num(shuffle.get('null_q95'))}]")
        statistic = str(shuffle.get("statistic") or "statistic")
        raw_cell, centered_cell = (band, "") if _is_raw(statistic) else ("", band)
        rows.append([
            f"shuffle null{label} of {statistic} ({fmt_int(shuffle.get('permutations'))} permutations)", raw_cell,
            centered_cell, f"observed {fmt_num(shuffle.get('observed'))}, "
            f"p {fmt_p(shuffle.get('p_value'), shuffle.get('log10_p_value'))}",
        ])
    within = baselines.get("within_model") or {}
    for side in ("a", "b"):
        base = within.get(side) if isinstance(within, dict) else None
        if isinstance(base, dict):
            metric = str(base.get("metric") or "")
            cell = f"{_mean_std(base.get('mean'), base.get('std'))} (n={fmt_int(base.get('n'))})"
            raw_cell, centered_cell = (cell, "") if _is_raw(metric) else ("", cell)
            rows.append([f"within-model baseline{label} {side.upper()} ({names[side]}), {metric}", raw_cell,
                         centered_cell, str(base.get("pairs_note") or "")])
    for control in baselines.get("controls") or []:
        vs = str(control.get("vs", "?"))
        rows.append([f"control{label} {control.get('model')} vs {vs.upper()} ({names.get(vs, vs)})",
                     fmt_num(control.get("cosine_mean")), fmt_num(control.get("pearson_mean")),
                     f"n={fmt_int(control.get('n'))}"])
    for text in baselines.get("notes") or []:
        group, _, why = str(text).partition(": ")
        rows.append([f"not computed ({group})" if why else "not computed", "", "", why or str(text)])
    return rows


def baseline_facts(doc: dict, names: dict) -> list[Block]:
    """Details of each group's shuffle null (seed, spread) that do not fit the side-by-side table."""
    blocks: list[Block] = []
    groups = group_names(doc)
    for group in groups:
        shuffle = plots.group_baselines(doc, group).get("shuffle") or {}
        if not shuffle:
            continue
        blocks.append(Facts("Shuffle null" + (f" ({group})" if len(groups) > 1 else ""), [
            ("statistic", str(shuffle.get("statistic"))),
            ("observed", fmt_num(shuffle.get("observed"))),
            ("null mean ± std", _mean_std(shuffle.get("null_mean"), shuffle.get("null_std"))),
            ("null q05 … q95", f"{fmt_num(shuffle.get('null_q05'))} … {fmt_num(shuffle.get('null_q95'))}"),
            ("p-value", fmt_p(shuffle.get("p_value"), shuffle.get("log10_p_value"))),
            ("permutations, seed", f"{fmt_int(shuffle.get('permutations'))}, seed {shuffle.get('seed')}"),
        ]))
    return blocks


def group_summary_table(doc: dict, groups: list[str]) -> Table:
    rows = []
    for group in groups:
        stats = group_stats(doc, group)
        rows.append([group, fmt_int(stats.get("n")), fmt_int(stats.get("comparable")), fmt_int(stats.get("identical")),
                     fmt_num(stats.get("cosine_mean")), fmt_num(stats.get("pearson_mean")),
                     fmt_num(stats.get("mad_mean")), fmt_p(stats.get("p_aggregate"), stats.get("log10_p_aggregate"))])
    return Table("Summary per group", ["group", "pairs", "comparable", "identical bytes", "raw cosine (mean)",
                                       "centered (mean)", "MAD (mean)", "p (aggregate)"],
                 rows, [False, True, True, True, True, True, True, True])


def layer_table(doc: dict, groups: list[str]) -> Table:
    """One line per tensor pair; pairs that could not be compared say why."""
    show_group = len(groups) > 1
    rows = []
    for row in rows_of(doc):
        cells = [layer_label(row)]
        if show_group:
            cells.append(str(row.get("group")))
        cells += [
            plots.role_name(str(row.get("tensor_a", ""))),
            fmt_num(row.get("cosine")), fmt_num(row.get("pearson")), fmt_num(row.get("mad")),
            fmt_num(row.get("rel_l2")), equal_bytes_label(row), fmt_p(row.get("p_shuffle"), row.get("log10_p_shuffle")),
            row_note(row),
        ]
        rows.append(cells)
    columns = ["layer"] + (["group"] if show_group else []) + [
        "tensor", "raw cosine", "centered (Pearson)", "MAD", "rel L2", "equal bytes", "p (shuffle)", "note"]
    numeric = [True] + ([False] if show_group else []) + [False, True, True, True, True, False, True, False]
    return Table("Per tensor pair", columns, rows, numeric)


def layer_label(row: dict) -> str:
    layer_a, layer_b = row.get("layer_a"), row.get("layer_b")
    if layer_a is None and layer_b is None:
        return MISSING
    if layer_a == layer_b:
        return str(layer_a)
    return f"{_or_missing(layer_a)}→{_or_missing(layer_b)}"


def equal_bytes_label(row: dict) -> str:
    if row.get("bytes_equal"):
        return "yes"
    rows_equal = row.get("rows_equal")
    if isinstance(rows_equal, int) and rows_equal > 0:
        return f"{rows_equal:,} rows"
    return "no"


def row_note(row: dict) -> str:
    notes = []
    if not row.get("comparable", True):
        notes.append(f"not comparable: {row.get('reason') or 'shapes differ'} "
                     f"{_shape(row.get('shape_a'))} vs {_shape(row.get('shape_b'))}")
    elif row.get("truncated"):
        notes.append(f"truncated: {row.get('reason') or 'common leading block'} "
                     f"{_shape(row.get('shape_a'))} vs {_shape(row.get('shape_b'))}")
    for side in ("a", "b"):
        count = row.get(f"nonfinite_{side}")
        if isinstance(count, int) and count > 0:
            notes.append(f"{count:,} NaN/Inf in {side.upper()}")
    if row.get("finite_only"):
        notes.append("numbers over positions finite in both only")
    return "; ".join(notes)


def layer_matrix_blocks(doc: dict) -> list[Block]:
    """Facts and a heatmap for every L_A x L_B matrix (compare --layers all-pairs, provenance)."""
    blocks: list[Block] = []
    matrices = doc.get("layer_matrices") if isinstance(doc.get("layer_matrices"), dict) else {}
    for group, matrix in matrices.items():
        if not isinstance(matrix, dict):
            continue
        margins = [m for m in matrix.get("margins") or [] if isinstance(m, (int, float))]
        blocks.append(Facts(f"Layer matrix: {group} ({matrix.get('metric')})", [
            ("size", f"{len(matrix.get('layers_a') or [])} × {len(matrix.get('layers_b') or [])} layers"),
            ("diagonal mean", fmt_num(matrix.get("diagonal_mean"))),
            ("off-diagonal mean", fmt_num(matrix.get("off_diagonal_mean"))),
            ("rows whose best match is the same layer", fmt_num(matrix.get("diagonal_best_fraction"))),
            ("diagonal margin min / mean", f"{fmt_num(min(margins)) if margins else MISSING} / "
                                           f"{fmt_num(fmean(margins)) if margins else MISSING}"),
        ]))
        if plots.has_layer_matrix(doc, group):
            blocks.append(Figure(
                f"{group}: {matrix.get('metric')} of every layer of A vs every layer of B", f"layers-{group}",
                lambda group=group: plots.layer_matrix_png(doc, group),
                "A strong diagonal means layer i of A matches layer i of B; compare it with the rest of its row.",
            ))
    return blocks


def _is_raw(metric: str) -> bool:
    return "cos" in metric and "pearson" not in metric and "center" not in metric


def _mean_std(mean: Any, std: Any) -> str:
    return fmt_num(mean) if std is None else f"{fmt_num(mean)} ± {fmt_num(std, 2)}"


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]" if isinstance(shape, list) else MISSING


def _or_missing(value: Any) -> str:
    return MISSING if value is None else str(value)
