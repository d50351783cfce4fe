"""`history`: every commit of a Hub repo with what it changed. Weights are compared by their LFS object ids (so a
weight swap after release shows without reading a byte of it), text files (licence, card, configs, code) are diffed
between consecutive revisions, and the card's declared licence and base model are followed over time.

Work is bounded: at most MAX_LISTED commits are listed and `max_commits` trees read (the oldest commit and the newest
ones); what was skipped is stated, and the changes across a skipped span are shown as one step.
"""

from __future__ import annotations

import difflib
import fnmatch
import time
from dataclasses import dataclass, field

from solarforensics.evidence.card import parse_front_matter
from solarforensics.evidence.history_hub import MAX_LISTED, CommitInfo, HubHistory, TreeFile, history_reader
from solarforensics.evidence.license_text import title_line
from solarforensics.models import OpenOptions
from solarforensics.sources.interrupt import worker_pool

DEFAULT_MAX_COMMITS = 200
WORKERS = 8
DIFF_LINES = 400  # lines of one unified diff kept; the rest is counted
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
TEXT_PATTERNS = ("LICENSE*", "LICENCE*", "NOTICE*", "README.md", "*.py", "config.json", "generation_config.json",
                 "configuration.json", "tokenizer_config.json", "*.jinja", "*.md", "*.txt", "*.toml", "*.yaml")
CARD_FIELDS = ("license", "license_name", "license_link", "base_model")
MARKER_FILE = "REPLICA.md"


@dataclass
class History:
    """What was read: the listing (oldest first), the trees of the analysed commits, and text by object id."""

    reader: HubHistory  # or a FolderSnapshot: the same methods
    commits: list[CommitInfo]
    analysed: list[int]  # indexes into commits
    trees: dict[str, dict[str, TreeFile]]
    texts: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # oid -> (text, why not read)
    cut: bool = False
    warnings: list[str] = field(default_factory=list)

    def text(self, file: TreeFile | None) -> str | None:
        return self.texts.get(file.oid, (None, None))[0] if file else None


def matches(path: str, globs: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(name, g) for g in globs)


def kind_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(WEIGHT_SUFFIXES):
        return "weights"
    return "text" if matches(path, list(TEXT_PATTERNS)) else "other"


def collect_history(spec: str, options: OpenOptions | None = None, files: list[str] | None = None,
                    max_commits: int = DEFAULT_MAX_COMMITS, texts_for: list[str] | None = None) -> History:
    """List the commits, read the trees of the analysed ones, and the texts that changed among the wanted files."""
    options = options or OpenOptions()
    reader = history_reader(spec, options.endpoint, options.token)
    newest_first, cut = reader.list_commits(MAX_LISTED)
    commits = list(reversed(newest_first))
    if len(commits) <= max(1, max_commits):
        analysed = list(range(len(commits)))
    else:  # the first commit (the release) and the newest ones
        analysed = [0] + list(range(len(commits) - max(1, max_commits) + 1, len(commits)))
    with worker_pool(WORKERS) as pool:
        shas = [commits[i].sha for i in analysed]
        trees = dict(zip(shas, pool.map(reader.tree, shas)))
    history = History(reader, commits, analysed, trees, cut=cut)
    wanted = texts_for or files or list(TEXT_PATTERNS)
    todo: dict[str, tuple[str, str, int]] = {}
    previous: dict[str, TreeFile] = {}
    for i in analysed:
        tree = trees[commits[i].sha]
        for path, file in tree.items():
            changed = previous.get(path) is None or previous[path].oid != file.oid
            if changed and matches(path, wanted) and (files is None or matches(path, files)) \
                    and kind_of(path) != "weights" and file.oid not in todo:
                todo[file.oid] = (path, commits[i].sha, file.size)
        previous = tree
    with worker_pool(WORKERS) as pool:
        read = pool.map(lambda item: reader.read_text(*item), todo.values())
        history.texts = dict(zip(todo, read))
    return history


def file_changes(before: dict[str, TreeFile], after: dict[str, TreeFile], files: list[str] | None) -> list[dict]:
    changes = []
    for path in sorted(set(before) | set(after)):
        if files is not None and not matches(path, files):
            continue
        old, new = before.get(path), after.get(path)
        if old and new and old.oid == new.oid:
            continue
        change = "added" if old is None else "removed" if new is None else "modified"
        changes.append({"path": path, "change": change, "kind": kind_of(path),
                        "oid_before": old.oid if old else None, "oid_after": new.oid if new else None,
                        "size_before": old.size if old else None, "size_after": new.size if new else None,
                        "lfs": bool((new or old).lfs)})
    return changes


def text_diff(path: str, history: History, old: TreeFile | None, new: TreeFile | None, shas: tuple[str, str]) -> dict:
    """The unified diff of one text file between two revisions (or why there is none)."""
    record = {"path": path, "oid_before": old.oid if old else None, "oid_after": new.oid if new else None,
              "diff": None, "lines_added": 0, "lines_removed": 0, "truncated_lines": 0, "skipped": None}
    for file in (old, new):
        if file is not None:
            reason = history.texts.get(file.oid, (None, "not read"))[1]
            if reason:
                record["skipped"] = reason
                return record
    a = (history.text(old) or "").splitlines(keepends=True) if old else []
    b = (history.text(new) or "").splitlines(keepends=True) if new else []
    lines = list(difflib.unified_diff(a, b, f"{path}@{shas[0][:8]}" if old else "/dev/null",
                                      f"{path}@{shas[1][:8]}" if new else "/dev/null", n=2))
    record["lines_added"] = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    record["lines_removed"] = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    record["truncated_lines"] = max(0, len(lines) - DIFF_LINES)
    record["diff"] = "".join(x if x.endswith("\n") else x + "\n" for x in lines[:DIFF_LINES])
    return record


def card_fields(text: str | None) -> dict:
    """The card's declared licence and base model (YAML front matter), or {} when it has none."""
    data, _ = parse_front_matter(text or "")
    return {key: data.get(key) for key in CARD_FIELDS if data and data.get(key) is not None} if data else {}


def history_report(spec: str, options: OpenOptions | None = None, files: list[str] | None = None,
                   max_commits: int = DEFAULT_MAX_COMMITS) -> dict:
    """Fields of a `history` results document."""
    started = time.perf_counter()
    history = collect_history(spec, options, files, max_commits)
    commits, analysed = history.commits, set(history.analysed)
    records, timeline, weight_commits = [], [], []
    before: dict[str, TreeFile] = {}
    state: dict[str, object] = {}
    last_sha, skipped_since = None, 0
    for i, info in enumerate(commits):
        record = {"commit": info.sha, "date": info.date, "title": info.title, "message": info.message,
                  "authors": list(info.authors), "analysed": i in analysed, "skipped_before": 0,
                  "changes": [], "diffs": []}
        records.append(record)
        if i not in analysed:
            skipped_since += 1
            continue
        record["skipped_before"] = skipped_since
        skipped_since = 0
        after = history.trees[info.sha]
        record["changes"] = file_changes(before, after, files)
        for change in record["changes"]:
            if change["kind"] == "weights" and before:
                weight_commits.append(info.sha)
            if change["kind"] == "text" and (files is None or matches(change["path"], files)):
                record["diffs"].append(text_diff(change["path"], history, before.get(change["path"]),
                                                 after.get(change["path"]), (last_sha or "", info.sha)))
        timeline += _timeline_events(history, info, before, after, state)
        before, last_sha = after, info.sha
    newest = history.trees[commits[history.analysed[-1]].sha] if commits else {}
    fields = {
        "models": [spec], "repo": history.reader.repo, "revision": history.reader.revision,
        "resolved_commit": commits[-1].sha if commits else None, "files_glob": files,
        "commits": records, "timeline": timeline, "listed": len(commits), "analysed": len(analysed),
        "skipped": _skipped(history, max_commits),
        "weights_changed_after_first_upload": sorted(set(weight_commits), key=[c.sha for c in commits].index),
        "sources": [history.reader.provenance.as_dict()],
        "replica": MARKER_FILE in newest,
        "complete": not history.cut and len(analysed) == len(commits),
        "warnings": history.warnings,
        "timings": {"total_s": round(time.perf_counter() - started, 3)},
    }
    fields["summary"] = {"statements": statements(fields)}
    return fields


def _timeline_events(history: History, info: CommitInfo, before: dict, after: dict, state: dict) -> list[dict]:
    """Licence names (card fields, licence file titles) and declared base models that changed at this commit."""
    events = []
    current: dict[str, object] = {}
    readme = after.get("README.md")
    if readme is not None:
        current.update({f"card.{k}": v for k, v in card_fields(history.text(readme)).items()})
    for path, file in after.items():
        if "/" not in path and path.upper().startswith(("LICENSE", "LICENCE")):
            text = history.text(file)
            current[f"{path} title"] = title_line(text) if text else None
    unread = readme is not None and history.text(readme) is None
    for key in sorted(set(state) | set(current)):
        if unread and key.startswith("card."):
            continue  # a card we could not read says nothing about its fields
        if state.get(key) != current.get(key):
            events.append({"commit": info.sha, "date": info.date, "field": key, "before": state.get(key),
                           "after": current.get(key)})
    state.clear()
    state.update(current)
    return events


def _skipped(history: History, max_commits: int) -> dict:
    count = len(history.commits) - len(history.analysed)
    reasons = []
    if count:
        reasons.append(f"the trees of {count:,} commits between the first and the newest {len(history.analysed) - 1:,} "
                       f"were not read (--max-commits {max_commits}); their changes show as one step")
    if history.cut:
        reasons.append(f"the listing stopped at {MAX_LISTED:,} commits: older ones are not shown")
    return {"commits": count, "listing_cut": history.cut, "reason": "; ".join(reasons) or None}


def statements(fields: dict) -> list[str]:
    commits = fields["commits"]
    if not commits:
        return [f"{fields['repo']}@{fields['revision']} has no commits."]
    out = [f"{fields['repo']}: {len(commits):,} commits from {commits[0]['date'][:10]} to {commits[-1]['date'][:10]} "
           f"({fields['analysed']:,} analysed)."]
    if fields["skipped"]["reason"]:
        out.append(f"Skipped: {fields['skipped']['reason']}.")
    swapped = fields["weights_changed_after_first_upload"]
    out.append(f"Weight files changed after the first commit that had them in {len(swapped)} commit(s): "
               + ", ".join(s[:8] for s in swapped) + "." if swapped else
               "No weight file changed after the first commit that had them (compared by LFS object id).")
    for event in fields["timeline"]:
        if event["before"] is not None or event["field"].startswith("card."):
            out.append(f"{event['date'][:10]} {event['commit'][:8]}: {event['field']} "
                       f"{_shown(event['before'])} -> {_shown(event['after'])}.")
    return out


def _shown(value: object) -> str:
    return "(none)" if value is None else repr(value)
