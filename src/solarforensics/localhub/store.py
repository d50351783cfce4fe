"""Repo storage behind the local Hub server: files, commits and repos, read from folders or generated on the fly."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Protocol
from urllib.parse import unquote

from solarforensics.errors import FormatError

SHA_PATTERN = re.compile(r"[0-9a-f]{40}")
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack")
LFS_MIN_SIZE = 1 << 20
SETTINGS_FILE = ".hub.json"
BRANCHES_DIR = ".branches"


@dataclass(frozen=True)
class RepoFile:
    """One file of a commit; its bytes come from `reader(start, end_exclusive)` so they may live on disk or nowhere."""

    path: str
    size: int
    etag: str  # unquoted: sha256 hex for LFS files, git blob sha1 for plain files
    lfs: bool
    reader: Callable[[int, int], bytes] | None = field(default=None, repr=False, compare=False)

    def read(self, start: int, end: int) -> bytes:
        return self.reader(start, end)

    @property
    def lfs_pointer(self) -> str:
        """The git-lfs pointer text the Hub stores in git in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.etag}\nsize {self.size}\n"

    @property
    def blob_id(self) -> str:
        """Git blob id, as the Hub reports it in listings (of the pointer, for LFS files)."""
        return git_blob_sha1(self.lfs_pointer.encode()) if self.lfs else self.etag


@dataclass(frozen=True)
class Commit:
    """A snapshot of a repo: its sha and files by path."""

    sha: str
    files: dict[str, RepoFile]
    last_modified: float = 0.0  # unix time, shown as lastModified

    @classmethod
    def from_files(cls, files: Iterable[RepoFile], last_modified: float = 0.0) -> Commit:
        """A commit whose sha is a deterministic sha1 over its sorted (path, etag) pairs."""
        ordered = sorted(files, key=lambda f: f.path)
        digest = hashlib.sha1()
        for f in ordered:
            digest.update(f"{f.path}\0{f.etag}\n".encode())
        return cls(digest.hexdigest(), {f.path: f for f in ordered}, last_modified)


@dataclass
class Repo:
    """A model repo: branches pointing at commits, plus access settings."""

    id: str
    refs: dict[str, Commit]
    gated: bool = False
    private: bool = False
    tokens: set[str] = field(default_factory=set)

    def resolve(self, rev: str) -> Commit | None:
        """The commit for a branch name or for the full sha of any of this repo's commits."""
        if rev in self.refs:
            return self.refs[rev]
        if SHA_PATTERN.fullmatch(rev):
            return next((c for c in self.refs.values() if c.sha == rev), None)
        return None


class RepoStore(Protocol):
    """Where the server finds repos; re-asked on every request so repos may change between requests."""

    def get(self, repo_id: str) -> Repo | None: ...

    def repo_ids(self) -> list[str]: ...


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs_path(path: str, size: int) -> bool:
    return path.lower().endswith(LFS_SUFFIXES) or size > LFS_MIN_SIZE


def _read_disk_range(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


def _hash_file(path: Path, size: int, lfs: bool) -> str:
    digest = hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _visible(name: str) -> bool:
    return not name.startswith(".")


class FolderStore:
    """Repos from `ROOT/owner/name/...` (branch main) and `ROOT/owner/name/.branches/<branch>/...`."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        # Hashing is the only costly part of a rescan; a file keeps its etag while its stat signature holds.
        self._etags: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()

    def repo_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [
            f"{owner.name}/{name.name}"
            for owner in sorted(self.root.iterdir())
            if owner.is_dir() and _visible(owner.name)
            for name in sorted(owner.iterdir())
            if name.is_dir() and _visible(name.name)
        ]

    def get(self, repo_id: str) -> Repo | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(p and _visible(p) for p in parts):
            return None
        folder = self.root / parts[0] / parts[1]
        if not folder.is_dir():
            return None
        settings = self._settings(folder / SETTINGS_FILE)
        refs = {"main": self._commit(folder)}
        branches = folder / BRANCHES_DIR
        if branches.is_dir():
            # Branch names may hold slashes (refs/pr/1); on disk they are written quoted (refs%2Fpr%2F1).
            refs.update({unquote(d.name): self._commit(d) for d in sorted(branches.iterdir()) if d.is_dir()})
        return Repo(
            repo_id,
            refs,
            gated=bool(settings.get("gated", False)),
            private=bool(settings.get("private", False)),
            tokens=set(settings.get("tokens", [])),
        )

    @staticmethod
    def _settings(path: Path) -> dict:
        if not path.is_file():
            return {}
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{path} is not valid JSON: {exc}", hint="fix or remove the file") from exc
        if not isinstance(settings, dict):
            raise FormatError(f"{path} must hold a JSON object", hint='e.g. {"gated": true, "tokens": ["hf_x"]}')
        return settings

    def _commit(self, folder: Path) -> Commit:
        files, newest = [], 0.0
        for directory, subdirs, names in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if _visible(d))
            for name in names:
                if not _visible(name):
                    continue
                path = Path(directory) / name
                stat = path.stat()
                rel = path.relative_to(folder).as_posix()
                lfs = is_lfs_path(rel, stat.st_size)
                etag = self._etag(path, (stat.st_size, stat.st_mtime_ns, stat.st_ino), lfs)
                files.append(RepoFile(rel, stat.st_size, etag, lfs, partial(_read_disk_range, path)))
                newest = max(newest, stat.st_mtime)
        return Commit.from_files(files, newest)

    def _etag(self, path: Path, signature: tuple[int, int, int], lfs: bool) -> str:
        key = f"{int(lfs)}{path}"
        known = self._etags.get(key)
        if known and known[0] == signature:
            return known[1]
        # One thread hashes while the others wait: a burst of parallel first requests must not hash a file N times.
        with self._lock:
            known = self._etags.get(key)
            if not (known and known[0] == signature):
                known = self._etags[key] = (signature, _hash_file(path, signature[0], lfs))
        return known[1]


class MultiStore:
    """Several stores seen as one; the first that knows a repo id answers for it."""

    def __init__(self, stores: Iterable[RepoStore]):
        self.stores = list(stores)

    def get(self, repo_id: str) -> Repo | None:
        return next((repo for store in self.stores if (repo := store.get(repo_id)) is not None), None)

    def repo_ids(self) -> list[str]:
        return sorted({repo_id for store in self.stores for repo_id in store.repo_ids()})
