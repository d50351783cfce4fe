"""`license`: a repo's licence file(s) compared with the canonical Apache License 2.0, and what its card declares.

Classification: "apache-2.0-verbatim" (terms word for word), "apache-2.0-plus-terms" (most Apache sections kept, with
terms added, changed or removed, or the licence renamed), "other". What the additions do is told from keywords only.
"""

import hashlib
import re

from solarforensics.datafiles import reference_path
from solarforensics.errors import FormatError, NotFoundError, SpecError
from solarforensics.evidence.card import parse_front_matter
from solarforensics.evidence.license_text import TERMS, compare_sections, title_line
from solarforensics.models import OpenOptions, open_model
from solarforensics.sources.base import TensorSource

LICENSE_LIMIT = 1 << 20
CARD_LIMIT = 1 << 20
REFERENCES = {"apache-2.0": "apache-2.0.txt"}
DISCLAIMER = "This is a textual comparison with the canonical Apache License 2.0 text, not legal advice."
VERBATIM, PLUS_TERMS, OTHER = "apache-2.0-verbatim", "apache-2.0-plus-terms", "other"
MIN_IDENTICAL_TERMS = 5  # of the 9 numbered sections, kept word for word, for a text to count as Apache-based
_PREFERRED = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "LICENCE.md", "LICENCE.txt")
_NOTICE = re.compile(r"^(?:copyright\b|\(c\)|©)", re.IGNORECASE)
# (effect, what it means, keywords): matched against added or inserted text of the terms, case-insensitively.
EFFECTS = (
    ("naming requirement", "derived works or models must carry a given name or prefix",
     r"\bnames?\b[^.;]*\b(?:begin|start|prefix|contain)|\b(?:begin|start)s?\b[^.;]*\bname|\bprefix"),
    ("attribution / display", "a notice, credit or phrase must be shown",
     r"\battribut|\bdisplay|built with|\bprominent|\bcredit"),
    ("use restriction", "some uses, users or claims are excluded",
     r"\b(?:shall|may|must) not\b|\bprohibit|\brestrict|\bcompetitor|\bnot permitted"),
    ("commercial limit", "commercial use is limited or charged for",
     r"\bcommercial|\brevenue|\bmonthly active|\bfees?\b|\bpaid\b|\broyalt"),
    ("trademark / endorsement", "rules on using the licensor's names or implying endorsement",
     r"\btrademark|\bendorse|\bsponsor|\baffiliat|\bofficial"),
    ("AI-model obligations", "terms aimed at models trained, fine-tuned or derived from the work",
     r"\bartificial intelligence|\bai models?\b|\bfine-tun|\btrained\b|\bdistill|\bweights\b"),
    ("licence propagation", "the licence must travel with copies or derivatives",
     r"copy of this license|\bsame license|\bsublicens"),
    ("governing law", "a jurisdiction or law is chosen", r"\bgoverned by|\bjurisdiction|\bcourts?\b|\blaws of\b"),
    ("termination", "rights can end", r"\bterminat"),
    ("outputs", "terms on what the model produces", r"\boutputs?\b"),
)


def license_report(spec: str, options: OpenOptions | None = None, against: str = "apache-2.0",
                   require_file: bool = True) -> dict:
    """Fields of a `license` results document; without a licence file: NotFoundError, or (require_file=False) a
    document that says so."""
    reference = reference_text(against)
    source = open_model(spec, options)
    declared, warnings = card_metadata(source)
    names = licence_files(source.list_files())
    if not names and require_file:
        card = f"; its model card declares license: {declared['license']}" if declared.get("license") else ""
        files = source.list_files()
        shown = ", ".join(files[:12]) + (f", … ({len(files)} files)" if len(files) > 12 else "")
        raise NotFoundError(f"{source.name} has no licence file (LICENSE*, LICENCE*){card}",
                            hint=f"files there: {shown or 'none'}")
    compared = [compare_file(name, read_licence(source, name), reference) for name in names]
    main = compared[0] if compared else _no_file()
    matches, note = declared_match(main["classification"], declared)
    fields = {
        "models": [spec],
        "against": against,
        "reference": {"file": f"reference/licenses/{REFERENCES[against]}",
                      "sha256": hashlib.sha256(reference.encode("utf-8")).hexdigest()},
        **main,
        "files": [{key: c[key] for key in ("file", "bytes", "title", "classification", "verbatim")} for c in compared],
        "declared": declared,
        "declared_matches": matches,
        "declared_note": note,
        "disclaimer": DISCLAIMER,
        "sources": [source.provenance.as_dict()],
        "warnings": warnings,
    }
    if len(compared) > 1:
        fields["warnings"].append(f"{len(compared)} licence files; the sections shown are those of {main['file']}")
    fields["summary"] = {"statements": statements(fields)}
    return fields


def reference_text(against: str) -> str:
    if against not in REFERENCES:
        raise SpecError(f"no reference text for licence {against!r}", hint=f"available: {', '.join(REFERENCES)}")
    path = reference_path("licenses", REFERENCES[against])
    if not path.is_file():
        raise NotFoundError(f"reference licence text {path} is missing from this installation", hint="reinstall")
    return path.read_text(encoding="utf-8")


def licence_files(files: list[str]) -> list[str]:
    """Top-level files named LICENSE*/LICENCE* (any case), the usual names first."""
    found = [f for f in files if "/" not in f and f.upper().startswith(("LICENSE", "LICENCE"))]
    return sorted(found, key=lambda f: (_PREFERRED.index(f) if f in _PREFERRED else len(_PREFERRED), f))


def read_licence(source: TensorSource, name: str) -> str:
    """A licence file's text: at most 1 MiB, UTF-8, no NUL bytes (FormatError otherwise)."""
    text = source.read_text(name, LICENSE_LIMIT)
    if text is None:
        raise NotFoundError(f"{source.name}/{name} is listed but could not be read")
    if "\x00" in text:
        raise FormatError(f"{source.name}/{name} is binary (it holds NUL bytes), not licence text")
    return text


def card_metadata(source: TensorSource) -> tuple[dict, list[str]]:
    """license / license_name / license_link from the Hub's cardData, or from README.md's YAML front matter."""
    card = getattr(source, "card_data", None)
    where, warnings = "model card metadata (Hub cardData)", []
    if card is None:
        where = "README.md front matter"
        card, problem = front_matter(source)
        warnings += [problem] if problem else []
    card = card or {}
    declared = {key: card.get(key) for key in ("license", "license_name", "license_link")}
    declared["source"] = where if any(value is not None for value in declared.values()) else None
    return declared, warnings


def front_matter(source: TensorSource) -> tuple[dict | None, str | None]:
    """The YAML front matter of README.md (bounded, safe_load), and a warning instead of an error if it is broken."""
    try:
        text = source.read_text("README.md", CARD_LIMIT)
    except FormatError as err:
        return None, f"README.md not read: {err.one_line()}"
    return parse_front_matter(text or "")


def compare_file(name: str, text: str, reference: str) -> dict:
    """Section-by-section comparison of one licence text, its classification and the effects of its additions."""
    sections = compare_sections(reference, text)
    by_id = {s["id"]: s for s in sections}
    identical = [n for n in TERMS if by_id[n]["status"] == "identical"]
    title = by_id["title"]
    renamed = _renamed(title)
    extra_terms = [s["id"] for s in sections if s["status"] == "added"]
    title_terms = [c for c in title["added"] if not _NOTICE.match(c)]
    verbatim = len(identical) == len(TERMS) and not extra_terms and not title_terms and not renamed
    classification = VERBATIM if verbatim else PLUS_TERMS if len(identical) >= MIN_IDENTICAL_TERMS else OTHER
    added_clauses = [{"section": s["id"], "text": clause, "kind": "new clause"} for s in sections for clause in s["added"]]
    added_clauses += [{"section": s["id"], "text": c["inserted"], "kind": "inserted words"}
                      for s in sections for c in s["changed"] if c["inserted"]]
    return {
        "file": name,
        "bytes": len(text.encode("utf-8")),
        "title": title_line(text),
        "classification": classification,
        "verbatim": verbatim,
        "renamed": renamed,
        "identical_sections": identical,
        "modified": [s["id"] for s in sections if s["status"] == "modified"],
        "removed": [s["id"] for s in sections if s["status"] == "removed"],
        "added_sections": extra_terms,
        "sections": sections,
        "added": [clause["text"] for clause in added_clauses if clause["kind"] == "new clause"],
        "added_clauses": added_clauses,
        "effects": effects_of(added_clauses),
    }


def _renamed(title: dict) -> bool:
    """True when the canonical name line ('Apache License Version 2.0, ...') was dropped or reworded."""
    def letters(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())
    gone = [c for c in title["removed"] if c.lower().startswith("apache license")]
    reworded = [c for c in title["changed"] if c["canonical"].lower().startswith("apache license")
                and letters(c["canonical"]) != letters(c["text"])]
    return bool(gone or reworded) and title["status"] != "absent"


def effects_of(added_clauses: list[dict]) -> list[dict]:
    """Keyword-based: which kinds of term the added text of the terms (sections 1-9 and new sections) introduces."""
    out = []
    for effect, meaning, pattern in EFFECTS:
        hits = [c for c in added_clauses if c["section"] not in ("title", "appendix")
                and re.search(pattern, c["text"], re.IGNORECASE)]
        if hits:
            out.append({"effect": effect, "meaning": meaning, "sections": sorted({c["section"] for c in hits}, key=_order),
                        "example": hits[0]["text"][:200]})
    return out


def _order(section_id: str) -> tuple:
    return (0, int(section_id)) if section_id.isdigit() else (1 if section_id == "appendix" else -1, 0)


def declared_match(classification: str | None, declared: dict) -> tuple[bool | None, str]:
    """Whether the card's declared licence agrees with the text (None when the card says nothing we can check)."""
    licence = str(declared.get("license") or "").strip().lower()
    name = declared.get("license_name")
    if classification is None:
        return None, "no licence file to check the card against"
    if not licence and not name:
        return None, "the model card declares no licence"
    if licence == "apache-2.0":
        if classification == VERBATIM:
            return True, "the card says apache-2.0 and the text is the Apache License 2.0 word for word"
        what = "adds, changes or removes terms" if classification == PLUS_TERMS else "is not the Apache License 2.0"
        return False, f"the card says apache-2.0 but the text {what}"
    if licence == "other":
        if classification == VERBATIM:
            return False, "the card says 'other' but the text is the plain Apache License 2.0"
        return True, f"the card says 'other' ({name or 'no license_name'}), consistent with a text that is not plain Apache-2.0"
    if classification != OTHER:
        return False, f"the card says {licence} but the text is Apache License 2.0 based"
    return None, f"the card says {licence}; only Apache-2.0 is compared, so this is not checked"


def _no_file() -> dict:
    return {"file": None, "bytes": 0, "title": None, "classification": None, "verbatim": False, "renamed": False,
            "identical_sections": [], "modified": [], "removed": [], "added_sections": [], "sections": [],
            "added": [], "added_clauses": [], "effects": []}


def statements(fields: dict) -> list[str]:
    """Plain-English sentences: what the file is, which sections changed, what the additions do, what the card says."""
    if fields["file"] is None:
        return ["The repo has no licence file (LICENSE*, LICENCE*).",
                f"Declared on the card: {_declared_text(fields['declared'])}.", DISCLAIMER]
    name = f" (\"{fields['title']}\")" if fields["title"] else ""
    kind = {VERBATIM: "the Apache License 2.0, word for word in its terms",
            PLUS_TERMS: "the Apache License 2.0 with changes",
            OTHER: "not the Apache License 2.0 (too few of its sections are present unchanged)"}[fields["classification"]]
    out = [f"{fields['file']}{name} is {kind}: {len(fields['identical_sections'])} of 9 numbered sections identical."]
    changes = [f"modified: {', '.join(fields['modified'])}" if fields["modified"] else "",
               f"removed: {', '.join(fields['removed'])}" if fields["removed"] else "",
               f"new sections: {', '.join(fields['added_sections'])}" if fields["added_sections"] else ""]
    if any(changes):
        out.append("Changes by section (title block and appendix included): " + "; ".join(c for c in changes if c) + ".")
    if fields["renamed"]:
        out.append("The licence is renamed: the 'Apache License, Version 2.0' title line is gone or reworded.")
    for effect in fields["effects"]:
        where = ", ".join(f"§{s}" for s in effect["sections"])
        out.append(f"Added text in {where} reads as {effect['effect']} ({effect['meaning']}; keyword match).")
    out.append(f"Declared on the card: {_declared_text(fields['declared'])} — {fields['declared_note']}.")
    out.append(DISCLAIMER)
    return out


def _declared_text(declared: dict) -> str:
    parts = [f"{key}: {declared[key]}" for key in ("license", "license_name", "license_link") if declared.get(key)]
    return ", ".join(parts) or "nothing"
