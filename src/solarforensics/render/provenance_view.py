"""What a `provenance` document shows: the verdict and why, every test beside its null, what was not tested, the
alignment, the bytes read (and, for the anytime path, each look), the L x L heatmaps, the thresholds used and the
limits of weight tests."""

from typing import Any

from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Table
from solarforensics.render.compare_view import layer_matrix_blocks
from solarforensics.render.formatting import MISSING, fmt_bytes, fmt_num, fmt_p, fmt_value

VERDICT_WORDS = {
    "derived": "DERIVED — one model's weights were initialised from the other's",
    "independent": "INDEPENDENT — no test found shared initialisation",
    "inconclusive": "INCONCLUSIVE — the tests that could run do not decide",
}
NULL_KEYS = ("mean", "std", "q95", "permutations", "draws", "n", "layers", "kind")
ALIGNMENT_KEYS = ("method", "quality", "effect", "dims_matched", "signs_flipped", "identity_fraction", "layer_map",
                  "layer_map_source", "layer_pairing", "path_mean", "margin_z", "duplicated_layers", "weak_pairs")
SUMMARY_SHOWN = {"statements", "decisive_tests", "thresholds", "thresholds_status"}


def provenance_blocks(doc: dict) -> list[Block]:
    """The verdict first, then every test beside its null, the alignment and the layer matrices."""
    verdict = str(doc.get("verdict", "inconclusive"))
    summary = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    blocks: list[Block] = [Banner(verdict if verdict in VERDICT_WORDS else "inconclusive",
                                  f"Verdict: {VERDICT_WORDS.get(verdict, verdict.upper())}", _banner_lines(doc))]
    statements = summary.get("statements") or []
    if statements:
        blocks.append(Bullets("What the tests say", [str(s) for s in statements]))
    blocks.append(tests_table(doc))
    not_tested = [t for t in doc.get("not_tested") or [] if isinstance(t, dict)]
    if not_tested:
        blocks.append(Bullets("Not tested", [f"{t.get('name')}: {t.get('reason')}" for t in not_tested]))
    alignment = doc.get("alignment")
    if isinstance(alignment, dict) and alignment:
        shown = [key for key in ALIGNMENT_KEYS if key in alignment] or list(alignment)
        blocks.append(Facts("Alignment", [(key, fmt_value(alignment[key])) for key in shown]))
    if "planned_bytes" in doc:
        blocks.append(Facts("Bytes", [
            ("planned (tensors and rows)", fmt_bytes(doc.get("planned_bytes"))),
            ("both checkpoints", fmt_bytes(doc.get("checkpoint_bytes"))),
            ("share of the checkpoints", _percent(doc.get("planned_fraction"))),
            ("per test" if not doc.get("stages") else "per look",
             fmt_value({k: fmt_bytes(v) for k, v in (doc.get("planned_bytes_per_test") or {}).items()})),
            *([("read", fmt_bytes(doc.get("bytes_read"))), ("read until the verdict", fmt_bytes(doc.get("bytes_at_verdict"))),
               ("share at the verdict", _percent(doc.get("fraction_at_verdict")))] if doc.get("stages") else []),
        ]))
    if doc.get("stages"):
        blocks.append(looks_table(doc))
    blocks += layer_matrix_blocks(doc)
    thresholds = doc.get("thresholds") or summary.get("thresholds")
    if isinstance(thresholds, dict) and thresholds:
        blocks.append(Facts("Thresholds the verdict used", [(str(k), fmt_value(v)) for k, v in thresholds.items()]))
    if doc.get("limits"):
        blocks.append(Bullets("Limits", [str(doc["limits"])]))
    extra = {key: value for key, value in summary.items() if key not in SUMMARY_SHOWN}
    if extra:
        blocks.append(Facts("Summary", [(str(key), fmt_value(value)) for key, value in extra.items()]))
    return blocks


def _banner_lines(doc: dict) -> list[str]:
    lines = [f"combined p-value: {fmt_p(doc.get('p_value'), doc.get('log10_p_value'))}"]
    decisive = doc.get("decisive") or (doc.get("summary") or {}).get("decisive_tests") or []
    if decisive:
        lines.append(f"decisive: {', '.join(str(d) for d in decisive)}")
    status = (doc.get("thresholds") or {}).get("status") if isinstance(doc.get("thresholds"), dict) else None
    if status and status != "fitted":
        lines.append(f"thresholds: {status} (not yet fitted on the ground-truth zoo)")
    elif status:
        lines.append(f"thresholds: fitted ({doc['thresholds'].get('source') or 'source not recorded'})")
    return lines


def looks_table(doc: dict) -> Table:
    """The anytime path's looks in reading order: layers read, bytes, the verdict after each (— where never read)."""
    rows = []
    for look in doc.get("stages") or []:
        if not isinstance(look, dict):
            continue
        layers = f"A {fmt_value(look.get('layers_a'))} / B {fmt_value(look.get('layers_b'))}" \
            if look.get("layers_a") or look.get("layers_b") else "—"
        rows.append([str(look.get("look")), layers, fmt_bytes(look.get("planned_bytes")),
                     fmt_bytes(look.get("bytes_read")) if look.get("read") else "not read",
                     str(look.get("verdict") or "—"), ", ".join(look.get("decisive") or []) or "—",
                     fmt_num(look.get("seconds")) if look.get("read") else "—"])
    return Table("Looks (read in this order; the run stops at the first decisive one)",
                 ["look", "layers", "planned", "read", "verdict after it", "decisive", "seconds"], rows,
                 [False, False, True, True, False, False, True])


def tests_table(doc: dict) -> Table:
    """One row per test: statistic, its null or background, p (log10 when tiny), effect and notes."""
    rows = []
    for test in doc.get("tests") or []:
        if not isinstance(test, dict):
            continue
        rows.append([str(test.get("name")), "yes" if test.get("applicable") else "no",
                     fmt_value(test.get("statistic")), _null_text(test.get("null")),
                     fmt_p(test.get("p_value"), test.get("log10_p_value")), fmt_value(test.get("effect")),
                     fmt_value(test.get("notes") or "", 240)])
    return Table("Tests", ["test", "applicable", "statistic", "null / background", "p", "effect", "notes"],
                 rows, [False, False, False, False, True, False, False])


def _null_text(null: Any) -> str:
    """A null as its summary (mean, spread, size, kind), never the whole record."""
    if not isinstance(null, dict):
        return fmt_value(null)
    parts = [f"{key}={fmt_num(null[key]) if key != 'kind' else null[key]}" for key in NULL_KEYS
             if null.get(key) is not None]
    return ", ".join(parts) if parts else MISSING


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING
