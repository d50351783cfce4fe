"""`license`: a repo's licence file(s) compared with the canonical Apache License 2.0, and what its card declares.

Classification: "apache-2.0-verbatim" (terms word for word), "apache-2.0-plus-terms" (most Apache sections kept, with
terms added, changed or removed, or the licence renamed), "other". What the additions do is told from keywords only.
"""

import hashlib
import re
from dataclasses import dataclass

from solarforensics.datafiles import reference_path
from solarforensics.errors import FormatError, NotFoundError
from solarforensics.evidence.card import parse_front_matter
from solarforensics.evidence.license_db import licence_text, load_database, starts_from
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


AUTO = "auto"


@dataclass(frozen=True)
class Reference:
    """The licence a text is compared with: its database key, name, text, and where the text came from."""

    key: str
    name: str
    text: str
    file: str
    spdx: str | None = None

    @property
    def apache(self) -> bool:
        return self.key == "apache-2.0"

    def as_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "spdx": self.spdx, "file": self.file,
                "sha256": hashlib.sha256(self.text.encode("utf-8")).hexdigest()}


def license_report(spec: str, options: OpenOptions | None = None, against: str = AUTO,
                   require_file: bool = True) -> dict:
    """Fields of a `license` results document; without a licence file: NotFoundError, or (require_file=False) a
    document that says so. `against`: a licence database key, or auto (the licence the text starts from)."""
    if against not in (AUTO, "apache-2.0"):
        licence_text(against)  # an unknown key is refused before anything is read
    source = open_model(spec, options)
    declared, warnings = card_metadata(source)
    names = licence_files(source.list_files())
    if not names and require_file:
        card = f"; its model card declares license: {declared['license']}" if declared.get("license") else ""
        files = source.list_files()
        shown = ", ".join(files[:12]) + (f", … ({len(files)} files)" if len(files) > 12 else "")
        raise NotFoundError(f"{source.name} has no licence file (LICENSE*, LICENCE*){card}",
                            hint=f"files there: {shown or 'none'}")
    texts = {name: read_licence(source, name) for name in names}
    fields = licence_fields(texts, against, declared)
    fields.update(models=[spec], sources=[source.provenance.as_dict()], warnings=warnings + fields["warnings"])
    fields["summary"] = {"statements": statements(fields)}
    return fields


def licence_fields(texts: dict[str, str], against: str, declared: dict) -> dict:
    """Every file compared with its reference; the first file's comparison is the document's."""
    origins = {name: identify(text) for name, text in texts.items()}
    compared = [compare_file(name, text, choose_reference(against, origins[name])) for name, text in texts.items()]
    main = compared[0] if compared else _no_file()
    origin = origins[compared[0]["file"]] if compared else {"candidates": [], "database": None}
    best = origin["candidates"][0] if origin["candidates"] else {}
    reference = choose_reference(against, origin)
    matches, note = declared_match(main["classification"], declared, main, reference)
    fields = {
        "against": reference.key,
        "reference": reference.as_dict(),
        "starts_from": best.get("key"), "starts_from_name": best.get("name"), "starts_from_spdx": best.get("spdx"),
        "starts_from_similarity": best.get("similarity"), "starts_from_contained": best.get("contained"),
        "starts_from_candidates": origin["candidates"], "license_db": origin["database"],
        **main,
        "files": [{key: c[key] for key in ("file", "bytes", "title", "classification", "verbatim", "against")}
                  for c in compared],
        "declared": declared,
        "declared_matches": matches,
        "declared_note": note,
        "disclaimer": DISCLAIMER if reference.apache else
        f"This is a textual comparison with the {reference.name} text of the licence database, not legal advice.",
        "warnings": [],
    }
    if len(compared) > 1:
        fields["warnings"].append(f"{len(compared)} licence files; the sections shown are those of {main['file']}")
    return fields


def identify(text: str) -> dict:
    """The licences the text starts from (best first) and the database that said so."""
    db = load_database()
    return {"candidates": starts_from(text, db), "database": db.describe()}


def choose_reference(against: str, origin: dict) -> Reference:
    """`against`, or (auto) the licence the text starts from; Apache-2.0 when nothing in the database fits."""
    key = against
    if against == AUTO:
        key = origin["candidates"][0]["key"] if origin["candidates"] else "apache-2.0"
    if key == "apache-2.0":
        return Reference("apache-2.0", "Apache License 2.0", reference_text("apache-2.0"),
                         f"reference/licenses/{REFERENCES['apache-2.0']}", "Apache-2.0")
    db = load_database()
    licence = db.licences[key]
    return Reference(key, licence.name, licence.text, f"{db.source}: {key}", licence.spdx)


def reference_text(against: str) -> str:
    if against not in REFERENCES:
        return licence_text(against)
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


def compare_file(name: str, text: str, reference: Reference) -> dict:
    """Section-by-section comparison of one licence text with its reference, its classification, the terms it adds
    and what they do. Anything normative outside the reference's text is an added term: new clauses anywhere, text
    before the title, and text in the appendix beyond its boilerplate (filling in its [placeholders] is not)."""
    sections = compare_sections(reference.text, text)
    by_id = {s["id"]: s for s in sections}
    numbered = [s["id"] for s in sections if s["id"].isdigit() and s["status"] != "added"]
    identical = [n for n in numbered if by_id[n]["status"] == "identical"]
    title = by_id["title"]
    renamed = _renamed(title) if reference.apache else False
    extra_terms = [s["id"] for s in sections if s["status"] == "added"]
    added_clauses = [{"section": s["id"], "text": clause, "kind": "new clause"} for s in sections for clause in s["added"]]
    added_clauses += [{"section": s["id"], "text": c["inserted"], "kind": "inserted words"}
                      for s in sections for c in s["changed"] if c["inserted"]]
    names = {_letters(reference.name), _letters(reference.name + " license"), _letters(reference.key)}
    added_terms = [c for c in added_clauses if not _NOTICE.match(c["text"]) and _letters(c["text"]) not in names and
                   not (c["section"] == "appendix" and c["kind"] == "inserted words" and _fills_placeholder(by_id, c))]
    if not reference.apache or not numbered:  # no numbered sections: every change to the text is a change of terms
        changed_terms = [s["id"] for s in sections if s["status"] == "removed" or s["removed"] or s["changed"]]
    else:
        changed_terms = [n for n in TERMS if by_id.get(n, {}).get("status") != "identical"] + extra_terms
    verbatim = not changed_terms and not added_terms and not renamed and bool(text.strip())
    if reference.apache:
        classification = VERBATIM if verbatim else PLUS_TERMS if len(identical) >= MIN_IDENTICAL_TERMS else OTHER
    else:
        classification = OTHER
    return {
        "file": name,
        "bytes": len(text.encode("utf-8")),
        "title": title_line(text),
        "against": reference.key,
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
        "added_terms": added_terms,
        "effects": effects_of(added_terms),
    }


def _letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _fills_placeholder(by_id: dict, clause: dict) -> bool:
    """An appendix clause whose only change replaces bracketed placeholders ([yyyy], [name of copyright owner])."""
    for change in by_id["appendix"]["changed"]:
        if change["inserted"] == clause["text"]:
            runs = [r for r in change["deleted"].split(" … ") if r]
            return bool(runs) and all("[" in run for run in runs)
    return False


def _renamed(title: dict) -> bool:
    """True when the canonical name line ('Apache License Version 2.0, ...') was dropped or reworded."""
    def letters(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())
    gone = [c for c in title["removed"] if c.lower().startswith("apache license")]
    reworded = [c for c in title["changed"] if c["canonical"].lower().startswith("apache license")
                and letters(c["canonical"]) != letters(c["text"])]
    return bool(gone or reworded) and title["status"] != "absent"


def effects_of(added_terms: list[dict]) -> list[dict]:
    """Keyword-based: which kinds of term the added text introduces (the title block's preamble is not read as terms:
    it describes the licence, and its words would match most patterns)."""
    out = []
    for effect, meaning, pattern in EFFECTS:
        hits = [c for c in added_terms if c["section"] != "title" and re.search(pattern, c["text"], re.IGNORECASE)]
        if hits:
            out.append({"effect": effect, "meaning": meaning, "sections": sorted({c["section"] for c in hits}, key=_order),
                        "example": hits[0]["text"][:200]})
    return out


def _order(section_id: str) -> tuple:
    return (0, int(section_id)) if section_id.isdigit() else (1 if section_id == "appendix" else -1, 0)


def declared_match(classification: str | None, declared: dict, compared: dict | None = None,
                   reference: Reference | None = None) -> tuple[bool | None, str]:
    """Whether the card's declared licence agrees with the text (None when the card says nothing we can check)."""
    licence = str(declared.get("license") or "").strip().lower()
    name = declared.get("license_name")
    if classification is None:
        return None, "no licence file to check the card against"
    if not licence and not name:
        return None, "the model card declares no licence"
    if reference is not None and not reference.apache:
        ids = {reference.key.lower(), (reference.spdx or "").lower()}
        if licence in ids:
            if compared and compared["verbatim"]:
                return True, f"the card says {licence} and the text is the {reference.name} word for word"
            return False, f"the card says {licence}; the text starts from the {reference.name} but changes or adds terms"
        if licence == "other":
            if compared and compared["verbatim"]:
                return False, f"the card says 'other' but the text is the {reference.name} word for word"
            return True, f"the card says 'other' ({name or 'no license_name'}), consistent with a changed licence text"
        return False, f"the card says {licence} but the text starts from the {reference.name} ({reference.key})"
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
    return None, f"the card says {licence}; the text was compared with Apache-2.0 only, so this is not checked"


def _no_file() -> dict:
    return {"file": None, "bytes": 0, "title": None, "classification": None, "verbatim": False, "renamed": False,
            "identical_sections": [], "modified": [], "removed": [], "added_sections": [], "sections": [],
            "added": [], "added_clauses": [], "added_terms": [], "effects": [], "against": None}


def statements(fields: dict) -> list[str]:
    """Plain-English sentences: what the file starts from, which sections changed, what the additions do, what the
    card says."""
    if fields["file"] is None:
        return ["The repo has no licence file (LICENSE*, LICENCE*).",
                f"Declared on the card: {_declared_text(fields['declared'])}.", fields["disclaimer"]]
    name = f" (\"{fields['title']}\")" if fields["title"] else ""
    reference = fields["reference"]
    out = []
    if fields.get("starts_from"):
        spdx = f", SPDX {fields['starts_from_spdx']}" if fields.get("starts_from_spdx") else ""
        out.append(f"{fields['file']} starts from the {fields['starts_from_name']} ({fields['starts_from']}{spdx}): "
                   f"similarity {fields['starts_from_similarity']:.3f}, {100 * fields['starts_from_contained']:.1f}% "
                   f"of its text present ({(fields.get('license_db') or {}).get('source', 'licence database')}).")
    else:
        out.append(f"{fields['file']} starts from no licence of the database (none has half its text in it).")
    if reference["key"] == "apache-2.0":
        kind = {VERBATIM: "the Apache License 2.0, word for word in its terms",
                PLUS_TERMS: "the Apache License 2.0 with changes",
                OTHER: "not the Apache License 2.0 (too few of its sections are present unchanged)"}[fields["classification"]]
        out.append(f"{fields['file']}{name} is {kind}: {len(fields['identical_sections'])} of 9 numbered sections "
                   "identical.")
    else:
        kind = "word for word" if fields["verbatim"] else "with changes"
        out.append(f"{fields['file']}{name} is the {reference['name']} {kind}.")
    changes = [f"modified: {', '.join(fields['modified'])}" if fields["modified"] else "",
               f"removed: {', '.join(fields['removed'])}" if fields["removed"] else "",
               f"new sections: {', '.join(fields['added_sections'])}" if fields["added_sections"] else ""]
    if any(changes):
        out.append("Changes by section (title block and appendix included): " + "; ".join(c for c in changes if c) + ".")
    if fields["renamed"]:
        out.append("The licence is renamed: the 'Apache License, Version 2.0' title line is gone or reworded.")
    outside = sorted({t["section"] for t in fields.get("added_terms") or []} & {"title", "appendix"})
    if outside:
        out.append(f"Terms were added outside the licence's numbered sections ({', '.join(outside)}): the text is "
                   "not verbatim even where every section is.")
    for effect in fields["effects"]:
        where = ", ".join(_section_name(s) for s in effect["sections"])
        out.append(f"Added text in {where} reads as {effect['effect']} ({effect['meaning']}; keyword match).")
    out.append(f"Declared on the card: {_declared_text(fields['declared'])} — {fields['declared_note']}.")
    out.append(fields["disclaimer"])
    return out


def _section_name(section_id: str) -> str:
    return section_id if section_id in ("title", "appendix") else f"§{section_id}"


def _declared_text(declared: dict) -> str:
    parts = [f"{key}: {declared[key]}" for key in ("license", "license_name", "license_link") if declared.get(key)]
    return ", ".join(parts) or "nothing"
