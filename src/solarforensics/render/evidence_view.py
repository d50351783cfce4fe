"""What `arch`, `tokenizer` and `license` documents show: the statements first, then the tables behind them."""

from typing import Any

from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Table
from solarforensics.render.formatting import MISSING, fmt_count, fmt_int, fmt_num, fmt_value
from solarforensics.render.generic_view import generic_blocks

TEXT_LIMIT = 240
ROW_LIMIT = 60


def _statements(doc: dict, title: str = "What the numbers say") -> list[Block]:
    items = [str(s) for s in (doc.get("summary") or {}).get("statements") or []]
    return [Bullets(title, items)] if items else []


def _names(doc: dict) -> tuple[str, str]:
    models = doc.get("models") if isinstance(doc.get("models"), dict) else {}
    return str(models.get("a") or "A"), str(models.get("b") or "B")


def _cut(text: Any, limit: int = TEXT_LIMIT) -> str:
    return fmt_value(text, limit) if text is not None else MISSING


def _long_table(title: str, columns: list[str], rows: list[list[str]], numeric: list[bool] | None = None) -> Table:
    note = f"first {ROW_LIMIT} of {len(rows)} rows (all in the JSON)" if len(rows) > ROW_LIMIT else None
    return Table(title, columns, rows[:ROW_LIMIT], numeric or [], note)


# --- arch ---------------------------------------------------------------------------------------------------------

def arch_blocks(doc: dict) -> list[Block]:
    """Parameters and comparability first (what the dispute is about), then derived facts and every config field."""
    name_a, name_b = _names(doc)
    blocks = _statements(doc)
    params = doc.get("parameters") or {}
    a, b = params.get("a") or {}, params.get("b") or {}
    components = [str(c) for c in doc.get("components") or [k for k in a if k != "total"]] + ["total"]
    rows = []
    for component in components:
        va, vb = a.get(component), b.get(component)
        diff = va - vb if isinstance(va, int) and isinstance(vb, int) else None
        rows.append([component, fmt_count(va), _share(va, a.get("total")), fmt_count(vb), _share(vb, b.get("total")),
                     fmt_count(diff) if diff is None or diff >= 0 else "-" + fmt_count(-diff)])
    blocks.append(Table("Parameters by component (from the safetensors headers)",
                        ["component", name_a, "share", name_b, "share", "A - B"], rows,
                        [False, True, True, True, True, True], "total = sum of element counts over every header entry"))
    active = doc.get("active_parameters") or {}
    if active:
        side_a, side_b = active.get("a") or {}, active.get("b") or {}
        blocks.append(Facts("Active parameters per token", [
            (name_a, fmt_count(side_a.get("value"))), (name_b, fmt_count(side_b.get("value"))),
            ("formula", str(side_a.get("formula") or MISSING)), ("what counts", str(side_a.get("counts") or MISSING)),
        ]))
    rows = [[str(r.get("group")), str(r.get("status")), _shapes(r.get("shapes_a")), _shapes(r.get("shapes_b")),
             str(r.get("reason") or "")] for r in doc.get("compatibility") or [] if isinstance(r, dict)]
    blocks.append(Table("Tensor groups: can they be compared?", ["group", "comparable", name_a, name_b, "why / how"],
                        rows, note="decoder layers only: MTP layers are never paired with decoder layers"))
    derived = doc.get("derived") or {}
    da, db = derived.get("a") or {}, derived.get("b") or {}
    rows = [[key, _value(da.get(key)), _value(db.get(key)), "" if da.get(key) == db.get(key) else "≠"]
            for key in dict.fromkeys([*da, *db])]
    blocks.append(Table("Derived facts", ["fact", name_a, name_b, "differs"], rows))
    marks = {"same": "", "different": "≠", "only in A": "only A", "only in B": "only B"}
    rows = [[str(r.get("key")), _value(r.get("a")), _value(r.get("b")), marks.get(r.get("status"), str(r.get("status")))]
            for r in doc.get("config_diff") or [] if isinstance(r, dict)]
    blocks.append(Table("config.json, every field", ["field", name_a, name_b, "differs"], rows))
    return blocks


def _share(value: Any, total: Any) -> str:
    if not isinstance(value, int) or not isinstance(total, int) or total <= 0:
        return MISSING
    return f"{100 * value / total:.3g}%"


def _shapes(by_role: Any) -> str:
    if not isinstance(by_role, dict) or not by_role:
        return MISSING
    parts = []
    for role, shapes in by_role.items():
        text = ", ".join("×".join(str(d) for d in shape) for shape in shapes or [])
        parts.append(f"{role} {text}")
    return "; ".join(parts)


def _value(value: Any) -> str:
    if value in ([], {}):
        return "none"
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return _ranges(value)
    return fmt_value(value, 80) if value is not None else MISSING


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (layer lists of 48 entries stay one short cell)."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


# --- tokenizer ----------------------------------------------------------------------------------------------------

def tokenizer_blocks(doc: dict) -> list[Block]:
    """Overlap numbers, the id offsets and the longest shared block, merges, specials and pipeline differences."""
    name_a, name_b = _names(doc)
    blocks = _statements(doc)
    model, encoding = doc.get("tokenizer_model") or {}, doc.get("encoding") or {}
    collisions = doc.get("surface_collisions") or {}
    added = doc.get("added_tokens") or {}
    rows = [["model", str(model.get("a", MISSING)), str(model.get("b", MISSING))],
            ["encoding", str(encoding.get("a", MISSING)), str(encoding.get("b", MISSING))],
            ["model vocabulary", fmt_int(doc.get("vocab_size_a")), fmt_int(doc.get("vocab_size_b"))],
            ["with added tokens", fmt_int(doc.get("vocab_size_with_added_a")), fmt_int(doc.get("vocab_size_with_added_b"))],
            ["added tokens", fmt_int(added.get("count_a")), fmt_int(added.get("count_b"))],
            ["same text at two ids", fmt_int(collisions.get("a")), fmt_int(collisions.get("b"))]]
    blocks.append(Table("Vocabularies", ["", name_a, name_b], rows, [False, True, True]))
    blocks.append(Facts("Overlap (by surface text)", [
        ("shared tokens", fmt_int(doc.get("shared_tokens"))), ("only in A", fmt_int(doc.get("only_in_a"))),
        ("only in B", fmt_int(doc.get("only_in_b"))), ("union", fmt_int(doc.get("union"))),
        ("Jaccard", fmt_num(doc.get("jaccard"))), ("overlap vs the smaller", fmt_num(doc.get("overlap_vs_smaller"))),
        ("same id", fmt_int(doc.get("same_id"))), ("same id / smaller vocabulary", fmt_num(doc.get("same_id_ratio"))),
        ("how matched", str(encoding.get("how") or MISSING)),
    ]))
    rows = [[fmt_int(r.get("offset")), fmt_int(r.get("count"))] for r in doc.get("offset_histogram") or []]
    blocks.append(Table("Most common id offsets (id in A - id in B)", ["offset", "shared tokens"], rows, [True, True]))
    for key, title in (("longest_run", "Longest run of consecutive ids at one offset"),
                       ("most_common_offset_run", "Longest run at the most common offset")):
        run = doc.get(key)
        if isinstance(run, dict):
            blocks.append(Facts(title, [
                ("length", fmt_int(run.get("length"))), ("offset", fmt_int(run.get("offset"))),
                ("A ids", f"{fmt_int(run.get('start_a'))}-{fmt_int(run.get('end_a'))}"),
                ("B ids", f"{fmt_int(run.get('start_b'))}-{fmt_int(run.get('end_b'))}"),
                ("first tokens", " ".join(repr(t) for t in run.get("sample") or [])),
            ]))
    merges = doc.get("merges")
    if isinstance(merges, dict):
        blocks.append(Facts("Merges", [(str(k), fmt_value(v)) for k, v in merges.items()]))
    rows = [[_cut(s.get("content"), 60), fmt_int(s.get("id_a")), fmt_int(s.get("id_b"))]
            for s in added.get("shared") or [] if isinstance(s, dict)]
    blocks.append(_long_table("Added tokens in both", ["content", f"id in {name_a}", f"id in {name_b}"], rows,
                              [False, True, True]))
    for side, name in (("a", name_a), ("b", name_b)):
        only = added.get(f"only_in_{side}") or []
        if only:
            count = added.get(f"only_in_{side}_count", len(only))
            items = [f"{t.get('id')}: {t.get('content')!r}" for t in only if isinstance(t, dict)]
            blocks.append(Bullets(f"Added tokens only in {name}: {count}", items[:ROW_LIMIT]))
    rows = [[key, _value(row.get("a")), _value(row.get("b")), "yes" if row.get("same") else "no"]
            for key, row in (doc.get("pipeline") or {}).items() if isinstance(row, dict)]
    blocks.append(Table("Pipeline and model options", ["part", name_a, name_b, "same"], rows))
    return blocks


# --- license ------------------------------------------------------------------------------------------------------

def license_blocks(doc: dict) -> list[Block]:
    """Not-legal-advice banner, the classification, the section table, then every added and changed clause."""
    if not isinstance(doc.get("sections"), list):
        return generic_blocks(doc)  # documents written before this view existed
    disclaimer = str(doc.get("disclaimer") or "A textual comparison, not legal advice.")
    blocks: list[Block] = [Banner("lesson", "Textual comparison — not legal advice", [
        disclaimer, f"classification: {doc.get('classification') or 'no licence file'}"])]
    blocks += _statements(doc, "What the text says")
    declared = doc.get("declared") or {}
    blocks.append(Facts("Licence", [
        ("file", str(doc.get("file") or MISSING)), ("title", str(doc.get("title") or MISSING)),
        ("starts from", f"{doc.get('starts_from')} ({doc.get('starts_from_spdx')}), similarity "
                        f"{fmt_num(doc.get('starts_from_similarity'))}" if doc.get("starts_from") else MISSING),
        ("classification", str(doc.get("classification") or MISSING)),
        ("verbatim Apache-2.0 terms", fmt_num(doc.get("verbatim"))), ("renamed", fmt_num(doc.get("renamed"))),
        ("declared on the card", ", ".join(f"{k}: {declared[k]}" for k in ("license", "license_name", "license_link")
                                            if declared.get(k)) or MISSING),
        ("declared from", str(declared.get("source") or MISSING)),
        ("card agrees with the text", fmt_num(doc.get("declared_matches"))),
        ("why", str(doc.get("declared_note") or MISSING)),
    ]))
    rows = [[_section(s.get("id")), str(s.get("title") or ""), str(s.get("status")), fmt_int(s.get("identical_clauses")),
             fmt_int(len(s.get("added") or [])), fmt_int(len(s.get("removed") or [])),
             fmt_int(len(s.get("changed") or []))] for s in doc["sections"] if isinstance(s, dict)]
    blocks.append(Table(f"Sections against {doc.get('against', 'apache-2.0')}",
                        ["§", "title", "status", "identical clauses", "added", "removed", "changed"], rows,
                        [False, False, False, True, True, True, True]))
    effects = [e for e in doc.get("effects") or [] if isinstance(e, dict)]
    if effects:
        rows = [[str(e.get("effect")), str(e.get("meaning")), ", ".join(_section(s) for s in e.get("sections") or []),
                 _cut(e.get("example"))] for e in effects]
        blocks.append(Table("What the additions do (keyword-based)", ["effect", "meaning", "§", "example"], rows))
    rows = [[_section(c.get("section")), str(c.get("kind")), _cut(c.get("text"))]
            for c in doc.get("added_clauses") or [] if isinstance(c, dict)]
    if rows:
        blocks.append(_long_table("Added text", ["§", "kind", "text"], rows))
    rows = [[_section(s.get("id")), _cut(c.get("deleted"), 120), _cut(c.get("inserted"), 120), _cut(c.get("text"), 160)]
            for s in doc["sections"] if isinstance(s, dict) for c in s.get("changed") or []]
    if rows:
        blocks.append(_long_table("Changed clauses", ["§", "Apache-2.0 words", "replaced by", "clause now"], rows))
    rows = [[_section(s.get("id")), _cut(text)] for s in doc["sections"] if isinstance(s, dict)
            for text in s.get("removed") or []]
    if rows:
        blocks.append(_long_table("Apache-2.0 text not found", ["§", "text"], rows))
    revisions = [r for r in doc.get("history") or [] if isinstance(r, dict)]
    if revisions:
        rows = [[str(r.get("date", ""))[:10], str(r.get("commit", ""))[:8], str(r.get("file")),
                 str(r.get("licence_title") or "(deleted)"), str(r.get("starts_from") or MISSING),
                 fmt_num(r.get("verbatim")), fmt_int(len(r.get("added_terms") or [])),
                 ", ".join(r.get("effects") or []) or "—"] for r in revisions]
        blocks.append(Table("Licence text at every revision where it changed", [
            "date", "commit", "file", "title", "starts from", "verbatim", "added terms", "what they do"], rows))
    files = [f for f in doc.get("files") or [] if isinstance(f, dict)]
    if len(files) > 1:
        rows = [[str(f.get("file")), fmt_int(f.get("bytes")), str(f.get("title") or MISSING),
                 str(f.get("classification"))] for f in files]
        blocks.append(Table("Licence files", ["file", "bytes", "title", "classification"], rows))
    return blocks


def _section(section_id: Any) -> str:
    return str(section_id) if str(section_id) in ("title", "appendix") else f"§{section_id}"
