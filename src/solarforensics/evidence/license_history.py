"""`license --history`: the licence text at every revision where it changed, each compared with the licence it
starts from and diffed against its predecessor (the Hub keeps every commit; a licence replaced after release is
still readable at the release commit)."""

from __future__ import annotations

import difflib

from solarforensics.evidence.history import collect_history
from solarforensics.evidence.license import choose_reference, compare_file, identify, licence_files, license_report
from solarforensics.models import OpenOptions

DIFF_LINES = 400


def licence_history(spec: str, options: OpenOptions | None = None, against: str = "auto",
                    max_commits: int = 200) -> tuple[list[dict], list[str], dict]:
    """(one record per licence revision, oldest first; warnings; the reader's provenance record)."""
    history = collect_history(spec, options, ["LICENSE*", "LICENCE*"], max_commits)
    records, warnings, previous, seen_at = [], [], {}, {}
    for index in history.analysed:
        info = history.commits[index]
        tree = history.trees[info.sha]
        for name in licence_files(list(tree)):
            file = tree[name]
            if previous.get(name) == file.oid:
                continue
            text, why = history.texts.get(file.oid, (None, "not read"))
            if text is None:
                warnings.append(f"{name} at {info.sha[:8]} not compared: {why}")
                previous[name] = file.oid
                continue
            before = history.texts.get(previous.get(name), (None, None))[0] if name in previous else None
            compared = compare_file(name, text, choose_reference(against, origin := identify(text)))
            best = origin["candidates"][0] if origin["candidates"] else {}
            diff = list(difflib.unified_diff((before or "").splitlines(keepends=True), text.splitlines(keepends=True),
                                             f"{name}@{seen_at.get(name, '')[:8]}" if before is not None else "/dev/null",
                                             f"{name}@{info.sha[:8]}", n=1))
            records.append({
                "commit": info.sha, "date": info.date, "title": info.title, "file": name, "oid": file.oid,
                "licence_title": compared["title"], "starts_from": best.get("key"),
                "starts_from_similarity": best.get("similarity"), "against": compared["against"],
                "classification": compared["classification"], "verbatim": compared["verbatim"],
                "renamed": compared["renamed"], "modified": compared["modified"], "removed": compared["removed"],
                "added_terms": compared["added_terms"], "effects": [e["effect"] for e in compared["effects"]],
                "diff_vs_previous": "".join(x if x.endswith("\n") else x + "\n" for x in diff[:DIFF_LINES]),
                "diff_lines_cut": max(0, len(diff) - DIFF_LINES),
            })
            previous[name], seen_at[name] = file.oid, info.sha
        for name in [n for n in previous if n not in tree]:
            records.append({"commit": info.sha, "date": info.date, "title": info.title, "file": name, "oid": None,
                            "licence_title": None, "starts_from": None, "starts_from_similarity": None,
                            "against": None, "classification": None, "verbatim": False, "renamed": False,
                            "modified": [], "removed": [], "added_terms": [], "effects": [],
                            "diff_vs_previous": f"{name} deleted", "diff_lines_cut": 0})
            previous.pop(name)
    if history.cut or len(history.analysed) < len(history.commits):
        warnings.append(f"licence history covers {len(history.analysed):,} of {len(history.commits):,} commits "
                        "(the first and the newest); a licence changed and changed back in between is not seen")
    return records, warnings, history.reader.provenance.as_dict()


def history_statements(records: list[dict]) -> list[str]:
    out = []
    for record in records:
        if record["oid"] is None:
            out.append(f"{record['date'][:10]} {record['commit'][:8]}: {record['file']} deleted.")
            continue
        what = "verbatim" if record["verbatim"] else f"{len(record['added_terms'])} added terms"
        out.append(f"{record['date'][:10]} {record['commit'][:8]}: {record['file']} \"{record['licence_title']}\" "
                   f"starts from {record['starts_from'] or 'no known licence'} ({what} against {record['against']}).")
    return out


def license_report_with_history(spec: str, options: OpenOptions | None = None, against: str = "auto",
                                require_file: bool = True) -> dict:
    """`license --history`: the licence document of the current text, plus `history` (every revision)."""
    fields = license_report(spec, options, against, require_file)
    records, problems, provenance = licence_history(spec, options, against)
    fields.update(history=records)
    fields["sources"].append(provenance)
    fields["warnings"] += problems
    fields["summary"]["statements"][-1:-1] = history_statements(records)
    return fields
