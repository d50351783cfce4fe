"""Repo storage behind the local Hub server: repos read from folders (git folders with their history) or combined."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import partial
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote

from solarforensics.errors import FormatError
from solarforensics.localhub.gitrepo import GitError, GitHistory, git_repo, is_git_folder
from solarforensics.localhub.repo import (  # noqa: F401 (the names callers import from here)
    LFS_MIN_SIZE,
    LFS_SUFFIXES,
    SHA_PATTERN,
    Commit,
    Repo,
    RepoFile,
    RepoStore,
    git_blob_sha1,
    is_lfs_path,
)

SETTINGS_FILE = ".hub.json"
BRANCHES_DIR = ".branches"


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
        self._git: dict[Path, GitHistory] = {}

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
        access = dict(gated=bool(settings.get("gated", False)), private=bool(settings.get("private", False)),
                      tokens=set(settings.get("tokens", [])))
        if is_git_folder(folder):
            try:
                repo = git_repo(self._history(folder), repo_id, **access)
            except GitError:
                repo = None  # notes() says why; the working tree is served as for any folder
            if repo is not None:
                return repo
        refs = {"main": self._commit(folder)}
        branches = folder / BRANCHES_DIR
        if branches.is_dir():
            # Branch names may hold slashes (refs/pr/1); on disk they are written quoted (refs%2Fpr%2F1).
            refs.update({unquote(d.name): self._commit(d) for d in sorted(branches.iterdir()) if d.is_dir()})
        return Repo(repo_id, refs, **access)

    def _history(self, folder: Path) -> GitHistory:
        with self._lock:
            if folder not in self._git:
                self._git[folder] = GitHistory(folder)
            return self._git[folder]

    def notes(self) -> list[str]:
        """One line per git folder: how it is served (which commit is main, or why its working tree is)."""
        lines = []
        for repo_id in self.repo_ids():
            folder = self.root / repo_id
            if is_git_folder(folder):
                try:
                    lines.append(f"{repo_id}: git history served; {self._history(folder).state()[2]}")
                except GitError as err:
                    lines.append(f"{repo_id}: git history not readable ({err}); the working tree is served")
        return lines

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
        """The files of one repo folder. A link leading out of the folder (or broken) is neither listed nor served:
        whatever it points at is not part of the repo. Linked folders are not walked into."""
        files, newest = [], 0.0
        boundary = folder.resolve()
        for directory, subdirs, names in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if _visible(d))
            for name in names:
                if not _visible(name):
                    continue
                path = Path(directory) / name
                try:
                    resolved = path.resolve(strict=True)
                    stat = path.stat()
                except (OSError, RuntimeError):
                    continue
                if boundary not in resolved.parents or not resolved.is_file():
                    continue
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
