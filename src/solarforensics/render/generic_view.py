"""Documents of kinds without a dedicated view (or written before one existed): their keys as facts and tables."""

from solarforensics.render.blocks import Block, Bullets, Facts, Table
from solarforensics.render.compare_view import layer_matrix_blocks
from solarforensics.render.formatting import fmt_value

COMMON_KEYS = {
    "schema_version", "kind", "tool", "created_at", "command", "sources", "device", "accumulation_dtype",
    "replica", "complete", "warnings", "summary", "timings",
}
GENERIC_ROW_LIMIT = 100


def generic_blocks(doc: dict) -> list[Block]:
    """Kinds without a dedicated view: statements, then every kind-specific key as facts or tables."""
    blocks: list[Block] = []
    summary = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    statements = summary.get("statements") or []
    if statements:
        blocks.append(Bullets("What the numbers say", [str(s) for s in statements]))
    scalars: list[tuple[str, str]] = []
    for key, value in doc.items():
        if key in COMMON_KEYS or key == "layer_matrices":
            continue
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            blocks.append(_records_table(key, value))
        elif isinstance(value, dict) and value:
            blocks.append(Facts(key, [(str(k), fmt_value(v)) for k, v in value.items()]))
        else:
            scalars.append((key, fmt_value(value)))
    if scalars:
        blocks.insert(1 if statements else 0, Facts("Results", scalars))
    summary_rest = [(str(k), fmt_value(v)) for k, v in summary.items() if k != "statements"]
    if summary_rest:
        blocks.append(Facts("Summary", summary_rest))
    if "layer_matrices" in doc:
        blocks += layer_matrix_blocks(doc)
    return blocks


def _records_table(title: str, records: list[dict]) -> Table:
    columns: list[str] = []
    for record in records[:GENERIC_ROW_LIMIT]:
        columns += [key for key in record if key not in columns]
    columns = columns[:10]
    rows = [[fmt_value(record.get(column), 60) for column in columns] for record in records[:GENERIC_ROW_LIMIT]]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in records) for c in columns]
    note = f"first {GENERIC_ROW_LIMIT} of {len(records)} rows" if len(records) > GENERIC_ROW_LIMIT else None
    return Table(title, columns, rows, numeric, note)
