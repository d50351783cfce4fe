"""What `history` and `code` documents show: a repo's timeline with its diffs, and the code it shares."""

from typing import Any

from solarforensics.render.blocks import Banner, Block, Bullets, Preformatted, Table
from solarforensics.render.formatting import MISSING, fmt_int, fmt_num, fmt_value

ROW_LIMIT = 80
DIFFS_SHOWN = 30
DIFF_CHARS = 6000


def _statements(doc: dict, title: str) -> list[Block]:
    items = [str(s) for s in (doc.get("summary") or {}).get("statements") or []]
    return [Bullets(title, items)] if items else []


def _table(title: str, columns: list[str], rows: list[list[str]], numeric: list[bool] | None = None) -> Table:
    note = f"first {ROW_LIMIT} of {len(rows)} rows (all in the JSON)" if len(rows) > ROW_LIMIT else None
    return Table(title, columns, rows[:ROW_LIMIT], numeric or [], note)


def _short(oid: Any) -> str:
    return str(oid)[:12] if oid else "—"


# --- history ------------------------------------------------------------------------------------------------------

def history_blocks(doc: dict) -> list[Block]:
    """The timeline first (licence names, base models), then one row per commit, then the text diffs."""
    blocks = _statements(doc, "What the history says")
    commits = [c for c in doc.get("commits") or [] if isinstance(c, dict)]
    events = [e for e in doc.get("timeline") or [] if isinstance(e, dict)]
    if events:
        rows = [[str(e.get("date", ""))[:19], _short(e.get("commit")), str(e.get("field")),
                 fmt_value(e.get("before"), 80) if e.get("before") is not None else "(none)",
                 fmt_value(e.get("after"), 80) if e.get("after") is not None else "(none)"] for e in events]
        blocks.append(_table("Timeline: licence names and declared base models", ["date (UTC)", "commit", "field",
                                                                                   "before", "after"], rows))
    rows = []
    for c in commits:
        changes = [x for x in c.get("changes") or [] if isinstance(x, dict)]
        kinds = {k: sum(1 for x in changes if x.get("kind") == k) for k in ("weights", "text", "other")}
        shown = ", ".join(f"{x.get('change')[0]} {x.get('path')}" for x in changes[:6]) + (
            f", … ({len(changes)} files)" if len(changes) > 6 else "")
        what = shown if c.get("analysed") else "(tree not read: see skipped)"
        if c.get("skipped_before"):
            what = f"[spans {c['skipped_before']} skipped commits] " + what
        rows.append([str(c.get("date", ""))[:19], _short(c.get("commit")), fmt_value(c.get("title"), 60),
                     ", ".join(c.get("authors") or []), fmt_int(kinds["weights"]), fmt_int(kinds["text"]),
                     fmt_int(kinds["other"]), what])
    blocks.append(_table("Commits, oldest first (a = added, m = modified, r = removed)",
                         ["date (UTC)", "commit", "title", "authors", "weights", "text", "other", "files"], rows,
                         [False, False, False, False, True, True, True, False]))
    messages = [f"{_short(c.get('commit'))[:8]}: {fmt_value(' '.join(str(c.get('message')).split()), 400)}"
                for c in commits if c.get("message")]
    if messages:
        blocks.append(Bullets("Commit messages", messages[:ROW_LIMIT]))
    first = next((c.get("commit") for c in commits if c.get("analysed")), None)
    weights = [[str(c.get("date", ""))[:19], _short(c.get("commit")), str(x.get("path")), str(x.get("change")),
                _short(x.get("oid_before")), _short(x.get("oid_after"))]
               for c in commits if c.get("commit") != first
               for x in c.get("changes") or [] if isinstance(x, dict) and x.get("kind") == "weights"]
    if weights:
        blocks.append(_table("Weight files changed after the first commit (by LFS object id)",
                             ["date (UTC)", "commit", "file", "change", "oid before", "oid after"], weights))
    shown, initial = 0, 0
    for c in commits:
        for diff in c.get("diffs") or []:
            if isinstance(diff, dict) and c.get("commit") == first and diff.get("oid_before") is None:
                initial += 1  # the first commit's files, added whole: in the JSON, not repeated here
                continue
            if not isinstance(diff, dict) or shown >= DIFFS_SHOWN:
                continue
            shown += 1
            title = f"{str(c.get('date', ''))[:10]} {_short(c.get('commit'))[:8]} {diff.get('path')}"
            if diff.get("skipped"):
                blocks.append(Bullets(title, [f"not diffed: {diff['skipped']}"]))
                continue
            text = str(diff.get("diff") or "")
            if len(text) > DIFF_CHARS:
                text = text[:DIFF_CHARS] + "\n… (cut here; the whole diff is in the JSON)\n"
            if diff.get("truncated_lines"):
                text += f"… {diff['truncated_lines']} more lines not kept\n"
            blocks.append(Preformatted(f"{title} (+{diff.get('lines_added')} -{diff.get('lines_removed')})", text))
    total = sum(len(c.get("diffs") or []) for c in commits) - initial
    if initial:
        blocks.append(Bullets("First commit", [f"the first commit's {initial} text files are in the JSON, whole."]))
    if total > shown:
        blocks.append(Bullets("More diffs", [f"{total - shown} more diffs are in the JSON (use --files to narrow)."]))
    return blocks


# --- code ---------------------------------------------------------------------------------------------------------

def code_blocks(doc: dict) -> list[Block]:
    """What was compared, the disclaimer, shared functions and classes, headers, distinctive rules."""
    against = doc.get("against") or {}
    blocks: list[Block] = [Banner("lesson", "Shared code is about code, not weights", [
        str(doc.get("disclaimer") or "Shared code says where code came from, not where weights came from."),
        f"compared against: {against.get('kind', MISSING)} {against.get('name', MISSING)}"])]
    blocks += _statements(doc, "What the code says")
    rows = [[str(f.get("file")), str(f.get("origin")), str(f.get("status")), fmt_int(f.get("definitions"))]
            for f in doc.get("files") or [] if isinstance(f, dict)]
    blocks.append(_table("Files read", ["file", "origin", "status", "functions and classes"], rows,
                         [False, False, False, True]))
    rows = [[str(m.get("file")), str(m.get("name")), str(m.get("reference")), str(m.get("reference_name")),
             fmt_num(m.get("similarity")), "yes" if m.get("identical") else "no"]
            for m in doc.get("matches") or [] if isinstance(m, dict)]
    blocks.append(_table("Shared functions and classes (best reference match, similarity of normalised source)",
                         ["file", "name", "reference", "reference name", "similarity", "identical"], rows,
                         [False, False, False, False, True, False]))
    rows = [[str(h.get("file")), fmt_int(h.get("line")), str(h.get("kind")), fmt_value(h.get("text"), 120)]
            for h in doc.get("headers") or [] if isinstance(h, dict)]
    if rows:
        blocks.append(_table("Copyright and licence lines", ["file", "line", "kind", "text"], rows,
                             [False, True, False, False]))
    rows = [[str(r.get("rule")), str(r.get("file")), fmt_int(r.get("line")), fmt_value(r.get("text"), 100),
             "yes" if r.get("in_reference") else "no"] for r in doc.get("rules") or [] if isinstance(r, dict)]
    if rows:
        blocks.append(_table("Distinctive rules", ["rule", "file", "line", "code", "also in the reference"], rows,
                             [False, False, True, False, False]))
    return blocks
