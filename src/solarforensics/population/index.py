"""The fingerprint index: one SQLite file (the standard library's; no server, one file to copy or share).

SQLite gives what the index promises without code of ours: every write is one transaction (a killed writer leaves
the last committed state), WAL mode lets many readers read while one process writes, and a second writer waits on the
lock (busy timeout) and then fails with one line instead of corrupting anything. The schema is versioned in `meta`;
an index from a newer schema is refused, never rewritten.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from solarforensics.errors import IndexFileError, NotFoundError
from solarforensics.sources.cache import default_cache_dir

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 15.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fingerprints (
    spec TEXT PRIMARY KEY,           -- the model as the user named it: alias, Hub id or path
    repo TEXT,                       -- Hub repo id or local path
    commit_sha TEXT,                 -- resolved commit (Hub) or content digest (local)
    endpoint TEXT,
    family TEXT,
    version INTEGER NOT NULL,        -- fingerprint format version
    created_at TEXT NOT NULL,        -- when it was fingerprinted
    meta TEXT NOT NULL,              -- JSON: source files and ETags, config summary, tokenizer digest, Hub metadata
    data BLOB NOT NULL,              -- the statistics (safetensors bytes)
    prefilter BLOB NOT NULL          -- the small vectors a scan ranks every model by (safetensors bytes)
);
CREATE INDEX IF NOT EXISTS fingerprints_source ON fingerprints (endpoint, repo, commit_sha);
"""


def default_index_path() -> Path:
    """$SOLARFORENSICS_INDEX, else index.sqlite in the cache directory."""
    return Path(os.environ["SOLARFORENSICS_INDEX"]) if os.environ.get("SOLARFORENSICS_INDEX") else \
        default_cache_dir() / "index.sqlite"


@dataclass(frozen=True)
class Entry:
    spec: str
    repo: str | None
    commit: str | None
    endpoint: str | None
    family: str | None
    version: int
    created_at: str
    meta: dict
    data: bytes
    prefilter: bytes = b""

    @property
    def size(self) -> int:
        return len(self.data) + len(self.prefilter) + len(json.dumps(self.meta))


class Index:
    """An open index. Reads need no lock; `write()` is one transaction."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True):
        self.path = Path(path) if path else default_index_path()
        if not self.path.exists() and not create:
            raise NotFoundError(f"no index at {self.path}", "fingerprint a model first, or pass --index PATH")
        if self.path.is_dir():
            raise IndexFileError(f"index path {self.path} is a folder", "pass the path of the index file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._check_schema()
        except sqlite3.DatabaseError as err:
            raise self._error(err) from None

    def _error(self, err: sqlite3.Error) -> IndexFileError:
        text = str(err)
        if "locked" in text or "busy" in text:
            return IndexFileError(f"index {self.path} is being written by another process",
                               f"waited {BUSY_TIMEOUT_S:.0f} s; try again when it is done")
        return IndexFileError(f"index {self.path} is unreadable ({text})",
                           "it is not a solarforensics index or it is damaged; restore it from an export")

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row and str(row[0]).isdigit() else None
            if version is None or "fingerprints" not in tables:
                raise IndexFileError(f"{self.path} is not a solarforensics index (no schema version)")
            if version > SCHEMA_VERSION:
                raise IndexFileError(f"index {self.path} has schema {version}, newer than this solarforensics "
                                  f"understands ({SCHEMA_VERSION})", "upgrade solarforensics to read it")
            return
        if tables:
            raise IndexFileError(f"{self.path} is an SQLite file but not a solarforensics index")
        with self.write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taken with the write lock up front (a second writer waits, then fails cleanly)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise self._error(err) from None
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise self._error(err) from None

    # -- reading --------------------------------------------------------------------------------------------------

    def _rows(self, where: str = "", args: tuple = ()) -> list[Entry]:
        try:
            rows = self._db.execute("SELECT spec, repo, commit_sha, endpoint, family, version, created_at, meta, data, "
                                    f"prefilter FROM fingerprints {where} ORDER BY spec", args).fetchall()
        except sqlite3.DatabaseError as err:
            raise self._error(err) from None
        return [Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), bytes(r[8]), bytes(r[9]))
                for r in rows]

    def prefilters(self) -> list[tuple[str, dict, bytes]]:
        """(spec, meta, prefilter bytes) of every entry, without the statistics: what a scan ranks by."""
        try:
            rows = self._db.execute("SELECT spec, meta, prefilter FROM fingerprints ORDER BY spec").fetchall()
        except sqlite3.DatabaseError as err:
            raise self._error(err) from None
        return [(r[0], json.loads(r[1]), bytes(r[2])) for r in rows]

    def entries(self) -> list[Entry]:
        return self._rows()

    def get(self, spec: str) -> Entry | None:
        found = self._rows("WHERE spec = ?", (spec,))
        return found[0] if found else None

    def find_source(self, endpoint: str | None, repo: str | None, commit: str | None) -> Entry | None:
        """The entry fingerprinted from this exact commit, under whatever spec."""
        found = self._rows("WHERE endpoint IS ? AND repo IS ? AND commit_sha IS ?", (endpoint, repo, commit))
        return found[0] if found else None

    def specs(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT spec FROM fingerprints ORDER BY spec")]

    # -- writing --------------------------------------------------------------------------------------------------

    def put(self, entries: list[Entry]) -> None:
        """Insert or replace these entries, all in one transaction."""
        with self.write() as db:
            for e in entries:
                db.execute("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (e.spec, e.repo, e.commit, e.endpoint, e.family, e.version, e.created_at,
                            json.dumps(e.meta, sort_keys=True), sqlite3.Binary(e.data), sqlite3.Binary(e.prefilter)))

    def remove(self, specs: list[str]) -> list[str]:
        """Remove these specs; the ones not in the index are returned (nothing is removed then)."""
        with self.write() as db:
            missing = [s for s in specs if not db.execute("SELECT 1 FROM fingerprints WHERE spec=?", (s,)).fetchone()]
            if not missing:
                db.executemany("DELETE FROM fingerprints WHERE spec=?", [(s,) for s in specs])
        return missing

    def export(self, target: str | Path) -> int:
        """A copy of the whole index in one file, written atomically (temp + rename); the number of fingerprints."""
        target = Path(target)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            self._db.execute("VACUUM INTO ?", (str(tmp),))
            os.replace(tmp, target)
        except sqlite3.Error as err:
            tmp.unlink(missing_ok=True)
            raise IndexFileError(f"cannot export the index to {target} ({err})") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(self.specs())

    def import_from(self, other: str | Path) -> int:
        """Every fingerprint of another index file merged in (same spec: the other file's wins); the count."""
        if not Path(other).is_file():
            raise NotFoundError(f"no index file at {other}")
        with Index(other, create=False) as source:
            entries = source.entries()
        self.put(entries)
        return len(entries)
