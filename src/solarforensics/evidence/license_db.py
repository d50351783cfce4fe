"""Which known licence a text starts from, from a maintained licence database: ScanCode's LicenseDB, as packaged on
PyPI (`licensedcode-data`, or the newer copy inside `scancode-toolkit`), or any folder of ScanCode `.LICENSE` files
named by $SOLARFORENSICS_LICENSE_DB.

A text "starts from" the licence whose words it shares most (Dice over word 5-grams) among those whose text it
largely contains; the database decides which licences exist, nothing here lists them.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from solarforensics.errors import NotFoundError, SpecError
from solarforensics.evidence.license_text import normalise_paragraphs
from solarforensics.sources.spec import local_path

ENV = "SOLARFORENSICS_LICENSE_DB"
SHINGLE = 5
MIN_CONTAINED = 0.5  # share of a licence's 5-grams the text must hold for the text to "start from" it
SHORTLIST = 40
_WORD = re.compile(r"[a-z0-9]+")
_PACKAGES = ("scancode-toolkit", "scancode-toolkit-mini", "licensedcode-data")


@dataclass(frozen=True)
class Licence:
    key: str
    name: str
    spdx: str | None
    category: str | None
    text: str
    words: frozenset[str]


@dataclass(frozen=True)
class LicenceDB:
    path: Path
    source: str  # what it is and which version, for the record
    licences: dict[str, Licence]

    def describe(self) -> dict:
        return {"source": self.source, "path": str(self.path), "licences": len(self.licences)}


def words(text: str) -> list[str]:
    return _WORD.findall(" ".join(normalise_paragraphs(text)).lower())


def shingles(tokens: list[str]) -> set[int]:
    return {hash(tuple(tokens[i:i + SHINGLE])) for i in range(max(1, len(tokens) - SHINGLE + 1))} if tokens else set()


def database_folder() -> tuple[Path, str]:
    """The licences folder and a description of where it comes from (SpecError/NotFoundError when there is none)."""
    given = os.environ.get(ENV)
    if given:
        folder = local_path(given)
        if not folder.is_dir() or not any(folder.glob("*.LICENSE")):
            raise SpecError(f"${ENV}={given} is not a folder of ScanCode .LICENSE files",
                            hint="point it at a scancode-toolkit checkout's src/licensedcode/data/licenses")
        return folder, f"ScanCode LicenseDB at ${ENV}"
    spec = importlib.util.find_spec("licensedcode")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "data" / "licenses"
        if folder.is_dir():
            versions = [f"{name} {metadata.version(name)}" for name in _PACKAGES if _installed(name)]
            return folder, "ScanCode LicenseDB (" + (", ".join(versions) or "licensedcode") + ")"
    raise NotFoundError("no licence database is installed",
                        hint="pip install licensedcode-data (or scancode-toolkit), or set $" + ENV)


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


@lru_cache(maxsize=4)
def _load(folder: Path, source: str) -> LicenceDB:
    licences = {}
    for path in sorted(folder.glob("*.LICENSE")):
        meta, text = _split(path.read_text(encoding="utf-8", errors="replace"))
        if not text.strip() or meta.get("is_deprecated") or meta.get("is_exception") or meta.get("is_unknown"):
            continue
        key = str(meta.get("key") or path.stem)
        licences[key] = Licence(key, str(meta.get("name") or key), meta.get("spdx_license_key"),
                                meta.get("category"), text, frozenset(_WORD.findall(text.lower())))
    return LicenceDB(folder, source, licences)


def load_database() -> LicenceDB:
    return _load(*database_folder())


_META = re.compile(r"^(key|name|spdx_license_key|category|is_deprecated|is_exception|is_unknown):[ \t]*(.*)$", re.M)


def _split(raw: str) -> tuple[dict, str]:
    """A ScanCode .LICENSE file: front matter between '---' lines (only its flat top-level fields are read: YAML
    parsing of 2,000+ files would dominate the run), then the licence text."""
    if not raw.startswith("---"):
        return {}, raw
    end = raw.find("\n---", 3)
    if end < 0:
        return {}, raw
    meta: dict = {}
    for name, value in _META.findall(raw[3:end]):
        value = value.strip().strip("'\"")
        meta[name] = value.lower() in ("yes", "true") if name.startswith("is_") else value
    return meta, raw[end + 4:].lstrip("\n")


def starts_from(text: str, db: LicenceDB | None = None, top: int = 3) -> list[dict]:
    """The best candidates, best first: key, name, spdx, similarity (Dice over word 5-grams) and contained (share of
    the licence's 5-grams found in the text). Only licences the text largely contains qualify."""
    db = db or load_database()
    tokens = words(text)
    if not tokens:
        return []
    vocabulary = set(tokens)
    # Word overlap first (cheap), then 5-grams on a shortlist: thousands of texts, one comparison that counts.
    rough = sorted(db.licences.values(), key=lambda lic: -len(lic.words & vocabulary) / (len(lic.words) or 1))
    mine = shingles(tokens)
    scored = []
    for licence in rough[:SHORTLIST]:
        theirs = shingles(words(licence.text))
        shared = len(mine & theirs)
        contained = shared / len(theirs) if theirs else 0.0
        if contained >= MIN_CONTAINED:
            scored.append({"key": licence.key, "name": licence.name, "spdx": licence.spdx,
                           "category": licence.category, "similarity": round(2 * shared / (len(mine) + len(theirs)), 4),
                           "contained": round(contained, 4)})
    return sorted(scored, key=lambda s: (-s["similarity"], -s["contained"], s["key"]))[:top]


def licence_text(key: str, db: LicenceDB | None = None) -> str:
    db = db or load_database()
    if key not in db.licences:
        near = sorted(k for k in db.licences if key.lower() in k)[:8]
        raise SpecError(f"licence {key!r} is not in the licence database ({db.source})",
                        hint=f"similar keys: {', '.join(near)}" if near else "use a ScanCode licence key, e.g. mit")
    return db.licences[key].text
