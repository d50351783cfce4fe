"""Licence text against the canonical Apache License 2.0, section by section and clause by clause.

Texts are normalised first (Markdown escapes and markers, curly quotes, line wrapping and indentation), cut into the
title block, the nine numbered sections and the APPENDIX, and each section into clauses (sentences and (a)/(i)
items); clauses are then matched in order. A textual comparison: it says what words changed, not what they mean.
"""

import difflib
import re
from dataclasses import dataclass

TERMS = tuple(str(n) for n in range(1, 10))
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_MARKERS = re.compile(r"^\s*(?:#{1,6}\s+|>\s*)+")
_EMPHASIS = re.compile(r"\*\*|__")
_WRAPPED_HYPHEN = re.compile(r"[A-Za-z]-$")
_HEADING = re.compile(r"^(\d{1,2})\.\s+(\S.*)$")
_APPENDIX = re.compile(r"^appendix\b", re.IGNORECASE)
_CLAUSES = re.compile(r"(?<=[.;:!?])\s+(?=[\"'(\[A-Z])|\s+(?=\((?:[a-z]|[ivx]{1,4})\)\s)")
_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ",
                            "\u2013": "-", "\u2014": "-", "\ufeff": ""})
SIMILAR = 0.6  # word-level similarity above which a changed clause counts as "modified", below as removed + added


@dataclass
class Section:
    id: str
    title: str
    clauses: list[str]


def normalise_paragraphs(text: str) -> list[str]:
    """Paragraphs as single-spaced lines, with Markdown escapes/markers and typographic quotes undone."""
    paragraphs, current = [], ""
    for raw in text.translate(_TRANSLATE).splitlines():
        line = _EMPHASIS.sub("", _MARKERS.sub("", _ESCAPE.sub(r"\1", raw))).strip()
        if not line:
            if current:
                paragraphs.append(current)
            current = ""
        elif _WRAPPED_HYPHEN.search(current):
            current += line  # "NON-" + "INFRINGEMENT": a compound cut by line wrapping
        else:
            current = f"{current} {line}" if current else line
    if current:
        paragraphs.append(current)
    return [" ".join(p.split()) for p in paragraphs]


def split_clauses(paragraph: str) -> list[str]:
    return [c.strip() for c in _CLAUSES.split(paragraph) if c and c.strip()]


def split_sections(text: str) -> list[Section]:
    """Title block, numbered sections (in increasing order, so wrapped numbers inside a section are not headings),
    and the APPENDIX. Section ids: 'title', '1'..'99', 'appendix'."""
    sections = [Section("title", "title block", [])]
    last = 0
    for paragraph in normalise_paragraphs(text):
        heading = _HEADING.match(paragraph)
        if sections[-1].id != "appendix" and heading and int(heading[1]) > last and heading[2][0].isupper():
            last = int(heading[1])
            sections.append(Section(str(last), heading[2].split(".")[0].strip(), []))
        elif sections[-1].id != "appendix" and _APPENDIX.match(paragraph):
            sections.append(Section("appendix", paragraph.split(".")[0].strip(), []))
        sections[-1].clauses += split_clauses(paragraph)
    return sections


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def word_changes(old: str, new: str) -> tuple[str, str]:
    """(inserted, deleted) words of a changed clause, runs joined with ' … '."""
    old_words, new_words = old.split(), new.split()
    inserted, deleted = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_words, new_words, autojunk=False).get_opcodes():
        if op in ("replace", "delete"):
            deleted.append(" ".join(old_words[i1:i2]))
        if op in ("replace", "insert"):
            inserted.append(" ".join(new_words[j1:j2]))
    return " … ".join(inserted), " … ".join(deleted)


def diff_clauses(canonical: list[str], candidate: list[str]) -> dict:
    """Clauses identical, added, removed and changed (a changed clause keeps >= SIMILAR of its words)."""
    identical, added, removed, changed = 0, [], [], []
    matcher = difflib.SequenceMatcher(None, canonical, candidate, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            identical += i2 - i1
            continue
        old, new = list(canonical[i1:i2]), list(candidate[j1:j2])
        for clause in new:
            scores = [(_similarity(o, clause), k) for k, o in enumerate(old)]
            best = max(scores, default=(0.0, -1))
            if best[0] >= SIMILAR:
                original = old.pop(best[1])
                inserted, deleted = word_changes(original, clause)
                changed.append({"canonical": original, "text": clause, "inserted": inserted, "deleted": deleted})
            else:
                added.append(clause)
        removed += old
    return {"identical": identical, "added": added, "removed": removed, "changed": changed}


def compare_sections(canonical_text: str, candidate_text: str) -> list[dict]:
    """One record per section of either text: id, title, status and the clause differences."""
    canonical = {s.id: s for s in split_sections(canonical_text)}
    candidate = {s.id: s for s in split_sections(candidate_text)}
    order = list(canonical) + [k for k in candidate if k not in canonical]
    records = []
    for section_id in order:
        ref, got = canonical.get(section_id), candidate.get(section_id)
        if got is None or (section_id == "title" and not got.clauses and ref and ref.clauses):
            status = "absent" if section_id in ("appendix", "title") else "removed"
            records.append(_record(section_id, ref.title, status, 0, [], list(ref.clauses), []))
            continue
        if ref is None:
            records.append(_record(section_id, got.title, "added", 0, list(got.clauses), [], []))
            continue
        diff = diff_clauses(ref.clauses, got.clauses)
        status = "identical" if not (diff["added"] or diff["removed"] or diff["changed"]) else "modified"
        records.append(_record(section_id, ref.title or got.title, status, diff["identical"], diff["added"],
                               diff["removed"], diff["changed"]))
    return records


def _record(section_id, title, status, identical, added, removed, changed) -> dict:
    return {"id": section_id, "title": title, "status": status, "identical_clauses": identical,
            "added": added, "removed": removed, "changed": changed}


def title_line(text: str) -> str | None:
    """The licence's own name: the first paragraph of its title block (before section 1)."""
    sections = split_sections(text)
    return sections[0].clauses[0] if sections and sections[0].clauses else None
